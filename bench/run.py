"""Performance benchmark: the real server under load from wrk, scenario by scenario.

    python -m bench.run --items 100000 --out bench/results/bench-100k.json

Builds (once) or reuses a data directory with a synthetic catalog and 1,000 known users, starts
``appliance serve`` on it and drives it with wrk (bench/scenario.lua) at each concurrency. The
scenarios that write (feedback, ingest) run on a copy of the data directory, so the built one
stays as built. The benchmark's own process measures the encoder alone and vector search
through qdrant-client's local mode and through the appliance's index, while no server runs.
Prints a Markdown report and writes it next to the JSON one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx

from appliance.backends.registry import DATABASE_FILE, build_embedder
from appliance.cpus import usable_cpus
from appliance.domain import Item
from appliance.settings import Settings, load_settings
from bench import catalog, dataset, reference, report, wrk
from bench.server import RssSampler, Server, cpu_seconds, serving


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of load."""

    name: str
    description: str
    writes: bool = False
    """Changes the catalog or the feedback: runs after the others, in a server of its own on a
    fresh copy of the data directory."""
    reranker: str | None = None
    """Re-ranker switched in (PUT /admin/reranker) for the scenario, and back to none after."""
    timeout_s: float = 30.0


SCENARIOS = (
    Scenario("unique", "recommend: a new context and a new user each request"),
    Scenario("repeated", "recommend: one of 100 contexts, the same anonymous user"),
    Scenario("users", "recommend: one of 1,000 known users (10 likes each), no context"),
    Scenario("filtered", "recommend: as unique, filtered to one of 20 categories (5% of items)"),
    Scenario(
        "rerank",
        "recommend: as unique, re-ranked by llama.cpp (SmolLM2-135M) on 10 candidates",
        reranker="llamacpp",
    ),
    Scenario("similar", "GET /items/{id}/similar: a random item, a new user each request"),
    Scenario("feedback", "POST /feedback: one of 1,000 users, a random item", writes=True),
    Scenario("ingest", "POST /items: new items, --ingest-batch (32) a request", writes=True,
             timeout_s=300.0),
)  # fmt: skip
#: Distinct texts cycled through by the ingest scenario (new ids every time).
INGEST_POOL = 4096
#: Ingest items the encoder-alone measurement encodes.
ENCODER_ITEMS = 2048
#: Short contexts of the reference search measurement.
REFERENCE_QUERIES = 200
#: Counter range of one wrk run (see bench/scenario.lua): runs never repeat a context or an id.
RUN_SPAN = 1_000_000_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000, help="catalog size (10K to 1M)")
    parser.add_argument("--data-dir", type=Path, help="default: bench/data/items-<ITEMS>")
    parser.add_argument("--out", type=Path, help="JSON report (default: bench/results/)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per scenario")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--ingest-batch", type=int, default=32, help="items per POST /items")
    parser.add_argument(
        "--reference-items",
        type=int,
        default=100_000,
        help="vectors loaded into qdrant-client local mode",
    )
    parser.add_argument(
        "--reference-budget",
        type=float,
        default=30.0,
        help="seconds spent querying qdrant-client local mode, per query kind",
    )
    parser.add_argument("--skip-reference", action="store_true", help="no qdrant-client run")
    parser.add_argument("--skip-encoder", action="store_true", help="no encoder-alone run")
    parser.add_argument("--build-only", action="store_true", help="build the data directory only")
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",")]
    known = {s.name for s in SCENARIOS}
    args.selected = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.selected) - known:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {sorted(known)}")
    args.data_dir = args.data_dir or Path("bench/data") / f"items-{args.items}"
    args.out = args.out or Path("bench/results") / f"bench-{args.items}.json"
    return args  # fmt: skip


