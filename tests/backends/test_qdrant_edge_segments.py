"""A bulk load builds its search graphs a bounded segment at a time, as it is written.

Building one graph over everything at the end of a load takes longer and more memory than
building several smaller ones as it goes; searches see every segment.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex, _SharedShard
from appliance.domain import Selection

DIM = 384
#: The smallest bound the settings allow: above the 10 MB of float16 vectors (13,333 points)
#: under which the engine scans a segment instead of building its graph.
SEGMENT = 14_000
BATCH = 1_000


def entries(vectors: np.ndarray, start: int) -> list[IndexEntry]:
    return [
        IndexEntry(f"item-{start + n}", vector, "hash", start + n, text="words")
        for n, vector in enumerate(vectors)
    ]


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    v = rng.standard_normal((3 * SEGMENT, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_bulk_load_builds_a_graph_for_each_segment_as_it_is_written(
    tmp_path: Path, vectors: np.ndarray
) -> None:
    index = QdrantEdgeIndex(tmp_path / "index", dimension=DIM, segment_items=SEGMENT)
    try:
        written = 3 * SEGMENT - BATCH
        for start in range(0, written, BATCH):
            index.upsert(entries(vectors[start : start + BATCH], start))

        # Without an optimize called: the first two segments' dense vectors have their graphs
        # (the keyword vectors are indexed as they are written), the last points wait.
        assert index.count() == written
        assert index.indexed_vectors() - written == 2 * SEGMENT
        assert index.segments() == 2 + 1  # and the one new points go to

        index.upsert(entries(vectors[written:], written))
        index.optimize()
        assert index.indexed_vectors() == 2 * 3 * SEGMENT
        # Three graphs of SEGMENT points; merging any two would exceed the bound.
        assert index.segments() == 3 + 1

        # Every segment is searched: each point is its own nearest neighbour.
        for n in (0, SEGMENT + 5, 3 * SEGMENT - 1):
            hits = index.search(vectors[n], 1, Selection())
            assert hits[0].item_id == f"item-{n}"
    finally:
        index.close()


def test_small_segments_merge_up_to_the_bound(tmp_path: Path, vectors: np.ndarray) -> None:
    bound = 5 * SEGMENT // 2
    index = QdrantEdgeIndex(tmp_path / "index", dimension=DIM, segment_items=bound)
    try:
        # Loads of SEGMENT points, each optimized on its own (as imports a while apart): the
        # second one's points join the first's graph (2 x SEGMENT <= bound), the third's
        # would take it past the bound and get a graph of their own.
        for load, expected in enumerate((1, 1, 2)):
            start = load * SEGMENT
            for batch in range(start, start + SEGMENT, BATCH):
                index.upsert(entries(vectors[batch : batch + BATCH], batch))
            index.optimize()
            assert index.segments() == expected + 1, load
        assert index.indexed_vectors() == 2 * 3 * SEGMENT
    finally:
        index.close()


def test_queries_keep_answering_while_a_load_builds_segments(
    tmp_path: Path, vectors: np.ndarray
) -> None:
    # Each segment built is followed by closing and opening the shard again (to let go of the
    # memory that building it took); queries running meanwhile wait for it rather than fail.
    index = QdrantEdgeIndex(tmp_path / "index", dimension=DIM, segment_items=SEGMENT)
    index.upsert(entries(vectors[:BATCH], 0))
    answers: list[str] = []
    failures: list[BaseException] = []
    loading = threading.Event()
    loading.set()

    def query() -> None:
        while loading.is_set():
            try:
                hits = index.search(vectors[0], 1, Selection())
                index.vectors(["item-1"])
                index.count()
                answers.append(hits[0].item_id)
            except BaseException as e:  # noqa: BLE001 - any failure is the test's finding
                failures.append(e)
                return

    reader = threading.Thread(target=query)
    reader.start()
    try:
        for start in range(BATCH, 3 * SEGMENT, BATCH):
            index.upsert(entries(vectors[start : start + BATCH], start))
        loading.clear()
        reader.join()
        assert not failures
        assert index.segments() == 3 + 1
        assert answers
        assert set(answers) == {"item-0"}
        assert index.count() == 3 * SEGMENT
    finally:
        loading.clear()
        reader.join()
        index.close()


def test_reopening_the_shard_waits_for_running_queries_and_holds_back_new_ones() -> None:
    old, new = object(), object()
    shared = _SharedShard(old)  # type: ignore[arg-type]
    swapped = threading.Event()
    querying, query_done = threading.Event(), threading.Event()
    seen_after: list[object] = []

    def long_query() -> None:
        with shared.use() as shard:
            assert shard is old
            querying.set()
            query_done.wait(10)

    def reopen(shard: object) -> object:
        assert shard is old
        swapped.set()
        return new

    def later_query() -> None:
        with shared.use() as shard:
            seen_after.append(shard)

    first = threading.Thread(target=long_query)
    first.start()
    querying.wait(10)
    swapper = threading.Thread(target=shared.swap, args=(reopen,))
    swapper.start()
    # While the first query runs, the shard is not replaced, and a query asked for meanwhile
    # waits for the new one rather than starting on the old.
    assert not swapped.wait(0.3)
    second = threading.Thread(target=later_query)
    second.start()
    second.join(0.3)
    assert not seen_after
    query_done.set()
    for thread in (first, swapper, second):
        thread.join(10)
    assert swapped.is_set()
    assert seen_after == [new]
