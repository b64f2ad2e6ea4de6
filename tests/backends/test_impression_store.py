"""The impression tables on a real DuckDB file: bulk writes, labels from feedback, retention."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.backends.stores.impressions import (
    Impression,
    ImpressionStore,
    LoggedCandidate,
    SourceRank,
)
from appliance.backends.stores.migrations import MIGRATIONS
from appliance.domain import FeedbackEvent, InteractionType, PreferenceState
from tests.stores import database_at

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "appliance.duckdb")
    yield opened
    opened.close()


@pytest.fixture
def impressions(store: DuckDBStore) -> Iterator[ImpressionStore]:
    opened = ImpressionStore(store.connection())
    yield opened
    opened.close()


def impression(
    request_id: str,
    user: str = "u",
    at: datetime = NOW,
    *,
    items: int = 4,
    top_k: int = 2,
    context: bool = True,
) -> Impression:
    """Items i0..i{n-1}: "vector" proposes all of them, "popularity" the odd ones, reversed."""
    candidates = []
    for n in range(items):
        sources = [SourceRank("vector", n + 1, 0.9 - n / 10)]
        if n % 2:
            sources.append(SourceRank("popularity", items - n, float(n)))
        candidates.append(
            LoggedCandidate(f"i{n}", n + 1, n < top_k, 1.0 / (61 + n), tuple(sources))
        )
    strategy = "context" if context else "preference"
    return Impression(request_id, user, at, strategy, context, "rrf", top_k, tuple(candidates))


def answer(
    store: DuckDBStore,
    user: str,
    item: str,
    *,
    weight: float = 1.0,
    at: datetime = NOW,
    request_id: str | None = None,
) -> None:
    kind = InteractionType.LIKE if weight > 0 else InteractionType.DISLIKE
    store.record_feedback(
        FeedbackEvent(user, item, kind, None, weight, at, request_id), PreferenceState(user, None)
    )


def test_impressions_round_trip_with_every_candidate(impressions: ImpressionStore) -> None:
    written = impressions.append(
        [impression("r1", items=5, top_k=3), impression("r2", context=False)]
    )

    assert written == 9
    assert impressions.count() == 2
    stored = impressions.impression("r1", WEEK)
    assert stored is not None
    assert stored.impression == impression("r1", items=5, top_k=3)
    assert stored.labels == {}
    history_only = impressions.impression("r2", WEEK)
    assert history_only is not None
    assert history_only.impression.has_context is False
    assert impressions.impression("nope", WEEK) is None


def test_feedback_naming_the_request_labels_its_candidates(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    impressions.append([impression("r1"), impression("r2", user="v")])
    answer(store, "u", "i1", request_id="r1")
    answer(store, "u", "i1", weight=0.5, request_id="r1")  # labels add up
    answer(store, "u", "i2", weight=-1.0, request_id="r1")
    # Another user cannot label someone else's impression by naming it.
    answer(store, "v", "i3", request_id="r1")
    # An event that names another request never labels this one, whatever its time.
    answer(store, "u", "i0", at=NOW + timedelta(minutes=1), request_id="elsewhere")

    stored = impressions.impression("r1", WEEK)
    assert stored is not None
    assert stored.labels == {"i1": 1.5, "i2": -1.0}


def test_feedback_without_request_labels_the_latest_impression_before_it(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    impressions.append(
        [
            impression("early", at=NOW),
            impression("late", at=NOW + timedelta(hours=1)),
            impression("after", at=NOW + timedelta(hours=3)),
        ]
    )
    answer(store, "u", "i1", at=NOW + timedelta(hours=2))
    answer(store, "u", "i2", at=NOW + timedelta(minutes=30))
    answer(store, "u", "i3", at=NOW - timedelta(minutes=1))  # before every impression
    answer(store, "u", "i0", at=NOW + timedelta(hours=3) + WEEK + timedelta(seconds=1))

    labels = {r: impressions.impression(r, WEEK).labels for r in ("early", "late", "after")}  # type: ignore[union-attr]
    assert labels == {"early": {"i2": 1.0}, "late": {"i1": 1.0}, "after": {}}
    # A longer window reaches the late event.
    assert impressions.impression("after", WEEK * 2).labels == {"i0": 1.0}  # type: ignore[union-attr]


def test_training_set_holds_the_labelled_impressions_in_time_order(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    impressions.append(
        [
            impression("second", at=NOW + timedelta(minutes=1), items=3, context=False),
            impression("unanswered", at=NOW + timedelta(minutes=2)),
            impression("first", at=NOW, items=2),
        ]
    )
    answer(store, "u", "i1", request_id="first")
    answer(store, "u", "i2", weight=-1.0, request_id="second")

    data = impressions.training_set(WEEK, limit=10)

    assert data.sources == ("popularity", "vector")
    assert data.impressions == 2
    assert data.impression.tolist() == [0, 0, 1, 1, 1]
    # "first": i0 (vector 1), i1 (vector 2, popularity 1); "second": i0, i1, i2.
    assert data.ranks.tolist() == [[0, 1], [1, 2], [0, 1], [2, 2], [0, 3]]
    assert data.shown.tolist() == [True, True, True, True, False]
    assert data.label.tolist() == [0.0, 1.0, 0.0, 0.0, -1.0]
    assert data.has_context.tolist() == [True, True, False, False, False]
    assert data.impression[~data.has_context].tolist() == [1, 1, 1]
    # The limit looks at the newest impressions only: "unanswered" and "second".
    assert impressions.training_set(WEEK, limit=2).impressions == 1


def test_requests_that_named_items_are_told_apart(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    impressions.append(
        [
            impression("worded", at=NOW),
            replace(impression("naming", at=NOW + timedelta(minutes=1)), names_items=True),
        ]
    )
    answer(store, "u", "i1", request_id="worded")
    answer(store, "u", "i1", request_id="naming")

    stored = impressions.impression("naming", WEEK)
    assert stored is not None
    assert stored.impression.names_items is True
    data = impressions.training_set(WEEK, limit=10)
    assert data.has_context.tolist() == [True] * 8
    assert data.names_items.tolist() == [False] * 4 + [True] * 4


def test_impressions_logged_before_the_named_kind_read_as_naming_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "appliance.duckdb"
    # A database as the appliance left it before migration 4.
    with database_at(path, 3, NOW.replace(tzinfo=None)) as db:
        db.execute(
            "INSERT INTO impressions VALUES ('old', 'u', ?, 'context', true, 'rrf', 2, NULL)",
            [NOW.replace(tzinfo=None)],
        )
        db.execute(
            "INSERT INTO impression_candidates VALUES "
            "('old', 'i0', 1, true, 0.1, [{'source': 'vector', 'rank': 1, 'score': 0.9}]), "
            "('old', 'i1', 2, true, 0.1, [{'source': 'popularity', 'rank': 1, 'score': 1.0}])"
        )

    store = DuckDBStore(path)
    try:
        assert store.schema_version() == len(MIGRATIONS)
        impressions = ImpressionStore(store.connection())
        stored = impressions.impression("old", WEEK)
        assert stored is not None
        assert stored.impression.names_items is False
        answer(store, "u", "i1", request_id="old")
        data = impressions.training_set(WEEK, limit=10)
        assert data.names_items.tolist() == [False, False]
        impressions.close()
    finally:
        store.close()


def test_an_empty_training_set_has_no_rows(impressions: ImpressionStore) -> None:
    impressions.append([impression("r1")])
    data = impressions.training_set(WEEK, limit=10)
    assert data.impressions == 0
    assert data.ranks.shape[0] == 0
    assert np.array_equal(data.label, np.zeros(0))


def test_retention_deletes_old_impressions_and_keeps_the_newest(
    impressions: ImpressionStore,
) -> None:
    impressions.append([impression(f"r{n}", at=NOW + timedelta(days=n)) for n in range(6)])

    assert impressions.prune(older_than=NOW + timedelta(days=2), keep=100) == 2
    assert impressions.prune(older_than=NOW, keep=3) == 1
    assert impressions.count() == 3
    assert [impressions.impression(f"r{n}", WEEK) is None for n in range(6)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert impressions.prune(older_than=NOW, keep=3) == 0


def test_deleting_a_user_deletes_their_impressions(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    impressions.append(
        [impression("a1", user="a"), impression("a2", user="a"), impression("b1", "b")]
    )
    assert impressions.delete_user("a") == 2
    assert impressions.count() == 1
    assert impressions.impression("a1", WEEK) is None
    assert impressions.impression("b1", WEEK) is not None
    answer(store, "b", "i0", request_id="b1")
    assert impressions.training_set(WEEK, limit=10).impressions == 1


def reused(request_id: str, of: Impression, at: datetime = NOW) -> Impression:
    """An answer reused from the result cache: ``of``'s candidates under its own id and time."""
    return replace(of, request_id=request_id, created_at=at, candidates_of=of.request_id)


