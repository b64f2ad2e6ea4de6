"""The impression log: what every recommendation response offered, kept to learn the fusion.

An impression is one response: its user and time, and every fused candidate (shown or not) with
its final position and each source's rank and score for it. An answer reused from the result
cache offers what the answer it reuses offered: its impression names that one
(``candidates_of``) and stores no candidates of its own, which at thousands of cached answers a
second is most of what would be written. A candidate's label is the feedback
that answers it: events that name the response's ``request_id``, or, for events that name no
response, the user's events on the item after the latest impression that offered it to them
(within a window). Impressions live in the appliance's DuckDB file (migrations 2 and 3) and are
written through their own connection, in batches, by one writer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from appliance.backends.stores.duckdb_store import transaction

_CANDIDATES = attrgetter("candidates")
_SOURCES = attrgetter("sources")
_SOURCE, _RANK, _SCORE = attrgetter("source"), attrgetter("rank"), attrgetter("score")
_ITEM_ID, _POSITION = attrgetter("item_id"), attrgetter("position")
_SHOWN, _FUSED = attrgetter("shown"), attrgetter("fused_score")
_SOURCE_RANK = pa.struct([("source", pa.string()), ("rank", pa.int32()), ("score", pa.float64())])

#: Completes a query that defines a CTE ``scope`` (request_id, user_id, created_at,
#: candidates_of) of impressions: ``cand``, their candidates (shared ones under each impression's
#: own request id), and ``labels``, the summed weight of the feedback answering each labelled
#: candidate. Parameter: the label window in microseconds.
_LABELLED = """
cand AS (
    SELECT s.request_id, c.item_id, c.position, c.shown, c.fused_score, c.sources,
           s.user_id, s.created_at
    FROM scope AS s JOIN impression_candidates AS c
      ON c.request_id = coalesce(s.candidates_of, s.request_id)
),
answered AS (
    SELECT c.request_id, c.item_id, f.weight
    FROM cand AS c JOIN feedback AS f
      ON f.request_id = c.request_id AND f.user_id = c.user_id AND f.item_id = c.item_id
    UNION ALL
    SELECT request_id, item_id, weight FROM (
        SELECT c.request_id, c.item_id, f.weight
        FROM feedback AS f JOIN cand AS c
          ON f.user_id = c.user_id AND f.item_id = c.item_id
         AND f.event_time >= c.created_at
         AND f.event_time <= c.created_at + to_microseconds(?::BIGINT)
        WHERE f.request_id IS NULL
        QUALIFY row_number() OVER (PARTITION BY f.event_id ORDER BY c.created_at DESC) = 1
    )
),
labels AS (SELECT request_id, item_id, sum(weight) AS label FROM answered GROUP BY ALL)
"""


@dataclass(frozen=True, slots=True)
class SourceRank:
    """Where one candidate source placed a candidate."""

    source: str
    rank: int
    """1 for the source's first hit."""
    score: float
    """The source's own score for the item."""


@dataclass(frozen=True, slots=True)
class LoggedCandidate:
    """One fused candidate of a response."""

    item_id: str
    position: int
    """1-based place in the final order (after fusion, diversity and re-ranking)."""
    shown: bool
    """Whether it was among the ``top_k`` items returned."""
    fused_score: float
    sources: tuple[SourceRank, ...]


@dataclass(frozen=True, slots=True)
class Impression:
    """One recommendation response, as logged."""

    request_id: str
    user_id: str
    created_at: datetime
    strategy: str
    has_context: bool
    """Whether the request had words (a context): the fusion is learned apart for each kind."""
    fusion: str
    """The fusion that ordered the candidates: rrf or learned."""
    top_k: int
    candidates: tuple[LoggedCandidate, ...]
    candidates_of: str | None = None
    """For an answer reused from the result cache: the request id of the answer it reuses, whose
    candidates (the same as ``candidates``) are stored once, with that answer's impression."""
    names_items: bool = False
    """Whether the request's context named catalog items (another kind of request)."""


