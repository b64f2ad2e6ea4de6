"""The benchmark's data directory: built once through the real server, reused while it matches.

A build generates the synthetic catalog (bench/catalog.py), starts ``appliance serve`` on an
empty data directory, loads the catalog with ``appliance ingest`` (which goes through the
server's HTTP API), waits for the index to build its search graphs, and gives 1,000 known users
ten likes each. The manifest written last records what was built and how long it took; a data
directory whose manifest does not match the request is built again. One interrupted before its
likes is continued (ingest skips the items already stored), and its manifest says so.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx

from appliance.domain import Item
from bench import catalog
from bench.server import RssSampler, appliance_command, serving

MANIFEST = "bench-manifest.json"
#: Bump when what a build puts into the data directory changes. 2: the index stores float16
#: vectors (an index keeps the precision it was written with, so a format-1 one would measure
#: float32 search). 3: the index builds its graphs in segments of at most
#: ``index.segment_items`` (a format-2 one holds the whole catalog in one).
BUILD_FORMAT = 3
KNOWN_USERS = 1000
LIKES_PER_USER = 10
#: Items whose tokens are counted for the report.
TOKEN_SAMPLE = 2000
_FEEDBACK_CONCURRENCY = 16


def identity(items: int, model: str) -> dict[str, Any]:
    """Return what a data directory must have been built from to be reused."""
    return {
        "format": BUILD_FORMAT,
        "items": items,
        "catalog_seed": catalog.SEED,
        "model": model,
        "known_users": KNOWN_USERS,
        "likes_per_user": LIKES_PER_USER,
    }


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """Return the manifest of a built data directory, or ``None``."""
    try:
        manifest: dict[str, Any] = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest


def matches(manifest: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether a manifest records a build of ``wanted``."""
    return manifest is not None and all(manifest.get(k) == v for k, v in wanted.items())


def user_likes(items: int, seed: int = catalog.SEED) -> Iterator[tuple[str, str]]:
    """Yield (user, item) likes: each known user likes items of one category."""
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible data, not a secret
    categories = len(catalog.CATEGORIES)
    per_category = items // categories
    for user in range(KNOWN_USERS):
        category = user % categories
        for k in rng.sample(range(per_category), min(LIKES_PER_USER, per_category)):
            yield f"bench-user-{user:04d}", f"item-{category + k * categories:07d}"


def ensure(
    data_dir: Path, items: int, *, model: str, port: int, logs: Path
) -> tuple[dict[str, Any], bool]:
    """Return the manifest of a data directory built for ``items``, building it if needed.

    Returns:
        The manifest and whether it was built now.

    """
    wanted = identity(items, model)
    manifest = read_manifest(data_dir)
    if matches(manifest, wanted):
        assert manifest is not None  # noqa: S101 - narrowed by matches()
        return manifest, False
    return build(data_dir, items, wanted=wanted, port=port, logs=logs), True


def build(
    data_dir: Path, items: int, *, wanted: dict[str, Any], port: int, logs: Path
) -> dict[str, Any]:
    """Build the data directory (continuing an interrupted build) and write its manifest."""
    continued = data_dir.exists() and _has_no_feedback(data_dir)
    if data_dir.exists() and not continued:
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog_file = data_dir.parent / f"catalog-{items}.jsonl"
    print(f"build: writing the {items}-item catalog to {catalog_file}", flush=True)
    with catalog_file.open("w", encoding="utf-8") as out:
        for item in catalog.generate(items):
            out.write(json.dumps(item) + "\n")
    started = time.perf_counter()
    with (
        serving(data_dir, port=port, log=logs / "build-server.log") as server,
        RssSampler(server.pid) as rss,
    ):
        server_ready_s = time.perf_counter() - started
        print(f"build: loading {items} items through {server.url}", flush=True)
        mark = time.perf_counter()
        with (logs / "build-ingest.log").open("ab") as log:
            subprocess.run(  # noqa: S603 - our own command line
                [*appliance_command(), "ingest", str(catalog_file), "--data-dir", str(data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        ingest_s = time.perf_counter() - mark
        print(f"build: {items} items in {ingest_s:.0f} s; building the search graphs", flush=True)
        mark = time.perf_counter()
        server.wait_until_optimized()
        optimize_s = time.perf_counter() - mark
        print(f"build: search graphs in {optimize_s:.0f} s; known users' likes", flush=True)
        events = asyncio.run(_send_likes(server.url, list(user_likes(items))))
        counts = server.stats()
    catalog_file.unlink()
    if counts["items"] != items or counts["feedback_events"] != events:
        raise RuntimeError(f"the build holds {counts}, expected {items} items, {events} events")
    tokens = catalog.mean_tokens([Item(**i).embedding_text for i in _first(items, TOKEN_SAMPLE)])
    manifest = {
        **wanted,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "server_start_seconds": round(server_ready_s, 1),
        "ingest_seconds": round(ingest_s, 1),
        "ingest_items_per_second": round(items / ingest_s, 1),
        "continued_an_interrupted_build": continued,
        "optimize_seconds": round(optimize_s, 1),
        "build_peak_rss_mb": round(rss.peak_mb),
        "build_peak_anon_mb": round(rss.anon_peak_mb),
        "feedback_events": events,
        "mean_tokens_per_item": round(tokens, 1),
    }
    (data_dir / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _has_no_feedback(data_dir: Path) -> bool:
    """Whether an unfinished data directory stopped before its likes (so ingest can go on)."""
    try:
        with duckdb.connect(str(data_dir / "appliance.duckdb"), read_only=True) as db:
            row = db.execute("SELECT count(*) FROM feedback").fetchone()
    except duckdb.Error:
        return False
    return row is not None and row[0] == 0


def _first(items: int, count: int) -> Iterator[dict[str, Any]]:
    for n, item in enumerate(catalog.generate(items)):
        if n >= count:
            return
        yield item


async def _send_likes(url: str, likes: list[tuple[str, str]]) -> int:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for like in likes:
        queue.put_nowait(like)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            user, item = queue.get_nowait()
            response = await client.post(
                "/feedback", json={"user_id": user, "item_id": item, "interaction_type": "like"}
            )
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(_FEEDBACK_CONCURRENCY)))
    return len(likes)


def scratch_copy(data_dir: Path, scratch: Path) -> None:
    """Copy a built data directory for a group of scenarios (the original stays as built)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(data_dir, scratch, ignore=shutil.ignore_patterns("appliance.lock"))