def candidate_rows(store: DuckDBStore) -> dict[str, int]:
    rows = store.connection().execute(
        "SELECT request_id, count(*) FROM impression_candidates GROUP BY ALL"
    )
    return dict(rows.fetchall())


def test_a_reused_answer_shares_the_candidates_of_the_answer_it_reuses(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    computed = impression("computed", items=5)
    assert impressions.append([computed, reused("again", computed)]) == 5
    later = reused("later", computed, at=NOW + timedelta(minutes=1))
    assert impressions.append([later]) == 0  # its owner is stored already
    assert candidate_rows(store) == {"computed": 5}

    stored = impressions.impression("later", WEEK)
    assert stored is not None
    assert stored.impression == later
    # Feedback naming a reused answer labels that answer only.
    answer(store, "u", "i1", request_id="again")
    labels = {r: impressions.impression(r, WEEK).labels for r in ("computed", "again", "later")}  # type: ignore[union-attr]
    assert labels == {"computed": {}, "again": {"i1": 1.0}, "later": {}}
    data = impressions.training_set(WEEK, limit=10)
    assert data.impressions == 1
    assert data.label.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_a_reused_answer_whose_answer_was_not_stored_keeps_its_own_candidates(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    lost = impression("lost")  # dropped from a full queue, or its write failed
    assert impressions.append([reused("again", lost)]) == 4

    assert candidate_rows(store) == {"again": 4}
    stored = impressions.impression("again", WEEK)
    assert stored is not None
    assert stored.impression == replace(lost, request_id="again")


def test_retention_keeps_shared_candidates_while_an_impression_uses_them(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    computed = impression("computed")
    impressions.append([computed, reused("again", computed, at=NOW + timedelta(days=1))])

    assert impressions.prune(older_than=NOW + timedelta(hours=1), keep=100) == 1
    assert impressions.impression("computed", WEEK) is None
    kept = impressions.impression("again", WEEK)
    assert kept is not None
    assert kept.impression.candidates == computed.candidates
    # A reused answer logged after its owner was deleted stores its candidates again.
    assert impressions.append([reused("third", computed, at=NOW + timedelta(days=2))]) == 4

    assert impressions.prune(older_than=NOW + timedelta(days=3), keep=100) == 2
    assert candidate_rows(store) == {}


def test_deleting_a_user_deletes_the_candidates_their_impressions_share(
    store: DuckDBStore, impressions: ImpressionStore
) -> None:
    computed = impression("computed", user="a")
    impressions.append([computed, reused("again", computed), impression("b1", user="b")])
    impressions.prune(older_than=NOW - timedelta(days=1), keep=2)  # deletes "computed"'s head
    assert candidate_rows(store) == {"computed": 4, "b1": 4}

    assert impressions.delete_user("a") == 1
    assert candidate_rows(store) == {"b1": 4}


def test_impressions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "appliance.duckdb"
    store = DuckDBStore(path)
    impressions = ImpressionStore(store.connection())
    impressions.append([impression("kept")])
    impressions.close()
    store.close()

    store = DuckDBStore(path)
    reopened = ImpressionStore(store.connection())
    try:
        assert reopened.impression("kept", WEEK) is not None
    finally:
        reopened.close()
        store.close()
