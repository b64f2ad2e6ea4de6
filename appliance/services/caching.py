"""Caches in front of the encoder and of whole recommendation answers.

Encoding a context costs about as much as the rest of a request, and the vector index alone
answers about a thousand queries a second on two cores; requests that repeat (the same context,
a known user asking again) are answered from memory instead.

A cached answer is only reused while nothing it depends on may have changed: the user's own
feedback or deletion drops that user's answers, any catalog change (or a re-ranker switch, or new
fusion weights) drops every answer. Other users' feedback changes the shared models (popularity,
collaborative similarity) a little later and for everyone: answers computed before those models
caught up expire after a short time, the others are kept as long as nothing changes.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import msgspec
import numpy as np

from appliance.backends.embedders.protocol import Vectors
from appliance.services.encoding import Encoder
from appliance.services.impressions import ImpressionLog
from appliance.services.recommend import (
    ANONYMOUS,
    RecommendationQuery,
    RecommendationResult,
    RecommendationService,
)
from appliance.services.reranking import RerankStatus

#: Users whose latest change is remembered one by one; beyond them only the oldest change that
#: was forgotten is, which invalidates a little more than needed and never too little.
MAX_REMEMBERED_USERS = 65_536

#: Answers worth keeping: the re-rank stage did what it would do again. One that timed out, was
#: busy or failed is a momentary degradation that must not be served for the whole TTL.
_STABLE_RERANK = {
    RerankStatus.RAN,
    RerankStatus.OFF,
    RerankStatus.NOT_CONFIGURED,
    RerankStatus.NO_CONTEXT,
}

# One encoder for every key: "deterministic" sorts sets and mappings, so equal queries always
# give equal bytes.
_KEY_ENCODER = msgspec.json.Encoder(order="deterministic")


@dataclass(slots=True)
class CacheStats:
    """Lookups of one cache since start-up."""

    hits: int = 0
    misses: int = 0


class ContextVectorCache:
    """Keeps the vectors of recently encoded texts (least recently used dropped first).

    Meant for request contexts, which repeat; catalog texts go to the encoder directly.
    """

    def __init__(self, encoder: Encoder, *, max_entries: int) -> None:
        self._encoder = encoder
        self._max_entries = max_entries
        self._vectors: collections.OrderedDict[str, Vectors] = collections.OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._vectors)

    async def encode(self, texts: Sequence[str]) -> Vectors:
        """Return one unit-length row per text, encoding only the texts not kept.

        Raises:
            NotReadyError: The encoder is not running and a text had to be encoded.

        """
        if not texts:
            return await self._encoder.encode(texts)
        found: dict[str, Vectors] = {}
        for text in texts:
            vector = self._vectors.get(text)
            if vector is not None:
                self._vectors.move_to_end(text)
                found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        self.stats.hits += len(texts) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            encoded = await self._encoder.encode(missing)
            for text, row in zip(missing, encoded, strict=True):
                # A copy, so that a kept row does not hold on to the whole batch; read-only,
                # because every later caller gets this same array.
                vector = row.copy()
                vector.flags.writeable = False
                found[text] = vector
                self._keep(text, vector)
        return np.stack([found[t] for t in texts])

    def _keep(self, text: str, vector: Vectors) -> None:
        if self._max_entries == 0:
            return
        self._vectors[text] = vector
        self._vectors.move_to_end(text)
        while len(self._vectors) > self._max_entries:
            self._vectors.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Stamp:
    """When an answer started to be computed: the cache's version and its clock."""

    version: int
    started: float


@dataclass(frozen=True, slots=True)
class _Entry:
    result: RecommendationResult
    user_id: str
    stamp: Stamp
    expires: float
    """When the answer is dropped if the shared models may have changed since it started."""