def machine() -> dict[str, Any]:
    """Describe the machine the figures are measured on."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = Path("/proc/meminfo").read_text(encoding="utf-8").split()[1]
        memory_gb = round(int(memory) / 2**20, 1)
    except OSError:
        memory_gb = 0.0
    return {
        "cpu": cpu,
        "cores": usable_cpus(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_start": round(os.getloadavg()[0], 2),
    }


class Workload:
    """Files and counters the wrk runs of one benchmark share."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.run_id = time.strftime("bench%Y%m%d%H%M%S")
        self.words = work / "words.txt"
        self.pool = work / "ingest-pool.jsonl"
        self._slot = 1  # slot 0 holds the repeated scenario's 100 contexts
        work.mkdir(parents=True, exist_ok=True)
        self.words.write_text("\n".join(catalog.VOCABULARY) + "\n", encoding="utf-8")
        pool = list(catalog.generate(INGEST_POOL, seed=catalog.SEED + 2))
        self.pool_items = [Item(**i) for i in pool]
        with self.pool.open("w", encoding="utf-8") as out:
            for item in pool:
                fields = {k: v for k, v in item.items() if k != "item_id"}
                out.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def load(self, scenario: Scenario, tag: str) -> wrk.Load:
        """Return the next run's load, with a counter range of its own."""
        first = self._slot * RUN_SPAN
        self._slot += 1
        return wrk.Load(
            mode=scenario.name,
            first=first,
            items=self.args.items,
            tag=f"{self.run_id}-{tag}",
            words=self.words,
            pool=self.pool if scenario.name == "ingest" else None,
            batch=self.args.ingest_batch,
        )


def run_scenario(server: Server, scenario: Scenario, workload: Workload) -> list[dict[str, Any]]:
    """Warm up, then run the scenario at each concurrency; one record per concurrency."""
    args = workload.args
    logs = workload.work
    if scenario.reranker:
        problem = _switch_reranker(server, scenario.reranker)
        if problem:
            print(f"{scenario.name}: skipped ({problem})", flush=True)
            return [{"scenario": scenario.name, "skipped": problem}]
    try:
        if args.warmup > 0:
            wrk.run(
                server.url,
                workload.load(scenario, f"{scenario.name}-warm"),
                connections=max(args.levels),
                duration_s=args.warmup,
                timeout_s=scenario.timeout_s,
            )
            server.wait_idle()
        records = []
        for connections in args.levels:
            load = workload.load(scenario, f"{scenario.name}-c{connections}")
            before = server.stats()
            with RssSampler(server.pid) as rss:
                cpu_before = cpu_seconds(server.pid)
                result, raw = wrk.run(
                    server.url,
                    load,
                    connections=connections,
                    duration_s=args.duration,
                    threads=args.wrk_threads,
                    timeout_s=scenario.timeout_s,
                )
                cpu_s = cpu_seconds(server.pid) - cpu_before
                # The next run starts on an idle server; the figures below include the
                # requests wrk left in progress.
                drained_s = server.wait_idle()
            after = server.stats()
            (logs / f"wrk-{scenario.name}-c{connections}.txt").write_text(raw, encoding="utf-8")
            record = report.level_record(
                scenario.name,
                connections,
                result,
                rss_peak_mb=rss.peak_mb,
                rss_end_mb=rss.last_mb,
                server=report.server_figures(before, after),
            )
            record["tag"] = load.tag
            record["drain_s"] = round(drained_s, 1)
            # What a request costs the server whatever else runs on the machine: on a busy
            # machine the rates fall, this does not (much).
            record["server_cpu_ms_per_request"] = (
                round(cpu_s * 1000 / result.requests, 3) if result.requests else None
            )
            if scenario.name == "ingest":
                record["items_per_second"] = round(
                    result.succeeded * args.ingest_batch / result.duration_s, 1
                )
            if scenario.name == "feedback":
                record["acknowledged"] = result.succeeded
            records.append(record)
            print(report.scenario_row(record), flush=True)
    finally:
        if scenario.reranker:
            _switch_reranker(server, "none")
    return records


def _switch_reranker(server: Server, kind: str) -> str | None:
    with server.client() as client:
        response = client.put("/admin/reranker", json={"kind": kind})
    if response.is_success:
        return None
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