@dataclass(frozen=True, slots=True)
class StoredImpression:
    """A logged impression with the labels its feedback gave it so far."""

    impression: Impression
    labels: dict[str, float]
    """Item id -> summed weight of the feedback answering it, for the labelled candidates."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """The labelled impressions' candidates, as arrays, one row per candidate.

    Rows are grouped by impression, impressions in time order (the first is the oldest).
    """

    sources: tuple[str, ...]
    """The sources of the ``ranks`` columns."""
    impression: npt.NDArray[np.int64]
    """The impression of each row: 0 for the oldest, consecutive."""
    ranks: npt.NDArray[np.int64]
    """(rows, sources): each source's rank for the candidate, 0 where it did not propose it."""
    shown: npt.NDArray[np.bool_]
    label: npt.NDArray[np.float64]
    """Summed weight of the answering feedback; 0 for a candidate nobody answered."""
    has_context: npt.NDArray[np.bool_]
    """Whether the row's request had words."""
    names_items: npt.NDArray[np.bool_]
    """Whether the row's request named catalog items."""

    @property
    def impressions(self) -> int:
        """How many impressions the rows come from."""
        return len(np.unique(self.impression))


def _arrow_tables(impressions: Sequence[Impression]) -> tuple[pa.Table, pa.Table]:
    """Return the rows of ``impressions`` and of the candidates they store, as Arrow tables."""
    heads = pa.table(
        {
            "request_id": [i.request_id for i in impressions],
            "user_id": [i.user_id for i in impressions],
            "created_at": pa.array(
                [_naive_utc(i.created_at) for i in impressions], type=pa.timestamp("us")
            ),
            "strategy": [i.strategy for i in impressions],
            "has_context": pa.array([i.has_context for i in impressions], type=pa.bool_()),
            "fusion": [i.fusion for i in impressions],
            "top_k": pa.array([i.top_k for i in impressions], type=pa.int32()),
            "candidates_of": pa.array([i.candidates_of for i in impressions], type=pa.string()),
            "names_items": pa.array([i.names_items for i in impressions], type=pa.bool_()),
        }
    )
    owners = [i for i in impressions if i.candidates_of is None]
    # Column by column, iterating in C (map, chain): this runs once per logged candidate and
    # source, on a thread that shares the interpreter with the requests.
    counts = [len(i.candidates) for i in owners]
    candidates = list(chain.from_iterable(map(_CANDIDATES, owners)))
    ranks = list(chain.from_iterable(map(_SOURCES, candidates)))
    offsets = np.zeros(len(candidates) + 1, dtype=np.int32)
    np.cumsum(list(map(len, map(_SOURCES, candidates))), out=offsets[1:])
    per_source = pa.StructArray.from_arrays(
        [
            pa.array(list(map(_SOURCE, ranks)), type=pa.string()),
            pa.array(list(map(_RANK, ranks)), type=pa.int32()),
            pa.array(list(map(_SCORE, ranks)), type=pa.float64()),
        ],
        fields=list(_SOURCE_RANK),
    )
    request_ids = np.repeat(np.array([i.request_id for i in owners], dtype=object), counts)
    rows = pa.table(
        {
            "request_id": pa.array(request_ids, type=pa.string()),
            "item_id": pa.array(list(map(_ITEM_ID, candidates)), type=pa.string()),
            "position": pa.array(list(map(_POSITION, candidates)), type=pa.int32()),
            "shown": pa.array(list(map(_SHOWN, candidates)), type=pa.bool_()),
            "fused_score": pa.array(list(map(_FUSED, candidates)), type=pa.float64()),
            "sources": pa.ListArray.from_arrays(pa.array(offsets), per_source),
        }
    )
    return heads, rows


