"""Soak: `appliance serve` under a bounded mix of real traffic for minutes on end.

Several clients send recommendations (new and repeated contexts, known and new users, filters),
feedback, catalog upserts and deletes of a bounded pool, and admin reads, at a fixed overall rate.
Nothing may fail, every acknowledged feedback event must be stored, and the server's resident
memory must stay flat once warm: growth that continues through the run is a leak.

The duration comes from ``SOAK_SECONDS`` (default 300, what CI runs); ``just soak`` runs longer
and prints the same figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import TEST_CATALOG
from tests.e2e.test_crash_safety import Served, serving

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
#: Requests per second over all clients: a steady load the two cores sustain with room to spare,
#: so latency measures the server, not a queue.
RATE = 60.0
CLIENTS = 8
#: Memory is judged after this share of the run: start-up, the first batches of every shape, the
#: 300 users' first vectors and the store's buffers come first (RSS levelled off 100-140 s into
#: runs of 240 s).
WARM_UP_SHARE = 0.4
#: The caches hold at most this many entries each (the defaults hold 10,000, which this traffic
#: would take the whole run to fill): full within the warm-up, so that what is judged is the rest.
CACHE_ENTRIES = "256"
#: Allowed RSS growth from the start to the end of the judged window: allocator noise, not a trend.
RSS_SLACK_MB = 40.0
SAMPLE_SECONDS = 2.0

WORDS = [
    *("time", "travel", "space", "robots", "cooking", "garden", "quiet", "thriller", "family"),
    *("comedy", "history", "war", "ocean", "music", "detective", "winter", "city", "forest"),
    *("dragons", "trains", "love", "friendship", "heist", "courtroom", "desert"),
]
POOL = 40


@dataclass
class Tally:
    """What the clients saw."""

    by_kind: Counter[str] = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    feedback_acknowledged: int = 0


def pool_item(n: int, version: int) -> dict[str, Any]:
    return {
        "item_id": f"pool-{n}",
        "title": f"Pool item {n} v{version}",
        "text": f"A rotating catalog entry about {WORDS[(n + version) % len(WORDS)]}, "
        f"revision {version}.",
        "metadata": {"pool": True, "version": version},
    }


Request = tuple[str, str, dict[str, Any] | None]
"""Method, path and JSON body."""


def new_context(rng: random.Random, user: str, serial: int) -> Request:
    context = " ".join(rng.sample(WORDS, 3)) + f" {serial}"  # never seen before
    return "POST", "/recommendations", {"user_id": user, "context": context}


def repeated_context(rng: random.Random, user: str, _: int) -> Request:
    context = " ".join(WORDS[rng.randrange(20) : rng.randrange(20, 25)])
    return "POST", "/recommendations", {"user_id": user, "context": context}


def user_only(_: random.Random, user: str, __: int) -> Request:
    return "POST", "/recommendations", {"user_id": user, "top_k": 10}


def filtered(rng: random.Random, user: str, _: int) -> Request:
    body = {"user_id": user, "context": rng.choice(WORDS), "filters": {"pool": True}}
    return "POST", "/recommendations", body


def rating(rng: random.Random, user: str, _: int) -> Request:
    # Items of the fixed catalog: pool items come and go, and feedback on a deleted one is a 404.
    body = {"user_id": user, "item_id": rng.choice(CATALOG_IDS), "rating": rng.choice(RATINGS)}
    return "POST", "/feedback", body


def upsert(rng: random.Random, _: str, serial: int) -> Request:
    items = [pool_item(n, serial) for n in rng.sample(range(POOL), rng.randint(1, 4))]
    return "POST", "/items", {"items": items}


def delete(rng: random.Random, _: str, __: int) -> Request:
    return "DELETE", f"/items/pool-{rng.randrange(POOL)}", None


def admin_read(rng: random.Random, _: str, __: int) -> Request:
    return "GET", rng.choice(("/stats", "/items?limit=20", "/users?limit=20", "/health")), None


RATINGS = (1.0, 2.0, 4.0, 5.0)
#: Kind of request, its share of the traffic, and how to make one.
MIX = (
    ("recommend-new", 0.25, new_context),
    ("recommend-repeat", 0.15, repeated_context),
    ("recommend-user", 0.10, user_only),
    ("recommend-filter", 0.05, filtered),
    ("feedback", 0.30, rating),
    ("upsert", 0.07, upsert),
    ("delete", 0.02, delete),
    ("read", 0.06, admin_read),
)
#: Deleting an item that was already deleted is a correct 404.
EXPECTED = {"delete": {204, 404}}


CATALOG = [json.loads(line) for line in TEST_CATALOG.read_text().splitlines() if line.strip()]
CATALOG_IDS = [item["item_id"] for item in CATALOG]


async def client_loop(url: str, seed: int, until: float, tally: Tally) -> None:
    rng = random.Random(seed)
    interval = CLIENTS / RATE
    serial = seed * 1_000_000
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        next_at = time.monotonic()
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            serial += 1
            kind, _, make = rng.choices(MIX, weights=[share for _, share, _ in MIX])[0]
            method, path, body = make(rng, f"soak-user-{rng.randrange(300)}", serial)
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
            except httpx.HTTPError as error:
                tally.failures.append(f"{kind} {path}: {error!r}")
                continue
            tally.latencies_ms.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
            tally.by_kind[kind] += 1
            if response.status_code not in EXPECTED.get(kind, {200}):
                tally.failures.append(f"{kind} {path}: {response.status_code} {response.text}")
            elif kind == "feedback":
                tally.feedback_acknowledged += 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def sample_rss(pid: int, until: float, samples: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - started, rss_mb(pid)))
        await asyncio.sleep(SAMPLE_SECONDS)


async def soak(served: Served) -> tuple[Tally, list[tuple[float, float]]]:
    tally = Tally()
    samples: list[tuple[float, float]] = []
    until = time.monotonic() + SOAK_SECONDS
    await asyncio.gather(
        sample_rss(served.process.pid, until, samples),
        *(client_loop(served.url, seed, until, tally) for seed in range(1, CLIENTS + 1)),
    )
    return tally, samples


def load_catalog(url: str) -> None:
    items = CATALOG + [pool_item(n, 0) for n in range(POOL)]
    response = httpx.post(f"{url}/items", json={"items": items}, timeout=120)
    assert response.status_code == httpx.codes.OK, response.text


@dataclass
class Run:
    """One soak: what the clients saw, the server's memory, what it stored."""

    tally: Tally
    samples: list[tuple[float, float]]
    stored: int
    alive: bool
    output: str

    @property
    def growth_mb(self) -> float:
        """Median RSS of the last third of the judged window minus that of its first third."""
        rss = np.array([mb for t, mb in self.samples if t >= WARM_UP_SHARE * SOAK_SECONDS])
        third = max(1, len(rss) // 3)
        return float(np.median(rss[-third:]) - np.median(rss[:third]))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("soak")
    caches = {f"APPLIANCE_CACHE__{name}": CACHE_ENTRIES for name in ("CONTEXT_VECTORS", "RESULTS")}
    with serving(folder / "data", folder / "server.log", caches) as served:
        load_catalog(served.url)
        tally, samples = asyncio.run(soak(served))
        stored = httpx.get(f"{served.url}/stats", timeout=30).json()["feedback_events"]
        alive = served.process.poll() is None
    result = Run(tally, samples, stored, alive, served.output())
    total = sum(tally.by_kind.values())
    print(  # noqa: T201 - the figures the soak exists to produce
        f"\nsoak {SOAK_SECONDS:.0f} s: {total} requests ({total / SOAK_SECONDS:.1f}/s), "
        f"{len(tally.failures)} failures; "
        + ", ".join(
            f"{kind} {n} p50 {statistics.median(tally.latencies_ms[kind]):.0f} ms "
            f"p95 {np.percentile(tally.latencies_ms[kind], 95):.0f} ms"
            for kind, n in sorted(tally.by_kind.items())
        )
        + f"; RSS start {samples[0][1]:.0f} MB, end {samples[-1][1]:.0f} MB, "
        f"max {max(mb for _, mb in samples):.0f} MB, judged-window growth "
        f"{result.growth_mb:+.1f} MB; feedback acknowledged {tally.feedback_acknowledged}, "
        f"stored {stored}; RSS MB by time: "
        + " ".join(f"{t:.0f}s:{mb:.0f}" for t, mb in samples[:: max(1, len(samples) // 12)])
    )
    return result


def test_mixed_traffic_for_minutes_without_errors_or_loss(run: Run) -> None:
    assert run.alive, run.output
    assert run.tally.failures == [], run.tally.failures[:10]
    # The clients kept the planned pace: the server was never the bottleneck.
    assert sum(run.tally.by_kind.values()) >= 0.9 * RATE * SOAK_SECONDS
    assert run.stored == run.tally.feedback_acknowledged
    assert "Traceback" not in run.output


def test_memory_stays_flat_once_warm(run: Run) -> None:
    assert run.growth_mb <= RSS_SLACK_MB, run.samples