def check_feedback(data_dir: Path, records: list[dict[str, Any]]) -> None:
    """Count each feedback run's events in the stopped server's DuckDB file."""
    runs = [r for r in records if r.get("scenario") == "feedback" and "tag" in r]
    if not runs:
        return
    with duckdb.connect(str(data_dir / DATABASE_FILE), read_only=True) as db:
        for record in runs:
            row = db.execute(
                "SELECT count(*) FROM feedback WHERE request_id LIKE ?", [f"{record['tag']}-%"]
            ).fetchone()
            record["stored"] = int(row[0]) if row else 0
            record["lost"] = max(0, record["acknowledged"] - record["stored"])


def in_process(args: argparse.Namespace, settings: Settings, workload: Workload) -> dict[str, Any]:
    """Measure the encoder alone and the search reference, with no server running."""
    out: dict[str, Any] = {}
    if args.skip_encoder and args.skip_reference:
        return out
    print("encoder alone and search reference (in this process)", flush=True)
    embedder = build_embedder(settings)
    try:
        if not args.skip_encoder:
            out["encoder"] = reference.encoder_throughput(
                embedder,
                workload.pool_items[:ENCODER_ITEMS],
                request_items=args.ingest_batch,
                batch=settings.embedder.max_batch,
                phrases=settings.index.phrases,
            )
            print(f"encoder alone: {out['encoder']}", flush=True)
        if not args.skip_reference:
            rng = random.Random(catalog.SEED)  # noqa: S311 - reproducible queries
            contexts = [
                " ".join(rng.sample(catalog.VOCABULARY, 2))
                + " and "
                + " ".join(rng.sample(catalog.VOCABULARY, 2))
                for _ in range(REFERENCE_QUERIES)
            ]
            out["reference"] = reference.search_reference(
                settings,
                embedder,
                contexts,
                max_points=args.reference_items,
                budget_s=args.reference_budget,
            )
            print(f"search reference: {json.dumps(out['reference'])}", flush=True)
    finally:
        embedder.close()
        del embedder
        gc.collect()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write its reports."""
    args = parse_args(argv)
    started = time.monotonic()
    info = machine()
    work = args.out.with_suffix("")
    work = work.with_name(f"{work.name}-logs")
    settings = load_settings(overrides={"data_dir": str(args.data_dir)})
    manifest, built = dataset.ensure(
        args.data_dir, args.items, model=settings.embedder.model, port=args.port, logs=work
    )
    print(f"data directory {args.data_dir}: {'built' if built else 'reused'}; {manifest}")
    if args.build_only:
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; run scripts/install-bench-tools.sh")
    workload = Workload(args, work)
    measured = in_process(args, settings, workload)

    records: list[dict[str, Any]] = []
    selected = [s for s in SCENARIOS if s.name in args.selected]
    for writes in (False, True):
        group = [s for s in selected if s.writes == writes]
        if not group:
            continue
        # Every group starts from the data directory as built: recommendations write too (the
        # impression log), and a run on the original left it up to 100,000 impressions fuller.
        data_dir = args.data_dir.with_name(f"{args.data_dir.name}-scratch")
        dataset.scratch_copy(args.data_dir, data_dir)
        try:
            log = work / f"server-{'writes' if writes else 'reads'}.log"
            with serving(data_dir, port=args.port, log=log) as server:
                for scenario in group:
                    records += run_scenario(server, scenario, workload)
                # What ingest wrote gets its search graphs before the server is asked to stop.
                server.wait_until_optimized()
            if writes:
                check_feedback(data_dir, records)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    info["load_end"] = round(os.getloadavg()[0], 2)
    full = {
        "machine": info,
        "items": args.items,
        "build": {**manifest, "built_now": built},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.levels,
            "ingest_batch": args.ingest_batch,
            "wrk_threads": args.wrk_threads,
        },
        "scenarios_run": [asdict(s) for s in selected],
        **measured,
        "scenarios": records,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    full["targets"] = [asdict(t) for t in report.targets(full)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(full, indent=2), encoding="utf-8")
    text = report.markdown(full)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    print(f"reports: {args.out} and {args.out.with_suffix('.md')}; logs in {work}")


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as e:
        sys.exit(f"benchmark failed talking to the server: {e}")