def _naive_utc(moment: datetime) -> datetime:
    # TIMESTAMP columns hold naive UTC, as in the rest of the database.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class ImpressionStore:
    """The impression tables, through a connection of their own.

    One lock serialises this connection's use, so the store's lock is never taken: logging
    impressions does not wait for, or delay, the requests that read items and users.
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._closed = False

    def _rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def append(self, impressions: Sequence[Impression]) -> int:
        """Store impressions and their candidates in one transaction, through Arrow.

        An impression that reuses the candidates of another is stored without them when that
        one is stored or comes in the same call; otherwise (its writing failed, or it was
        dropped from a full queue) with them, as an impression of its own.

        Returns:
            How many candidate rows were written.

        """
        if not impressions:
            return 0
        with self._lock:
            impressions = self._without_unknown_owners(impressions)
            heads, rows = _arrow_tables(impressions)
            self._db.register("incoming_impressions", heads)
            self._db.register("incoming_candidates", rows)
            try:
                with transaction(self._db):
                    self._rows("INSERT INTO impressions BY NAME SELECT * FROM incoming_impressions")
                    self._rows(
                        "INSERT INTO impression_candidates SELECT * FROM incoming_candidates"
                    )
            finally:
                self._db.unregister("incoming_impressions")
                self._db.unregister("incoming_candidates")
        return int(rows.num_rows)

    def _without_unknown_owners(self, impressions: Sequence[Impression]) -> Sequence[Impression]:
        """Return the impressions, with candidates of their own where their owner is not stored."""
        owners: set[str | None] = {None}
        owners.update(i.request_id for i in impressions if i.candidates_of is None)
        wanted = {i.candidates_of for i in impressions if i.candidates_of is not None} - owners
        if not wanted:
            return impressions
        stored = {
            row[0]
            for row in self._rows(
                "SELECT request_id FROM impressions "
                "WHERE candidates_of IS NULL AND request_id IN (SELECT unnest(?))",
                [sorted(wanted)],
            )
        }
        owners |= stored
        return [
            i if i.candidates_of in owners else replace(i, candidates_of=None) for i in impressions
        ]

    def prune(self, older_than: datetime, keep: int) -> int:
        """Delete impressions logged before ``older_than``, and all but the newest ``keep``.

        Returns:
            How many impressions were deleted.

        """
        with self._lock, transaction(self._db):
            self._rows(
                """
                CREATE OR REPLACE TEMP TABLE expired AS
                SELECT request_id, candidates_of FROM impressions
                WHERE created_at < ?
                UNION
                SELECT request_id, candidates_of FROM (
                    SELECT request_id, candidates_of FROM impressions
                    ORDER BY created_at DESC, request_id OFFSET ?
                )
                """,
                [_naive_utc(older_than), keep],
            )
            row = self._rows("SELECT count(*) FROM expired")[0]
            if row[0]:
                self._rows(
                    "DELETE FROM impressions WHERE request_id IN (SELECT request_id FROM expired)"
                )
                # Candidates shared with an impression that is kept stay with it.
                self._rows(
                    """
                    DELETE FROM impression_candidates
                    WHERE request_id IN (
                        SELECT coalesce(candidates_of, request_id) FROM expired
                    )
                    AND request_id NOT IN (
                        SELECT coalesce(candidates_of, request_id) FROM impressions
                    )
                    """
                )
            self._rows("DROP TABLE expired")
        return int(row[0])

    def delete_user(self, user_id: str) -> int:
        """Delete every impression of a user.

        Returns:
            How many impressions were deleted.

        """
        with self._lock, transaction(self._db):
            # Every impression that shares candidates shares them with the same user's.
            self._rows(
                "DELETE FROM impression_candidates WHERE request_id IN "
                "(SELECT coalesce(candidates_of, request_id) FROM impressions "
                "WHERE user_id = ?)",
                [user_id],
            )
            deleted = self._rows(
                "DELETE FROM impressions WHERE user_id = ? RETURNING request_id", [user_id]
            )
        return len(deleted)

    def clear(self) -> int:
        """Delete every impression.

        Returns:
            How many impressions were deleted.

        """
        with self._lock, transaction(self._db):
            self._rows("DELETE FROM impression_candidates")
            deleted = self._rows("DELETE FROM impressions RETURNING request_id")
        return len(deleted)

    def count(self) -> int:
        """Return how many impressions are stored."""
        with self._lock:
            return int(self._rows("SELECT count(*) FROM impressions")[0][0])

    def impression(self, request_id: str, label_window: timedelta) -> StoredImpression | None:
        """Return one impression with its candidates in position order and their labels.

        Args:
            request_id: The response's id.
            label_window: How long after an impression feedback that names no response still
                answers it.

        """
        with self._lock:
            head = self._rows(
                "SELECT request_id, user_id, created_at, strategy, has_context, fusion, top_k, "
                "candidates_of, names_items FROM impressions WHERE request_id = ?",
                [request_id],
            )
            if not head:
                return None
            # Every impression of the user is in scope: an event answers only the latest one
            # that offered its item.
            rows = self._rows(
                f"""
                WITH scope AS (
                    SELECT request_id, user_id, created_at, candidates_of FROM impressions
                    WHERE user_id = ?
                ),
                {_LABELLED}
                SELECT c.item_id, c.position, c.shown, c.fused_score, c.sources, l.label
                FROM cand AS c LEFT JOIN labels AS l USING (request_id, item_id)
                WHERE c.request_id = ?
                ORDER BY c.position
                """,  # noqa: S608 - constant fragments
                [head[0][1], _microseconds(label_window), request_id],
            )
        (
            request,
            user_id,
            created_at,
            strategy,
            has_context,
            fusion,
            top_k,
            candidates_of,
            names_items,
        ) = head[0]
        candidates = tuple(
            LoggedCandidate(
                item_id=r[0],
                position=int(r[1]),
                shown=bool(r[2]),
                fused_score=float(r[3]),
                sources=tuple(SourceRank(s["source"], int(s["rank"]), s["score"]) for s in r[4]),
            )
            for r in rows
        )
        return StoredImpression(
            Impression(
                request_id=request,
                user_id=user_id,
                created_at=created_at.replace(tzinfo=UTC),
                strategy=strategy,
                has_context=bool(has_context),
                fusion=fusion,
                top_k=int(top_k),
                candidates=candidates,
                candidates_of=candidates_of,
                names_items=bool(names_items),
            ),
            labels={r[0]: float(r[5]) for r in rows if r[5] is not None},
        )

    def training_set(self, label_window: timedelta, limit: int) -> TrainingSet:
        """Return the candidates of the labelled impressions among the newest ``limit``.

        An impression is labelled when feedback answers at least one of its candidates.

        Args:
            label_window: How long after an impression feedback that names no response still
                answers it.
            limit: Most impressions looked at, newest first.

        """
        with self._lock:
            self._rows(
                f"""
                CREATE OR REPLACE TEMP TABLE training AS
                WITH scope AS (
                    SELECT request_id, user_id, created_at, has_context, names_items, candidates_of
                    FROM impressions ORDER BY created_at DESC, request_id LIMIT ?
                ),
                {_LABELLED},
                labelled AS (
                    SELECT s.request_id, s.created_at, s.has_context, s.names_items
                    FROM scope AS s
                    WHERE s.request_id IN (SELECT request_id FROM labels)
                )
                SELECT dense_rank() OVER (ORDER BY m.created_at, m.request_id) - 1 AS impression,
                       row_number() OVER (ORDER BY m.created_at, m.request_id, c.position) - 1
                           AS row,
                       c.shown, coalesce(l.label, 0.0) AS label, m.has_context, m.names_items,
                       c.sources
                FROM labelled AS m
                JOIN cand AS c USING (request_id)
                LEFT JOIN labels AS l USING (request_id, item_id)
                """,  # noqa: S608 - constant fragments
                [limit, _microseconds(label_window)],
            )
            try:
                rows = self._db.execute(
                    "SELECT impression, shown, label, has_context, names_items "
                    "FROM training ORDER BY row"
                ).fetchnumpy()
                # Each source's column is numbered here, not from its name in Python: a
                # million names, sorted as Python objects, held the interpreter for 2 s.
                entries = self._db.execute(
                    "SELECT row, dense_rank() OVER (ORDER BY s.source) - 1 AS col, s.rank AS rank "
                    "FROM (SELECT row, unnest(sources) AS s FROM training)"
                ).fetchnumpy()
                names = [
                    str(r[0])
                    for r in self._db.execute(
                        "SELECT DISTINCT unnest(sources).source AS source FROM training "
                        "ORDER BY source"
                    ).fetchall()
                ]
            finally:
                self._rows("DROP TABLE training")
        ranks = np.zeros((len(rows["impression"]), len(names)), dtype=np.int64)
        ranks[np.asarray(entries["row"], dtype=np.int64), np.asarray(entries["col"])] = entries[
            "rank"
        ]
        return TrainingSet(
            sources=tuple(names),
            impression=np.asarray(rows["impression"], dtype=np.int64),
            ranks=ranks,
            shown=np.asarray(rows["shown"], dtype=np.bool_),
            label=np.asarray(rows["label"], dtype=np.float64),
            has_context=np.asarray(rows["has_context"], dtype=np.bool_),
            names_items=np.asarray(rows["names_items"], dtype=np.bool_),
        )

    def close(self) -> None:
        """Close this connection; closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._db.close()
                self._closed = True


def _microseconds(window: timedelta) -> int:
    return int(window.total_seconds() * 1_000_000)
