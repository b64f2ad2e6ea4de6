"""Recommendations: candidate sources, then fusion, then re-ranking, then the response."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import anyio.to_thread
import numpy as np

from appliance.backends.indexes.protocol import Vector, VectorIndex
from appliance.backends.stores.duckdb_store import DuckDBStore, StoredItem
from appliance.backends.stores.impressions import Impression, LoggedCandidate, SourceRank
from appliance.domain import (
    Candidate,
    FieldCondition,
    HistoryEntry,
    Hit,
    Item,
    PreferenceState,
    Selection,
)
from appliance.errors import ConflictError, InvalidInputError, NotFoundError
from appliance.services.diversity import maximal_marginal_relevance
from appliance.services.encoding import Encoder
from appliance.services.fusion import reciprocal_rank_fusion
from appliance.services.learning import FusionLearner, FusionMode, RequestKind
from appliance.services.preferences import preference_direction
from appliance.services.reranking import RerankStage, RerankStatus
from appliance.services.sources import CandidateSource, Plan, PriorSource, ResemblanceSource
from appliance.services.titles import TitleDictionary
from appliance.settings import RecommendSettings

#: At most this many named items are taken from one request, in order of mention.
MAX_NAMED = 8
#: The user of a request made for nobody in particular (``GET /items/{id}/similar`` without a
#: user): no history, and no impression logged, since no feedback can answer it.
ANONYMOUS = ""

# Stages that never started do not get a timing.
_SKIPPED = {
    RerankStatus.OFF,
    RerankStatus.NOT_CONFIGURED,
    RerankStatus.NO_CONTEXT,
    RerankStatus.BUSY,
}


@dataclass(frozen=True, slots=True)
class RecommendationQuery:
    """A recommendation request in the service's terms."""

    user_id: str
    context: str = ""
    top_k: int = 5
    conditions: tuple[FieldCondition, ...] = ()
    exclude_seen: bool = True
    rerank: bool | None = None
    """Run the re-rank stage; ``None`` runs it when a re-ranker is configured."""
    sources: frozenset[str] | None = None
    """The candidate sources to ask, by name; ``None`` asks every one."""
    fusion: FusionMode | None = None
    """How to fuse the sources' lists; ``None``: learned fusion once learned, else plain RRF."""
    diversity: float = 0.0
    """Weight of dissimilarity against relevance in maximal marginal relevance; 0 is off."""
    prior: bool = True
    """Let a prior source (popularity) rank the other sources' candidates rather than propose
    its own list."""
    like_items: tuple[str, ...] = ()
    """Items the answer should go with (a basket, what the user is looking at; more like one
    item), named by id: they count as items the context names (and no other item of the same
    title), and without a context their titles are its words."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item."""

    item: Item
    score: float
    sources: dict[str, float]
    via: dict[str, str] = field(default_factory=dict)
    """Per source that found the item through another item, that item's id."""
    fused_score: float = 0.0
    """The fusion score that placed the item among the candidates."""
    ranks: dict[str, int] = field(default_factory=dict)
    """Per source that proposed the item, its rank there."""


@dataclass(slots=True)
class RecommendationResult:
    """A whole answer, with what the pipeline did to produce it."""

    request_id: str
    user_id: str
    recommendations: list[Recommendation]
    strategy: str
    """What the query was built from: context, context+preference, preference or popularity."""
    reranked: bool
    rerank_status: RerankStatus
    timestamp: datetime
    timings_ms: dict[str, float] = field(default_factory=dict)
    fusion: FusionMode = FusionMode.RRF
    fusion_weights: dict[str, float] | None = None
    """The per-source weights of learned fusion; ``None`` for plain RRF."""
    diversity: float = 0.0
    prior: bool = False
    """Whether a prior source ranked the other sources' candidates (see
    ``RecommendationQuery.prior``)."""
    top_k: int = 0
    """The number of items asked for."""
    has_context: bool = False
    """Whether the request had words (a context)."""
    names_items: bool = False
    """Whether those words named catalog items."""
    candidates: tuple[LoggedCandidate, ...] = ()
    """Every fused candidate in the final order, shown or not, as the impression log keeps it."""
    reused_from: str | None = None
    """For an answer reused from the result cache: the request id of the answer computed."""

    def impression(self) -> Impression:
        """Describe this answer for the impression log, under its own request id and time."""
        return Impression(
            request_id=self.request_id,
            user_id=self.user_id,
            created_at=self.timestamp,
            strategy=self.strategy,
            has_context=self.has_context,
            fusion=self.fusion,
            top_k=self.top_k,
            candidates=self.candidates,
            candidates_of=self.reused_from,
            names_items=self.names_items,
        )


