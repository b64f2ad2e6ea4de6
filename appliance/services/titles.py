"""Catalog titles mentioned in a request's words ("something like Billy Madison").

Titles are folded the same way on both sides (Unicode compatibility form, accents and case
dropped, apostrophes removed, split into words), so "leon", "Léon" and "LEON" meet. A title also
stands for the forms people use for it: without trailing parentheses ("Heat" for "Heat (1995)"),
the names inside them ("Se7en" for "Seven (a.k.a. Se7en)"), a trailing article put back in front
("The Matrix" for "Matrix, The") and the part before a subtitle ("Léon" for "Léon: The
Professional"). A form shared by more than a few items names none of them.

A phrase that spells a title is not always a mention of it: "it", "her" or "up" occur in most
requests. A match counts only with evidence, all of it language-neutral and read from the
catalog and the request itself:

- a parenthesised remark follows it whose words are the item's, as in "Heat (1995)" for an
  item whose text says 1995 (the remark also picks among items of the same title);
- or the request capitalises it where the title does, beyond a sentence's first word and
  counting only words longer than an article, and its words are rare in the catalog;
- or, in any case, it is three words or more, two of them longer than an article, and rarer
  still.

A word's rarity is its inverse document frequency over the items' titles and texts, so a title
made of words many items use ("Romance", "Life", "Girls") needs the remark, while one of rare
words does not. Lookups go through a dictionary of folded forms: a request costs a few probes
per word whatever the catalog's size, and adding, renaming or removing an item touches only its
own forms.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Apostrophes, typographic ones included (U+2019, U+02BC): "She's" and "Shes" meet.
_APOSTROPHE = "['`\u2019\u02bc]"
_WORD = re.compile(rf"\w+(?:{_APOSTROPHE}\w+)*")
_APOSTROPHES = re.compile(_APOSTROPHE)
_TRAILING_PARENTHESES = re.compile(r"\s*\(([^()]*)\)\s*$")
#: A subtitle follows a colon or a dash between spaces (hyphen, en dash, em dash).
_SUBTITLE = re.compile("\\s*(?::|\\s[-\u2013\u2014]\\s)\\s*")
#: A parenthesised remark right after a phrase: "Heat (1995)", "Solaris (the 1972 one)".
_REMARK = re.compile(r"\s*\(([^()]{1,40})\)")
#: What ends a sentence, so that the next word's capital letter says nothing.
_SENTENCE_END = frozenset('.!?:;\n"\u201c\u201d')
#: Articles and prepositions are this short in most languages: a trailing one is moved back to
#: the front ("Matrix, The"), and a single word this short never names an item by itself.
_SHORT_WORD = 3
#: A form that stands for more items than this is too vague to name any of them.
MAX_ITEMS_PER_FORM = 3
#: Evidence thresholds, in multiples of the rarity of a word that one item in N uses.
_CAPITALISED_RARITY = 0.5
_CAPITALISED_WORD_RARITY = 0.75
_PLAIN_RARITY = 1.25
_PLAIN_WORDS = 3
#: Items prepared together before the lock is taken to add them.
_UPDATE_CHUNK = 4096


class Form:
    """How a form of a title was derived.

    Where forms of several items collide, the lowest (nearest the title itself) wins.
    """

    TITLE = 0
    ALIAS = 1
    SHORTENED = 2


@dataclass(frozen=True, slots=True)
class Mention:
    """A phrase of the request that names catalog items."""

    item_ids: tuple[str, ...]
    start: int
    end: int
    """Character offsets of the phrase in the request."""


@dataclass(frozen=True, slots=True)
class _Word:
    folded: str
    start: int
    end: int
    capitalised: bool
    sentence_start: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    item_id: str
    form: int
    capitals: int
    """Bit i set where the title writes the form's word i with a capital letter (an int, not a
    tuple of flags: a million titles' forms are kept)."""


def fold(text: str) -> str:
    """Return ``text`` without accents, case and apostrophes, as both sides are compared."""
    if text.isascii():
        return text.replace("'", "").replace("`", "").lower()
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _APOSTROPHES.sub("", bare).casefold()


def _words(text: str) -> list[_Word]:
    words: list[_Word] = []
    previous_end = 0
    for match in _WORD.finditer(text):
        gap = text[previous_end : match.start()]
        folded = fold(match.group())
        if folded:
            words.append(
                _Word(
                    folded=folded,
                    start=match.start(),
                    end=match.end(),
                    capitalised=match.group()[0].isupper(),
                    sentence_start=not words or any(c in _SENTENCE_END for c in gap),
                )
            )
        previous_end = match.end()
    return words


def _vocabulary(text: str) -> set[str]:
    return set(_WORD.findall(fold(text)))


