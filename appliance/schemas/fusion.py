"""The fusion as operators see it: the learned weights, and the impressions they come from."""

from __future__ import annotations

from datetime import datetime

from appliance.schemas.base import Response


class ImpressionLogOut(Response):
    """The impression log since start-up."""

    stored: int
    """Impressions in the database now (after retention)."""
    pending: int
    """Impressions waiting in memory to be written."""
    logged: int
    written: int
    candidate_rows: int
    """Candidates written with the impressions (every fused candidate, shown or not)."""
    batches: int
    largest_batch: int
    write_ms_per_batch: float
    """Mean time of one batch's transaction."""
    dropped: int = 0
    """Impressions refused because fusion.max_pending were waiting."""
    failed: int = 0
    """Impressions lost to a failed write (see the server log)."""
    pruned: int = 0
    """Impressions deleted by the retention limits."""


class FusionKindOut(Response):
    """The fusion of one kind of request (with a context, or without)."""

    default: str
    """The fusion such a request gets when it does not choose: learned once learned, else rrf."""
    status: str
    """The latest training's outcome: untrained, too-little-data, not-better, shared (too little
    feedback of its own: the weights learned from every kind together are in use) or trained."""
    detail: str
    """Why, in words."""
    weights: dict[str, float] = {}
    """The per-source weights of learned fusion, when in use (a source absent here weighs 1):
    this kind's own, or the shared ones."""
    learned_weights: dict[str, float] = {}
    """The weights the latest training found for this kind alone, in use or not."""
    temperature: float | None = None
    """How sharply the learned model separates liked from passed-over candidates."""
    teaching_impressions: int = 0
    """Impressions with a liked candidate and a disliked one, or a liked one and one without an
    answer, both shown or neither; from at least two sources."""
    pairs: int = 0
    validation_learned: float | None = None
    """Share of the newest impressions' pairs the weights learned without them order right."""
    validation_rrf: float | None = None
    """The same share for plain RRF."""


class FusionOut(Response):
    """How requests are fused, and what the learning found."""

    kinds: dict[str, FusionKindOut]
    """Per kind of request: context (the request has words), named (its words name catalog
    items) and no-context."""
    min_labelled_impressions: int
    sources: list[str]
    """The candidate sources of this appliance."""
    impressions: ImpressionLogOut
    trained_at: datetime | None = None
    trainings: int = 0
    error: str = ""
    """Why the latest training failed, if it did (what was in use before stays)."""


class ImpressionCandidateOut(Response):
    """One fused candidate of a logged response."""

    item_id: str
    position: int
    """1-based, in the order of the response."""
    shown: bool
    fused_score: float
    sources: dict[str, float]
    """Each source's own score for the item."""
    source_ranks: dict[str, int]
    label: float | None = None
    """Summed weight of the feedback that answered it, if any did."""


class ImpressionOut(Response):
    """A logged recommendation response and the feedback that answered it."""

    request_id: str
    user_id: str
    created_at: datetime
    strategy: str
    fusion: str
    top_k: int
    candidates: list[ImpressionCandidateOut]
    kind: str = ""
    """The kind of request, whose weights learned fusion uses: context, named or no-context."""
