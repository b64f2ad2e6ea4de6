from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from appliance.backends.stores.migrations import MIGRATIONS
from appliance.domain import (
    FeedbackEvent,
    HistoryEntry,
    InteractionType,
    Item,
    PreferenceState,
)
from appliance.errors import BackendError, ConfigError, ConflictError, InvalidInputError

_ITEM_COLUMNS = "item_id, title, text, metadata"
#: Reads items as ``_stored_item`` takes them; a query completes it with its own clauses.
_SELECT_STORED_ITEMS = f"SELECT {_ITEM_COLUMNS}, content_hash, seq FROM items "  # noqa: S608 - constants
#: Completes a query over a CTE ``page`` of feedback rows: each event with its item's title.
_EVENTS_WITH_TITLES = """
    SELECT p.event_id, p.user_id, p.item_id, p.interaction_type, p.rating, p.weight,
           p.event_time, p.request_id, p.received_at, i.title
    FROM page AS p LEFT JOIN items AS i ON i.item_id = p.item_id
"""
#: Rows a reader of every item's text holds at a time.
_TEXT_BATCH = 8192
#: The tables an export carries, each with the key its rows are written in order of.
EXPORTED_TABLES: dict[str, str] = {"items": "seq", "feedback": "event_id", "users": "user_id"}


def export_file(table: str) -> str:
    """Return the name of the file that ``export_tables`` writes a table to."""
    return f"{table}.parquet"


#: Errors DuckDB raises when a file does not fit a table (its columns, types or keys).
_UNFIT_ROWS = (
    duckdb.BinderException,
    duckdb.ConstraintException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.IOException,
)


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item with the bookkeeping the store keeps beside it."""

    item: Item
    content_hash: str
    seq: int


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user in a listing."""

    user_id: str
    feedback_count: int
    last_event_at: datetime | None
    """The time of their most recent event (its own timestamp, not when it arrived)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A feedback event as stored, with its place in the log."""

    event_id: int
    event: FeedbackEvent
    received_at: datetime
    title: str | None
    """The item's title, or ``None`` when the item has left the catalog."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Sizes of the stored collections."""

    items: int
    users: int
    feedback_events: int


@dataclass(frozen=True, slots=True)
class StoreExport:
    """What ``export_tables`` wrote: one Parquet file per table, all from one snapshot."""

    schema_version: int
    files: dict[str, Path]
    """Each table's file, by table name (``EXPORTED_TABLES``)."""
    rows: dict[str, int]
    """Each table's row count, by table name."""
    last_event_id: int
    """The largest feedback event id handed out so far (events since deleted included)."""


def _naive_utc(moment: datetime) -> datetime:
    # DuckDB TIMESTAMP columns hold naive UTC; aware values are converted first.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


