from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from msgspec import Meta

from appliance.domain import FIELD_PATH
from appliance.schemas.base import Id, Request, Response

Scalar = str | int | float | bool
FieldName = Annotated[
    str,
    Meta(
        max_length=512,
        description=f"A metadata key, or a dotted path into a nested metadata object: {FIELD_PATH}",
    ),
]


class RangeFilter(Request):
    """Numeric bounds on a metadata field; give at least one."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


FilterValue = Scalar | Annotated[list[Scalar], Meta(min_length=1, max_length=256)] | RangeFilter
#: Metadata conditions, all of which must hold (POST /recommendations' ``filters``, and GET
#: /items/{item_id}/similar's as JSON).
Filters = Annotated[dict[FieldName, FilterValue], Meta(max_length=32)]
#: A fusion mode; a pattern rather than an enum, so that a wrong value's error names the choices.
FUSION_PATTERN = "^(rrf|learned)$"
Fusion = Annotated[str, Meta(pattern=FUSION_PATTERN, examples=["rrf", "learned"])]


class RecommendationRequest(Request):
    """Ask for recommendations for a user, optionally steered by a free-text context."""

    user_id: Id
    context: Annotated[str, Meta(max_length=4000)] | None = None
    """What the user is looking for right now, in their own words."""
    like_items: Annotated[list[Id], Meta(max_length=8)] | None = None
    """Catalog items the answer should go with (a basket, the page being viewed), by id: they
    count as items the context names (the answer is like them, and leaves them out), and
    without a context their titles are its words."""
    top_k: Annotated[int, Meta(ge=1, le=100)] = 5
    """How many items to return."""
    filters: Filters | None = None
    """Metadata conditions, all of which must hold: a value (equal, or contained in a list
    field), a list of values (any of them), or a range such as {"gte": 1990, "lt": 2000}."""
    exclude_seen: bool = True
    """Leave out items the user has already given feedback on."""
    rerank: bool | None = None
    """Run the re-rank stage (default: when a re-ranker is configured and there is a context)."""
    sources: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=16)] | None = None
    """Candidate sources to ask, by name (default: all of them); GET /health lists them."""
    fusion: Fusion | None = None
    """How the sources' lists are fused: rrf (reciprocal rank, every source weighs 1) or
    learned (weighted by what the appliance learned from its impressions and their feedback).
    Default: learned once learned (GET /admin/fusion), else rrf."""
    diversity: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    """Trade relevance for variety (maximal marginal relevance over the items' vectors): 0 keeps
    the fused order, higher values push near-duplicates of better-placed items down."""
    prior: bool = True
    """Popularity as a prior: it ranks the candidates the other sources proposed (and, for a
    request with words, more of the matches of those that rank by resemblance to them than
    their own lists hold, recommend.prior_depth), favouring the popular ones among the items
    that match the request; false: it proposes its own list of the most popular items, related
    to the request or not. Alone, or when the other sources have nothing (cold start), it
    proposes its own list either way."""


class RecommendedItem(Response):
    """One recommended item."""

    item_id: str
    title: str
    score: float
    """Relevance from the strongest candidate source (cosine similarity for vector search)."""
    metadata: dict[str, Any]
    sources: dict[str, float] = {}
    """Each candidate source that proposed the item, with its own score."""
    via: dict[str, str] = {}
    """For each source that found the item through another item (one the user liked, one named
    in the context), that item's id."""
    fused_score: float = 0.0
    """The fusion score that placed the item: the sum over its sources of weight / (60 + rank)."""
    source_ranks: dict[str, int] = {}
    """Each candidate source's rank for the item (1 for its first hit)."""


class RecommendationResponse(Response):
    """The recommendations, best first."""

    user_id: str
    recommendations: list[RecommendedItem]
    timestamp: datetime
    reranked: bool
    """Whether the re-rank stage ran (always present, so clients need not assume)."""
    rerank_status: str = ""
    """What became of the re-rank stage: ran, off (the request said so), not-configured,
    no-context, timeout, busy (too many calls waiting for the model) or failed. In every case but
    ran, the order is the retrieval order."""
    request_id: str = ""
    """Identifies this answer; send it back with feedback on these items."""
    strategy: str = ""
    """What the query was built from: context, context+preference, preference or popularity."""
    timings_ms: dict[str, float] = {}
    """Milliseconds per pipeline stage: query (embedding the context and reading the user's
    preferences and history), retrieve, rerank (when it started, including a timed-out or failed
    attempt), diversify (when diversity was asked for) and total."""
    fusion: str = ""
    """The fusion that ordered the candidates: rrf or learned."""
    fusion_weights: dict[str, float] = {}
    """With learned fusion, the weight of each source asked (plain RRF weighs each 1)."""
    diversity: float | None = None
    """The diversity applied, when the request asked for some."""
    prior: bool = False
    """Whether popularity ranked the other sources' candidates (the request's prior) rather
    than proposing its own list."""


class SimilarItemsResponse(Response):
    """Items like one item, best first (GET /items/{item_id}/similar)."""

    item_id: str
    recommendations: list[RecommendedItem]
    timestamp: datetime
    user_id: str | None = None
    """The user the answer was made for, when the request named one."""
    request_id: str = ""
    """Identifies this answer when it was made for a user; send it back with feedback on these
    items."""
    timings_ms: dict[str, float] = {}
    """Milliseconds per pipeline stage, as for recommendations."""
    fusion: str = ""
    """The fusion that ordered the candidates: rrf or learned."""
    fusion_weights: dict[str, float] = {}
    """With learned fusion, the weight of each source asked (plain RRF weighs each 1)."""
    diversity: float | None = None
    """The diversity applied, when the request asked for some."""
