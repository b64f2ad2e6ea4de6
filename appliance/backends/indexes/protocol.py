from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.domain import Hit, Selection

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index keeps for one item."""

    item_id: str
    vector: Vector
    content_hash: str
    seq: int
    """Order in which items were first added; the newest-items fallback sorts on it."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    """The item's words for keyword search: the text its vector was computed from."""
    phrases: Vector | None = None
    """One vector per phrase of the item (``Item.phrases``), a row each; ``None`` when they were
    not computed, which ``outdated`` then reports."""


class VectorIndex(Protocol):
    """Similarity and keyword search over items, derived from the catalog in the store.

    Everything in it can be rebuilt from the store, so implementations may favour speed over
    durability of their own. Methods are synchronous and thread-safe; callers run them off the
    event loop, except the searches of an index that holds the interpreter lock through them.
    """

    dimension: int
    phrases: bool
    """Whether the index keeps phrase vectors (``IndexEntry.phrases``) and searches them."""
    searches_hold_interpreter: bool
    """Whether ``search``, ``keyword_search`` and ``phrase_search`` keep Python's interpreter
    lock while they run, as an in-process engine that never releases it does. Nothing else runs
    meanwhile wherever they are called, so callers run them on the event loop: a worker thread
    would add two hand-offs and no parallelism. An index that waits on the network must say
    False."""

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Insert or replace items (vector, fingerprint and filterable metadata)."""
        ...

    def delete(self, item_ids: Iterable[str]) -> None:
        """Remove items; unknown ids are ignored."""
        ...

    def search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return up to ``limit`` items nearest to ``vector`` (cosine, best first).

        Every item that ``selection`` admits is eligible, however few there are: a narrow
        filter or a long exclusion list still yields ``limit`` hits when that many exist.
        """
        ...

    def keyword_search(self, text: str, limit: int, selection: Selection) -> list[Hit]:
        """Return up to ``limit`` admitted items whose words best match ``text`` (BM25).

        Words are matched as the index analyses them (case, accents and, depending on its
        language, stop words and stems aside); rare words weigh more than common ones. Items
        that share no word with ``text`` are never returned, so there may be fewer than
        ``limit`` hits, or none. ``selection`` applies exactly as in ``search``.
        """
        ...

    def phrase_search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return up to ``limit`` admitted items by their phrase nearest to ``vector``, best first.

        An item scores the cosine of its best-matching phrase. Items written without phrase
        vectors are not found. ``selection`` applies exactly as in ``search``.
        """
        ...

    def recommend(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        limit: int,
        selection: Selection,
    ) -> list[Hit]:
        """Return up to ``limit`` items by their best similarity to the examples, best first.

        An item scores by its similarity to the nearest positive example, unless it is nearer
        to a negative one, which ranks it below every item that is not. Each hit's ``via`` is
        the positive example it is nearest to. Examples the index does not hold are ignored;
        without a positive example there is nothing to recommend.
        """
        ...

    def newest(self, limit: int, selection: Selection) -> list[str]:
        """Return up to ``limit`` admitted item ids, most recently added first."""
        ...

    def vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored vectors of the given items that exist."""
        ...

    def phrase_vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored phrase vectors (a row each) of the given items that have them."""
        ...

    def hashed_vectors(self, item_ids: Sequence[str]) -> dict[str, tuple[Vector, str]]:
        """Return the given items' vectors, each with the content hash it was computed from.

        Each pair is read in one go, so a concurrent write can never pair one version's vector
        with another version's hash.
        """
        ...

    def fingerprints(self) -> dict[str, str]:
        """Return every item id with the content hash its vector was computed from."""
        ...

    def outdated(self) -> list[str]:
        """Return the items whose entries predate the index's current way of writing them.

        Their vectors and content hashes are current, but something derived from their text
        is missing or was made otherwise (keyword vectors written by an older version, or with
        another language setting; no phrase vectors). Upserting them again, with their stored
        vectors and the phrase vectors they lack, brings them up to date; start-up does so
        before the appliance serves.
        """
        ...

    def count(self) -> int:
        """Return the number of items."""
        ...

    def check(self) -> None:
        """Raise ``BackendError`` if the index cannot answer now, saying why.

        Cheap enough for every health check: a server that is down, or that lost the index's
        data, fails it; an index in this process's own files always passes.
        """
        ...

    def optimize(self) -> None:
        """Build or refresh search structures after bulk writes; may take a while."""
        ...

    def clear(self) -> None:
        """Remove every item, e.g. before a rebuild with another embedding model."""
        ...

    def close(self) -> None:
        """Persist what is pending and release files."""
        ...
