from __future__ import annotations

from datetime import datetime

from appliance.schemas.base import Response


class Health(Response):
    """Readiness of the appliance and its parts."""

    status: str
    components: dict[str, str]
    sources: list[str] = []
    """The candidate sources a recommendation request may name."""


class EncoderStatsOut(Response):
    """Encoder counters since start-up."""

    batches: int
    texts: int
    largest_batch: int


class CacheStatsOut(Response):
    """One cache's lookups since start-up, and what it holds now."""

    hits: int
    misses: int
    entries: int


class CollaborativeStatsOut(Response):
    """The item-similarity model the collaborative source uses."""

    items: int
    """Items it relates (those with the most users, up to collaborative.max_items)."""
    pairs: int
    """(user, item) pairs it was learnt from."""
    users: int
    memory_bytes: int
    build_seconds: float
    """How long the last rebuild took."""
    built_at: datetime | None = None
    pending: bool = False
    """Feedback or the catalog changed since; a rebuild is scheduled."""


class Stats(Response):
    """Counts of what the appliance holds and has done."""

    items: int
    users: int
    feedback_events: int
    index_points: int
    encoder: EncoderStatsOut
    rerank: dict[str, int] = {}
    """How often the re-rank stage ran, timed out, was busy, failed or was skipped (and why)."""
    cache: dict[str, CacheStatsOut] = {}
    """The context-vector and result caches (``context_vectors``, ``results``)."""
    collaborative: CollaborativeStatsOut | None = None
    index_graphs_pending: bool = False
    """Items were written that the index has not built search graphs for yet (it does, a few
    seconds after the writes pause); meanwhile they are searched exhaustively."""


class ReindexResult(Response):
    """The vector index agrees with the catalog again."""

    embedded: int
    removed: int
    failed: int = 0
    """Items the index refused (see the server log); retried at the next start."""
