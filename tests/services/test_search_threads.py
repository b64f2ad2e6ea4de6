"""Where the text and vector sources run the index's searches.

An index whose searches hold the interpreter lock (Qdrant Edge) is searched on the event loop: a
worker thread would only add hand-offs. Any other index (one that waits on the network, say) is
searched in a worker thread, so that the event loop goes on serving meanwhile.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.backends.embedders.hashing import HashingEmbedder
from appliance.backends.indexes.protocol import IndexEntry, Vector
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.domain import Hit, Selection
from appliance.services.sources import Plan, VectorSource
from appliance.services.text_sources import KeywordSource

TEXTS = ["a red kettle for tea", "a blue tent for hiking", "a cordless drill for screws"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ThreadNotingIndex(QdrantEdgeIndex):
    """The real index, noting the thread each search runs in."""

    def __init__(self, path: Path, *, holds_interpreter: bool) -> None:
        super().__init__(path, dimension=HashingEmbedder().dimension)
        self.searches_hold_interpreter = holds_interpreter
        self.threads: list[int] = []

    def search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        self.threads.append(threading.get_ident())
        return super().search(vector, limit, selection)

    def keyword_search(self, text: str, limit: int, selection: Selection) -> list[Hit]:
        self.threads.append(threading.get_ident())
        return super().keyword_search(text, limit, selection)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["event loop", "worker thread"])
async def test_searches_run_on_the_event_loop_only_when_they_hold_the_interpreter(
    tmp_path: Path, where: str
) -> None:
    holds_interpreter = where == "event loop"
    embedder = HashingEmbedder()
    index = ThreadNotingIndex(tmp_path / "index", holds_interpreter=holds_interpreter)
    vectors = embedder.embed(TEXTS)
    index.upsert(
        [
            IndexEntry(f"item-{n}", vectors[n], f"hash-{n}", n + 1, text=text)
            for n, text in enumerate(TEXTS)
        ]
    )
    context = "a kettle"
    plan = Plan(
        user_id="u",
        context=context,
        query_vector=embedder.embed([context])[0],
        selection=Selection(),
        limit=2,
    )

    nearest = await VectorSource(index).candidates(plan)
    matching = await KeywordSource(index).candidates(plan)

    assert nearest[0].item_id == "item-0"
    assert [h.item_id for h in matching] == ["item-0"]
    loop_thread = threading.get_ident()
    assert len(index.threads) == 2
    assert all((t == loop_thread) is holds_interpreter for t in index.threads)
    index.close()
