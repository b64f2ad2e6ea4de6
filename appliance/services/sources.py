"""Candidate sources: each proposes items for a request, with scores of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal, Protocol, runtime_checkable

import anyio.to_thread

from appliance.backends.indexes.protocol import Vector, VectorIndex
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.domain import HistoryEntry, Hit, Selection
from appliance.services.collaborative import CollaborativeModel

#: How many of the most popular items are kept ranked; cold-start requests beyond them (or
#: filtered away from them) fall back to the newest items.
POPULAR_POOL = 1000
#: Ranked sources check this many times the items they need against the filters first, then
#: that many times more at each further step while filters reject too many.
_POOL_FACTOR = 4
#: Most items the collaborative and neighbourhood sources rank for one request, however narrow
#: the filter.
_MAX_POOL = 4096


@dataclass(frozen=True, slots=True)
class Plan:
    """What every source knows about a request."""

    user_id: str
    context: str
    query_vector: Vector | None
    """The context's embedding blended with the user's preference vector (see ``vector``)."""
    selection: Selection
    limit: int
    history: tuple[HistoryEntry, ...] = ()
    """The user's standing with each item they gave feedback on."""
    named: tuple[str, ...] = ()
    """Catalog items the context names ("something like ..."), in order of mention: positive
    examples."""
    context_vector: Vector | None = None
    """The context's own embedding, without the user's preferences."""
    like: tuple[str, ...] = ()
    """Items the request names by id (``GET /items/{item_id}/similar``'s item, a request's
    ``like_items``), which ``named`` holds too."""


class CandidateSource(Protocol):
    """Proposes up to ``plan.limit`` items that ``plan.selection`` admits, best first."""

    name: str

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return hits with this source's own scores (higher is better); may be empty."""
        ...


@runtime_checkable
class ResemblanceSource(CandidateSource, Protocol):
    """A source that ranks by resemblance to a request's words: where its list is cut says little.

    Resemblance finds the items that fit the words, not which of them people want: BM25 over a
    request of a few words gives the same score to every item that uses them once in a text of
    the same length, and a sentence embedding's nearest hundred differ by hundredths of a
    cosine. For a request with words, a prior ranks ``recommend.prior_depth`` times as many of
    this source's matches as the source proposes itself, and so chooses among them by its own
    evidence.
    """

    ranks_by_resemblance: Literal[True]


@runtime_checkable
class PriorSource(CandidateSource, Protocol):
    """A source that can also rank the candidates the other sources proposed (a prior)."""

    async def rank_pool(self, pool: Iterable[str]) -> list[Hit]:
        """Return the items of ``pool`` this source has a score for, best first."""
        ...


