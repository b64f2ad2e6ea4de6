import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from appliance.backends.stores import duckdb_store
from appliance.backends.stores.duckdb_store import Counts, DuckDBStore
from appliance.backends.stores.migrations import MIGRATIONS
from appliance.domain import FeedbackEvent, InteractionType, Item, PreferenceState
from appliance.errors import ConflictError, InvalidInputError
from tests.stores import database_at, written_users

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "appliance.duckdb"


@pytest.fixture
def store(db_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(db_path)
    yield opened
    opened.close()


def _items(n: int, start: int = 0) -> list[Item]:
    return [
        Item(f"item-{i:03d}", f"Title {i}", f"Text {i}", {"n": i, "tags": [f"t{i % 3}"]})
        for i in range(start, start + n)
    ]


def _event(
    user: str,
    item: str,
    kind: InteractionType = InteractionType.LIKE,
    *,
    weight: float = 1.0,
    at: datetime = NOW,
    rating: float | None = None,
) -> FeedbackEvent:
    return FeedbackEvent(user, item, kind, rating, weight, at, request_id=f"req-{user}-{item}")


def _state(user: str, count: int = 1) -> PreferenceState:
    return PreferenceState(
        user_id=user,
        vector_sum=np.array([0.1, -0.2, 0.3], dtype=np.float64),
        weight_sum=1.0,
        anchor=NOW.timestamp(),
        feedback_count=count,
        created_at=NOW,
        vector_updated_at=NOW,
    )


def _run(script: str, db_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in another Python process, with the database's path as its argument."""
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def _query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the closed database file directly, as an operator would."""
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(sql).fetchall()


# -- migrations -----------------------------------------------------------------------------


def test_migrations_are_recorded(db_path: Path) -> None:
    store = DuckDBStore(db_path)
    assert store.schema_version() == len(MIGRATIONS)
    store.close()
    rows = _query(db_path, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_reopening_does_not_reapply_migrations(db_path: Path) -> None:
    DuckDBStore(db_path).close()
    applied = _query(db_path, "SELECT version, applied_at FROM schema_migrations")
    store = DuckDBStore(db_path)
    assert store.schema_version() == len(MIGRATIONS)
    store.close()
    assert _query(db_path, "SELECT version, applied_at FROM schema_migrations") == applied


def test_creates_the_data_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "appliance.duckdb"
    DuckDBStore(path).close()
    assert path.is_file()


# -- items ----------------------------------------------------------------------------------


def test_item_texts_yield_every_item_while_writes_go_on(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_store, "_TEXT_BATCH", 4)
    store.put_items(_items(10))
    texts = store.item_texts()
    first = [next(texts) for _ in range(5)]
    # Mid-read, in the same thread: the reader holds no lock a write needs.
    store.put_items(_items(1, start=10))
    store.delete_items(["item-000"])
    read = first + list(texts)
    # The read sees the catalog as it was when it started.
    assert sorted(read) == [(f"item-{i:03d}", f"Title {i}", f"Text {i}") for i in range(10)]
    assert len(list(store.item_texts())) == 10


def test_put_items_assigns_increasing_seq_to_new_items(store: DuckDBStore) -> None:
    first = store.put_items(_items(3))
    assert [s.seq for s in first] == [1, 2, 3]
    assert [s.content_hash for s in first] == [i.content_hash for i in _items(3)]
    second = store.put_items(_items(2, start=3))
    assert [s.seq for s in second] == [4, 5]
    assert store.put_items([]) == []


def test_replaced_items_keep_seq_and_created_at(db_path: Path) -> None:
    store = DuckDBStore(db_path)
    store.put_items(_items(3))
    changed = Item("item-001", "New title", "New text", {"n": 99})
    # A replaced item and a new one in the same batch.
    stored = store.put_items([changed, Item("item-new", "Fresh", "")])
    assert [(s.item.item_id, s.seq) for s in stored] == [("item-001", 2), ("item-new", 4)]
    assert stored[0].content_hash == changed.content_hash
    got = store.get_items(["item-001"])["item-001"]
    assert got.item == changed
    assert got.seq == 2
    store.close()
    rows = {
        r[0]: (r[1], r[2])
        for r in _query(db_path, "SELECT item_id, created_at, updated_at FROM items")
    }
    created, updated = rows["item-001"]
    untouched_created, untouched_updated = rows["item-000"]
    # The replacement keeps the original creation time and records its own update.
    assert created == untouched_created
    assert updated > created
    assert untouched_updated == untouched_created


def test_get_items_returns_existing_items_with_metadata(store: DuckDBStore) -> None:
    rich = Item(
        "rich",
        "Amélie",
        "Ünïcode text",
        {
            "genres": ["comedy", "romance"],
            "year": 2001,
            "score": 7.5,
            "free": True,
            "nested": {"a": [1, 2]},
            "none": None,
        },
    )
    store.put_items([*_items(3), rich])
    got = store.get_items(["item-002", "rich", "missing"])
    assert got.keys() == {"item-002", "rich"}
    assert got["rich"].item == rich
    assert got["rich"].content_hash == rich.content_hash
    assert got["rich"].seq == 4
    assert got["item-002"].item == _items(3)[2]
    assert store.get_items([]) == {}


def test_item_without_metadata_round_trips(store: DuckDBStore) -> None:
    store.put_items([Item("bare", "Bare", "")])
    assert store.get_items(["bare"])["bare"].item == Item("bare", "Bare", "", {})


def test_list_items_pages_with_a_cursor(store: DuckDBStore) -> None:
    items = _items(25)
    store.put_items(list(reversed(items)))
    pages: list[list[str]] = []
    after: str | None = None
    while page := store.list_items(after, 10):
        pages.append([s.item.item_id for s in page])
        after = page[-1].item.item_id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == sorted(i.item_id for i in items)
    assert store.list_items("item-024", 10) == []
    assert [s.item.item_id for s in store.list_items("item-010", 2)] == ["item-011", "item-012"]


def test_delete_items_returns_the_ids_that_existed(store: DuckDBStore) -> None:
    store.put_items(_items(5))
    deleted = store.delete_items(["item-001", "item-003", "missing"])
    assert sorted(deleted) == ["item-001", "item-003"]
    assert store.delete_items(["item-001"]) == []
    assert store.delete_items([]) == []
    assert sorted(store.get_items([i.item_id for i in _items(5)])) == [
        "item-000",
        "item-002",
        "item-004",
    ]


def test_content_hashes(store: DuckDBStore) -> None:
    items = _items(4)
    store.put_items(items)
    assert store.content_hashes() == {i.item_id: i.content_hash for i in items}
    assert store.content_hashes(["item-002", "missing"]) == {"item-002": items[2].content_hash}


def test_kept_items_are_what_memory_holds_and_the_rest_is_left_to_read(
    store: DuckDBStore,
) -> None:
    store.put_items(_items(3))
    store.get_items(["item-000", "item-001"])
    kept, unread = store.kept_items(["item-001", "item-002", "item-000", "nope"])
    assert sorted(kept) == ["item-000", "item-001"]
    assert kept["item-001"] == store.get_items(["item-001"])["item-001"]
    assert unread == ["item-002", "nope"]
    store.delete_items(["item-000"])
    assert store.kept_items(["item-000"]) == ({}, ["item-000"])


# -- feedback and users ---------------------------------------------------------------------


def test_record_feedback_and_preference_round_trip(db_path: Path) -> None:
    state = PreferenceState(
        user_id="alice",
        vector_sum=np.array([0.1, -1 / 3, 1e-300, 12345.678901234567], dtype=np.float64),
        weight_sum=1.75,
        anchor=NOW.timestamp() + 0.123456,
        feedback_count=2,
        created_at=NOW - timedelta(days=1, microseconds=7),
        vector_updated_at=NOW,
    )
    with contextlib.closing(DuckDBStore(db_path)) as store:
        store.record_feedback(_event("alice", "item-000"), state)
    with contextlib.closing(DuckDBStore(db_path)) as store:
        got = store.preference("alice")
        assert store.preference("bob") is None
    assert got is not None
    assert got.vector_sum.dtype == np.float64
    np.testing.assert_array_equal(got.vector_sum, state.vector_sum)
    assert got.weight_sum == state.weight_sum
    assert got.anchor == state.anchor
    assert got.feedback_count == 2
    assert got.created_at == state.created_at
    assert got.vector_updated_at == state.vector_updated_at


def test_preference_without_vector_round_trips(db_path: Path) -> None:
    state = PreferenceState(user_id="carol", vector_sum=None, feedback_count=1, created_at=NOW)
    with contextlib.closing(DuckDBStore(db_path)) as store:
        store.record_feedback(_event("carol", "gone"), state)
    with contextlib.closing(DuckDBStore(db_path)) as store:
        got = store.preference("carol")
    assert got is not None
    assert got.vector_sum is None
    assert got.anchor is None
    assert got.vector_updated_at is None
    assert got.feedback_count == 1


def test_recording_again_replaces_the_preference(store: DuckDBStore) -> None:
    store.record_feedback(_event("alice", "item-000"), _state("alice", count=1))
    newer = _state("alice", count=2)
    newer.vector_sum = np.array([1.0, 2.0, 3.0])
    store.record_feedback(_event("alice", "item-001"), newer)
    got = store.preference("alice")
    assert got is not None
    assert got.feedback_count == 2
    np.testing.assert_array_equal(got.vector_sum, [1.0, 2.0, 3.0])
    assert store.user_ids() == ["alice"]
    store.put_preferences([_state("alice", count=7)])
    got = store.preference("alice")
    assert got is not None
    assert got.feedback_count == 7


def test_states_wait_in_memory_until_a_flush_writes_them_together(store: DuckDBStore) -> None:
    store.record_feedback(_event("alice", "item-000"), _state("alice", count=1))
    store.record_feedback_batch(
        [_event("bob", "item-001"), _event("alice", "item-002")],
        [_state("bob", count=1), _state("alice", count=2)],
    )

    assert written_users(store) == {}
    assert [(e.user_id, e.item_id) for e in store.unfolded_events()] == [
        ("alice", "item-000"),
        ("bob", "item-001"),
        ("alice", "item-002"),
    ]
    state = store.preference("alice")
    assert state is not None
    assert state.feedback_count == 2

    assert store.flush_preferences() == 2
    assert written_users(store) == {"alice": 2, "bob": 1}
    assert store.unfolded_events() == []
    assert store.flush_preferences() == 0


def test_reads_of_the_users_table_include_the_states_in_memory(store: DuckDBStore) -> None:
    store.record_feedback(_event("alice", "item-000"), _state("alice", count=1))
    assert [u.user_id for u in store.list_users(None, 10)] == ["alice"]
    store.record_feedback(_event("bob", "item-000"), _state("bob", count=1))
    assert store.user_ids() == ["alice", "bob"]
    store.record_feedback(_event("carol", "item-000"), _state("carol", count=1))
    assert store.counts().users == 3
    store.record_feedback(_event("dave", "item-000"), _state("dave", count=1))
    assert store.user_feedback("dave", None, 10) is not None


def test_a_user_deleted_before_the_flush_is_not_written_back(store: DuckDBStore) -> None:
    store.record_feedback(_event("alice", "item-000"), _state("alice"))
    store.record_feedback(_event("bob", "item-000"), _state("bob"))
    assert store.delete_user("alice") == 1
    store.flush_preferences()
    assert written_users(store) == {"bob": 1}
    assert store.preference("alice") is None


def test_states_lost_with_the_process_leave_their_events_to_fold_in(db_path: Path) -> None:
    # The process ends without closing the store, as a crash would end it.
    script = textwrap.dedent(
        """
        import os, sys
        from datetime import UTC, datetime
        import numpy as np
        from appliance.backends.stores.duckdb_store import DuckDBStore
        from appliance.domain import FeedbackEvent, InteractionType, PreferenceState

        store = DuckDBStore(__import__("pathlib").Path(sys.argv[1]))
        def record(user, item, count):
            at = datetime(2024, 6, 1, tzinfo=UTC)
            store.record_feedback(
                FeedbackEvent(user, item, InteractionType.LIKE, None, 1.0, at),
                PreferenceState(user, np.ones(3), 1.0, at.timestamp(), count, at, at),
            )
        record("alice", "item-000", 1)
        store.flush_preferences()
        record("bob", "item-001", 1)
        record("alice", "item-002", 2)
        os._exit(0)
        """
    )
    result = _run(script, db_path)
    assert result.returncode == 0, result.stderr

    with contextlib.closing(DuckDBStore(db_path)) as store:
        alice = store.preference("alice")
        assert alice is not None
        assert alice.feedback_count == 1
        assert store.preference("bob") is None
        assert [(e.user_id, e.item_id) for e in store.unfolded_events()] == [
            ("bob", "item-001"),
            ("alice", "item-002"),
        ]
        store.put_preferences([_state("alice", count=2), _state("bob", count=1)])
        assert store.unfolded_events() == []
        assert written_users(store) == {"alice": 2, "bob": 1}


def test_a_database_from_before_kept_states_has_nothing_to_fold_in(db_path: Path) -> None:
    # Before migration 5 every state was written with its events.
    db_path.parent.mkdir(parents=True)
    with database_at(db_path, 4, NOW.replace(tzinfo=None)) as db:
        db.execute(
            "INSERT INTO feedback (user_id, item_id, interaction_type, weight, event_time, "
            "received_at) VALUES ('alice', 'item-000', 'like', 1.0, ?, ?)",
            [NOW.replace(tzinfo=None)] * 2,
        )
        db.execute(
            "INSERT INTO users VALUES ('alice', [1.0, 0.0], 1.0, 0.0, 1, ?, ?)",
            [NOW.replace(tzinfo=None)] * 2,
        )

    with contextlib.closing(DuckDBStore(db_path)) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.unfolded_events() == []
        store.record_feedback(_event("alice", "item-001"), _state("alice", count=2))
        assert [e.item_id for e in store.unfolded_events()] == ["item-001"]


def test_kept_user_answers_from_memory_or_says_a_read_is_needed(db_path: Path) -> None:
    with contextlib.closing(DuckDBStore(db_path)) as store:
        assert store.kept_user("nobody") == (None, [])
        store.record_feedback(_event("alice", "item-000"), _state("alice", count=1))
        # The commit keeps her state; her history is read once, then kept too.
        assert store.kept_user("alice") is None
        history = store.user_history("alice")
        kept = store.kept_user("alice")
        assert kept is not None
        assert kept[0] == store.preference("alice")
        assert kept[1] == history
    with contextlib.closing(DuckDBStore(db_path, cached_users=0)) as store:
        assert store.kept_user("alice") is None
        assert store.kept_user("nobody") == (None, [])


def test_seen_item_ids(store: DuckDBStore) -> None:
    for item in ("item-000", "item-001", "item-000"):
        store.record_feedback(_event("alice", item), _state("alice"))
    store.record_feedback(_event("bob", "item-009"), _state("bob"))
    assert store.seen_item_ids("alice") == {"item-000", "item-001"}
    assert store.seen_item_ids("bob") == {"item-009"}
    assert store.seen_item_ids("nobody") == set()


def test_user_events_come_back_in_received_order(store: DuckDBStore) -> None:
    events = [
        _event("alice", "item-002", InteractionType.RATING, weight=0.6, rating=4.0),
        # Received later, but happened earlier: the receiving order is kept.
        _event(
            "alice", "item-000", InteractionType.DISLIKE, weight=-1.0, at=NOW - timedelta(days=3)
        ),
        _event(
            "alice", "item-001", InteractionType.VIEW, weight=0.25, at=NOW + timedelta(seconds=1)
        ),
    ]
    for event in events:
        store.record_feedback(event, _state("alice"))
    store.record_feedback(_event("bob", "item-000"), _state("bob"))
    assert store.user_events("alice") == events
    assert all(e.timestamp.tzinfo is not None for e in store.user_events("alice"))
    assert store.user_events("nobody") == []


def test_timestamps_in_other_zones_come_back_as_utc(store: DuckDBStore) -> None:
    aware = datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    store.record_feedback(_event("alice", "item-000", at=aware), _state("alice"))
    (event,) = store.user_events("alice")
    assert event.timestamp == aware
    assert event.timestamp.utcoffset() == timedelta(0)


def test_delete_user_removes_events_and_profile(store: DuckDBStore) -> None:
    for item in ("item-000", "item-001", "item-002"):
        store.record_feedback(_event("alice", item), _state("alice"))
    store.record_feedback(_event("bob", "item-000"), _state("bob"))
    assert store.delete_user("alice") == 3
    assert store.preference("alice") is None
    assert store.user_events("alice") == []
    assert store.seen_item_ids("alice") == set()
    assert store.user_ids() == ["bob"]
    assert len(store.user_events("bob")) == 1
    assert store.delete_user("alice") == 0
    assert store.delete_user("nobody") == 0


def test_popularity_shares_the_positive_weight(store: DuckDBStore) -> None:
    store.put_items(_items(5))
    feedback = [
        ("u1", "item-000", 1.0, NOW),
        ("u2", "item-000", 1.0, NOW),
        ("u1", "item-001", 1.0, NOW),
        ("u1", "item-002", 0.25, NOW),
        ("u2", "item-002", 0.5, NOW),
        ("u3", "item-002", 1.0, NOW),
        # Negative events do not count, for or against.
        ("u1", "item-003", -1.0, NOW),
        ("u2", "item-001", -1.0, NOW),
        ("u3", "item-001", -0.5, NOW),
    ]
    for user, item, weight, at in feedback:
        store.record_feedback(_event(user, item, weight=weight, at=at), _state(user))
    ranking = store.popularity(half_life_days=30.0)
    assert [item for item, _ in ranking] == ["item-000", "item-002", "item-001"]
    # Events of the same age: the recent share and the long-run share agree.
    assert [score for _, score in ranking] == pytest.approx([2.0 / 4.75, 1.75 / 4.75, 1.0 / 4.75])


def test_popularity_blends_recent_and_long_run_shares(store: DuckDBStore) -> None:
    store.put_items(_items(4))
    store.record_feedback(_event("u1", "item-000", at=NOW - timedelta(days=30)), _state("u1"))
    store.record_feedback(_event("u1", "item-001", at=NOW - timedelta(days=60)), _state("u1"))
    store.record_feedback(_event("u1", "item-002", weight=0.4, at=NOW), _state("u1"))
    ranking = dict(store.popularity(half_life_days=30.0))
    # Recent weights 0.5, 0.25, 0.4 (ages from the newest event); long-run ones 1, 1, 0.4.
    assert ranking["item-000"] == pytest.approx(0.5 * 1 / 2.4 + 0.5 * 0.5 / 1.15)
    assert ranking["item-001"] == pytest.approx(0.5 * 1 / 2.4 + 0.5 * 0.25 / 1.15)
    assert ranking["item-002"] == pytest.approx(0.5 * 0.4 / 2.4 + 0.5 * 0.4 / 1.15)
    # Recency alone would put the newest like first; a full like two months old outweighs it.
    assert list(ranking) == ["item-000", "item-001", "item-002"]


def test_popularity_keeps_the_long_run_when_only_a_few_are_active(store: DuckDBStore) -> None:
    store.put_items(_items(3))
    # Ten users liked item-000 two years ago; lately one user liked item-001.
    for n in range(10):
        user = f"early-{n}"
        store.record_feedback(_event(user, "item-000", at=NOW - timedelta(days=730)), _state(user))
    store.record_feedback(_event("late", "item-001", at=NOW), _state("late"))
    ranking = dict(store.popularity(half_life_days=30.0))
    # Two years of 30-day half-lives leave item-000 nothing of the recent share, but its
    # long-run share (10 of 11) still places it beside the newcomer instead of far below.
    assert ranking["item-000"] == pytest.approx(0.5 * 10 / 11, rel=1e-3)
    assert ranking["item-001"] == pytest.approx(0.5 * 1 / 11 + 0.5, rel=1e-3)


def test_popularity_ignores_deleted_items(store: DuckDBStore) -> None:
    store.put_items(_items(2))
    store.record_feedback(_event("u1", "item-000"), _state("u1"))
    store.record_feedback(_event("u1", "item-001"), _state("u1"))
    store.record_feedback(_event("u1", "never-in-catalog"), _state("u1"))
    store.delete_items(["item-000"])
    assert [item for item, _ in store.popularity(30.0)] == ["item-001"]
    # The events themselves stay, so the user's history is kept.
    assert store.seen_item_ids("u1") == {"item-000", "item-001", "never-in-catalog"}


def test_user_history_keeps_the_latest_event_of_each_item(store: DuckDBStore) -> None:
    store.put_items(_items(3))
    store.record_feedback(_event("alice", "item-000", weight=1.0), _state("alice"))
    # A later dislike of the same item replaces the like, even though it happened earlier.
    store.record_feedback(
        _event("alice", "item-000", InteractionType.DISLIKE, weight=-1.0, at=NOW - timedelta(1)),
        _state("alice"),
    )
    store.record_feedback(_event("alice", "item-001", weight=0.25), _state("alice"))
    store.record_feedback(_event("alice", "never-in-catalog", weight=0.5), _state("alice"))
    store.record_feedback(_event("bob", "item-002"), _state("bob"))
    history = {h.item_id: h for h in store.user_history("alice")}
    assert set(history) == {"item-000", "item-001", "never-in-catalog"}
    assert history["item-000"].weight == -1.0
    assert history["item-000"].timestamp == NOW
    assert history["item-001"].weight == 0.25
    assert store.user_history("nobody") == []


def test_interactions_are_the_pairs_of_catalog_items(store: DuckDBStore) -> None:
    store.put_items(_items(3))
    store.record_feedback(_event("alice", "item-000", at=NOW - timedelta(days=2)), _state("alice"))
    store.record_feedback(
        _event("alice", "item-000", InteractionType.SKIP, weight=-0.5), _state("alice")
    )
    store.record_feedback(_event("alice", "item-001"), _state("alice"))
    store.record_feedback(_event("bob", "item-001", weight=0.6), _state("bob"))
    store.record_feedback(_event("bob", "never-in-catalog"), _state("bob"))
    store.record_feedback(_event("carol", "item-002"), _state("carol"))
    store.delete_items(["item-002"])
    # One read: the rows of two reads may come in different orders.
    table = store.interactions()
    rows = sorted(
        zip(
            *(table[c].to_pylist() for c in ("user_id", "item_id", "weight", "event_time")),
            strict=True,
        )
    )
    assert rows == [
        ("alice", "item-000", -0.5, NOW.timestamp()),
        ("alice", "item-001", 1.0, NOW.timestamp()),
        ("bob", "item-001", 0.6, NOW.timestamp()),
    ]


def test_counts(store: DuckDBStore) -> None:
    assert store.counts() == Counts(items=0, users=0, feedback_events=0)
    store.put_items(_items(4))
    store.record_feedback(_event("alice", "item-000"), _state("alice"))
    store.record_feedback(_event("alice", "item-001"), _state("alice"))
    store.record_feedback(_event("bob", "item-000"), _state("bob"))
    store.delete_items(["item-003"])
    assert store.counts() == Counts(items=3, users=2, feedback_events=3)


# -- files and processes --------------------------------------------------------------------


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    first = DuckDBStore(db_path)
    first.put_items(_items(3))
    first.record_feedback(_event("alice", "item-001"), _state("alice"))
    first.close()
    again = DuckDBStore(db_path)
    try:
        assert [s.item for s in again.list_items(None, 10)] == _items(3)
        assert again.put_items(_items(1, start=3))[0].seq == 4
        assert again.user_events("alice") == [_event("alice", "item-001")]
        preference = again.preference("alice")
        assert preference is not None
        np.testing.assert_array_equal(preference.vector_sum, _state("alice").vector_sum)
        assert again.counts() == Counts(items=4, users=1, feedback_events=1)
    finally:
        again.close()


def test_another_process_cannot_open_an_open_database(store: DuckDBStore, db_path: Path) -> None:
    # Within one process DuckDB shares the open database; across processes the file is locked.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from appliance.backends.stores.duckdb_store import DuckDBStore
        from appliance.errors import ConfigError
        try:
            DuckDBStore(Path(sys.argv[1]))
        except ConfigError as e:
            print(e.message)
            sys.exit(3)
        """
    )
    result = _run(script, db_path)
    assert result.returncode == 3, result.stderr
    assert "Another appliance process may own this data directory" in result.stdout
    assert store.schema_version() == len(MIGRATIONS)


# -- export and import ----------------------------------------------------------------------


def _filled(store: DuckDBStore) -> None:
    store.put_items(_items(5))
    store.record_feedback(_event("alice", "item-001"), _state("alice"))
    store.record_feedback(_event("bob", "item-002"), _state("bob"))
    store.record_feedback(_event("alice", "item-003"), _state("alice", 2))
    store.delete_user("bob")
    store.put_items([Item("item-000", "Title 0", "Text 0 revised", {"n": 0})])


@pytest.fixture
def other(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "other" / "appliance.duckdb")
    yield opened
    opened.close()


def test_an_export_imports_into_an_identical_store(
    store: DuckDBStore, other: DuckDBStore, tmp_path: Path
) -> None:
    _filled(store)

    exported = store.export_tables(tmp_path / "export")

    assert exported.schema_version == len(MIGRATIONS)
    assert exported.rows == {"items": 5, "feedback": 2, "users": 1}
    assert exported.last_event_id == 3
    ran: list[Counts] = []
    counts = other.import_tables(
        exported.files, exported.last_event_id, lambda: ran.append(other.counts())
    )
    # ``then`` ran inside the transaction, with the rows already in.
    assert ran == [counts] == [Counts(items=5, users=1, feedback_events=2)]
    # The exported users hold their events: none is folded in again at the next start.
    assert other.unfolded_events() == []
    assert other.list_items(None, 10) == store.list_items(None, 10)
    assert other.user_events("alice") == store.user_events("alice")
    assert other.feedback_after(None, 10) == store.feedback_after(None, 10)
    restored, original = other.preference("alice"), store.preference("alice")
    assert restored is not None
    assert original is not None
    np.testing.assert_array_equal(restored.vector_sum, original.vector_sum)
    assert replace(restored, vector_sum=None) == replace(original, vector_sum=None)
    # New items and events continue the sequences of the exported store.
    assert other.put_items(_items(1, start=9))[0].seq == store.put_items(_items(1, start=9))[0].seq
    other.record_feedback(_event("carol", "item-004"), _state("carol"))
    assert other.feedback_after(None, 1)[0].event_id == 4


def test_an_import_whose_then_fails_stores_nothing(
    store: DuckDBStore, other: DuckDBStore, tmp_path: Path
) -> None:
    _filled(store)
    exported = store.export_tables(tmp_path / "export")

    def fail() -> None:
        raise RuntimeError("the index refused")

    with pytest.raises(RuntimeError, match="the index refused"):
        other.import_tables(exported.files, exported.last_event_id, fail)

    assert other.counts() == Counts(items=0, users=0, feedback_events=0)
    other.import_tables(exported.files, exported.last_event_id, lambda: None)
    assert other.counts() == Counts(items=5, users=1, feedback_events=2)


def test_an_import_into_a_store_with_data_is_refused(store: DuckDBStore, tmp_path: Path) -> None:
    _filled(store)
    exported = store.export_tables(tmp_path / "export")

    with pytest.raises(ConflictError, match=r"not empty \(5 items, 1 users, 2 feedback events\)"):
        store.import_tables(exported.files, exported.last_event_id, lambda: None)

    assert store.counts() == Counts(items=5, users=1, feedback_events=2)


def test_an_import_of_rows_that_do_not_fit_is_refused(
    store: DuckDBStore, other: DuckDBStore, tmp_path: Path
) -> None:
    _filled(store)
    exported = store.export_tables(tmp_path / "export")
    # The users file in the place of the items file: other columns.
    files = {**exported.files, "items": exported.files["users"]}

    with pytest.raises(InvalidInputError, match="the items file does not fit"):
        other.import_tables(files, exported.last_event_id, lambda: None)

    assert other.counts() == Counts(items=0, users=0, feedback_events=0)


# -- reads answered from memory stay as fresh as the database ---------------------------------


def test_a_read_after_a_write_sees_the_write(store: DuckDBStore) -> None:
    store.put_items(_items(3))
    assert store.get_items(["item-000", "item-001"])["item-000"].item.title == "Title 0"
    assert store.preference("alice") is None
    assert store.user_history("alice") == []

    store.put_items([Item("item-000", "Renamed", "Text 0", {})])
    store.delete_items(["item-001"])
    store.record_feedback(_event("alice", "item-000"), _state("alice", 1))

    items = store.get_items(["item-000", "item-001", "item-002"])
    assert items["item-000"].item.title == "Renamed"
    assert set(items) == {"item-000", "item-002"}
    state = store.preference("alice")
    assert state is not None
    assert state.feedback_count == 1
    assert [h.item_id for h in store.user_history("alice")] == ["item-000"]

    store.record_feedback_batch(
        [_event("alice", "item-002"), _event("bob", "item-002")],
        [_state("alice", 2), _state("bob")],
    )
    state = store.preference("alice")
    assert state is not None
    assert state.feedback_count == 2
    assert {h.item_id for h in store.user_history("alice")} == {"item-000", "item-002"}
    assert store.preference("bob") is not None

    store.put_preferences([_state("alice", 7)])
    state = store.preference("alice")
    assert state is not None
    assert state.feedback_count == 7

    store.delete_user("alice")
    assert store.preference("alice") is None
    assert store.user_history("alice") == []


def test_a_history_is_in_the_order_its_items_were_last_given_feedback(store: DuckDBStore) -> None:
    # A bulk import gives many items the same time: which of them are the latest must not
    # change from one read (or one process) to the next. They come in the order stored.
    store.put_items(_items(40))
    stored = [f"item-{n:03d}" for n in (17, 3, 29, 8, 35, 0, 22, 11, 39, 5, 26, 14, 31, 2, 19)]
    for item in stored:
        store.record_feedback(_event("alice", item, at=NOW - timedelta(days=1)), _state("alice"))
    store.record_feedback(_event("alice", "item-001", at=NOW - timedelta(days=2)), _state("alice"))
    store.record_feedback(_event("alice", "item-004", at=NOW), _state("alice"))
    expected = ["item-001", *stored, "item-004"]
    assert [h.item_id for h in store.user_history("alice")] == expected


def test_a_returned_history_is_the_callers_own(store: DuckDBStore) -> None:
    store.put_items(_items(2))
    store.record_feedback(_event("alice", "item-000"), _state("alice"))
    store.user_history("alice").clear()
    assert [h.item_id for h in store.user_history("alice")] == ["item-000"]


def test_a_restore_replaces_what_was_read_before(tmp_path: Path, store: DuckDBStore) -> None:
    store.put_items(_items(2))
    store.record_feedback(_event("alice", "item-000"), _state("alice", 3))
    export = store.export_tables(tmp_path / "export")
    other = DuckDBStore(tmp_path / "other" / "appliance.duckdb")
    try:
        assert other.preference("alice") is None
        assert other.get_items(["item-000"]) == {}
        other.import_tables(export.files, export.last_event_id, lambda: None)
        state = other.preference("alice")
        assert state is not None
        assert state.feedback_count == 3
        assert set(other.get_items(["item-000"])) == {"item-000"}
        assert [h.item_id for h in other.user_history("alice")] == ["item-000"]
    finally:
        other.close()


def test_past_the_known_users_limit_reads_still_see_every_user(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_store, "MAX_KNOWN_USERS", 1)
    store = DuckDBStore(db_path)
    try:
        store.put_items(_items(1))
        for user in ("alice", "bob", "carol"):
            assert store.preference(user) is None
            store.record_feedback(_event(user, "item-000"), _state(user))
        reopened_users = [u for u in ("alice", "bob", "carol") if store.preference(u) is not None]
        assert reopened_users == ["alice", "bob", "carol"]
    finally:
        store.close()
    store = DuckDBStore(db_path)  # more users than the limit from the start
    try:
        assert all(store.user_history(u) for u in ("alice", "bob", "carol"))
        assert store.preference("dave") is None
    finally:
        store.close()


def test_warming_keeps_the_newest_items_in_memory(db_path: Path) -> None:
    store = DuckDBStore(db_path, cached_items=3)
    try:
        store.put_items(_items(5))
        assert store.warm_items() == 3
        # Changed behind the store's back, so that only what is read from the database sees it.
        store.connection().execute("UPDATE items SET title = 'changed'")
        titles = {
            i: s.item.title for i, s in store.get_items([f"item-{n:03d}" for n in range(5)]).items()
        }
        assert titles == {
            "item-000": "changed",
            "item-001": "changed",
            "item-002": "Title 2",
            "item-003": "Title 3",
            "item-004": "Title 4",
        }
    finally:
        store.close()


def test_a_written_state_is_kept_for_the_next_event(store: DuckDBStore) -> None:
    store.put_items(_items(1))
    store.record_feedback_batch(
        [_event("ann", "item-000"), _event("ben", "item-000")], [_state("ann", 1), _state("ben")]
    )
    store.record_feedback(_event("ann", "item-000"), _state("ann", 2))
    # Changed behind the store's back, so that only what is read from the database sees it.
    store.connection().execute("UPDATE users SET feedback_count = 99")
    states = store.preferences(["ann", "ben", "cat"])
    assert {u: s.feedback_count for u, s in states.items()} == {"ann": 2, "ben": 1}
    # A write that fails in its transaction keeps nothing: the last committed state stands.
    with pytest.raises(duckdb.Error):
        store.record_feedback_batch(
            [_event("ann", "item-000"), replace(_event("ann", "item-000"), item_id=None)],
            [_state("ann", 3)],
        )
    state = store.preference("ann")
    assert state is not None
    assert state.feedback_count == 2


def test_which_items_exist_is_answered_from_memory_when_they_were_read(
    store: DuckDBStore,
) -> None:
    store.put_items(_items(3))
    store.get_items(["item-000"])
    store.connection().execute("DELETE FROM items WHERE item_id IN ('item-000', 'item-001')")
    assert store.existing_item_ids(["item-000", "item-001", "item-002", "gone"]) == {
        "item-000",
        "item-002",
    }


def test_warming_an_uncached_store_reads_nothing(db_path: Path) -> None:
    store = DuckDBStore(db_path, cached_items=0)
    try:
        store.put_items(_items(2))
        assert store.warm_items() == 0
        store.connection().execute("UPDATE items SET title = 'changed'")
        assert store.get_items(["item-000"])["item-000"].item.title == "changed"
    finally:
        store.close()


def test_warming_keeps_the_most_recently_active_users_in_memory(db_path: Path) -> None:
    store = DuckDBStore(db_path, cached_users=2)
    try:
        store.put_items(_items(1))
        for n, user in enumerate(("ann", "ben", "cat")):
            state = replace(_state(user, n + 1), vector_updated_at=NOW + timedelta(days=n))
            store.record_feedback(_event(user, "item-000"), state)
        assert store.warm_users() == 2
        # Changed behind the store's back, so that only what is read from the database sees it.
        store.connection().execute("UPDATE users SET feedback_count = 99")
        store.connection().execute("DELETE FROM feedback")
        # The two kept first: reading the third makes room for it in a cache of two.
        assert [len(store.user_history(u)) for u in ("ben", "cat", "ann")] == [1, 1, 0]
        counts = [getattr(store.preference(u), "feedback_count", 0) for u in ("ben", "cat", "ann")]
        assert counts == [2, 3, 99]
    finally:
        store.close()
