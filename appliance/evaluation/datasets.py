"""Readers of the evaluation datasets: queries with ground truth, and interaction histories.

Every reader returns plain values in the appliance's own terms (string item and user ids), so
the same runner can evaluate the bundled MovieLens/ReDial tasks and an operator's own exported
catalog and feedback log.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec

T = TypeVar("T")


def movielens_item(movie_id: int | str) -> str:
    """Return the catalog id of a MovieLens movie, as the demo catalog names it."""
    return f"movie_{movie_id}"


def movielens_user(user_id: int | str) -> str:
    """Return the appliance user id of a MovieLens user."""
    return f"ml-{user_id}"


@dataclass(frozen=True, slots=True)
class Query:
    """One evaluation request and what a good answer contains."""

    query_id: str
    user_id: str
    context: str
    relevant: Mapping[str, float]
    """Item id -> graded relevance. Ids absent from the catalog stay in: they count as misses."""
    liked: tuple[str, ...] = field(default=())
    """Items the user said they liked before asking, replayed as feedback first."""
    like: tuple[str, ...] = ()
    """Items to find what goes with (``like_items``), in place of words; one item is "more like
    this" (``GET /items/{item_id}/similar``)."""


@dataclass(frozen=True, slots=True)
class Interaction:
    """One historical rating."""

    user_id: str
    item_id: str
    rating: float
    timestamp: datetime


class _TagRecord(msgspec.Struct):
    query_id: str
    query: str
    query_nl: str
    relevant: dict[str, float]


class _RedialMovie(msgspec.Struct):
    redial_movieId: str  # noqa: N815 - the file's field names
    ml_movieId: int | None = None  # noqa: N815


class _RedialRecord(msgspec.Struct):
    query_id: str
    context: str
    history_liked: list[_RedialMovie]
    relevant: list[_RedialMovie]


def read_tag_queries(path: Path, *, sentence: bool = False) -> list[Query]:
    """Read tag queries (``ml_tag_queries_*.jsonl``): a tag, and the movies users tagged with it.

    Args:
        path: The JSON Lines file.
        sentence: Use the sentence form ("Recommend movies for: ...") instead of the bare tag.

    Returns:
        One query per line, each for a user with no history.

    """
    return [
        Query(
            query_id=r.query_id,
            user_id=f"eval-{r.query_id}",
            context=r.query_nl if sentence else r.query,
            relevant={movielens_item(k): v for k, v in r.relevant.items()},
        )
        for r in _json_lines(path, _TagRecord)
    ]


def read_redial_queries(path: Path) -> list[Query]:
    """Read ReDial requests (``redial_queries_*.jsonl``): a seeker's own words and liked movies.

    Recommended movies that MovieLens lacks keep a placeholder id, so they count as misses.
    """
    queries = []
    for record in _json_lines(path, _RedialRecord):
        relevant = {
            movielens_item(m.ml_movieId)
            if m.ml_movieId is not None
            else f"redial-only-{m.redial_movieId}": 1.0
            for m in record.relevant
        }
        liked = tuple(
            movielens_item(m.ml_movieId) for m in record.history_liked if m.ml_movieId is not None
        )
        queries.append(
            Query(
                query_id=record.query_id,
                user_id=f"eval-{record.query_id}",
                context=record.context,
                relevant=relevant,
                liked=liked,
            )
        )
    return queries


def read_leave_last_out(path: Path) -> list[Query]:
    """Read leave-last-out targets (``ml_loo_*_targets.csv``): each user's held-back movie.

    The query has no context: the user's replayed history alone must find the target.
    """
    with path.open(newline="", encoding="utf-8") as file:
        return [
            Query(
                query_id=f"loo-{row['userId']}",
                user_id=movielens_user(row["userId"]),
                context="",
                relevant={movielens_item(row["movieId"]): 1.0},
            )
            for row in csv.DictReader(file)
        ]


def read_ratings(path: Path) -> Iterator[Interaction]:
    """Stream MovieLens-style ratings (userId, movieId, rating, timestamp in epoch seconds)."""
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            yield Interaction(
                user_id=movielens_user(row["userId"]),
                item_id=movielens_item(row["movieId"]),
                rating=float(row["rating"]),
                timestamp=datetime.fromtimestamp(int(row["timestamp"]), tz=UTC),
            )