class VectorSource:
    """Nearest neighbours of the blended context and preference vector."""

    name = "vector"
    ranks_by_resemblance: Literal[True] = True

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search the index; nothing when the request has neither context nor preferences."""
        if plan.query_vector is None:
            return []
        return await run_search(
            self._index, partial(self._index.search, plan.query_vector, plan.limit, plan.selection)
        )


class PopularitySource:
    """Items with the most positive feedback, long-run and recent: a prior for every request.

    As a prior (:meth:`rank_pool`) it ranks the candidates the other sources proposed by their
    popularity, so that fusion favours, among the items that match a request, the ones many
    people liked. Asked alone, or when no other source has anything (cold start), it proposes
    the most popular items; a cold-start request (no context, no preferences) has no other
    signal, so that answer is topped up with the newest items when too few items have
    feedback.
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
        self._ranking: list[tuple[str, float]] = []
        self._scores: dict[str, float] = {}
        # None: to be computed at the next request, whatever ``refresh_seconds`` (even infinite).
        self._computed_at: float | None = None

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return popular admitted items (topped up with the newest ones at cold start)."""
        ranking = await self._current_ranking()
        hits: list[Hit] = []
        if ranking:
            top = ranking[0][1]
            admitted = await first_admitted(self._index, ranking, plan.selection, plan.limit)
            hits = [Hit(i, score / top) for i, score in admitted]
        if len(hits) < plan.limit and plan.query_vector is None:
            taken = frozenset(h.item_id for h in hits)
            newest = await anyio.to_thread.run_sync(
                self._index.newest,
                plan.limit - len(hits),
                replace(plan.selection, exclude=plan.selection.exclude | taken),
            )
            hits.extend(Hit(i, 0.0) for i in newest)
        return hits

    async def rank_pool(self, pool: Iterable[str]) -> list[Hit]:
        """Return the items of ``pool`` that have positive feedback, most popular first.

        The pool is what the other sources proposed for the request, already admitted by its
        selection. Scores are relative to the most popular item of the whole catalog, as in
        :meth:`candidates`.
        """
        ranking = await self._current_ranking()
        if not ranking:
            return []
        top = ranking[0][1]
        scored = [(i, s) for i in pool if (s := self._scores.get(i, 0.0)) > 0.0]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return [Hit(i, s / top) for i, s in scored]

    def forget(self) -> None:
        """Drop the cached ranking, e.g. after the feedback was replaced by a restore."""
        self._computed_at = None

    async def _current_ranking(self) -> list[tuple[str, float]]:
        """Return (item id, score) pairs of the most popular items, most popular first."""
        if (
            self._computed_at is None
            or time.monotonic() - self._computed_at > self._refresh_seconds
        ):
            ranking = await anyio.to_thread.run_sync(self._store.popularity, self._half_life_days)
            self._scores = dict(ranking)
            self._ranking = ranking[:POPULAR_POOL]
            self._computed_at = time.monotonic()
        return self._ranking


class CollaborativeSource:
    """Items that go with the user's history, or with the items the request names.

    Learnt from everyone's feedback: people who engaged with those items engaged with these.
    Every item of the history counts, whatever the user thought of it: the model is learnt
    from who engaged with what, and having watched, read or bought something says what else
    one will (measured on the leave-last-out task: HR@10 0.124 from the whole history against
    0.112 from the liked items alone), and alike however old: weighting the recent ones more
    (halving an item's weight every 3 to 100 newer items, or every 1 to 180 days before the
    newest) or keeping only the latest 10 or 50 gave 0.097-0.120. Each hit's ``via`` is the
    liked item that contributed most to it, or the history item that did when no liked item
    contributed.

    Items named by id (``plan.like``: more like one item, or a request's ``like_items``) get
    their nearest items by co-occurrence, summed over them, instead of their rows of EASE's
    weights, which are learnt to score a whole history, each given all the other items. On the
    evaluation's "more like this" task (more like the movie a user liked last; did the next
    one they liked come up), HR@10 of this source alone 0.093 against 0.054, of the whole
    answer 0.097 against 0.058, level with item-kNN (0.100); with the user's latest 3 and 5
    liked movies as ``like_items``, this source alone 0.125 and 0.130 against 0.117 and 0.102.
    Requests that name items in words keep EASE's rows: with co-occurrence for them too, the
    ReDial requests' R@10 fell from 0.106 to 0.084.
    """

    name = "collaborative"

    def __init__(self, model: CollaborativeModel, index: VectorIndex) -> None:
        self._model = model
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return the model's strongest admitted neighbours of the plan's items."""
        model = self._model.current
        if model is None:
            return []
        if plan.like and model.cooccurrence is not None:
            model = model.cooccurrence
        # Items the request names say what is wanted now; otherwise the history does.
        if plan.named:
            profile, liked = dict.fromkeys(plan.named, 1.0), frozenset(plan.named)
        else:
            profile = dict.fromkeys((h.item_id for h in plan.history), 1.0)
            liked = frozenset(h.item_id for h in plan.history if h.weight > 0)
        if not profile:
            return []
        admitted = await first_admitted_of(
            self._index, partial(model.neighbours, profile), plan.selection, plan.limit
        )
        via = await anyio.to_thread.run_sync(
            model.strongest_sources, profile, [i for i, _ in admitted], liked
        )
        return [Hit(i, score, via.get(i)) for i, score in admitted]


