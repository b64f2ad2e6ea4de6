"""Candidate sources that read the request's words: keywords, phrases, and the items it names."""

from __future__ import annotations

from functools import partial
from typing import Literal

import anyio.to_thread

from appliance.backends.indexes.protocol import VectorIndex
from appliance.domain import Hit, Selection
from appliance.services.sources import Plan, run_search


class KeywordSource:
    """Items whose text shares the request's words, ranked by BM25.

    Catches what an embedding blurs: a rare name, a product code, a word the model never saw.
    """

    name = "keyword"
    ranks_by_resemblance: Literal[True] = True

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search the index's keyword vectors; nothing without a context."""
        if not plan.context:
            return []
        return await run_search(
            self._index,
            partial(self._index.keyword_search, plan.context, plan.limit, plan.selection),
        )


class PhraseSource:
    """Items with a phrase near the request's embedding: their best phrase counts, not the whole.

    A request of a few words ("time travel") matches one clause or keyword of an item ("time
    machine") more closely than the item's whole text, where everything else it says dilutes
    the match; a request that names an item matches its title. The preference vector plays no
    part: the phrases answer the words.
    """

    name = "phrases"
    ranks_by_resemblance: Literal[True] = True

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search the index's phrase vectors; nothing without a context."""
        if plan.context_vector is None:
            return []
        return await run_search(
            self._index,
            partial(self._index.phrase_search, plan.context_vector, plan.limit, plan.selection),
        )


class NamedItemSource:
    """The nearest neighbours of the catalog items the request names ("like Billy Madison").

    Each hit's ``via`` is the named item it is nearest to. The named items themselves are left
    out: the user already knows them.
    """

    name = "named"
    ranks_by_resemblance: Literal[True] = True

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search around each named item's vector; nothing when the request names none."""
        if not plan.named:
            return []
        return await anyio.to_thread.run_sync(self._neighbours, plan)

    def _neighbours(self, plan: Plan) -> list[Hit]:
        vectors = self._index.vectors(plan.named)
        selection = Selection(
            conditions=plan.selection.conditions,
            exclude=plan.selection.exclude | frozenset(plan.named),
            only=plan.selection.only,
        )
        best: dict[str, Hit] = {}
        for named in plan.named:
            if named not in vectors:  # deleted since it was recognised
                continue
            for hit in self._index.search(vectors[named], plan.limit, selection):
                if hit.item_id not in best or hit.score > best[hit.item_id].score:
                    best[hit.item_id] = Hit(hit.item_id, hit.score, via=named)
        ranked = sorted(best.values(), key=lambda h: (-h.score, h.item_id))
        return ranked[: plan.limit]
