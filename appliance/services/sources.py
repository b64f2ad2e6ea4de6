"""Candidate sources: each proposes items for a request, with scores of its own."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import anyio.to_thread

from appliance.backends.indexes.protocol import Vector, VectorIndex
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.domain import Hit, Selection

#: How many of the most popular items are kept ranked; cold-start requests beyond them (or
#: filtered away from them) fall back to the newest items.
POPULAR_POOL = 1000


@dataclass(frozen=True, slots=True)
class Plan:
    """What every source knows about a request."""

    user_id: str
    context: str
    query_vector: Vector | None
    selection: Selection
    limit: int
    named: frozenset[str] = frozenset()
    """The sources the request named explicitly (empty when it left the choice to defaults)."""


class CandidateSource(Protocol):
    """Proposes up to ``plan.limit`` items that ``plan.selection`` admits, best first."""

    name: str

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return hits with this source's own scores (higher is better); may be empty."""
        ...


class VectorSource:
    """Nearest neighbours of the blended context and preference vector."""

    name = "vector"

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search the index; nothing when the request has neither context nor preferences."""
        if plan.query_vector is None:
            return []
        return await anyio.to_thread.run_sync(
            self._index.search, plan.query_vector, plan.limit, plan.selection
        )


class PopularitySource:
    """Items with the most recency-weighted positive feedback, then the newest items.

    Answers cold-start requests (no context, no preferences), for which it is the one signal
    there is, and requests that name it among their sources.
    """

    name = "popularity"

    def __init__(
        self,
        store: DuckDBStore,
        index: VectorIndex,
        *,
        half_life_days: float,
        refresh_seconds: float,
    ) -> None:
        self._store = store
        self._index = index
        self._half_life_days = half_life_days
        self._refresh_seconds = refresh_seconds
        self._ranking: dict[str, float] = {}
        self._computed_at = float("-inf")

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return popular admitted items, topped up with the newest ones."""
        if plan.query_vector is not None and self.name not in plan.named:
            return []
        ranking = await self._current_ranking()
        hits: list[Hit] = []
        if ranking:
            admitted = await anyio.to_thread.run_sync(
                self._index.newest,
                len(ranking),
                replace(plan.selection, only=frozenset(ranking)),
            )
            top = max(ranking.values())
            ordered = sorted(admitted, key=lambda i: (-ranking[i], i))[: plan.limit]
            hits = [Hit(i, ranking[i] / top) for i in ordered]
        if len(hits) < plan.limit:
            taken = frozenset(h.item_id for h in hits)
            newest = await anyio.to_thread.run_sync(
                self._index.newest,
                plan.limit - len(hits),
                replace(plan.selection, exclude=plan.selection.exclude | taken),
            )
            hits.extend(Hit(i, 0.0) for i in newest)
        return hits

    async def _current_ranking(self) -> dict[str, float]:
        if time.monotonic() - self._computed_at > self._refresh_seconds:
            rows = await anyio.to_thread.run_sync(
                self._store.popularity, datetime.now(UTC), self._half_life_days, POPULAR_POOL
            )
            self._ranking = dict(rows)
            self._computed_at = time.monotonic()
        return self._ranking
