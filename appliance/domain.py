"""Plain values shared by the services and the backends.

Nothing here does I/O; the wire contract in ``appliance.schemas`` is converted to and from these
at the API edge, so backends never depend on how the HTTP API spells things.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Namespace of the UUIDs that stand for item ids inside vector indexes, which accept only
#: integers and UUIDs as point ids. A name-based UUID needs no lookup table and is the same in
#: every index the appliance ever builds.
ITEM_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5e0f-9a81-2c4d6e8f0a1b")

Scalar = str | int | float | bool

#: A metadata key. Keys double as filter fields, which the vector index addresses as JSON
#: paths, so they are restricted to characters that need no quoting there.
FIELD_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}"
#: A filter field: a metadata key, or a dotted path into a nested metadata object.
FIELD_PATH = rf"{FIELD_NAME}(?:\.{FIELD_NAME})*"

#: Where an item's text divides into phrases: the end of a sentence or clause, before a space.
_PHRASE_END = re.compile(r"[.;,!?]+(?:\s+|$)")
#: Phrases kept per item (the title and the first ones of its text): each is a vector in the
#: index, and a long description's later clauses say less about what the item is.
MAX_PHRASES = 16


def point_id(item_id: str) -> uuid.UUID:
    """Return the vector-index point id that stands for ``item_id``."""
    return uuid.uuid5(ITEM_NAMESPACE, item_id)


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog entry as the system of record holds it."""

    item_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_text(self) -> str:
        """The text the embedder sees: the title carries much of an item's meaning."""
        return f"{self.title}. {self.text}" if self.text else self.title

    @property
    def phrases(self) -> tuple[str, ...]:
        """The title and the sentences and clauses of the text, each said once.

        A request of a few words ("time travel") matches one phrase of an item ("time
        machine") better than the whole text, where the genres, the year and a dozen other
        keywords dilute it.
        """
        pieces = (p.strip() for p in _PHRASE_END.split(self.text))
        found: dict[str, str] = {}
        for phrase in (self.title.strip(), *pieces):
            if phrase:  # said twice, once capitalised, a phrase is still one
                found.setdefault(phrase.casefold(), phrase)
        return tuple(found.values())[:MAX_PHRASES]

    @property
    def content_hash(self) -> str:
        """Fingerprint of what the embedding depends on; unchanged items are not re-embedded."""
        return hashlib.blake2b(self.embedding_text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds on a numeric metadata field; ``None`` means unbounded."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """One metadata condition: equal to one value, any of several, or within a range."""

    field: str
    equals: Scalar | None = None
    any_of: tuple[Scalar, ...] | None = None
    range: Range | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which catalog items a retrieval may return."""

    conditions: tuple[FieldCondition, ...] = ()
    exclude: frozenset[str] = frozenset()
    only: frozenset[str] | None = None

    @property
    def admits_nothing(self) -> bool:
        """Whether ``only`` names no item, so that no search need run."""
        return self.only is not None and not self.only


@dataclass(frozen=True, slots=True)
class Hit:
    """An item found by a candidate source, with that source's score."""

    item_id: str
    score: float
    via: str | None = None
    """The item this one was found through (a liked item, an item named in the request)."""


@dataclass(slots=True)
class Candidate:
    """An item on its way through fusion and re-ranking."""

    item_id: str
    score: float
    sources: dict[str, float] = field(default_factory=dict)
    via: dict[str, str] = field(default_factory=dict)
    """Per source that found the item through another item, that item's id."""
    ranks: dict[str, int] = field(default_factory=dict)
    """Per source that proposed the item, its rank there (1 for the source's first hit)."""
    fused: float = 0.0
    """The fusion score that ordered the candidates."""


class InteractionType(enum.StrEnum):
    """What the user did with an item."""

    VIEW = "view"
    CLICK = "click"
    LIKE = "like"
    DISLIKE = "dislike"
    RATING = "rating"
    PURCHASE = "purchase"
    WATCHED = "watched"
    SKIP = "skip"


#: How strongly each interaction says something about the user's taste.
INTERACTION_STRENGTH: dict[InteractionType, float] = {
    InteractionType.VIEW: 0.25,
    InteractionType.CLICK: 0.5,
    InteractionType.WATCHED: 0.75,
    InteractionType.PURCHASE: 1.0,
    InteractionType.RATING: 1.0,
    InteractionType.LIKE: 1.0,
    InteractionType.DISLIKE: 1.0,
    InteractionType.SKIP: 0.5,
}

#: Interactions whose direction is fixed whatever rating accompanies them.
FIXED_SIGN: dict[InteractionType, float] = {
    InteractionType.LIKE: 1.0,
    InteractionType.DISLIKE: -1.0,
    InteractionType.SKIP: -1.0,
}


def rating_signal(rating: float, neutral: float) -> float:
    """Map a 0-5 rating to [-1, 1]: 0 at ``neutral``, 1 at 5, -1 at 0."""
    if rating >= neutral:
        return (rating - neutral) / (5.0 - neutral)
    return (rating - neutral) / neutral


def interaction_weight(kind: InteractionType, rating: float | None, neutral: float) -> float:
    """Return the signed weight of one feedback event in the user's preference vector.

    Like, dislike and skip have a fixed direction. The others are positive unless a rating
    comes with them, in which case the rating decides the direction and its strength.
    """
    strength = INTERACTION_STRENGTH[kind]
    if kind in FIXED_SIGN:
        return strength * FIXED_SIGN[kind]
    if rating is None:
        return strength
    return strength * rating_signal(rating, neutral)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A user's standing with one item: the weight and time of their latest event on it."""

    item_id: str
    weight: float
    """The signed weight of the latest event (a later rating replaces an earlier one)."""
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One stored interaction."""

    user_id: str
    item_id: str
    interaction_type: InteractionType
    rating: float | None
    weight: float
    timestamp: datetime
    request_id: str | None = None


@dataclass(slots=True)
class PreferenceState:
    """A user's learned taste: a recency-weighted, signed sum of the vectors of their items.

    The sum is kept relative to ``anchor`` (the latest event time seen, in epoch seconds), so
    one new event updates it in O(1) whatever order events arrive in.
    """

    user_id: str
    vector_sum: Any  # numpy float64 array, or None before the first event with a vector
    weight_sum: float = 0.0
    anchor: float | None = None
    feedback_count: int = 0
    created_at: datetime | None = None
    vector_updated_at: datetime | None = None