def _json_lines(path: Path, kind: type[T]) -> Iterator[T]:
    decoder = msgspec.json.Decoder(kind)
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError as e:
                raise ValueError(f"{path} line {number}: {e}") from e


#: Ratings at or above this count as positive (MovieLens' leave-last-out targets are so chosen).
POSITIVE_FROM = 4.0


def time_split(
    interactions: Iterable[Interaction],
    *,
    positive_from: float = POSITIVE_FROM,
    min_history: int = 1,
) -> tuple[list[Interaction], list[Query]]:
    """Hold out each user's latest positive interaction, for data without prepared targets.

    This is how an operator evaluates their own exported feedback log: everything before a
    user's last positive event is history, and that event is what the recommender must find.

    Args:
        interactions: The whole log, in any order.
        positive_from: Ratings at or above this count as positive.
        min_history: Users with fewer earlier interactions are left out of the queries (their
            events all stay in the history).

    Returns:
        The history to replay, and one query per held-out event.

    """
    by_user: dict[str, list[Interaction]] = {}
    for interaction in interactions:
        by_user.setdefault(interaction.user_id, []).append(interaction)
    history: list[Interaction] = []
    queries: list[Query] = []
    for user_id in sorted(by_user):
        events = sorted(by_user[user_id], key=lambda i: (i.timestamp, i.item_id))
        last = max((n for n, e in enumerate(events) if e.rating >= positive_from), default=None)
        if last is None or last < min_history:
            history.extend(events)
            continue
        target = events[last]
        # Events after the target would leak what the user did next.
        history.extend(events[:last])
        queries.append(
            Query(
                query_id=f"holdout-{user_id}",
                user_id=user_id,
                context="",
                relevant={target.item_id: 1.0},
            )
        )
    return history, queries


def like_latest(
    queries: Iterable[Query],
    history: Iterable[Interaction],
    *,
    count: int = 1,
    positive_from: float = POSITIVE_FROM,
) -> list[Query]:
    """Ask, for each hold-out query, for what goes with the ``count`` items its user liked last.

    The target stays the held-out item: what the user went on to like next is what "more like
    this" on the item they had just liked, or a basket of their latest likes, should find. The
    items are oldest first; an item liked twice counts once. Users who liked fewer items in the
    history are left out.
    """
    liked: dict[str, list[Interaction]] = {}
    for i in history:
        if i.rating >= positive_from:
            liked.setdefault(i.user_id, []).append(i)
    latest: dict[str, tuple[str, ...]] = {}
    for user_id, events in liked.items():
        # An item liked twice counts once, where it was liked last.
        newest_first = sorted(events, key=lambda i: (i.timestamp, i.item_id), reverse=True)
        items = tuple(dict.fromkeys(i.item_id for i in newest_first))
        if len(items) >= count:
            latest[user_id] = items[:count][::-1]
    return [
        Query(
            query_id=f"like-{q.query_id}",
            user_id=q.user_id,
            context="",
            relevant=q.relevant,
            like=latest[q.user_id],
        )
        for q in queries
        if q.user_id in latest
    ]


def read_interactions(path: Path) -> Iterator[Interaction]:
    """Stream an exported feedback log: CSV with user_id, item_id, rating, timestamp.

    ``timestamp`` is epoch seconds or ISO 8601; ``rating`` is 0 to 5.
    """
    with path.open(newline="", encoding="utf-8") as file:
        for number, row in enumerate(csv.DictReader(file), start=2):
            try:
                raw = row["timestamp"]
                moment = (
                    datetime.fromtimestamp(float(raw), tz=UTC)
                    if raw.replace(".", "", 1).isdigit()
                    else datetime.fromisoformat(raw)
                )
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                yield Interaction(row["user_id"], row["item_id"], float(row["rating"]), moment)
            except (KeyError, ValueError) as e:
                raise ValueError(
                    f"{path} line {number}: expected user_id, item_id, rating, timestamp ({e})"
                ) from e