#: Up to this many users, their ids are kept in memory so that a new visitor's state and history
#: are known to be empty without a query (about 100 bytes each).
MAX_KNOWN_USERS = 1_000_000


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block in one transaction on ``connection``: committed, or rolled back on error."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class DuckDBStore:
    """Items, feedback and users in one DuckDB file.

    DuckDB allows one writing process per file, and one connection must not be used from two
    threads at once: every call takes the store's lock, and callers run them off the event loop.

    The reads every recommendation makes (the user's preference and history, the candidates'
    items) are answered from memory when they were read before and nothing was written to them
    since: a query costs milliseconds and holds the store's lock, which feedback commits need.
    Each write forgets what it changed, under the same lock as the reads that fill the caches,
    so a cached read is never older than the last commit.

    A feedback commit stores the events; the users' new preference states wait in memory and
    are written together every so often (``flush_preferences``), and before anything reads the
    users table. A state follows from its user's events, which are durable once committed, so
    this only keeps a state's write (most of a small commit's cost) out of every commit: after a
    crash, ``unfolded_events`` are the events the stored states lack.
    """

    def __init__(
        self, path: Path, *, cached_items: int = 100_000, cached_users: int = 20_000
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(path))
        except duckdb.Error as e:
            raise ConfigError(
                f"cannot open the database {path}: {e}. Another appliance process may own this "
                "data directory; stop it or use another --data-dir"
            ) from e
        self._lock = threading.RLock()
        self._users_lock = threading.Lock()
        self._closed = False
        self._items: _ReadCache[StoredItem] = _ReadCache(cached_items)
        self._preferences: _ReadCache[PreferenceState | None] = _ReadCache(cached_users)
        self._histories: _ReadCache[tuple[HistoryEntry, ...]] = _ReadCache(cached_users)
        # Committed users' states not yet in the users table, under the store's lock.
        self._unsaved: dict[str, PreferenceState] = {}
        # Taken before the store's lock by whatever writes the users table.
        self._flush_lock = threading.RLock()
        self._migrate()
        self._flusher = self._db.cursor()
        self._known_users = self._load_known_users()

    def _migrate(self) -> None:
        with self._lock:
            self._rows(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
            )
            applied = {r[0] for r in self._rows("SELECT version FROM schema_migrations")}
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                with self._transaction():
                    self._rows(migration.sql)
                    self._rows(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [migration.version, migration.name, _naive_utc(datetime.now(UTC))],
                    )

    def _rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        # Results are always drained: DuckDB refuses new work on a connection that still has
        # an unfinished result.
        return self._db.execute(sql, params).fetchall()

    def _first(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock, transaction(self._db):
            yield

    def schema_version(self) -> int:
        """Return the newest migration applied."""
        with self._lock:
            row = self._first("SELECT max(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    def connection(self) -> duckdb.DuckDBPyConnection:
        """Open another connection to this database, for a component with tables of its own.

        The component uses it under its own lock, never the store's: writing its tables then
        neither waits for the store's callers nor delays them. It closes the connection before
        the store is closed.
        """
        with self._lock:
            return self._db.cursor()

    # -- items -------------------------------------------------------------------------------

    def content_hashes(self, item_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Return the content hash of the given items that exist, or of every item."""
        with self._lock:
            if item_ids is None:
                rows = self._rows("SELECT item_id, content_hash FROM items")
            else:
                rows = self._rows(
                    "SELECT item_id, content_hash FROM items WHERE item_id IN "
                    "(SELECT unnest(?::VARCHAR[]))",
                    [list(item_ids)],
                )
        return dict(rows)

    def existing_item_ids(self, item_ids: Sequence[str]) -> set[str]:
        """Return which of the given items are in the catalog: those in memory without a query."""
        found, missing = self._items.get_many(item_ids)
        return set(found).union(self.content_hashes(missing) if missing else ())

    def put_items(self, items: Sequence[Item]) -> list[StoredItem]:
        """Insert or replace items in one transaction, through Arrow (bulk, not row by row).

        Item ids must be unique within ``items``. New items get the next sequence numbers;
        replaced items keep theirs.

        Returns:
            The stored items in input order, with their hashes and sequence numbers.

        """
        if not items:
            return []
        now = _naive_utc(datetime.now(UTC))
        with self._transaction():
            ids = [i.item_id for i in items]
            # Replaced items keep their sequence number and creation time.
            known = {
                item_id: (seq, created_at)
                for item_id, seq, created_at in self._rows(
                    "SELECT item_id, seq, created_at FROM items "
                    "WHERE item_id IN (SELECT unnest(?::VARCHAR[]))",
                    [ids],
                )
            }
            row = self._first("SELECT coalesce(max(seq), 0) FROM items")
            next_seq = int(row[0]) + 1 if row else 1
            stored: list[StoredItem] = []
            created: list[datetime] = []
            for item in items:
                seq, created_at = known.get(item.item_id, (None, now))
                if seq is None:
                    seq = next_seq
                    next_seq += 1
                stored.append(StoredItem(item, item.content_hash, int(seq)))
                created.append(created_at)
            batch = pa.table(
                {
                    "item_id": ids,
                    "title": [s.item.title for s in stored],
                    "text": [s.item.text for s in stored],
                    "metadata": [msgspec.json.encode(s.item.metadata).decode() for s in stored],
                    "content_hash": [s.content_hash for s in stored],
                    "seq": pa.array([s.seq for s in stored], type=pa.int64()),
                    "created_at": pa.array(created, type=pa.timestamp("us")),
                    "updated_at": pa.array([now] * len(stored), type=pa.timestamp("us")),
                }
            )
            self._db.register("incoming_items", batch)
            try:
                self._rows(
                    "INSERT OR REPLACE INTO items SELECT item_id, title, text, metadata::JSON, "
                    "content_hash, seq, created_at, updated_at FROM incoming_items"
                )
            finally:
                self._db.unregister("incoming_items")
            self._items.forget(ids)
        return stored

    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """Return the given items that exist."""

        def read(missing: list[str]) -> dict[str, StoredItem]:
            rows = self._rows(
                _SELECT_STORED_ITEMS + "WHERE item_id IN (SELECT unnest(?::VARCHAR[]))",
                [missing],
            )
            return {r[0]: _stored_item(r) for r in rows}

        return self._read_through(self._items, item_ids, read)

    def kept_items(self, item_ids: Sequence[str]) -> tuple[dict[str, StoredItem], list[str]]:
        """Return the given items that memory holds, and the ids that ``get_items`` must read.

        Never waits for the database: callers on the event loop use it to skip a worker thread.
        """
        return self._items.get_many(item_ids)

    def warm_items(self) -> int:
        """Read the newest items into memory, as many as the item cache keeps.

        Returns:
            How many items were read.

        """
        if self._items.max_entries == 0:
            return 0
        with self._lock:
            rows = self._rows(
                _SELECT_STORED_ITEMS + "ORDER BY seq DESC LIMIT ?",
                [self._items.max_entries],
            )
            # Oldest first: the newest are the last to go when the cache must make room.
            self._items.put_many({r[0]: _stored_item(r) for r in reversed(rows)})
        return len(rows)

    def item_texts(self) -> Iterator[tuple[str, str, str]]:
        """Yield every item's id, title and text, read a batch at a time.

        A catalog of a million items is never in memory whole. The rows come through a cursor
        of their own (its own snapshot), so writes go on while a caller works through them.
        """
        with self._lock:
            cursor = self._db.cursor()
        try:
            texts = cursor.sql("SELECT item_id, title, text FROM items")
            for batch in texts.to_arrow_reader(_TEXT_BATCH):
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)
        finally:
            cursor.close()

    def list_items(
        self, after: str | None, limit: int, query: str | None = None
    ) -> list[StoredItem]:
        """Return up to ``limit`` items ordered by id, starting after ``after``.

        Args:
            after: The last id of the previous page, or ``None`` for the first page.
            limit: Most items returned.
            query: Only items whose title or text contains this, ignoring case.

        """
        with self._lock:
            rows = self._rows(
                _SELECT_STORED_ITEMS + "WHERE (? IS NULL OR item_id > ?) AND (? IS NULL "
                "OR contains(lower(title), lower(?)) OR contains(lower(text), lower(?))) "
                "ORDER BY item_id LIMIT ?",
                [after, after, query, query, query, limit],
            )
        return [_stored_item(r) for r in rows]

    def delete_items(self, item_ids: Sequence[str]) -> list[str]:
        """Delete items; their feedback events stay, so a user's history is never lost.

        Returns:
            The ids that existed.

        """
        with self._transaction():
            rows = self._rows(
                "DELETE FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[])) "
                "RETURNING item_id",
                [list(item_ids)],
            )
            self._items.forget(item_ids)
        return [r[0] for r in rows]

    # -- feedback and users ------------------------------------------------------------------

    def record_feedback(self, event: FeedbackEvent, state: PreferenceState) -> None:
        """Store an event durably, and the user's state with it as of that event.

        The event is committed before this returns; the state is kept in memory and written
        with the next ``flush_preferences`` (it follows from the events).
        """
        with self._writing_users([state]):
            self._insert_event(event)

    def record_feedback_batch(
        self, events: Sequence[FeedbackEvent], states: Sequence[PreferenceState]
    ) -> None:
        """Store many events in one transaction, via Arrow, and the final states of their users.

        Events keep their order: replaying a user's events (``user_events``) sees them as given.
        The states are kept as ``record_feedback`` keeps one.
        """
        if not events:
            return
        now = _naive_utc(datetime.now(UTC))
        event_table = pa.table(
            {
                "position": pa.array(range(len(events)), type=pa.int64()),
                "user_id": [e.user_id for e in events],
                "item_id": [e.item_id for e in events],
                "interaction_type": [e.interaction_type.value for e in events],
                "rating": pa.array([e.rating for e in events], type=pa.float64()),
                "weight": pa.array([e.weight for e in events], type=pa.float64()),
                "event_time": pa.array(
                    [_naive_utc(e.timestamp) for e in events], type=pa.timestamp("us")
                ),
                "request_id": pa.array([e.request_id for e in events], type=pa.string()),
            }
        )
        with self._writing_users(states):
            self._db.register("incoming_events", event_table)
            try:
                self._rows(
                    "INSERT INTO feedback (user_id, item_id, interaction_type, rating, weight, "
                    "event_time, request_id, received_at) "
                    "SELECT user_id, item_id, interaction_type, rating, weight, event_time, "
                    "request_id, ? FROM incoming_events ORDER BY position",
                    [now],
                )
            finally:
                self._db.unregister("incoming_events")

    def _insert_event(self, event: FeedbackEvent) -> None:
        self._rows(
            "INSERT INTO feedback (user_id, item_id, interaction_type, rating, weight, "
            "event_time, request_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                event.user_id,
                event.item_id,
                event.interaction_type.value,
                event.rating,
                event.weight,
                _naive_utc(event.timestamp),
                event.request_id,
                _naive_utc(datetime.now(UTC)),
            ],
        )

    def put_preferences(self, states: Sequence[PreferenceState]) -> None:
        """Replace users' stored preference states (e.g. rebuilt from their events) now."""
        with self._lock:
            self._forget_users([s.user_id for s in states])
            self._keep(states)
        self.flush_preferences()

    def flush_preferences(self) -> int:
        """Write the states kept since the last flush to the users table, in one transaction.

        The write goes through a connection of its own, so feedback commits and reads go on
        meanwhile (it writes only the users table, which they do not).

        Returns:
            How many users' states were written.

        """
        with self._flush_lock:
            with self._lock:
                kept = dict(self._unsaved)
                if not kept:
                    return 0
                # Every event committed so far is in ``kept`` or in the users table already.
                row = self._first("SELECT coalesce(max(event_id), 0) FROM feedback")
                through = int(row[0]) if row else 0
            with transaction(self._flusher):
                _write_states(self._flusher, list(kept.values()), through)
            with self._lock:
                for user, state in kept.items():
                    if self._unsaved.get(user) is state:  # else a newer one came meanwhile
                        del self._unsaved[user]
        return len(kept)

    def unfolded_events(self) -> list[FeedbackEvent]:
        """Return the events that the users table's states lack, in the order received.

        There are some only when the process stopped before writing the states it kept.
        """
        with self._lock:
            return self._events("event_id > (SELECT through_event_id FROM preferences_folded)", [])

    def kept_user(self, user_id: str) -> tuple[PreferenceState | None, list[HistoryEntry]] | None:
        """Return a user's state and history when memory holds both, or ``None``.

        A user who never sent feedback has neither, which memory knows too. Never waits for the
        database: callers on the event loop use it to skip worker threads (``None`` then sends
        them to ``preference`` and ``user_history``).
        """
        if not self._may_know(user_id):
            return None, []
        states, missing = self._preferences.get_many([user_id])
        if missing:
            return None
        histories, missing = self._histories.get_many([user_id])
        if missing:
            return None
        return states[user_id], list(histories[user_id])

    def preference(self, user_id: str) -> PreferenceState | None:
        """Return a user's stored preference state, or ``None`` for an unknown user."""
        return self.preferences([user_id]).get(user_id)

    def preferences(self, user_ids: Sequence[str]) -> dict[str, PreferenceState]:
        """Return the stored preference states of the given users that exist."""
        known = [u for u in user_ids if self._may_know(u)]
        if not known:
            return {}
        states = self._read_through(self._preferences, known, self._read_preferences)
        return {u: state for u, state in states.items() if state is not None}

    def _read_preferences(self, user_ids: list[str]) -> dict[str, PreferenceState | None]:
        """Each user's stored state, ``None`` for one without: that is worth keeping too."""
        kept = {u: self._unsaved[u] for u in user_ids if u in self._unsaved}
        rows = self._rows(
            "SELECT user_id, preference, weight_sum, anchor, feedback_count, created_at, "
            "vector_updated_at FROM users WHERE user_id IN (SELECT unnest(?::VARCHAR[]))",
            [user_ids],
        )
        states = {
            row[0]: PreferenceState(
                user_id=row[0],
                vector_sum=None if row[1] is None else np.asarray(row[1], dtype=np.float64),
                weight_sum=float(row[2]),
                anchor=None if row[3] is None else float(row[3]),
                feedback_count=int(row[4]),
                created_at=_aware(row[5]),
                vector_updated_at=_aware(row[6]),
            )
            for row in rows
        }
        states.update(kept)
        return {u: states.get(u) for u in user_ids}

    def list_users(self, after: str | None, limit: int, query: str | None = None) -> list[UserRow]:
        """Return up to ``limit`` users ordered by id, starting after ``after``.

        Args:
            after: The last id of the previous page, or ``None`` for the first page.
            limit: Most users returned.
            query: Only users whose id contains this, ignoring case.

        """
        self.flush_preferences()
        with self._lock:
            rows = self._rows(
                """
                WITH page AS (
                    SELECT user_id, feedback_count FROM users
                    WHERE (? IS NULL OR user_id > ?)
                      AND (? IS NULL OR contains(lower(user_id), lower(?)))
                    ORDER BY user_id LIMIT ?
                )
                SELECT p.user_id, p.feedback_count, max(f.event_time)
                FROM page AS p LEFT JOIN feedback AS f ON f.user_id = p.user_id
                GROUP BY p.user_id, p.feedback_count
                ORDER BY p.user_id
                """,
                [after, after, query, query, limit],
            )
        return [UserRow(r[0], int(r[1]), _aware(r[2])) for r in rows]

    def user_feedback(
        self, user_id: str, before: int | None, limit: int
    ) -> list[StoredEvent] | None:
        """Return a user's events newest first (by event id), older than ``before`` if given.

        Returns:
            Up to ``limit`` events, or ``None`` when the user is unknown.

        """
        with self._lock:
            if (
                user_id not in self._unsaved
                and self._first("SELECT 1 FROM users WHERE user_id = ?", [user_id]) is None
            ):
                return None
            rows = self._rows(
                f"""
                WITH page AS (
                    SELECT * FROM feedback
                    WHERE user_id = ? AND (? IS NULL OR event_id < ?)
                    ORDER BY event_id DESC LIMIT ?
                )
                {_EVENTS_WITH_TITLES} ORDER BY p.event_id DESC
                """,  # noqa: S608 - a constant
                [user_id, before, before, limit],
            )
        return [_stored_event(r) for r in rows]

    def feedback_after(self, after: int | None, limit: int) -> list[StoredEvent]:
        """Return up to ``limit`` events, oldest first.

        Args:
            after: Only events with a larger event id; ``None`` for the latest ``limit`` events.
            limit: Most events returned.

        """
        with self._lock:
            if after is None:
                rows = self._rows(
                    f"""
                    WITH page AS (SELECT * FROM feedback ORDER BY event_id DESC LIMIT ?)
                    {_EVENTS_WITH_TITLES} ORDER BY p.event_id
                    """,  # noqa: S608 - a constant
                    [limit],
                )
            else:
                rows = self._rows(
                    f"""
                    WITH page AS (
                        SELECT * FROM feedback WHERE event_id > ? ORDER BY event_id LIMIT ?
                    )
                    {_EVENTS_WITH_TITLES} ORDER BY p.event_id
                    """,  # noqa: S608 - a constant
                    [after, limit],
                )
        return [_stored_event(r) for r in rows]

    def user_ids(self) -> list[str]:
        """Return every known user id."""
        self.flush_preferences()
        with self._lock:
            return [r[0] for r in self._rows("SELECT user_id FROM users ORDER BY user_id")]

    def seen_item_ids(self, user_id: str) -> set[str]:
        """Return the items a user has given any feedback on."""
        with self._lock:
            rows = self._rows("SELECT DISTINCT item_id FROM feedback WHERE user_id = ?", [user_id])
        return {r[0] for r in rows}

    def user_history(self, user_id: str) -> list[HistoryEntry]:
        """Return each item a user has given feedback on, with their latest event's weight.

        Oldest first, by their latest event: items whose latest events share a time (a bulk
        import) come in the order those events were stored, so that which of them count as
        the latest is the same from one read to the next. Items that have left the catalog are
        included: they still count as seen.
        """
        if not self._may_know(user_id):
            return []
        return list(self._read_through(self._histories, [user_id], self._read_histories)[user_id])

    def _read_histories(self, user_ids: list[str]) -> dict[str, tuple[HistoryEntry, ...]]:
        rows = self._rows(
            "SELECT user_id, item_id, arg_max(weight, event_id), max(event_time) FROM feedback "
            "WHERE user_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY user_id, item_id "
            "ORDER BY max(event_time), max(event_id)",
            [user_ids],
        )
        histories: dict[str, list[HistoryEntry]] = {u: [] for u in user_ids}
        for r in rows:
            histories[r[0]].append(HistoryEntry(r[1], float(r[2]), r[3].replace(tzinfo=UTC)))
        return {u: tuple(h) for u, h in histories.items()}

    def warm_users(self) -> int:
        """Read the state and history of the most recently active users into memory.

        As many as the user caches keep: a returning user's first answer after a restart then
        waits for no query (two cost several milliseconds).

        Returns:
            How many users were read.

        """
        keep = min(self._preferences.max_entries, self._histories.max_entries)
        if keep == 0:
            return 0
        self.flush_preferences()
        with self._lock:
            recent = [
                r[0]
                for r in self._rows(
                    "SELECT user_id FROM users "
                    "ORDER BY coalesce(vector_updated_at, created_at) DESC, user_id LIMIT ?",
                    [keep],
                )
            ]
            # Oldest first: the most recent are the last to go when the caches make room.
            recent.reverse()
            self._preferences.put_many(self._read_preferences(recent))
            self._histories.put_many(self._read_histories(recent))
        return len(recent)

    def interactions(self) -> pa.Table:
        """Return every (user, item) pair with feedback, for learning how items go together.

        One row per pair whose item is in the catalog: ``user_id``, ``item_id``, ``weight`` (of
        the pair's latest event) and ``event_time`` (of that latest event, epoch seconds).
        """
        with self._lock:
            table: pa.Table = self._db.sql(
                """
                SELECT f.user_id, f.item_id, arg_max(f.weight, f.event_id) AS weight,
                       epoch(max(f.event_time)) AS event_time
                FROM feedback AS f SEMI JOIN items AS i USING (item_id)
                GROUP BY f.user_id, f.item_id
                """
            ).to_arrow_table()
        return table

    def user_events(self, user_id: str) -> list[FeedbackEvent]:
        """Return a user's events in the order they were received."""
        with self._lock:
            return self._events("user_id = ?", [user_id])

    def _events(self, where: str, params: Sequence[Any]) -> list[FeedbackEvent]:
        rows = self._rows(
            "SELECT user_id, item_id, interaction_type, rating, weight, event_time, request_id "  # noqa: S608 - callers' constants
            f"FROM feedback WHERE {where} ORDER BY event_id",
            params,
        )
        return [
            FeedbackEvent(
                user_id=r[0],
                item_id=r[1],
                interaction_type=InteractionType(r[2]),
                rating=r[3],
                weight=float(r[4]),
                timestamp=r[5].replace(tzinfo=UTC),
                request_id=r[6],
            )
            for r in rows
        ]

    def delete_user(self, user_id: str) -> int:
        """Delete a user's events and profile.

        Returns:
            How many feedback events were deleted.

        """
        # No flush may write the user back meanwhile.
        with self._flush_lock, self._lock:
            with transaction(self._db):
                row = self._first("SELECT count(*) FROM feedback WHERE user_id = ?", [user_id])
                self._rows("DELETE FROM feedback WHERE user_id = ?", [user_id])
                self._rows("DELETE FROM users WHERE user_id = ?", [user_id])
                self._preferences.forget([user_id])
                self._histories.forget([user_id])
            # After the commit: had it failed, the kept state would still be the user's.
            self._unsaved.pop(user_id, None)
        return int(row[0]) if row else 0

    def popularity(self, half_life_days: float) -> list[tuple[str, float]]:
        """Rank the items with positive feedback by how popular they are, most popular first.

        An item's score is the mean of two shares: its share of all the positive feedback ever
        given (who liked it over the long run), and its share of the positive feedback weighted
        by recency, an event weighing half after ``half_life_days``. Recency alone would rank by
        the few users of the last weeks (or by one busy user), which says little about anyone
        else; the long run alone would miss what is new. Ages count back from the newest
        positive event, so an idle appliance keeps its ranking, and each share sums to 1 over
        the items, so the score lies between 0 and 1 whatever the volume of feedback.

        Only positive events of items still in the catalog count.
        """
        with self._lock:
            rows = self._rows(
                """
                WITH positive AS (
                    SELECT f.item_id, f.weight,
                           epoch(max(f.event_time) OVER ()) - epoch(f.event_time) AS age
                    FROM feedback AS f SEMI JOIN items AS i USING (item_id)
                    WHERE f.weight > 0
                ), totals AS (
                    SELECT item_id, sum(weight) AS lifetime,
                           sum(weight * pow(0.5, age / (? * 86400.0))) AS recent
                    FROM positive GROUP BY item_id
                )
                -- Sums in parallel differ in their last bits from one run to the next: rounded,
                -- items with the same feedback tie, and their order is by id every time.
                SELECT item_id,
                       round(0.5 * lifetime / sum(lifetime) OVER ()
                             + 0.5 * recent / sum(recent) OVER (), 12) AS score
                FROM totals
                ORDER BY score DESC, item_id
                """,
                [half_life_days],
            )
        return [(r[0], float(r[1])) for r in rows]

    def counts(self) -> Counts:
        """Return how many items, users and feedback events are stored."""
        self.flush_preferences()
        with self._lock:
            row = self._first(
                "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM users), "
                "(SELECT count(*) FROM feedback)"
            )
        assert row is not None  # noqa: S101 - an aggregate always returns a row
        return Counts(int(row[0]), int(row[1]), int(row[2]))

    # -- export and import --------------------------------------------------------------------

    def export_tables(self, folder: Path) -> StoreExport:
        """Write every table to a Parquet file in ``folder``, all from one snapshot.

        The export reads through a second connection in a transaction of its own, so it sees
        the tables as they were when it began while other calls go on writing (they never wait
        for it). Rows are written in key order (``EXPORTED_TABLES``).

        Raises:
            BackendError: A file could not be written (e.g. the disk is full).

        """
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            reader = self._db.cursor()
        try:
            with self._flush_lock, self._lock:
                # The snapshot starts (at its first read) with every kept state written, before
                # the next commit: the users it exports hold exactly the events it exports.
                self.flush_preferences()
                reader.execute("BEGIN TRANSACTION")
                reader.execute("SELECT count(*) FROM users").fetchall()
            files: dict[str, Path] = {}
            rows: dict[str, int] = {}
            for table, key in EXPORTED_TABLES.items():
                files[table] = folder / export_file(table)
                result = reader.execute(
                    f"COPY (SELECT * FROM {table} ORDER BY {key}) TO ? "  # noqa: S608 - constants
                    "(FORMAT parquet, COMPRESSION zstd)",
                    [str(files[table])],
                ).fetchall()
                rows[table] = int(result[0][0])
            version = reader.execute("SELECT max(version) FROM schema_migrations").fetchall()
            # A sequence is not transactional: this may be past the snapshot's events, which
            # only leaves a gap in the ids handed out after a restore.
            sequence = reader.execute(
                "SELECT coalesce(last_value, 0) FROM duckdb_sequences() "
                "WHERE sequence_name = 'feedback_event_id'"
            ).fetchall()
            newest = reader.execute("SELECT coalesce(max(event_id), 0) FROM feedback").fetchall()
            reader.execute("COMMIT")
        except duckdb.Error as e:
            raise BackendError(f"cannot export the database to {folder}: {e}") from e
        finally:
            reader.close()
        return StoreExport(
            schema_version=int(version[0][0] or 0),
            files=files,
            rows=rows,
            last_event_id=max(int(sequence[0][0]) if sequence else 0, int(newest[0][0])),
        )

    def ensure_empty(self) -> None:
        """Check that the store holds nothing, as a restore needs.

        Raises:
            ConflictError: The store holds items, users or feedback events.

        """
        held = self.counts()
        if held.items or held.users or held.feedback_events:
            raise ConflictError(
                f"the appliance is not empty ({held.items} items, {held.users} users, "
                f"{held.feedback_events} feedback events); restore into an appliance on a fresh "
                "data directory"
            )

    def import_tables(
        self, files: Mapping[str, Path], last_event_id: int, then: Callable[[], None]
    ) -> Counts:
        """Fill an empty store from files that ``export_tables`` wrote, in one transaction.

        Columns are matched by name, so files exported by an older schema load as long as the
        columns they lack have defaults. ``then`` runs inside the transaction once the rows are
        in, before the commit: if it raises, nothing is stored. Other calls wait meanwhile.

        Args:
            files: The Parquet file of every table in ``EXPORTED_TABLES``, by table name.
            last_event_id: The largest feedback event id the exporting store had handed out;
                new events get larger ids.
            then: What must succeed for the import to be kept (e.g. loading the index).

        Returns:
            The counts of the filled store.

        Raises:
            ConflictError: The store is not empty.
            InvalidInputError: A file does not fit its table (columns, types, duplicate keys).

        """
        with self._flush_lock, self._lock:
            self.flush_preferences()  # kept states are users too
            with transaction(self._db):
                self.ensure_empty()
                for table in EXPORTED_TABLES:
                    try:
                        self._rows(
                            f"INSERT INTO {table} BY NAME "  # noqa: S608 - a constant
                            "SELECT * FROM read_parquet(?)",
                            [str(files[table])],
                        )
                    except _UNFIT_ROWS as e:
                        raise InvalidInputError(
                            f"the {table} file does not fit this appliance's {table} table: {e}"
                        ) from e
                row = self._first("SELECT coalesce(max(event_id), 0) FROM feedback")
                stored = int(row[0]) if row else 0
                # An export's users hold every one of its events.
                self._rows("UPDATE preferences_folded SET through_event_id = ?", [stored])
                newest = max(last_event_id, stored)
                if newest:
                    self._rows("SELECT setval('feedback_event_id', ?)", [newest])
                self._forget_everything()
                then()
                return self.counts()

    def _read_through(
        self,
        cache: _ReadCache[_Value],
        keys: Sequence[str],
        read: Callable[[list[str]], dict[str, _Value]],
    ) -> dict[str, _Value]:
        """Answer from ``cache`` what it keeps; ``read`` the rest under the store's lock.

        What was read is kept: under the lock, the fill is ordered with the writes that forget.
        """
        found, missing = cache.get_many(keys)
        if missing:
            with self._lock:
                fresh = read(missing)
                cache.put_many(fresh)
            found.update(fresh)
        return found

    @contextmanager
    def _writing_users(self, states: Sequence[PreferenceState]) -> Iterator[None]:
        """Run the block (the users' events) in one transaction; once committed, keep the states.

        What was read about the users is forgotten, and their new states are kept, to be written
        by the next flush: the next event of the same user then folds into them without a query.
        """
        with self._lock:
            with transaction(self._db):
                yield
                self._forget_users([s.user_id for s in states])
            self._keep(states)

    def _keep(self, states: Sequence[PreferenceState]) -> None:
        """Answer these users' states from memory and write them with the next flush."""
        by_user = {s.user_id: s for s in states}
        self._preferences.put_many(by_user)
        self._unsaved.update(by_user)

    def _forget_users(self, user_ids: Sequence[str]) -> None:
        """Forget what was read about users who were just written (they are known now)."""
        self._preferences.forget(user_ids)
        self._histories.forget(user_ids)
        with self._users_lock:
            if self._known_users is not None:
                self._known_users.update(user_ids)
                if len(self._known_users) > MAX_KNOWN_USERS:
                    self._known_users = None

    def _forget_everything(self) -> None:
        for cache in (self._items, self._preferences, self._histories):
            cache.clear()
        known = self._load_known_users()
        with self._users_lock:
            self._known_users = known

    def _load_known_users(self) -> set[str] | None:
        # Every user with feedback has a row in users once the kept states are written (at
        # start-up, after a crash, folding the unfolded events in writes the missing ones).
        with self._lock:
            row = self._first("SELECT count(*) FROM users")
            if row is None or int(row[0]) > MAX_KNOWN_USERS:
                return None
            return {r[0] for r in self._rows("SELECT user_id FROM users")}

    def _may_know(self, user_id: str) -> bool:
        """Whether the user may have a stored state or history (no query for a new visitor)."""
        with self._users_lock:
            return self._known_users is None or user_id in self._known_users

    def close(self) -> None:
        """Write the kept states, checkpoint and close the database file.

        Closing twice is harmless.
        """
        with self._flush_lock, self._lock:
            if self._closed:
                return
            self.flush_preferences()
            self._flusher.close()
            self._rows("CHECKPOINT")
            self._db.close()
            self._closed = True


def _write_states(
    db: duckdb.DuckDBPyConnection, states: Sequence[PreferenceState], through_event_id: int
) -> None:
    """Write states, and that with them the users table holds the events up to this id."""
    table = pa.table(
        {
            "user_id": [s.user_id for s in states],
            "preference": pa.array(
                [None if s.vector_sum is None else np.asarray(s.vector_sum) for s in states],
                type=pa.list_(pa.float64()),
            ),
            "weight_sum": pa.array([s.weight_sum for s in states], type=pa.float64()),
            "anchor": pa.array([s.anchor for s in states], type=pa.float64()),
            "feedback_count": pa.array([s.feedback_count for s in states], type=pa.int64()),
            "created_at": pa.array(
                [_naive_utc(s.created_at or datetime.now(UTC)) for s in states],
                type=pa.timestamp("us"),
            ),
            "vector_updated_at": pa.array(
                [
                    None if s.vector_updated_at is None else _naive_utc(s.vector_updated_at)
                    for s in states
                ],
                type=pa.timestamp("us"),
            ),
        }
    )
    db.register("incoming_states", table)
    try:
        db.execute("INSERT OR REPLACE INTO users SELECT * FROM incoming_states").fetchall()
    finally:
        db.unregister("incoming_states")
    db.execute("UPDATE preferences_folded SET through_event_id = ?", [through_event_id]).fetchall()


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        event_id=int(row[0]),
        event=FeedbackEvent(
            user_id=row[1],
            item_id=row[2],
            interaction_type=InteractionType(row[3]),
            rating=row[4],
            weight=float(row[5]),
            timestamp=row[6].replace(tzinfo=UTC),
            request_id=row[7],
        ),
        received_at=row[8].replace(tzinfo=UTC),
        title=row[9],
    )


def _stored_item(row: tuple[Any, ...]) -> StoredItem:
    metadata = msgspec.json.decode(row[3]) if isinstance(row[3], str | bytes) else row[3]
    return StoredItem(Item(row[0], row[1], row[2], metadata or {}), row[4], int(row[5]))


_Value = TypeVar("_Value")


class _ReadCache(Generic[_Value]):
    """Rows read before, by key, least recently used dropped first.

    Its own lock guards the dictionary, so that a hit never waits for the store's lock; fills
    and forgets happen under the store's lock too, which orders them with the writes.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, _Value] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> tuple[dict[str, _Value], list[str]]:
        """Return the kept values by key, and the keys (deduplicated) that are not kept."""
        found: dict[str, _Value] = {}
        missing: list[str] = []
        with self._lock:
            for key in dict.fromkeys(keys):
                if key in self._entries:
                    self._entries.move_to_end(key)
                    found[key] = self._entries[key]
                else:
                    missing.append(key)
        return found, missing

    def put_many(self, values: Mapping[str, _Value]) -> None:
        """Keep values just read (under the store's lock)."""
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries.update(values)
            for key in values:
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop what a write changed (under the store's lock)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()
