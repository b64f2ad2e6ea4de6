"""When the catalog optimizes its index: only after a pause in the writes.

Optimizing holds the index's write lock while it builds search graphs, so starting it between
the batches of a bulk import makes the next batch wait for it (at 100K items on a busy machine,
for longer than a request may take). Each upsert spends most of its time encoding before it
writes; that time must count as writing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.backends.embedders.hashing import HashingEmbedder
from appliance.backends.embedders.protocol import Vectors
from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.backends.indexes.qdrant_server import QdrantServerIndex
from appliance.backends.registry import Backends, build_store
from appliance.domain import Item
from appliance.services import catalog as catalog_module
from appliance.services.runtime import open_runtime
from tests.conftest import make_settings
from tests.qdrant_server import stand_in_server

QUIET = 0.05
ENCODING = 0.2  # four times the quiet period


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowEmbedder(HashingEmbedder):
    """The hashing embedder, taking longer per batch than the quiet period."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        time.sleep(ENCODING)
        return super().embed(texts)


class WatchedIndex(QdrantEdgeIndex):
    """The real index, noting when it is written and optimized."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, dimension=384)
        self.events: list[tuple[str, float]] = []

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        self.events.append(("upsert", time.monotonic()))
        super().upsert(entries)

    def optimize(self) -> None:
        self.events.append(("optimize", time.monotonic()))
        super().optimize()


@pytest.mark.anyio
async def test_a_bulk_import_is_optimized_once_after_its_last_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "OPTIMIZE_DELAY", QUIET)
    settings = make_settings(tmp_path / "data", embedder={"kind": "hashing"})
    index = WatchedIndex(tmp_path / "index")
    try:
        async with open_runtime(
            settings, Backends(embedder=SlowEmbedder(), index=index)
        ) as runtime:
            index.events.clear()  # start-up's own optimize
            for batch in range(5):
                items = [
                    Item(f"b{batch}-{n}", f"item {n} of batch {batch}", "text") for n in range(20)
                ]
                await runtime.catalog.upsert(items)
            last_write_done = time.monotonic()
            assert runtime.catalog.optimization_pending
            await asyncio.sleep(QUIET * 6)
            assert not runtime.catalog.optimization_pending

            kinds = [kind for kind, _ in index.events]
            assert kinds == ["upsert"] * 5 + ["optimize"], kinds
            assert index.events[-1][1] >= last_write_done + QUIET * 0.9
            assert index.count() == 100

            # A pause after a write that changed nothing optimizes nothing more.
            await runtime.catalog.upsert([Item("b0-0", "item 0 of batch 0", "text")])
            await asyncio.sleep(QUIET * 6)
            assert [kind for kind, _ in index.events].count("optimize") == 1
    finally:
        index.close()


@pytest.mark.anyio
async def test_a_failed_optimisation_is_logged_and_tried_again_after_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(catalog_module, "OPTIMIZE_DELAY", QUIET)
    settings = make_settings(tmp_path / "data", embedder={"kind": "hashing"})
    embedder = HashingEmbedder()
    server = stand_in_server(tmp_path / "qdrant")
    index = QdrantServerIndex(server, "items", dimension=embedder.dimension, location="qdrant")
    try:
        async with open_runtime(settings, Backends(embedder=embedder, index=index)) as runtime:
            await runtime.catalog.upsert([Item("a", "first item", "text")])
            # The server loses the collection before the pause after the write is over.
            server.delete_collection("items")
            await asyncio.sleep(QUIET * 6)
            failed = [r for r in caplog.records if "index optimisation failed" in r.message]
            assert len(failed) == 1
            assert "could not describe the collection" in failed[0].message
            assert runtime.catalog.optimization_pending

            index.clear()  # the collection back, empty
            await runtime.catalog.upsert([Item("b", "second item", "text")])
            await asyncio.sleep(QUIET * 6)
            assert not runtime.catalog.optimization_pending
            assert len([r for r in caplog.records if "optimisation failed" in r.message]) == 1
    finally:
        index.close()


#: Enough points for the engine to build a search graph: below 10 MB of vectors (13,333 of 384
#: float16 dimensions) it scans them.
UNINDEXED = 14_000


@pytest.mark.slow
@pytest.mark.anyio
async def test_start_up_builds_the_graphs_an_interrupted_optimize_left(tmp_path: Path) -> None:
    # What a process killed before its optimize leaves: the store and the index agree, but the
    # index holds the dense vectors in a plain segment, searched exhaustively.
    settings = make_settings(tmp_path / "data", embedder={"kind": "hashing"})
    embedder = HashingEmbedder()
    items = [Item(f"item-{n}", f"item {n}", f"text of item {n}") for n in range(UNINDEXED)]
    folder = settings.data_dir / "index" / f"{embedder.name}-{embedder.dimension}"
    store = build_store(settings)
    index = QdrantEdgeIndex(folder, dimension=embedder.dimension)
    try:
        stored = store.put_items(items)
        vectors = embedder.embed([i.embedding_text for i in items])
        index.upsert(
            [
                IndexEntry(s.item.item_id, vectors[n], s.content_hash, s.seq, text=s.item.text)
                for n, s in enumerate(stored)
            ]
        )
        # Keyword vectors are indexed as they are written; dense ones only by an optimize.
        assert index.indexed_vectors() == UNINDEXED
    finally:
        index.close()
        store.close()

    index = QdrantEdgeIndex(folder, dimension=embedder.dimension)
    try:
        async with open_runtime(settings, Backends(embedder=embedder, index=index)):
            assert index.indexed_vectors() == 2 * UNINDEXED
    finally:
        index.close()
