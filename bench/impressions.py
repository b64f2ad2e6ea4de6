"""Cost of the impression log: its write throughput, and the time it adds to a request.

1. Write throughput: batches of synthetic impressions (``--candidates`` candidates each, from
   two sources) stored by ``ImpressionStore.append`` in a fresh DuckDB file, as the log's writer
   stores them.
2. Added latency: the real pipeline in process, as the API calls it (without the result cache),
   on a synthetic catalog (bench/catalog.py) with the hashing embedder, so that the model's time
   does not drown the difference. The same
   requests are answered with the log on and off, alternately, while the writer runs as it does
   in service; the report gives p50/p95 of each and of the per-request difference.

    python bench/impressions.py --items 5000 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

# Run as a script, this folder is on the import path: the benchmarks' synthetic catalog.
from catalog import generate

from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.backends.stores.impressions import (
    Impression,
    ImpressionStore,
    LoggedCandidate,
    SourceRank,
)
from appliance.services.recommend import RecommendationQuery
from appliance.services.runtime import open_runtime
from appliance.settings import load_settings

#: Requests answered before timing starts (caches, the first index searches).
WARM_UP = 20


def synthetic(count: int, candidates: int, top_k: int) -> list[Impression]:
    """Impressions shaped like a two-source response: each candidate from one or both."""
    now = datetime.now(UTC)
    made = []
    for n in range(count):
        rows = []
        for position in range(1, candidates + 1):
            sources = [SourceRank("vector", position, 0.9 - position / 100)]
            if position % 3 == 0:
                sources.append(SourceRank("popularity", position // 3, 1.0 / position))
            rows.append(
                LoggedCandidate(
                    f"item-{(n * 7 + position) % 50_000}",
                    position,
                    position <= top_k,
                    1.0 / (60 + position),
                    tuple(sources),
                )
            )
        made.append(
            Impression(
                request_id=f"r{n:08d}",
                user_id=f"user-{n % 997}",
                created_at=now,
                strategy="context",
                has_context=True,
                fusion="rrf",
                top_k=top_k,
                candidates=tuple(rows),
            )
        )
    return made


def write_throughput(count: int, candidates: int, batch: int) -> dict[str, float]:
    """Store ``count`` impressions in batches of ``batch``; return rates and batch times."""
    impressions = synthetic(count, candidates, top_k=candidates // 2)
    with tempfile.TemporaryDirectory(prefix="bench-impressions-") as folder:
        store = DuckDBStore(Path(folder) / "appliance.duckdb")
        log = ImpressionStore(store.connection())
        batch_ms = []
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, count, batch):
            mark = time.perf_counter()
            log.append(impressions[start : start + batch])
            batch_ms.append((time.perf_counter() - mark) * 1000)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu
        log.close()
        store.close()
    return {
        "impressions": count,
        "candidates_each": candidates,
        "batch": batch,
        "impressions_per_s": round(count / seconds),
        "candidate_rows_per_s": round(count * candidates / seconds),
        # On a shared machine the wall clock says as much about the neighbours; CPU time
        # (every thread of this process, DuckDB's included) says what the writes cost.
        "impressions_per_cpu_s": round(count / cpu_seconds),
        "batch_ms_p50": round(statistics.median(batch_ms), 2),
        "batch_ms_max": round(max(batch_ms), 2),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """Median and 95th percentile, in ms."""
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p95_ms": round(statistics.quantiles(values, n=20)[-1], 3),
    }


async def added_latency(items: int, requests: int, top_k: int) -> dict[str, object]:
    """Answer the same requests with the log on and off, alternately; compare the times."""
    with tempfile.TemporaryDirectory(prefix="bench-impressions-") as folder:
        catalog = Path(folder) / "catalog.jsonl"
        catalog.write_text("".join(json.dumps(i) + "\n" for i in generate(items)))
        settings = load_settings(
            environ={},
            overrides={
                "data_dir": str(Path(folder) / "data"),
                "embedder": {"kind": "hashing"},
                # Each request is answered twice (log on, log off): computed both times.
                "cache": {"results": 0},
            },
        )
        async with open_runtime(settings) as runtime:
            await runtime.catalog.load_file(catalog)
            log = runtime.impressions
            on, off = log.settings, msgspec.structs.replace(log.settings, log_impressions=False)
            timings: dict[str, list[float]] = {"on": [], "off": []}
            words = ["garden", "river", "copper", "winter", "castle", "violin", "harbour"]
            for n in range(requests + WARM_UP):
                query = RecommendationQuery(
                    user_id=f"u{n}",
                    context=f"{words[n % len(words)]} {words[(n * 3 + 1) % len(words)]} {n}",
                    top_k=top_k,
                    sources=frozenset({"vector", "popularity"}),
                )
                order = ("on", "off") if n % 2 else ("off", "on")
                for mode in order:
                    log.settings = on if mode == "on" else off
                    mark = time.perf_counter()
                    await runtime.cached_recommender.recommend(query)
                    if n >= WARM_UP:
                        timings[mode].append((time.perf_counter() - mark) * 1000)
            log.settings = on
            await log.flush()
            stats = log.stats
    difference = [a - b for a, b in zip(timings["on"], timings["off"], strict=True)]
    return {
        "catalog_items": items,
        "requests_each": requests,
        "top_k": top_k,
        "candidates_per_request": 4 * top_k,
        "log_on": percentiles(timings["on"]),
        "log_off": percentiles(timings["off"]),
        "on_minus_off_ms": {
            "mean": round(statistics.fmean(difference), 3),
            "median": round(statistics.median(difference), 3),
        },
        "writer": {
            "impressions": stats.written,
            "batches": stats.batches,
            "ms_per_batch": round(1000 * stats.write_seconds / max(stats.batches, 1), 2),
        },
    }


def main() -> None:
    """Run both measurements and print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    report = {
        "write": write_throughput(args.impressions, args.candidates, args.batch),
        "request": asyncio.run(added_latency(args.items, args.requests, args.top_k)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
