"""Build the demo catalog (``appliance/demo/movielens.jsonl``) from MovieLens ml-latest-small.

Each movie becomes one JSON line ``{"item_id", "title", "text", "metadata"}``, sorted by movieId.
The output is byte-for-byte deterministic, so the shipped file can be checked against a rebuild.
The source data is licensed for research and non-commercial use only; see
``appliance/demo/NOTICE.md``.

Run from the repository root::

    python scripts/build_demo_catalog.py [--source DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "datasets" / "movielens-small"
DEFAULT_OUT = REPO_ROOT / "appliance" / "demo" / "movielens.jsonl"

MAX_KEYWORDS = 12
NO_GENRES = "(no genres listed)"

# MovieLens files titles library-style ("Matrix, The"); these are the articles it moves to the
# end, in English and in the original-language alternate titles. Apostrophe forms attach to the
# next word without a space ("L'Atalante").
ARTICLES = (
    "The", "A", "An",
    "Le", "La", "Les", "L'", "Un", "Une", "De",
    "Il", "I", "Lo", "Gli",
    "El", "Los", "Las",
    "Der", "Die", "Das", "Det", "Den",
    "Da",
)  # fmt: skip
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.+), (?P<article>" + "|".join(map(re.escape, ARTICLES)) + r")$",
)
# A year, or a series' year range joined by an en dash or a hyphen; the first year is the
# release year.
_TRAILING_YEAR = re.compile(r"\s*\((?P<year>\d{4})(?:[\u2013-]\d{4})?\)$")
# The main title followed by any number of alternate titles, each in its own parentheses.
_ALTERNATES = re.compile(r"^(?P<main>.*?)(?P<alternates>(?:\s*\([^()]*\))*)$")
_ALTERNATE = re.compile(r"\(([^()]*)\)")
_AKA = "a.k.a. "


@dataclass(frozen=True, slots=True)
class Movie:
    """One row of movies.csv, with its title split into display title and year."""

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]


def front_article(title: str) -> str:
    """Move a library-style trailing article to the front: ``'Matrix, The'`` -> ``'The Matrix'``."""
    prefix = ""
    if title.startswith(_AKA):
        prefix, title = _AKA, title[len(_AKA) :]
    match = _TRAILING_ARTICLE.match(title)
    if match is None:
        return prefix + title
    article = match["article"]
    separator = "" if article.endswith("'") else " "
    return f"{prefix}{article}{separator}{match['body']}"


def split_title(raw: str) -> tuple[str, int | None]:
    """Split a MovieLens title into a display title and its release year, if it has one."""
    # Some source titles carry stray or doubled spaces.
    title = " ".join(raw.split())
    year: int | None = None
    year_match = _TRAILING_YEAR.search(title)
    if year_match is not None:
        year = int(year_match["year"])
        title = title[: year_match.start()]
    # The pattern matches every string; an empty main part means the whole title is in
    # parentheses, which is then treated as a plain title.
    parts = _ALTERNATES.match(title)
    if parts is None or not parts["main"]:
        return front_article(title), year
    alternates = [
        f"({front_article(alt.strip())})" for alt in _ALTERNATE.findall(parts["alternates"])
    ]
    return " ".join([front_article(parts["main"].strip()), *alternates]), year


def read_movies(source: Path) -> list[Movie]:
    """Read movies.csv, sorted by movieId."""
    movies: list[Movie] = []
    with (source / "movies.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            title, year = split_title(row["title"])
            genres = () if row["genres"] == NO_GENRES else tuple(row["genres"].split("|"))
            movies.append(Movie(int(row["movieId"]), title, year, genres))
    return sorted(movies, key=lambda movie: movie.movie_id)


def normalise_tag(tag: str) -> str:
    """Lower-case a tag and collapse its whitespace, so case and spacing variants count as one."""
    return " ".join(tag.lower().split())


def read_keywords(source: Path) -> dict[int, list[str]]:
    """Map movieId to its most-used distinct tags: most users first, then alphabetical."""
    users: defaultdict[tuple[int, str], set[str]] = defaultdict(set)
    with (source / "tags_catalog.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            tag = normalise_tag(row["tag"])
            if tag:
                users[int(row["movieId"]), tag].add(row["userId"])
    counts: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for (movie_id, tag), taggers in users.items():
        counts[movie_id][tag] = len(taggers)
    return {
        movie_id: sorted(tags, key=lambda tag: (-tags[tag], tag))[:MAX_KEYWORDS]
        for movie_id, tags in counts.items()
    }


def join_words(words: list[str]) -> str:
    """Join words as English prose: ``'a'``, ``'a and b'``, ``'a, b and c'``."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def describe(movie: Movie, keywords: list[str]) -> str:
    """Write the description of a movie.

    The appliance embeds the title together with this text, so the title is not repeated here;
    that keeps untagged movies with the same genres and year apart.
    """
    # Genres read as ordinary words mid-sentence; IMAX stays an acronym.
    genres = [genre if genre.isupper() else genre.lower() for genre in movie.genres]
    kind = f"{join_words(genres)} film" if genres else "film"
    article = "an" if kind[0].lower() in "aeiou" else "a"
    when = f" from {movie.year}" if movie.year is not None else ""
    text = f"{article.capitalize()} {kind}{when}."
    if keywords:
        text += f" Keywords: {', '.join(keywords)}."
    return text


def to_record(movie: Movie, keywords: list[str]) -> dict[str, Any]:
    """Build one catalog line as the appliance ingests it."""
    metadata: dict[str, Any] = {}
    if movie.year is not None:
        metadata["year"] = movie.year
    metadata["genres"] = list(movie.genres)
    metadata["movielens_id"] = movie.movie_id
    return {
        "item_id": f"movie_{movie.movie_id}",
        "title": movie.title,
        "text": describe(movie, keywords),
        "metadata": metadata,
    }


def build(source: Path, out: Path) -> list[dict[str, Any]]:
    """Write the catalog to ``out`` and return its records."""
    keywords = read_keywords(source)
    records = [to_record(movie, keywords.get(movie.movie_id, [])) for movie in read_movies(source)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return records


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the catalog and print a short summary."""
    parser = argparse.ArgumentParser(
        description="Build the demo catalog JSONL from MovieLens ml-latest-small.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="MovieLens ml-latest-small directory (default: ../shared/datasets/movielens-small "
        "from the repository root)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output JSONL file (default: appliance/demo/movielens.jsonl)",
    )
    args = parser.parse_args(argv)
    records = build(args.source, args.out)
    mean_words = sum(len(record["text"].split()) for record in records) / len(records)
    print(f"wrote {len(records)} items to {args.out} (mean text length {mean_words:.1f} words)")


if __name__ == "__main__":
    main()
