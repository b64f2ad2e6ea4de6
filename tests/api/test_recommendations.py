"""Recommendations end to end through HTTP, on the real model, index and database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from appliance.settings import Settings
from tests.api.calls import feedback, ids, recommend
from tests.conftest import make_settings

TIME_TRAVEL = {"tt-1", "tt-2", "tt-3", "tt-4", "tt-5", "tt-6"}


def test_context_ranks_matching_items_first(catalog_client: TestClient[Any]) -> None:
    # The vector source alone: fused with keyword matches, single words ("a travelling
    # writer", "Full Time") compete with the dense ranking this checks.
    answer = recommend(
        catalog_client, user_id="new-user", context="time travel", top_k=6, sources=["vector"]
    )

    assert answer["user_id"] == "new-user"
    assert set(ids(answer)) == TIME_TRAVEL
    assert answer["strategy"] == "context"
    scores = [r["score"] for r in answer["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    first = answer["recommendations"][0]
    assert set(first) >= {"item_id", "title", "score", "metadata"}
    assert first["metadata"]["category"] == "time travel"
    assert answer["request_id"]
    assert answer["timestamp"].endswith("Z")
    # No re-ranker is configured: the stage does not run and is not timed.
    assert answer["reranked"] is False
    assert set(answer["timings_ms"]) == {"query", "retrieve", "total"}
    assert answer["timings_ms"]["total"] >= answer["timings_ms"]["retrieve"]


def test_response_has_exactly_top_k(catalog_client: TestClient[Any]) -> None:
    for k in (1, 5, 36):
        assert len(ids(recommend(catalog_client, user_id="u", context="books", top_k=k))) == k
    # More than the catalog holds: everything there is, once.
    everything = ids(recommend(catalog_client, user_id="u", context="books", top_k=100))
    assert len(everything) == len(set(everything)) == 36


def test_likes_and_dislikes_move_the_next_results(catalog_client: TestClient[Any]) -> None:
    user = "alice-123"
    for item in ("ck-1", "ck-2"):
        feedback(catalog_client, user, item, interaction_type="like")
    liked = recommend(catalog_client, user_id=user, top_k=3)
    assert liked["strategy"] == "preference"
    assert all(i.startswith("ck-") for i in ids(liked))

    # Dislikes of cooking, likes of gardening: the taste moves to the garden.
    for item in ("ck-3", "ck-4", "ck-5"):
        catalog_client.post("/feedback", json={"user_id": user, "item_id": item, "rating": 0.5})
    for item in ("gd-1", "gd-2", "gd-3", "gd-4"):
        catalog_client.post(
            "/feedback",
            json={"user_id": user, "item_id": item, "rating": 5, "interaction_type": "rating"},
        )
    moved = ids(recommend(catalog_client, user_id=user, top_k=2))
    assert moved[0].startswith("gd-"), moved
    assert not any(i.startswith("ck-") for i in moved), moved


def test_preference_blends_with_context(catalog_client: TestClient[Any]) -> None:
    user = "bob"
    for item in ("sp-1", "sp-3", "sp-5"):  # space films
        catalog_client.post("/feedback", json={"user_id": user, "item_id": item, "rating": 5})
    plain = recommend(catalog_client, user_id="nobody", context="a journey", top_k=36)
    blended = recommend(catalog_client, user_id=user, context="a journey", top_k=33)
    assert blended["strategy"] == "context+preference"

    def space_rank(answer: dict[str, Any]) -> float:
        ranks = [n for n, i in enumerate(ids(answer)) if i in {"sp-2", "sp-4", "sp-6"}]
        return sum(ranks) / len(ranks)

    assert space_rank(blended) < space_rank(plain)


def test_seen_items_are_excluded_unless_asked(catalog_client: TestClient[Any]) -> None:
    user = "carol"
    for item in ("tt-1", "tt-2", "tt-3"):
        catalog_client.post(
            "/feedback", json={"user_id": user, "item_id": item, "interaction_type": "view"}
        )
    answer = recommend(catalog_client, user_id=user, context="time travel", top_k=6)
    assert not set(ids(answer)) & {"tt-1", "tt-2", "tt-3"}
    assert len(ids(answer)) == 6
    again = recommend(
        catalog_client,
        user_id=user,
        context="time travel",
        top_k=6,
        exclude_seen=False,
        sources=["vector"],
    )
    assert set(ids(again)) == TIME_TRAVEL


def test_filters_are_honoured(catalog_client: TestClient[Any]) -> None:
    answer = recommend(
        catalog_client,
        user_id="u",
        context="time travel",
        top_k=5,
        filters={"format": "film"},
        sources=["vector"],
    )
    assert ids(answer)[:3] == [i for i in ids(answer) if i.startswith("tt-")][:3]
    assert all(r["metadata"]["format"] == "film" for r in answer["recommendations"])

    ranged = recommend(
        catalog_client,
        user_id="u",
        context="stories",
        top_k=36,
        filters={"year": {"gte": 2015, "lt": 2019}, "category": ["space", "sport"]},
    )
    assert ranged["recommendations"]
    for r in ranged["recommendations"]:
        assert 2015 <= r["metadata"]["year"] < 2019
        assert r["metadata"]["category"] in {"space", "sport"}
    # A list-valued field matches when it contains the value.
    tagged = recommend(
        catalog_client, user_id="u", context="food", top_k=36, filters={"tags": "novel"}
    )
    assert {r["metadata"]["format"] for r in tagged["recommendations"]} == {"novel"}


def test_cold_start_user_gets_popular_items(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    # Popularity recomputed at every request, and answers not reused: other users' feedback
    # shows at once (by default it shows within cache.result_ttl_seconds).
    client = open_client(
        make_settings(
            tmp_path / "data",
            recommend={"popularity_refresh_seconds": 0},
            cache={"result_ttl_seconds": 0},
        )
    )
    client.post("/items", json={"items": test_items})
    # With no feedback at all, the newest items come first.
    newest = recommend(client, user_id="first-visit", top_k=3)
    assert newest["strategy"] == "popularity"
    assert ids(newest) == ["gd-6", "gd-5", "gd-4"]

    for n, user in enumerate(["p1", "p2", "p3"]):
        client.post(
            "/feedback", json={"user_id": user, "item_id": "ro-4", "interaction_type": "like"}
        )
        if n < 2:
            client.post(
                "/feedback",
                json={"user_id": user, "item_id": "sf-2", "interaction_type": "purchase"},
            )
    # Dislikes never make an item popular.
    for user in ("p4", "p5", "p6", "p7"):
        client.post(
            "/feedback", json={"user_id": user, "item_id": "sp-2", "interaction_type": "dislike"}
        )

    cold = recommend(client, user_id="first-visit", top_k=3)
    assert cold["strategy"] == "popularity"
    # The two popular items, then the newest one.
    assert ids(cold) == ["ro-4", "sf-2", "gd-6"]

    # Popularity respects filters: the popular sport item, then the newest sport item.
    filtered = recommend(client, user_id="first-visit", top_k=2, filters={"category": "sport"})
    assert ids(filtered) == ["sf-2", "sf-6"]


def test_a_request_can_name_its_candidate_sources(catalog_client: TestClient[Any]) -> None:
    names = catalog_client.get("/health").json()["sources"]
    assert names == [
        "vector",
        "keyword",
        "named",
        "collaborative",
        "neighbourhood",
        "history",
        "popularity",
    ]

    answer = recommend(catalog_client, user_id="u", context="time travel", sources=["vector"])
    assert all(set(r["sources"]) == {"vector"} for r in answer["recommendations"])

    for sources, fix in ((["vector", "tarot"], "tarot"), ([], "at least one")):
        response = catalog_client.post(
            "/recommendations", json={"user_id": "u", "context": "x", "sources": sources}
        )
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert fix in detail
        assert all(name in detail for name in names)