class RecommendationService:
    """Answers recommendation requests."""

    def __init__(
        self,
        store: DuckDBStore,
        encoder: Encoder,
        sources: Sequence[CandidateSource],
        rerank: RerankStage,
        settings: RecommendSettings,
        *,
        titles: TitleDictionary | None = None,
        index: VectorIndex | None = None,
        learner: FusionLearner | None = None,
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._sources = list(sources)
        self._rerank = rerank
        self._settings = settings
        self._titles = titles if titles is not None else TitleDictionary()
        self._index = index
        self._learner = learner
        # Decided once: a check against a runtime protocol is slow enough to show per request.
        self._priors = frozenset(s for s in self._sources if isinstance(s, PriorSource))
        self._resembling = frozenset(s for s in self._sources if isinstance(s, ResemblanceSource))
        # What each source proposes for a first page, however many results are asked for.
        self._first_page_depth = math.ceil(settings.first_page * settings.candidate_factor)

    @property
    def source_names(self) -> list[str]:
        """The candidate sources a query may name, in the order they are asked."""
        return [s.name for s in self._sources]

    def with_rerank(self, rerank: RerankStage) -> RecommendationService:
        """Return the same pipeline with another re-rank stage (to compare re-rankers)."""
        return RecommendationService(
            self._store,
            self._encoder,
            self._sources,
            rerank,
            self._settings,
            titles=self._titles,
            index=self._index,
            learner=self._learner,
        )

    async def recommend(self, query: RecommendationQuery) -> RecommendationResult:
        """Recommend ``top_k`` items for a user and an optional context.

        Raises:
            ConflictError: The catalog is empty.
            InvalidInputError: An unknown source is named, or diversity is asked for from an
                appliance without item vectors.
            NotFoundError: One of ``query.like_items`` is not in the catalog.

        """
        sources = self._chosen_sources(query.sources)
        if query.diversity > 0 and self._index is None:
            raise InvalidInputError("diversity needs the items' vectors, which this pipeline lacks")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        words = query.context.strip()
        if not query.like_items:
            context = words
            (state, history), context_vector, named = await asyncio.gather(
                self._user(query.user_id), self._encode(context), self._named(context)
            )
        else:
            # As a request naming the items in words: the named source searches near the items'
            # own vectors, the others match the words, their titles unless the request has
            # words of its own (the items' vectors for the words too would have the vector
            # source repeat the named one's list). An item is named by its id, not its title,
            # which other items may share.
            (state, history), titles = await asyncio.gather(
                self._user(query.user_id), self._titles_of(query.like_items)
            )
            context = words or ", ".join(titles)
            context_vector, in_words = await asyncio.gather(
                self._encode(context), self._named(words)
            )
            named = tuple(dict.fromkeys((*query.like_items, *in_words)))[:MAX_NAMED]
        seen = frozenset(h.item_id for h in history) if query.exclude_seen else frozenset()
        preference = preference_direction(state)
        vector, strategy = self._query_vector(context_vector, preference)
        # Embedding the context and reading the user's state run concurrently: one stage.
        timings["query"] = _ms_since(started)

        mark = time.perf_counter()
        retrieved = math.ceil(query.top_k * self._settings.candidate_factor)
        plan = Plan(
            user_id=query.user_id,
            context=context,
            query_vector=vector,
            context_vector=context_vector,
            # Items the request names are known to the user: positive examples, not answers.
            selection=Selection(conditions=query.conditions, exclude=seen | set(named)),
            limit=max(retrieved, self._first_page_depth),
            history=tuple(history),
            named=named,
            like=query.like_items,
        )
        heads, ranked, prior = await self._candidates(sources, plan, prior=query.prior)
        fusion, weights = (
            (FusionMode.RRF, None)
            if self._learner is None
            else self._learner.choose(
                query.fusion, RequestKind.of(has_context=bool(context), names_items=bool(named))
            )
        )
        candidates = _fuse(sources, heads, ranked, weights, self._settings.first_page)
        timings["retrieve"] = _ms_since(mark)

        if query.diversity > 0 and self._index is not None:
            mark = time.perf_counter()
            vectors = await anyio.to_thread.run_sync(
                self._index.vectors, [c.item_id for c in candidates]
            )
            candidates = maximal_marginal_relevance(candidates, vectors, query.diversity)
            timings["diversify"] = _ms_since(mark)

        mark = time.perf_counter()
        wanted = max(
            query.top_k,
            self._rerank.candidates_needed(context, requested=query.rerank, retrieved=retrieved),
        )
        candidates, items = await self._present(candidates, wanted)
        if not candidates:
            await self._fail_if_catalog_empty()
        candidates, rerank_status = await self._rerank.run(
            context,
            candidates,
            {k: v.item for k, v in items.items()},
            requested=query.rerank,
            retrieved=retrieved,
        )
        if rerank_status not in _SKIPPED:
            timings["rerank"] = _ms_since(mark)
        timings["total"] = _ms_since(started)
        return RecommendationResult(
            request_id=uuid.uuid4().hex,
            user_id=query.user_id,
            recommendations=[
                Recommendation(items[c.item_id].item, c.score, c.sources, c.via, c.fused, c.ranks)
                for c in candidates[: query.top_k]
            ],
            strategy=strategy,
            reranked=rerank_status is RerankStatus.RAN,
            rerank_status=rerank_status,
            timestamp=datetime.now(UTC),
            timings_ms=timings,
            fusion=fusion,
            fusion_weights=None
            if weights is None
            else {s.name: weights.get(s.name, 1.0) for s in sources},
            diversity=query.diversity,
            prior=prior,
            top_k=query.top_k,
            has_context=bool(context),
            names_items=bool(named),
            candidates=_logged(candidates, query.top_k),
        )

    async def _candidates(
        self, sources: Sequence[CandidateSource], plan: Plan, *, prior: bool
    ) -> tuple[list[list[Hit]], list[list[Hit]], bool]:
        """Ask each source for the candidates of a first page, and for the plan's own.

        A first page (``recommend.first_page`` results) is fused from as many candidates of
        each source as a request for that many asks for, whatever the request's ``top_k``: a
        plan that needs more asks the sources twice, for a first page and for itself,
        concurrently (a search for more candidates explores further, and its first ones can
        differ).

        Returns:
            Each source's hits for a first page, each source's hits for the whole plan (the
            same lists when it asks for no more), and whether a prior ranked the other sources'
            candidates.

        """
        depth = self._first_page_depth
        if plan.limit <= depth:
            ranked, by_prior = await self._ask(sources, plan, prior=prior)
            return ranked, ranked, by_prior
        (heads, by_prior), (ranked, _) = await asyncio.gather(
            self._ask(sources, replace(plan, limit=depth), prior=prior),
            self._ask(sources, plan, prior=prior),
        )
        return heads, ranked, by_prior

    async def _ask(
        self, sources: Sequence[CandidateSource], plan: Plan, *, prior: bool
    ) -> tuple[list[list[Hit]], bool]:
        """Ask each source for its candidates, in the order of ``sources``.

        With ``prior``, a prior (the popularity source) ranks the candidates the other sources
        proposed rather than proposing its own: among the items that match the request, it
        favours the ones many people liked, where its own list would bring items unrelated to
        the request. When the request has words, a source that ranks by resemblance to them is
        asked for more matches than its own list keeps, for the prior to rank. When no other
        source proposed anything (it is asked alone, or at cold start), the prior proposes its
        own list.

        Returns:
            Each source's hits, and whether a prior ranked the other sources' candidates.

        """
        priors = [s for s in sources if prior and s in self._priors]
        proposing = [s for s in sources if s not in priors]
        matches = await asyncio.gather(
            *(s.candidates(self._deepened(s, plan) if priors else plan) for s in proposing)
        )
        found = {s: hits[: plan.limit] for s, hits in zip(proposing, matches, strict=True)}
        pool = list(dict.fromkeys(h.item_id for hits in matches for h in hits))
        for source in priors:
            found[source] = await source.rank_pool(pool) if pool else await source.candidates(plan)
        return [found[s] for s in sources], bool(priors and pool)

    def _deepened(self, source: CandidateSource, plan: Plan) -> Plan:
        """Return the plan to ask ``source`` with when a prior ranks its matches."""
        depth = self._settings.prior_depth
        # Without words, the vector source searches near the user's taste, which is evidence
        # of what they want, not a resemblance to rank past (measured: leave-last-out HR@10
        # 0.112 -> 0.100 with the vector and history lists of wordless requests deepened too).
        if depth == 1 or not plan.context or source not in self._resembling:
            return plan
        return replace(plan, limit=plan.limit * depth)

    def _chosen_sources(self, names: frozenset[str] | None) -> list[CandidateSource]:
        if names is None:
            return self._sources
        unknown = names - set(self.source_names)
        if unknown:
            raise InvalidInputError(
                f"unknown candidate source(s) {', '.join(sorted(unknown))}; "
                f"choose among {', '.join(self.source_names)}"
            )
        if not names:
            raise InvalidInputError(
                f"sources is empty; name at least one of {', '.join(self.source_names)}"
            )
        return [s for s in self._sources if s.name in names]

    async def _user(self, user_id: str) -> tuple[PreferenceState | None, list[HistoryEntry]]:
        kept = self._store.kept_user(user_id)
        if kept is not None:
            return kept
        state, history = await asyncio.gather(
            anyio.to_thread.run_sync(self._store.preference, user_id),
            anyio.to_thread.run_sync(self._store.user_history, user_id),
        )
        return state, history

    async def _named(self, context: str) -> tuple[str, ...]:
        if not context:
            return ()
        # Matching takes less than a trip to a worker thread, unless an update holds the titles.
        mentions = self._titles.find_now(context)
        if mentions is None:
            mentions = await anyio.to_thread.run_sync(self._titles.find, context)
        named = dict.fromkeys(i for m in mentions for i in m.item_ids)
        return tuple(named)[:MAX_NAMED]

    async def _titles_of(self, item_ids: Sequence[str]) -> list[str]:
        stored = await self._read_items(list(item_ids))
        missing = [i for i in item_ids if i not in stored]
        if missing:
            raise NotFoundError(f"item {missing[0]!r} is not in the catalog")
        return [stored[i].item.title for i in item_ids]

    async def _encode(self, context: str) -> Vector | None:
        if not context:
            return None
        vectors = await self._encoder.encode([context])
        vector: Vector = vectors[0]
        return vector

    def _query_vector(
        self, context: Vector | None, preference: Vector | None
    ) -> tuple[Vector | None, str]:
        if context is not None and preference is not None:
            w = self._settings.context_weight
            blended = w * context + (1.0 - w) * preference
            norm = float(np.linalg.norm(blended))
            # Opposite context and taste can cancel; the context is what was asked for then.
            if norm < 1e-6:  # noqa: PLR2004
                return context, "context"
            return (blended / norm).astype(np.float32), "context+preference"
        if context is not None:
            return context, "context"
        if preference is not None:
            return preference, "preference"
        return None, "popularity"

    async def _present(
        self, candidates: list[Candidate], wanted: int
    ) -> tuple[list[Candidate], dict[str, StoredItem]]:
        """Read the items of the best ``wanted`` candidates that are still in the catalog.

        Only those are shown or re-ranked: reading every fused candidate's item took several
        milliseconds per request at 100K items. A candidate deleted since the search is left
        out and the next one read in its place; the ones after those read stay, unread, for the
        impression log.

        Returns:
            The candidates, the deleted ones among those read left out, and the items read.

        """
        items: dict[str, StoredItem] = {}
        present: list[Candidate] = []
        read = 0
        while len(present) < wanted and read < len(candidates):
            window = candidates[read : read + wanted - len(present)]
            read += len(window)
            found = await self._read_items([c.item_id for c in window])
            items.update(found)
            present.extend(c for c in window if c.item_id in found)
        return present + candidates[read:], items

    async def _read_items(self, item_ids: list[str]) -> dict[str, StoredItem]:
        """Return the given items that exist, from memory where it holds them."""
        found, unread = self._store.kept_items(item_ids)
        if unread:
            found.update(await anyio.to_thread.run_sync(self._store.get_items, unread))
        return found

    async def _fail_if_catalog_empty(self) -> None:
        counts = await anyio.to_thread.run_sync(self._store.counts)
        if counts.items == 0:
            raise ConflictError("the catalog is empty; add items with POST /items first")


def _fuse(
    sources: Sequence[CandidateSource],
    heads: Sequence[list[Hit]],
    ranked: Sequence[list[Hit]],
    weights: dict[str, float] | None,
    first_page: int,
) -> list[Candidate]:
    """Fuse the sources' lists so that the first page does not depend on how many are asked.

    The first ``first_page`` candidates are fused from the sources' lists for a first page
    (``heads``), the rest from their whole lists (``ranked``), which a request for more
    results asks for. Fused from the whole lists alone, the first ten results of a request
    for 100 shared a quarter of those of a request for 10 (tag queries: in deeper lists,
    items that several sources rank low overtake one source's best, and the prior chooses
    among more matches); fused from the first page's lists alone, results beyond the first
    page ranked worse than in the whole lists' fusion (ReDial R@50 0.163 against 0.238).
    """

    def fused(lists: Sequence[list[Hit]]) -> list[Candidate]:
        return reciprocal_rank_fusion(
            {s.name: hits for s, hits in zip(sources, lists, strict=True) if hits}, weights
        )

    candidates = fused(heads)
    if heads is ranked:
        return candidates
    page = candidates[:first_page]
    shown = {c.item_id for c in page}
    return page + [c for c in fused(ranked) if c.item_id not in shown]


def _logged(candidates: Sequence[Candidate], top_k: int) -> tuple[LoggedCandidate, ...]:
    """Describe fused candidates, in final order, as the impression log keeps them."""
    return tuple(
        LoggedCandidate(
            item_id=c.item_id,
            position=position,
            shown=position <= top_k,
            fused_score=c.fused,
            sources=tuple(
                SourceRank(source, rank, c.sources[source]) for source, rank in c.ranks.items()
            ),
        )
        for position, c in enumerate(candidates, start=1)
    )


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000.0, 3)
