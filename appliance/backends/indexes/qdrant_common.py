"""What the two Qdrant indexes, embedded and server, share: an item's payload and how it is read.

Both keep an item as one point with the same payload, analyse its words for BM25 the same way
(Qdrant Edge's ``Bm25``, in this process: the server's own BM25 would be a model download) and
order equal scores the same way, so the appliance answers alike on either.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import qdrant_edge as qe

from appliance.backends.indexes.protocol import IndexEntry, Vector
from appliance.domain import FIELD_NAME, FieldCondition, Hit, Range, Selection, point_id
from appliance.errors import ConfigError

#: Filterable metadata lives under this payload key so that it can never shadow the
#: appliance's own payload fields.
META = "metadata"
#: The sparse BM25 vector of each item's text.
KEYWORDS = "keywords"
#: The vectors of each item's phrases (``Item.phrases``), compared by their best match; the
#: payload field of the same name counts them, and entries without it lack them.
PHRASES = "phrases"
#: Payload field naming how an entry's keyword vector was made; entries without it, or with
#: another value, are rewritten at start-up (see ``VectorIndex.outdated``).
ANALYSER = "analyser"
#: Bump when the text analysis changes in a way that needs every keyword vector rewritten.
ANALYSER_VERSION = 1
#: Without stop words or stems: every word counts as written, in any language.
NO_LANGUAGE = "none"
#: Languages written without spaces between words, which need a segmenting tokenizer.
_UNSPACED_LANGUAGES = frozenset({"Chinese", "Japanese"})
#: Metadata keys a filter may name; others (e.g. from an older database) stay unindexed.
INDEXABLE_FIELD = re.compile(FIELD_NAME)


class KeywordAnalyser:
    """Turns item texts and requests into BM25 sparse vectors, as the index's language says.

    The vectors carry each word's weight in its text; the index multiplies it by the word's
    inverse document frequency over the items it holds (Qdrant's IDF modifier), so rare words
    weigh more as the catalog changes.
    """

    def __init__(self, language: str) -> None:
        self._bm25 = qe.Bm25(bm25_config(language))
        self.name = f"bm25-{ANALYSER_VERSION}-{language.lower()}"
        """Recorded with every entry: entries of another name are rewritten at start-up."""

    def document(self, text: str) -> qe.SparseVector:
        """Return the sparse vector an item's text is stored with."""
        return self._bm25.embed_document(text)

    def query(self, text: str) -> qe.SparseVector:
        """Return the sparse vector a request's words search with (no indices: no usable word)."""
        return self._bm25.embed_query(text)


def bm25_config(language: str) -> qe.Bm25Config:
    """Return the text analysis of keyword search.

    Words are split at Unicode word boundaries, which keeps numbers and part numbers
    ("ZQ-3537", "1995") searchable; Chinese and Japanese, written without spaces, are segmented
    by dictionary instead. Words are lower-cased and folded to ASCII, then the stop words of
    ``language`` are dropped and the rest stemmed. k1 and b keep BM25's usual values (1.2,
    0.75). The average length stays at the engine's default (256 words), far above an item's
    title and description: length normalisation is then mild, which suits catalog texts, where
    a longer text says more about its item rather than repeating itself.

    Raises:
        ConfigError: ``language`` is neither ``none`` nor a language the engine knows.

    """
    name = language.strip().capitalize()
    stopwords: Any = getattr(qe.Language, name, None)
    snowball = getattr(qe.SnowballLanguage, name, None)
    if language.strip().lower() == NO_LANGUAGE:
        stopwords, snowball = None, None
    elif stopwords is None and snowball is None:
        known = sorted(
            {n.lower() for n in dir(qe.Language) if not n.startswith("_")}
            | {n.lower() for n in dir(qe.SnowballLanguage) if not n.startswith("_")}
        )
        raise ConfigError(
            f"unknown keyword language {language!r} (index.text_language); choose "
            f"{NO_LANGUAGE} or one of: {', '.join(known)}"
        )
    unspaced = name in _UNSPACED_LANGUAGES
    return qe.Bm25Config(
        tokenizer=qe.TokenizerType.Multilingual if unspaced else qe.TokenizerType.Word,
        lowercase=True,
        ascii_folding=True,
        stopwords=stopwords if stopwords is not None else qe.StopwordsSet(custom=set()),
        stemmer=qe.SnowballParams(snowball) if snowball is not None else qe.DisabledStemmer(),
    )


def point_payload(entry: IndexEntry, analyser: str, *, phrases: bool) -> dict[str, Any]:
    """Return the payload an entry's point is written with.

    Args:
        entry: The item.
        analyser: ``KeywordAnalyser.name`` of the keyword vector written beside it.
        phrases: Whether the index keeps phrase vectors; an entry that carries them is then
            marked with their count (see ``VectorIndex.outdated``).

    """
    written: dict[str, Any] = {
        "item_id": entry.item_id,
        "hash": entry.content_hash,
        "seq": entry.seq,
        ANALYSER: analyser,
        META: {k: filterable(v) for k, v in entry.metadata.items()},
    }
    if phrases and entry.phrases is not None:
        written[PHRASES] = len(entry.phrases)
    return written


def is_outdated(written: dict[str, Any], analyser: str, *, phrases: bool) -> bool:
    """Whether a point's payload says it lacks the current keyword vector, or its phrases."""
    return written.get(ANALYSER) != analyser or (phrases and PHRASES not in written)


def filterable(value: Any) -> Any:
    """Return a metadata value as the payload stores it for filtering.

    Qdrant Edge's binding hands booleans to the engine as integers, so a boolean condition could
    never match a stored boolean; booleans are therefore stored, and matched, as "true"/"false"
    (by both indexes, so that a catalog filters alike on either).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [filterable(v) for v in value]
    return value


def new_fields(
    entries: Sequence[IndexEntry], indexed: Collection[str]
) -> Iterator[tuple[str, Literal["keyword", "float"]]]:
    """Yield, once each, the fields of ``entries`` not in ``indexed`` that filters can use.

    Each comes with how to index it. Keys the API would refuse (e.g. from an older database)
    stay unindexed rather than failing the write, as do fields of values no filter matches
    (prose, lists of numbers).
    """
    seen = set(indexed)
    for entry in entries:
        for name, value in entry.metadata.items():
            if name in seen or not INDEXABLE_FIELD.fullmatch(name):
                continue
            kind = field_kind(filterable(value))
            if kind is not None:
                seen.add(name)
                yield name, kind


def field_kind(value: Any) -> Literal["keyword", "float"] | None:
    """Return how a metadata field holding ``value`` is indexed for filtering, if at all."""
    if isinstance(value, list):
        return "keyword" if value and all(isinstance(v, str) for v in value) else None
    if isinstance(value, int | float):
        # Float covers integers too, so a field mixing 2 and 2.5 is still range-filterable.
        return "float"
    # Long strings are prose, not categories: exact-match indexing them would waste memory.
    if isinstance(value, str) and len(value) <= 256:  # noqa: PLR2004
        return "keyword"
    return None


def best_first(hits: list[Hit]) -> list[Hit]:
    """Order hits by score, equal ones by item id.

    Equal scores are common (BM25 gives the same to every item matching the same words alike;
    items of the same text have the same vector), and the engine orders them by where it keeps
    them, which depends on when its background optimisation ran: this way the same list comes
    out every time.
    """
    hits.sort(key=lambda hit: (-hit.score, hit.item_id))
    return hits


class PayloadReads:
    """What both indexes read from their points' payloads and dense vectors alike."""

    phrases: bool
    _keywords: KeywordAnalyser

    def _payloads(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Yield the given payload fields of every point, a page at a time."""
        raise NotImplementedError

    def hashed_vectors(self, item_ids: Sequence[str]) -> dict[str, tuple[Vector, str]]:
        """Return the stored vectors of the items that exist, with their content hashes."""
        raise NotImplementedError

    def vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored vectors of the items that exist."""
        return {k: vector for k, (vector, _) in self.hashed_vectors(item_ids).items()}

    def fingerprints(self) -> dict[str, str]:
        """Return every item id with the content hash of its vector."""
        return {
            payload["item_id"]: payload.get("hash", "")
            for payload in self._payloads(["item_id", "hash"])
        }

    def outdated(self) -> list[str]:
        """Return the items lacking current keyword vectors, or phrase vectors when kept."""
        return [
            payload["item_id"]
            for payload in self._payloads(["item_id", ANALYSER, PHRASES])
            if is_outdated(payload, self._keywords.name, phrases=self.phrases)
        ]

    def _examples(
        self, positive: Sequence[str], negative: Sequence[str]
    ) -> tuple[dict[str, Vector], list[Vector]]:
        """Return the stored vectors of the liked examples, in order, and of the disliked ones."""
        found = self.vectors([*positive, *negative])
        liked = {i: found[i] for i in positive if i in found}
        return liked, [found[i] for i in negative if i in found]


def via_nearest_example(
    found: Iterable[tuple[str, float, Vector]], liked: Mapping[str, Vector]
) -> list[Hit]:
    """Return a recommend query's hits, each ``via`` the liked example nearest to it, best first.

    Args:
        found: Each hit's item id, score and stored vector.
        liked: The liked examples' vectors (normalised, so a dot product is their cosine).

    """
    names = list(liked)
    matrix = np.stack(list(liked.values()))
    return best_first(
        [Hit(item, score, names[int(np.argmax(matrix @ vector))]) for item, score, vector in found]
    )


class FilterTypes(Protocol):
    """Builds one client library's filter objects (Qdrant Edge's and qdrant-client's differ)."""

    def within(self, key: str, bounds: Range) -> Any:
        """Admit the points whose numeric field ``key`` lies within ``bounds``."""
        ...

    def any_of(self, key: str, values: list[str]) -> Any:
        """Admit the points whose field ``key`` equals any of ``values``."""
        ...

    def equals(self, key: str, value: Any) -> Any:
        """Admit the points whose field ``key`` equals ``value``."""
        ...

    def ids(self, points: list[uuid.UUID]) -> Any:
        """Admit the points of these ids."""
        ...

    def combined(self, must: list[Any], must_not: list[Any], should: list[Any]) -> Any:
        """Admit what all of ``must``, none of ``must_not`` and one of ``should`` (if any) admit."""
        ...


def to_filter(selection: Selection, types: FilterTypes) -> Any:
    """Return the filter that admits what ``selection`` admits, or ``None`` for everything."""
    must: list[Any] = [_condition(c, types) for c in selection.conditions]
    if selection.only is not None:
        must.append(types.ids([point_id(i) for i in selection.only]))
    must_not: list[Any] = []
    if selection.exclude:
        must_not.append(types.ids([point_id(i) for i in selection.exclude]))
    if not must and not must_not:
        return None
    return types.combined(must, must_not, [])


def _condition(condition: FieldCondition, types: FilterTypes) -> Any:
    key = f"{META}.{condition.field}"
    if condition.range is not None:
        return types.within(key, condition.range)
    if condition.any_of is not None:
        values = [filterable(v) for v in condition.any_of]
        if all(isinstance(v, str) for v in values):
            return types.any_of(key, values)
        return types.combined(
            [], [], [_condition(FieldCondition(condition.field, equals=v), types) for v in values]
        )
    value = filterable(condition.equals)
    if isinstance(value, int | float):
        # A range matches 2 and 2.0 alike; an exact match would tell integers from floats.
        return types.within(key, Range(gte=value, lte=value))
    return types.equals(key, value)