class NeighbourhoodSource:
    """Items whose company resembles the request's words (see ``services.neighbourhood``).

    Each item the collaborative model relates is searched by its own vector blended with its
    strongest neighbours' vectors: the words of a request find the items chosen by the people
    who chose items that fit them, even when an item's own text says little. Each hit's ``via``
    is its neighbour nearest the words. The user's preferences play no part: the collaborative
    and history sources follow them.
    """

    name = "neighbourhood"
    ranks_by_resemblance: Literal[True] = True

    def __init__(self, model: CollaborativeModel, index: VectorIndex) -> None:
        self._model = model
        self._index = index

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Search the blended vectors; nothing without words, with conditions, or before a model.

        The blended vectors are not in the index, so a metadata condition would have to be
        checked against the index for each match, a few hundred at a time: with a category
        filter admitting 5% of 100,000 items, that took 25-30 ms of CPU a request against 6
        for the whole request without this source (the benchmark's filtered scenario).
        """
        model = self._model.current
        hood = None if model is None else model.neighbourhood
        words = plan.context_vector
        if hood is None or words is None or plan.selection.conditions:
            return []
        admitted = await first_admitted_of(
            self._index, partial(hood.search, words), plan.selection, plan.limit
        )
        via = hood.closest_neighbours([i for i, _ in admitted], words)
        return [Hit(i, score, via.get(i)) for i, score in admitted]


class HistorySource:
    """Items near any of the user's recently liked items and away from the disliked ones.

    Complements the vector source, which searches near the average of the user's taste
    (blended with the context): an item close to one liked item scores here even when the
    average lies elsewhere, and an item closer to a disliked item than to every liked one
    scores below all others. Each hit's ``via`` is the liked item it is closest to. Liked items
    the request names are left to the named source (measured on the ReDial requests: R@10 of
    the fused answer 0.054 when both searched around them, 0.067 when only the named source
    did).
    """

    name = "history"

    def __init__(self, index: VectorIndex, *, examples: int) -> None:
        self._index = index
        self._examples = examples

    async def candidates(self, plan: Plan) -> list[Hit]:
        """Return items recommended from the user's latest likes and dislikes."""
        latest = sorted(plan.history, key=lambda h: h.timestamp, reverse=True)
        # The named source already searches around the items the request names: searching
        # around them here too would count the same evidence twice in the fusion.
        named = frozenset(plan.named)
        liked = [h.item_id for h in latest if h.weight > 0 and h.item_id not in named]
        liked = liked[: self._examples]
        disliked = [h.item_id for h in latest if h.weight < 0][: self._examples]
        if not liked:
            return []
        return await anyio.to_thread.run_sync(
            self._index.recommend, liked, disliked, plan.limit, plan.selection
        )


async def run_search(index: VectorIndex, search: Callable[[], list[Hit]]) -> list[Hit]:
    """Run one of ``index``'s searches where it costs least (see ``searches_hold_interpreter``).

    Measured with the benchmark's unique requests at concurrency 32 (100K items), four runs of
    each, alternated: 219-276 req/s (median 252) with the searches in worker threads, 250-310
    (median 289) on the event loop.
    """
    if index.searches_hold_interpreter:
        return search()
    return await anyio.to_thread.run_sync(search)


async def first_admitted_of(
    index: VectorIndex,
    rank: Callable[[int], list[tuple[str, float]]],
    selection: Selection,
    limit: int,
) -> list[tuple[str, float]]:
    """Return the first ``limit`` items that ``selection`` admits of ``rank``'s ranking.

    ``rank(n)`` ranks the best ``n`` items, in a worker thread. A few times ``limit`` are
    ranked first; a narrow filter can reject most of them, so more are ranked while it does
    and there are more.
    """
    pool = limit * _POOL_FACTOR
    while True:
        ranked = await anyio.to_thread.run_sync(rank, pool)
        admitted = await first_admitted(index, ranked, selection, limit)
        if len(admitted) >= limit or len(ranked) < pool or pool >= _MAX_POOL:
            return admitted
        pool *= _POOL_FACTOR


async def first_admitted(
    index: VectorIndex,
    ranked: Sequence[tuple[str, float]],
    selection: Selection,
    limit: int,
) -> list[tuple[str, float]]:
    """Return the first ``limit`` of ``ranked`` that ``selection`` admits.

    Metadata conditions are the index's to check: it is asked about a few times ``limit``
    items at first, then about more while they reject too many, so a narrow filter still
    finds what is further down the list. Without conditions nothing needs asking (an item
    deleted meanwhile is left out when the recommendation service reads the items).
    """
    candidates = [pair for pair in ranked if pair[0] not in selection.exclude]
    if selection.only is not None:
        candidates = [pair for pair in candidates if pair[0] in selection.only]
    if not selection.conditions:
        return candidates[:limit]
    admitted: list[tuple[str, float]] = []
    start, size = 0, limit * _POOL_FACTOR
    while start < len(candidates) and len(admitted) < limit:
        chunk = candidates[start : start + size]
        found = set(
            await anyio.to_thread.run_sync(
                index.newest,
                len(chunk),
                replace(selection, only=frozenset(i for i, _ in chunk)),
            )
        )
        admitted.extend(pair for pair in chunk if pair[0] in found)
        start += size
        size *= _POOL_FACTOR
    return admitted[:limit]