class ResultCache:
    """Recommendation answers keyed by the whole query, dropped when what they used changes.

    Invalidation is by version: every change increments a counter, and an answer is valid only
    if it started to be computed after the last change that concerns it. An answer computed
    while its user's feedback was being recorded is therefore never kept, even though the
    change arrived before the answer was finished.

    Other users' feedback reaches the shared models later: the popularity ranking is recomputed
    at most ``settle_seconds`` after it, the collaborative model when a rebuild finishes
    (``shared_changed``). An answer that started at least ``settle_seconds`` after the last such
    change saw every shared model up to date and stays valid until the next change; an earlier
    one may have used a model that has changed since, and is dropped after ``ttl_seconds``.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        settle_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = max_entries > 0 and ttl_seconds > 0
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._settle = settle_seconds
        self._clock = clock
        self._shared_changed_at = float("-inf")
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self._version = 0
        self._everything_since = 0
        self._forgotten_since = 0
        self._user_since: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(query: RecommendationQuery) -> bytes | None:
        """Return the cache key of a query: every field of it, or ``None`` if not cacheable.

        Encoded rather than hashed, because equal-comparing values can ask for different
        answers: a filter on ``true`` equals one on ``1`` in Python, not in the index.
        """
        try:
            return _KEY_ENCODER.encode(query)
        except TypeError:
            # A field of a type the encoder does not know: answer it, never from the cache.
            return None

    def stamp(self) -> Stamp:
        """Return the current version and time: take them before computing an answer to ``put``."""
        return Stamp(self._version, self._clock())

    def get(self, key: bytes) -> RecommendationResult | None:
        """Return the kept answer for ``key`` if it is still valid."""
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        if entry.stamp.version < self._valid_since(entry.user_id) or (
            entry.expires <= self._clock()
            and entry.stamp.started < self._shared_changed_at + self._settle
        ):
            del self._entries[key]
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry.result

    def put(self, key: bytes, result: RecommendationResult, stamp: Stamp) -> None:
        """Keep an answer computed from ``stamp`` on, unless something changed meanwhile."""
        if not self.enabled or stamp.version < self._valid_since(result.user_id):
            return
        # The caller gets ``result`` itself; the cache keeps its own list of recommendations.
        kept = replace(result, recommendations=list(result.recommendations))
        self._entries[key] = _Entry(kept, result.user_id, stamp, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def users_changed(self, user_ids: Iterable[str]) -> None:
        """Drop the answers of these users (their feedback or profile changed).

        Their feedback also changes the shared models a little later (``shared_changed``).
        """
        self.shared_changed()
        self._version += 1
        for user_id in user_ids:
            self._user_since[user_id] = self._version
            self._user_since.move_to_end(user_id)
        while len(self._user_since) > MAX_REMEMBERED_USERS:
            _, since = self._user_since.popitem(last=False)
            self._forgotten_since = max(self._forgotten_since, since)

    def shared_changed(self) -> None:
        """Note that a model every answer may use (popularity, collaborative) changed or will."""
        self._shared_changed_at = self._clock()

    def everything_changed(self) -> None:
        """Drop every answer (the catalog or the re-ranker changed)."""
        self._version += 1
        self._everything_since = self._version
        self._entries.clear()
        self._user_since.clear()

    def _valid_since(self, user_id: str) -> int:
        return max(self._everything_since, self._forgotten_since, self._user_since.get(user_id, 0))


class CachedRecommender:
    """Answers from the result cache when it can, from the pipeline otherwise.

    This is what the API answers with: every answer it returns to a user, computed or reused,
    is logged once in the impression log under its own request id, so that feedback naming that
    id answers it (an answer for nobody in particular, ``ANONYMOUS``, is not). A reused
    answer's impression shares the candidates logged with the answer it reuses.
    """

    def __init__(
        self,
        recommender: RecommendationService,
        cache: ResultCache,
        *,
        impressions: ImpressionLog | None = None,
    ) -> None:
        self._recommender = recommender
        self.cache = cache
        self._impressions = impressions

    async def recommend(self, query: RecommendationQuery) -> RecommendationResult:
        """Recommend as ``RecommendationService.recommend`` does, reusing a valid kept answer.

        A reused answer gets a request id and timestamp of its own; its ``timings_ms`` hold
        ``cache`` (the time to find it) and ``total``.

        Raises:
            ConflictError: The catalog is empty.

        """
        result = await self._answer(query)
        if self._impressions is not None and result.user_id != ANONYMOUS:
            self._impressions.record(result.impression())
        return result

    async def _answer(self, query: RecommendationQuery) -> RecommendationResult:
        started = time.perf_counter()
        key = self.cache.key(query) if self.cache.enabled else None
        if key is None:
            return await self._recommender.recommend(query)
        kept = self.cache.get(key)
        if kept is not None:
            elapsed = round((time.perf_counter() - started) * 1000.0, 3)
            return replace(
                kept,
                request_id=uuid.uuid4().hex,
                reused_from=kept.request_id,
                timestamp=datetime.now(UTC),
                recommendations=list(kept.recommendations),
                timings_ms={"cache": elapsed, "total": elapsed},
            )
        stamp = self.cache.stamp()
        result = await self._recommender.recommend(query)
        if result.rerank_status in _STABLE_RERANK:
            self.cache.put(key, result, stamp)
        return result
