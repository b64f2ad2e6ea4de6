"""A bulk load builds its search graphs a bounded segment at a time, as it is written.

Building one graph over everything at the end of a load takes longer and more memory than
building several smaller ones as it goes; searches see every segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
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
