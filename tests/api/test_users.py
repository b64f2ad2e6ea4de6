"""Users through HTTP: profiles, deletion and preference rebuilds, on the real model, index and
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api.calls import feedback, ids, recommend, scores, stats

TIME_TRAVEL = {"tt-1", "tt-2", "tt-3", "tt-4", "tt-5", "tt-6"}
NOW = datetime.now(UTC).replace(microsecond=0)


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


#: A history sent out of chronological order, mixing every kind of signal.
HISTORY: list[tuple[str, dict[str, Any]]] = [
    ("ck-1", {"interaction_type": "like", "timestamp": days_ago(10)}),
    ("sp-1", {"interaction_type": "rating", "rating": 5, "timestamp": days_ago(400)}),
    ("ro-1", {"interaction_type": "dislike", "timestamp": days_ago(2)}),
    ("gd-1", {"interaction_type": "rating", "rating": 1, "timestamp": days_ago(100)}),
    ("tt-1", {"interaction_type": "view"}),
    ("sf-1", {"rating": 4, "timestamp": days_ago(5)}),
    ("ck-2", {"interaction_type": "purchase", "timestamp": days_ago(30)}),
    ("sp-2", {"interaction_type": "skip", "timestamp": days_ago(1)}),
    ("ro-2", {"interaction_type": "rating", "rating": 2.5, "timestamp": days_ago(3)}),
    ("ck-3", {"interaction_type": "watched", "rating": 4.5, "timestamp": days_ago(60)}),
]


def test_profile_after_feedback(catalog_client: TestClient[Any]) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    feedback(catalog_client, "alice", "ck-1", interaction_type="like")
    feedback(catalog_client, "alice", "ck-2", rating=4)

    response = catalog_client.get("/users/alice")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["user_id"] == "alice"
    assert profile["feedback_count"] == 2
    assert profile["has_preference"] is True
    assert parse(profile["vector_updated_at"]) >= before
    assert parse(profile["created_at"]) >= before
    assert parse(profile["vector_updated_at"]) >= parse(profile["created_at"])


def test_profile_without_a_taste_yet(catalog_client: TestClient[Any]) -> None:
    # A neutral rating counts as feedback but says nothing about taste.
    feedback(catalog_client, "neutral", "ck-1", rating=2.5)
    profile = catalog_client.get("/users/neutral").json()
    assert profile["feedback_count"] == 1
    assert profile["has_preference"] is False
    assert "vector_updated_at" not in profile

    # A like and a dislike of the same item at the same moment cancel out exactly.
    moment = days_ago(1)
    feedback(catalog_client, "torn", "sp-1", interaction_type="like", timestamp=moment)
    feedback(catalog_client, "torn", "sp-1", interaction_type="dislike", timestamp=moment)
    torn = catalog_client.get("/users/torn").json()
    assert (torn["feedback_count"], torn["has_preference"]) == (2, False)
    assert recommend(catalog_client, user_id="torn", top_k=3)["strategy"] == "popularity"


def test_unknown_user_is_not_found(catalog_client: TestClient[Any]) -> None:
    response = catalog_client.get("/users/nobody")
    assert response.status_code == 404
    body = response.json()
    assert body["status_code"] == 404
    assert "nobody" in body["detail"]
    assert "no feedback" in body["detail"]


def test_delete_user_forgets_everything_about_them(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    feedback(client, "other", "ck-1", interaction_type="like")
    for item in ("tt-1", "tt-2", "tt-3"):
        feedback(client, "dave", item, interaction_type="view")
    hidden = recommend(client, user_id="dave", context="time travel", top_k=6)
    assert hidden["strategy"] == "context+preference"
    assert not set(ids(hidden)) & {"tt-1", "tt-2", "tt-3"}
    counts_before = stats(client)
    assert (counts_before["users"], counts_before["feedback_events"]) == (2, 4)

    response = client.delete("/users/dave")
    assert response.status_code == 200, response.text
    # Their one logged recommendation response goes too.
    assert response.json() == {"user_id": "dave", "deleted_events": 3, "deleted_impressions": 1}

    assert client.get("/users/dave").status_code == 404
    assert client.delete("/users/dave").status_code == 404
    # Their seen items are no longer excluded, and their taste no longer steers the query (of
    # the vector source: the keyword source would add items that share the context's words,
    # and the popularity prior the item "other" liked).
    shown = recommend(
        client,
        user_id="dave",
        context="time travel",
        top_k=6,
        exclude_seen=True,
        sources=["vector"],
    )
    assert shown["strategy"] == "context"
    assert set(ids(shown)) == TIME_TRAVEL
    counts = stats(client)
    assert (counts["users"], counts["feedback_events"]) == (1, 1)
    assert counts["items"] == counts_before["items"] == 36
    # Other users are untouched.
    assert client.get("/users/other").json()["feedback_count"] == 1


def test_rebuild_reproduces_the_online_preferences(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    for item, fields in HISTORY:
        feedback(client, "hist", item, **fields)
    for item, fields in reversed(HISTORY[:6]):
        feedback(client, "backwards", item, **fields)
    feedback(client, "plain", "sf-2", interaction_type="like")
    feedback(client, "plain", "sf-3", interaction_type="dislike")
    feedback(client, "plain", "sf-2", interaction_type="like", timestamp=days_ago(20))
    before = {u: recommend(client, user_id=u, top_k=10) for u in ("hist", "backwards", "plain")}
    profile_before = client.get("/users/hist").json()

    response = client.post("/admin/users/rebuild")
    assert response.status_code == 200, response.text
    every = response.json()
    assert every["users"] == 3
    assert every["max_deviation"] < 1e-5

    one = client.post("/admin/users/rebuild", params={"user_id": "hist"})
    assert one.status_code == 200, one.text
    assert one.json()["users"] == 1
    assert one.json()["max_deviation"] < 1e-5

    # The rebuilt vectors recommend what the online ones did.
    for user, answer in before.items():
        after = recommend(client, user_id=user, top_k=10)
        assert after["strategy"] == "preference"
        assert ids(after) == ids(answer)
        assert scores(after) == pytest.approx(scores(answer), abs=1e-6)
    profile = client.get("/users/hist").json()
    assert profile["feedback_count"] == profile_before["feedback_count"] == len(HISTORY)
    assert profile["has_preference"] is True


def test_preference_does_not_depend_on_arrival_order(catalog_client: TestClient[Any]) -> None:
    for item, fields in HISTORY:
        feedback(catalog_client, "forwards", item, **fields)
    for item, fields in reversed(HISTORY):
        feedback(catalog_client, "backwards", item, **fields)

    forwards = recommend(catalog_client, user_id="forwards", top_k=20)
    backwards = recommend(catalog_client, user_id="backwards", top_k=20)
    assert forwards["strategy"] == backwards["strategy"] == "preference"
    assert ids(forwards) == ids(backwards)
    # Scores are sent rounded to 6 decimals: equal ones can land one unit apart.
    assert scores(forwards) == pytest.approx(scores(backwards), abs=1.5e-6)


def test_rebuild_of_an_unknown_user_is_not_found(catalog_client: TestClient[Any]) -> None:
    feedback(catalog_client, "known", "ck-1", interaction_type="like")
    response = catalog_client.post("/admin/users/rebuild", params={"user_id": "ghost"})
    assert response.status_code == 404
    assert "ghost" in response.json()["detail"]
    # The known user's state is untouched by the failed request.
    assert catalog_client.get("/users/known").json()["feedback_count"] == 1


def user_page(client: TestClient[Any], **params: Any) -> dict[str, Any]:
    response = client.get("/users", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_listing_pages_through_users_in_id_order(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    users = ["alice", "ALICE-2", "bob", "carol", "dave", "malice"]
    for n, user in enumerate(users):
        for days in range(n + 1):
            feedback(client, user, "ck-1", interaction_type="view", timestamp=days_ago(days + 1))

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = user_page(client, limit=4, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen.extend(page["users"])
        cursor = page.get("next_cursor")
        if cursor is None:
            break
        assert cursor == page["users"][-1]["user_id"]

    assert pages == 2
    assert [u["user_id"] for u in seen] == sorted(users)
    by_user = {u["user_id"]: u for u in seen}
    for n, user in enumerate(users):
        assert by_user[user]["feedback_count"] == n + 1
        # The most recent event happened a day ago, whatever order the events came in.
        assert parse(by_user[user]["last_event_at"]) == parse(days_ago(1))
    assert "next_cursor" not in user_page(client, limit=6)


def test_listing_filters_by_part_of_the_id(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    for user in ("alice", "ALICE-2", "bob", "malice", "Ally"):
        feedback(client, user, "ck-1", interaction_type="like")

    assert [u["user_id"] for u in user_page(client, q="alice")["users"]] == [
        "ALICE-2",
        "alice",
        "malice",
    ]
    # Paging within the matches.
    first = user_page(client, q="AL", limit=2)
    assert [u["user_id"] for u in first["users"]] == ["ALICE-2", "Ally"]
    rest = user_page(client, q="AL", limit=2, cursor=first["next_cursor"])
    assert [u["user_id"] for u in rest["users"]] == ["alice", "malice"]
    assert "next_cursor" not in rest
    assert user_page(client, q="zed") == {"users": []}
    # Characters that mean something in SQL patterns are plain text here.
    assert user_page(client, q="%") == {"users": []}
    assert user_page(client, q="_") == {"users": []}


def test_listing_without_users(client: TestClient[Any]) -> None:
    assert user_page(client) == {"users": []}


def history_page(client: TestClient[Any], user_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/users/{user_id}/feedback", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_feedback_history_is_newest_first_with_titles(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    received = datetime.now(UTC) - timedelta(seconds=5)
    for item, fields in HISTORY:
        feedback(client, "hist", item, request_id="req-1", **fields)
    feedback(client, "other", "ck-1", interaction_type="like")
    assert client.delete("/items/ro-1").status_code == 204

    page = history_page(client, "hist")

    assert page["user_id"] == "hist"
    assert "next_cursor" not in page
    events = page["events"]
    # Newest first in the order they arrived, not by their own (historical) timestamps.
    assert [e["item_id"] for e in events] == [item for item, _ in reversed(HISTORY)]
    assert [e["event_id"] for e in events] == sorted((e["event_id"] for e in events), reverse=True)
    first = events[-1]
    assert first["interaction_type"] == "like"
    assert first["weight"] == 1.0
    assert first["title"] == "Salt, Fat and Fire"
    assert first["request_id"] == "req-1"
    assert "rating" not in first
    assert parse(first["event_time"]) == parse(days_ago(10))
    assert parse(first["received_at"]) >= received
    rating = next(e for e in events if e["item_id"] == "sp-1")
    assert (rating["rating"], rating["weight"]) == (5.0, 1.0)
    # The deleted item's event stays, without a title.
    deleted = next(e for e in events if e["item_id"] == "ro-1")
    assert "title" not in deleted
    assert deleted["weight"] == -1.0


def test_feedback_history_pages_backwards(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    for item, fields in HISTORY:
        feedback(client, "hist", item, **fields)
    everything = [e["event_id"] for e in history_page(client, "hist")["events"]]

    seen: list[int] = []
    cursor: int | None = None
    while True:
        page = history_page(client, "hist", limit=4, **({"before": cursor} if cursor else {}))
        seen.extend(e["event_id"] for e in page["events"])
        cursor = page.get("next_cursor")
        if cursor is None:
            break
        assert cursor == page["events"][-1]["event_id"]

    assert seen == everything
    assert len(seen) == len(HISTORY)
    assert history_page(client, "hist", before=min(seen)) == {"user_id": "hist", "events": []}


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/users/nobody/feedback", 404, "user 'nobody' has no feedback"),
        ("/users/alice/feedback?before=abc", 400, "before"),
        ("/users/alice/feedback?before=0", 400, ">= 1"),
        ("/users/alice/feedback?limit=0", 400, ">= 1"),
        ("/users/alice/feedback?limit=5000", 400, "<= 1000"),
        ("/users?limit=0", 400, ">= 1"),
        ("/users?limit=5000", 400, "<= 1000"),
        ("/users?limit=ten", 400, "limit"),
        (f"/users?q={'x' * 257}", 400, "length <= 256"),
    ],
)
def test_bad_listing_requests_say_what_to_fix(
    catalog_client: TestClient[Any], path: str, status: int, expected: str
) -> None:
    feedback(catalog_client, "alice", "ck-1", interaction_type="like")
    response = catalog_client.get(path)
    assert response.status_code == status, response.text
    assert response.json()["status_code"] == status
    assert expected in response.text
