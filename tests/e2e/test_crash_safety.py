"""Crash safety of the production command: `appliance serve` is killed in the middle of a stream
of feedback events or of catalog batches, restarted on the same data directory, and everything it
acknowledged must still be there, with the vector index agreeing with DuckDB.

SIGKILL gives the process no chance to clean up: an acknowledged write must already be durable.
SIGTERM is a graceful stop: requests in flight finish, so nothing a client was told is stored may
be missing, and no accepted request may fail.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODELS_DIR, TEST_CATALOG
from tests.e2e.test_cli_and_server import free_port, wait_until_ready

APPLIANCE = [sys.executable, "-m", "appliance"]


@dataclass
class Served:
    """A running `appliance serve` process."""

    process: subprocess.Popen[str]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(
    data_dir: Path, log: Path, settings: Mapping[str, str] | None = None
) -> Iterator[Served]:
    """Start `appliance serve` on ``data_dir`` (``settings``: more environment variables);
    whoever uses it decides how it ends."""
    port = free_port()
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_MODELS_DIR": str(MODELS_DIR),
        **(settings or {}),
    }
    with log.open("w") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            [*APPLIANCE, "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_ready(process, served.url, served.output)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


@dataclass
class Stream:
    """Requests sent one after another from a thread until the server goes away."""

    acknowledged: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Answers that were neither a success nor the server being gone."""
    started: threading.Event = field(default_factory=threading.Event)


def stream(url: str, path: str, bodies: Iterator[tuple[Any, dict[str, Any]]], out: Stream) -> None:
    """POST each body; record the key of every acknowledged one; stop when the server is gone."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for key, body in bodies:
            try:
                response = client.post(path, json=body)
            except httpx.TransportError:
                return  # killed or stopped: this request was never acknowledged
            if response.status_code != httpx.codes.OK:
                out.failures.append(f"{response.status_code}: {response.text}")
                return
            out.acknowledged.append(key)
            out.started.set()


def feedback_bodies() -> Iterator[tuple[Any, dict[str, Any]]]:
    items = [f"{prefix}-{n}" for prefix in ("tt", "sp", "ck") for n in range(1, 7)]
    for n in range(100_000):
        user, item = f"user-{n % 7}", items[n % len(items)]
        yield (user, item, n), {"user_id": user, "item_id": item, "rating": float(n % 6)}


def item_bodies() -> Iterator[tuple[Any, dict[str, Any]]]:
    for batch in range(10_000):
        items = [
            {
                "item_id": f"gen-{batch}-{n}",
                "title": f"Generated item {batch}-{n}",
                "text": f"A generated product, batch {batch}, number {n}, for crash testing.",
                "metadata": {"batch": batch},
            }
            for n in range(16)
        ]
        yield [i["item_id"] for i in items], {"items": items}


def all_events(url: str) -> list[tuple[str, str, float]]:
    events: list[tuple[str, str, float]] = []
    after = 0
    while True:
        page = httpx.get(f"{url}/feedback", params={"after": after, "limit": 1000}).json()
        events += [(e["user_id"], e["item_id"], e["rating"]) for e in page["events"]]
        if not page["events"]:
            return events
        after = page["last_event_id"]


def run_until_signal(
    data_dir: Path,
    log: Path,
    path: str,
    bodies: Iterator[tuple[Any, dict[str, Any]]],
    *,
    sig: signal.Signals,
    after_seconds: float,
) -> tuple[Stream, Served]:
    """Stream requests into a fresh server and send it ``sig`` after ``after_seconds``."""
    out = Stream()
    with serving(data_dir, log) as served:
        if path == "/feedback":
            catalog = [line for line in TEST_CATALOG.read_text().splitlines() if line]
            response = httpx.post(
                f"{served.url}/items",
                content='{"items": [' + ",".join(catalog) + "]}",
                headers={"content-type": "application/json"},
                timeout=120,
            )
            assert response.status_code == httpx.codes.OK, response.text
        sender = threading.Thread(target=stream, args=(served.url, path, bodies, out))
        sender.start()
        assert out.started.wait(60), served.output()
        time.sleep(after_seconds)
        served.process.send_signal(sig)
        sender.join(timeout=120)
        served.process.wait(timeout=60)
    return out, served


SEEDS = (11, 23, 47)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_during_feedback_loses_no_acknowledged_event(tmp_path: Path, seed: int) -> None:
    pause = random.Random(seed).uniform(0.2, 2.0)
    out, _ = run_until_signal(
        tmp_path / "data",
        tmp_path / "first.log",
        "/feedback",
        feedback_bodies(),
        sig=signal.SIGKILL,
        after_seconds=pause,
    )
    assert out.failures == []
    assert out.acknowledged

    with serving(tmp_path / "data", tmp_path / "second.log") as again:
        stored = all_events(again.url)
        counts = {
            user: httpx.get(f"{again.url}/users/{user}").json()["feedback_count"]
            for user in {u for u, _, _ in stored}
        }
        rebuilt = httpx.post(f"{again.url}/admin/users/rebuild", timeout=60).json()
    expected = [(user, item) for user, item, _ in out.acknowledged]
    # Every acknowledged event, in order; at most the one request in flight may also be there.
    assert [(u, i) for u, i, _ in stored[: len(expected)]] == expected
    assert len(stored) - len(expected) in {0, 1}
    # The preferences hold every stored event, also those whose preference the kill lost.
    assert counts == collections.Counter(u for u, _, _ in stored)
    assert rebuilt["max_deviation"] < 1e-6


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_sigkill_during_ingest_loses_no_acknowledged_item(tmp_path: Path, seed: int) -> None:
    pause = random.Random(seed).uniform(0.5, 3.0)
    out, _ = run_until_signal(
        tmp_path / "data",
        tmp_path / "first.log",
        "/items",
        item_bodies(),
        sig=signal.SIGKILL,
        after_seconds=pause,
    )
    assert out.failures == []
    acknowledged = {item for batch in out.acknowledged for item in batch}
    assert acknowledged

    with serving(tmp_path / "data", tmp_path / "second.log") as again:
        stats = httpx.get(f"{again.url}/stats").json()
        for item_id in sorted(acknowledged):
            assert httpx.get(f"{again.url}/items/{item_id}").status_code == httpx.codes.OK
        # A batch is one transaction: what was not acknowledged is all there or not at all.
        assert stats["items"] - len(acknowledged) in {0, 16}
        # Start-up reconciles the index with the store.
        assert stats["index_points"] == stats["items"]


def test_sigterm_stops_gracefully_and_loses_nothing(tmp_path: Path) -> None:
    out, served = run_until_signal(
        tmp_path / "data",
        tmp_path / "first.log",
        "/feedback",
        feedback_bodies(),
        sig=signal.SIGTERM,
        after_seconds=1.0,
    )
    output = served.output()
    assert served.process.returncode in {0, -signal.SIGTERM}, output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert out.failures == []

    with serving(tmp_path / "data", tmp_path / "second.log") as again:
        stored = all_events(again.url)
    # Nothing in flight is dropped on a graceful stop: stored is exactly what was acknowledged.
    assert [(u, i) for u, i, _ in stored] == [(u, i) for u, i, _ in out.acknowledged]