def title_forms(title: str) -> list[tuple[int, str]]:
    """Return the forms of a title a request may use, each with how it was derived.

    Returns:
        (``Form`` value, text) pairs; the first is the title without trailing parentheses.

    """
    bare = title
    aliases: list[str] = []
    while (match := _TRAILING_PARENTHESES.search(bare)) and match.start() > 0:
        inner = match.group(1).split()
        # "a.k.a. Se7en": an abbreviation with dots before a name says "also known as".
        while inner and "." in inner[0] and len(inner[0].replace(".", "")) <= _SHORT_WORD:
            inner = inner[1:]
        # A year or an edition number qualifies the title; it is not another name.
        if any(c.isalpha() for word in inner for c in word):
            aliases.append(" ".join(inner))
        bare = bare[: match.start()]
    forms = [(Form.TITLE, bare)]
    forms.extend((Form.ALIAS, alias) for alias in reversed(aliases))
    head, comma, last = bare.rpartition(",")
    last = last.strip()
    if comma and head.strip() and last.isalpha() and len(last) <= _SHORT_WORD:
        bare = f"{last} {head.strip()}"
        forms.append((Form.ALIAS, bare))
    main = _SUBTITLE.split(bare, maxsplit=1)[0]
    if main and main != bare:
        forms.append((Form.SHORTENED, main))
    return forms


@dataclass(frozen=True, slots=True)
class _Prepared:
    item_id: str
    forms: list[tuple[str, _Entry]]
    vocabulary: str
    """The item's distinct words, joined by spaces: one string, not one per word, at 1M items."""


def _prepare(item_id: str, title: str, text: str) -> _Prepared:
    forms: dict[str, _Entry] = {}
    for form, form_text in title_forms(title):
        # Offsets and sentence starts matter in a request only; a title needs less.
        words = [(fold(w), w[0].isupper()) for w in _WORD.findall(form_text)]
        key = " ".join(folded for folded, _ in words if folded)
        if key and key not in forms:
            flags = [capital for folded, capital in words if folded]
            forms[key] = _Entry(item_id, form, sum(1 << i for i, c in enumerate(flags) if c))
    vocabulary = " ".join(_vocabulary(title) | _vocabulary(text))
    return _Prepared(item_id, list(forms.items()), vocabulary)


def _form_of(entry: _Entry) -> int:
    return entry.form


