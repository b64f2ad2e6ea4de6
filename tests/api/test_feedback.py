"""Feedback through HTTP: the receipt, historical events and durability, on the real model,
index and database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api.calls import feedback, ids, recommend, stats


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("fields", "weight"),
    [
        ({"interaction_type": "like"}, 1.0),
        ({"interaction_type": "dislike"}, -1.0),
        ({"interaction_type": "rating", "rating": 4}, 0.6),
        ({"rating": 4}, 0.6),  # rating is the default interaction type
        ({"interaction_type": "rating", "rating": 0}, -1.0),
        ({"interaction_type": "view"}, 0.25),
        ({"interaction_type": "click"}, 0.5),
        ({"interaction_type": "purchase"}, 1.0),
        ({"interaction_type": "skip"}, -0.5),
        # Like and dislike keep their direction whatever rating comes with them.
        ({"interaction_type": "dislike", "rating": 5}, -1.0),
        # A rating alongside another interaction decides its direction.
        ({"interaction_type": "watched", "rating": 1.5}, -0.3),
    ],
)
def test_receipt_carries_the_weight_of_the_event(
    catalog_client: TestClient[Any], fields: dict[str, Any], weight: float
) -> None:
    receipt = feedback(catalog_client, "alice", "ck-1", **fields)
    assert receipt["status"] == "recorded"
    assert receipt["user_id"] == "alice"
    assert receipt["item_id"] == "ck-1"
    assert receipt["weight"] == pytest.approx(weight)
    assert receipt["feedback_count"] == 1
    assert receipt["preference_updated"] is True


def test_neutral_rating_is_recorded_without_moving_the_preference(
    catalog_client: TestClient[Any],
) -> None:
    receipt = feedback(catalog_client, "bob", "ck-1", rating=2.5)
    assert receipt["weight"] == 0.0
    assert receipt["preference_updated"] is False
    assert receipt["feedback_count"] == 1


def test_feedback_count_increments_per_user(catalog_client: TestClient[Any]) -> None:
    events = [
        ("like", None, 1.0),
        ("dislike", None, -1.0),
        ("rating", 4, 0.6),
        ("view", None, 0.25),
    ]
    for n, (kind, rating, weight) in enumerate(events, start=1):
        receipt = feedback(catalog_client, "carol", f"sp-{n}", interaction_type=kind, rating=rating)
        assert receipt["feedback_count"] == n
        assert receipt["weight"] == pytest.approx(weight)
    # Another user's count starts from its own beginning.
    assert feedback(catalog_client, "dave", "sp-1", rating=5)["feedback_count"] == 1
    assert catalog_client.get("/users/carol").json()["feedback_count"] == len(events)


def test_historical_timestamps_are_accepted_and_weigh_less(catalog_client: TestClient[Any]) -> None:
    year_ago = iso(datetime.now(UTC) - timedelta(days=365))
    # The same likes with opposite ages: the recent ones dominate each user's taste.
    for user, recent, old in (("cook", "ck", "sp"), ("astro", "sp", "ck")):
        for n in (2, 5):
            feedback(catalog_client, user, f"{recent}-{n}", interaction_type="like")
            receipt = feedback(
                catalog_client,
                user,
                f"{old}-{n}",
                interaction_type="like",
                timestamp=year_ago,
            )
            # The weight is the event's own; its age applies inside the preference vector.
            assert receipt["weight"] == 1.0

    # The preference vector is what ages; the vector source searches with it.
    for user, recent, old in (("cook", "ck-", "sp-"), ("astro", "sp-", "ck-")):
        answer = ids(recommend(catalog_client, user_id=user, top_k=4, sources=["vector"]))
        assert sum(i.startswith(recent) for i in answer) >= 2, (user, answer)
        assert not any(i.startswith(old) for i in answer), (user, answer)


def test_timestamp_formats(catalog_client: TestClient[Any]) -> None:
    # An offset, a naive time (taken as UTC) and a time a little ahead of the server's clock.
    for moment in (
        "2021-06-01T12:00:00+02:00",
        "2021-06-01T12:00:00",
        iso(datetime.now(UTC) + timedelta(minutes=1)),
    ):
        feedback(catalog_client, "erin", "gd-1", rating=4, timestamp=moment)
    assert catalog_client.get("/users/erin").json()["feedback_count"] == 3


def test_request_id_of_a_recommendation_is_accepted(catalog_client: TestClient[Any]) -> None:
    answer = recommend(catalog_client, user_id="frank", context="space exploration", top_k=3)
    request_id = answer["request_id"]
    assert request_id
    for item in ids(answer):
        receipt = feedback(
            catalog_client,
            "frank",
            item,
            interaction_type="click",
            request_id=request_id,
        )
        assert receipt["status"] == "recorded"
    assert stats(catalog_client)["feedback_events"] == 3
    # Items answered with feedback are left out of the next answer.
    again = recommend(catalog_client, user_id="frank", context="space exploration", top_k=3)
    assert not set(ids(again)) & set(ids(answer))


def test_events_are_counted_durably(catalog_client: TestClient[Any]) -> None:
    base = stats(catalog_client)
    assert (base["feedback_events"], base["users"]) == (0, 0)
    for n, user in enumerate(("g1", "g2", "g3")):
        for item in ("ro-1", "ro-2")[: n + 1]:
            feedback(catalog_client, user, item, interaction_type="like")
    counts = stats(catalog_client)
    assert counts["feedback_events"] == 1 + 2 + 2
    assert counts["users"] == 3
    # Rejected feedback is not stored.
    rejected = catalog_client.post("/feedback", json={"user_id": "g1", "item_id": "x", "rating": 5})
    assert rejected.status_code == 404
    assert stats(catalog_client)["feedback_events"] == 5


def tail(client: TestClient[Any], **params: Any) -> dict[str, Any]:
    response = client.get("/feedback", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_tail_follows_new_events_in_order(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    assert tail(client) == {"events": [], "last_event_id": 0}
    for n in range(1, 6):
        feedback(client, f"u{n}", f"ck-{n}", interaction_type="like")

    # Without a cursor: the latest events, oldest first, to start following from.
    latest = tail(client, limit=3)
    assert [e["user_id"] for e in latest["events"]] == ["u3", "u4", "u5"]
    assert latest["last_event_id"] == latest["events"][-1]["event_id"]
    assert latest["events"][-1]["title"] == "Pasta by Hand"
    assert tail(client)["events"][0]["user_id"] == "u1"
    cursor = latest["last_event_id"]
    assert tail(client, after=cursor) == {"events": [], "last_event_id": cursor}

    feedback(client, "new", "sp-1", interaction_type="dislike")
    feedback(client, "new", "sp-2", rating=4, request_id="r-7")
    feedback(client, "u1", "sp-3", interaction_type="view")

    fresh = tail(client, after=cursor)
    assert [(e["user_id"], e["item_id"]) for e in fresh["events"]] == [
        ("new", "sp-1"),
        ("new", "sp-2"),
        ("u1", "sp-3"),
    ]
    event_ids = [e["event_id"] for e in fresh["events"]]
    assert event_ids == sorted(event_ids)
    assert event_ids[0] > cursor
    assert fresh["last_event_id"] == event_ids[-1]
    rated = fresh["events"][1]
    assert (rated["rating"], rated["request_id"]) == (4.0, "r-7")
    assert rated["weight"] == pytest.approx(0.6)
    assert rated["interaction_type"] == "rating"
    assert tail(client, after=fresh["last_event_id"])["events"] == []
    # A limit takes the oldest of what is new; the cursor then picks up the rest.
    first = tail(client, after=cursor, limit=2)
    assert [e["event_id"] for e in first["events"]] == event_ids[:2]
    rest = tail(client, after=first["last_event_id"])
    assert [e["event_id"] for e in rest["events"]] == event_ids[2:]


def test_tail_from_the_start_returns_every_event_in_arrival_order(
    catalog_client: TestClient[Any],
) -> None:
    client = catalog_client
    feedback(client, "first", "gd-1", interaction_type="like")
    cursor = tail(client)["last_event_id"]
    for n in range(1, 4):
        feedback(client, "later", f"gd-{n + 1}", interaction_type="click")
    assert [e["item_id"] for e in tail(client, after=cursor)["events"]] == ["gd-2", "gd-3", "gd-4"]
    assert [e["item_id"] for e in tail(client, after=0)["events"]] == [
        "gd-1",
        "gd-2",
        "gd-3",
        "gd-4",
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": 0}, ">= 1"),
        ({"limit": 1001}, "<= 1000"),
        ({"after": -1}, ">= 0"),
        ({"after": "abc"}, "after"),
    ],
)
def test_bad_tail_requests_say_what_to_fix(
    catalog_client: TestClient[Any], params: dict[str, Any], expected: str
) -> None:
    response = catalog_client.get("/feedback", params=params)
    assert response.status_code == 400, response.text
    assert expected in response.text
