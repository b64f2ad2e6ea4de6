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
    assert response.json() == {"user_id": "dave", "deleted_events": 3}

    assert client.get("/users/dave").status_code == 404
    assert client.delete("/users/dave").status_code == 404
    # Their seen items are no longer excluded, and their taste no longer steers the query.
    shown = recommend(client, user_id="dave", context="time travel", top_k=6, exclude_seen=True)
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
    assert scores(forwards) == pytest.approx(scores(backwards), abs=1e-6)


def test_rebuild_of_an_unknown_user_is_not_found(catalog_client: TestClient[Any]) -> None:
    feedback(catalog_client, "known", "ck-1", interaction_type="like")
    response = catalog_client.post("/admin/users/rebuild", params={"user_id": "ghost"})
    assert response.status_code == 404
    assert "ghost" in response.json()["detail"]
    # The known user's state is untouched by the failed request.
    assert catalog_client.get("/users/known").json()["feedback_count"] == 1
