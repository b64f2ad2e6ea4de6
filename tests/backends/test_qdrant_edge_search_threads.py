"""The index reads its segments for a search with as many threads as it is configured for.

The engine's own default was eight threads whatever the cores (measured on a 2-core machine):
at concurrency their hand-offs cost more CPU than the parallel reads saved.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.cpus import usable_cpus
from appliance.domain import Selection

DIM = 8

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").exists(), reason="counts threads through /proc (Linux)"
)


def search_threads() -> set[str]:
    """The ids of this process's threads that belong to an index's search pool."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text()
        except FileNotFoundError:  # the thread ended while the others were listed
            continue
        if name.startswith("edge-search"):
            found.add(task.name)
    return found


def open_and_search(path: Path, threads: int, expected: int) -> set[str]:
    """Open the index with ``threads`` search threads, search it, and return its new threads.

    The pool's threads start on their own: on a busy machine the last of them can still be
    starting when a search returns, so ``expected`` of them are waited for (a few seconds at
    most) before they are counted.
    """
    before = search_threads()
    index = QdrantEdgeIndex(path, dimension=DIM, search_threads=threads)
    try:
        rng = np.random.default_rng(3)
        vectors = rng.standard_normal((20, DIM)).astype(np.float32)
        index.upsert(
            [IndexEntry(f"item-{n}", v, "hash", n, text="words") for n, v in enumerate(vectors)]
        )
        assert len(index.search(vectors[0], 5, Selection())) == 5
        waited_until = time.monotonic() + 5.0
        while len(started := search_threads() - before) < expected:
            if time.monotonic() > waited_until:
                break
            time.sleep(0.05)
        return started
    finally:
        index.close()


def test_a_search_uses_the_configured_threads_and_a_reopened_index_the_new_setting(
    tmp_path: Path,
) -> None:
    assert len(open_and_search(tmp_path / "index", 3, 3)) == 3
    # The engine keeps a shard's settings; the index sets this one at every opening.
    assert len(open_and_search(tmp_path / "index", 1, 1)) == 1


def test_zero_means_one_thread_per_cpu_the_process_may_use(tmp_path: Path) -> None:
    assert len(open_and_search(tmp_path / "index", 0, usable_cpus())) == usable_cpus()