class TitleDictionary:
    """Finds the catalog items a text names, kept in step with the catalog item by item.

    Thread-safe: updates prepare their forms before taking the lock, so a large batch holds
    it only for dictionary insertions, and a lookup never waits for the text analysis.
    """

    def __init__(self, items: Iterable[tuple[str, str, str]] = ()) -> None:
        self._lock = threading.Lock()
        # Each key's entries in order of form, nearest the title first; a key most titles have
        # to themselves holds its one entry without a list around it (see ``_entries_at``).
        self._entries: dict[str, _Entry | list[_Entry]] = {}
        self._forms_of: dict[str, tuple[str, ...]] = {}
        self._vocabulary_of: dict[str, str] = {}
        self._item_frequency: Counter[str] = Counter()
        # Longest form, in words, that starts with a given word: bounds the probes per word.
        self._longest_from: dict[str, int] = {}
        self.update(items)

    def __len__(self) -> int:
        return len(self._forms_of)

    def update(self, items: Iterable[tuple[str, str, str]]) -> None:
        """Add items, or replace what is known of them, as ``(item_id, title, text)``.

        Items are prepared and added a chunk at a time: what a whole catalog's preparation would
        hold at once is several times what the dictionary keeps of it.
        """
        remaining = iter(items)
        while chunk := list(itertools.islice(remaining, _UPDATE_CHUNK)):
            self._add([_prepare(*item) for item in chunk])

    def _add(self, prepared: list[_Prepared]) -> None:
        with self._lock:
            for item in prepared:
                self._remove(item.item_id)
                for key, entry in item.forms:
                    self._insert(key, entry)
                    head, _, _ = key.partition(" ")
                    length = key.count(" ") + 1
                    self._longest_from[head] = max(self._longest_from.get(head, 0), length)
                self._forms_of[item.item_id] = tuple(key for key, _ in item.forms)
                self._vocabulary_of[item.item_id] = item.vocabulary
                self._item_frequency.update(item.vocabulary.split())

    def replace(self, other: TitleDictionary) -> None:
        """Take over everything ``other`` knows, dropping what this one knew."""
        with self._lock, other._lock:
            self._entries = other._entries
            self._forms_of = other._forms_of
            self._vocabulary_of = other._vocabulary_of
            self._item_frequency = other._item_frequency
            self._longest_from = other._longest_from

    def _insert(self, key: str, entry: _Entry) -> None:
        entries = list(self._entries_at(key))
        bisect.insort(entries, entry, key=_form_of)
        self._put(key, entries)

    def _entries_at(self, key: str) -> Sequence[_Entry]:
        found = self._entries.get(key)
        if found is None:
            return ()
        return found if isinstance(found, list) else (found,)

    def _put(self, key: str, entries: list[_Entry]) -> None:
        """Keep a key's entries: one without a list around it, none by forgetting the key."""
        if not entries:
            del self._entries[key]
        else:
            self._entries[key] = entries[0] if len(entries) == 1 else entries

    def remove(self, item_ids: Iterable[str]) -> None:
        """Forget items; unknown ids are ignored."""
        with self._lock:
            for item_id in item_ids:
                self._remove(item_id)

    def _remove(self, item_id: str) -> None:
        keys = self._forms_of.pop(item_id, None)
        if keys is None:
            return
        for key in keys:
            self._put(key, [e for e in self._entries_at(key) if e.item_id != item_id])
        # A bound on form lengths left too large by a removal only costs a few extra probes.
        for word in self._vocabulary_of.pop(item_id).split():
            self._item_frequency[word] -= 1
            if self._item_frequency[word] <= 0:
                del self._item_frequency[word]

    def find(self, text: str) -> list[Mention]:
        """Return the mentions of catalog items in ``text``, in order of appearance.

        Where forms overlap, the longest one with evidence wins ("The Lord of the Rings: The
        Two Towers" over "The Lord of the Rings").
        """
        text = unicodedata.normalize("NFC", text)
        words = _words(text)
        with self._lock:
            return self._find(text, words)

    def find_now(self, text: str) -> list[Mention] | None:
        """Return what ``find`` would, or ``None`` rather than wait while an update runs."""
        text = unicodedata.normalize("NFC", text)
        words = _words(text)
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._find(text, words)
        finally:
            self._lock.release()

    def _find(self, text: str, words: list[_Word]) -> list[Mention]:
        mentions: list[Mention] = []
        position = 0
        while position < len(words):
            found = self._longest_at(text, words, position)
            if found is None:
                position += 1
                continue
            length, item_ids = found
            end = words[position + length - 1].end
            mentions.append(Mention(item_ids, words[position].start, end))
            position += length
        return mentions

    def _longest_at(
        self, text: str, words: list[_Word], position: int
    ) -> tuple[int, tuple[str, ...]] | None:
        longest = min(self._longest_from.get(words[position].folded, 0), len(words) - position)
        for length in range(longest, 0, -1):
            span = words[position : position + length]
            entries = self._entries_at(" ".join(w.folded for w in span))
            if not entries:
                continue
            nearest = entries[0].form
            chosen = entries[: bisect.bisect_right(entries, nearest, key=_form_of)]
            remark = _REMARK.match(text, span[-1].end)
            confirmed = self._confirmed_by(chosen, remark.group(1)) if remark else []
            if confirmed:
                chosen = confirmed
            if len(chosen) > MAX_ITEMS_PER_FORM:
                continue
            if confirmed or self._has_evidence(span, chosen):
                return length, tuple(e.item_id for e in chosen)
        return None

    def _confirmed_by(self, entries: Sequence[_Entry], remark: str) -> list[_Entry]:
        """Return the entries whose item has every word of ``remark`` ("1995") among its own."""
        wanted = _vocabulary(remark)
        return [e for e in entries if wanted <= set(self._vocabulary_of[e.item_id].split())]

    def _has_evidence(self, span: list[_Word], entries: Sequence[_Entry]) -> bool:
        one_in_n = math.log(len(self._forms_of) + 1)
        rarity = sum(self._rarity(w.folded) for w in span)
        if any(_capitalised_as(span, e.capitals) for e in entries):
            if len(span) > 1:
                return rarity >= _CAPITALISED_RARITY * one_in_n
            if len(span[0].folded) > _SHORT_WORD:
                return rarity >= _CAPITALISED_WORD_RARITY * one_in_n
        long_words = sum(1 for w in span if len(w.folded) > _SHORT_WORD)
        return (
            len(span) >= _PLAIN_WORDS
            and long_words >= 2  # noqa: PLR2004
            and rarity >= _PLAIN_RARITY * one_in_n
        )

    def _rarity(self, word: str) -> float:
        items = len(self._forms_of)
        return math.log((items + 1) / (self._item_frequency[word] + 1))


def _capitalised_as(span: list[_Word], capitals: int) -> bool:
    """Whether the request writes capitals where the title does, beyond a sentence's start."""
    informative = False
    for i, word in enumerate(span):
        if not capitals >> i & 1:
            continue
        if len(word.folded) <= _SHORT_WORD:
            # Titles capitalise short words that requests often do not ("the Matrix"), and
            # some languages always capitalise a few ("I"): they say nothing either way.
            continue
        if not word.capitalised:
            return False
        informative = informative or not word.sentence_start
    return informative
