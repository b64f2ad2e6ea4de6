"""Bad input through HTTP: always a 4xx whose JSON body says what to fix, never a 500, and
never a change to what was stored before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.conftest import TEST_CATALOG, make_settings

COUNTED = ("items", "users", "feedback_events", "index_points")

#: Marks a case that shows a bug in the appliance (see the reason).
TIMESTAMP_OVERFLOW = pytest.mark.xfail(
    reason="FeedbackService.record (appliance/services/feedback.py, _as_utc) converts the "
    "timestamp with astimezone(UTC), which raises OverflowError for a time whose UTC value "
    "falls outside year 1..9999; the error is not an ApplianceError, so the answer is a 500",
    strict=True,
)
LAX_NUMBERS = pytest.mark.xfail(
    reason="Litestar converts JSON bodies with msgspec's strict=False, so the string '5' is "
    "accepted as top_k=5 instead of being rejected as a wrong type",
    strict=True,
)


@pytest.fixture(scope="module")
def shared(minilm: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    """One application with the catalog and some feedback, shared by the read-only cases."""
    settings = make_settings(Path(tmp_path_factory.mktemp("errors")) / "data")
    items = [json.loads(line) for line in TEST_CATALOG.read_text().splitlines() if line]
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        assert client.post("/items", json={"items": items}).status_code == 200
        for item in ("ck-1", "sp-1"):
            response = client.post(
                "/feedback", json={"user_id": "alice", "item_id": item, "interaction_type": "like"}
            )
            assert response.status_code == 200, response.text
        yield client


def counts(client: TestClient[Any]) -> dict[str, int]:
    body = client.get("/stats").json()
    return {k: body[k] for k in COUNTED}


def item(**fields: Any) -> dict[str, Any]:
    return {"item_id": "new-1", "title": "A title", **fields}


def like(**fields: Any) -> dict[str, Any]:
    return {"user_id": "alice", "item_id": "tt-1", "interaction_type": "like", **fields}


# (method, path, body, status, text the answer must contain). A str body is sent as it is.
CASES = [
    # Unknown fields, in each request body and inside a nested one.
    pytest.param("POST", "/recommendations", {"user_id": "u", "topk": 3}, 400, "unknown field `topk`",
                 id="recommend-unknown-field"),
    pytest.param("POST", "/feedback", like(score=5), 400, "unknown field `score`",
                 id="feedback-unknown-field"),
    pytest.param("POST", "/items", {"items": [item()], "upsert": True}, 400, "unknown field `upsert`",
                 id="items-unknown-field"),
    pytest.param("POST", "/items", {"items": [item(description="x")]}, 400,
                 "unknown field `description`", id="item-unknown-field"),
    # top_k.
    pytest.param("POST", "/recommendations", {"user_id": "u", "top_k": 0}, 400, ">= 1", id="top-k-0"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "top_k": 101}, 400, "<= 100",
                 id="top-k-101"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "top_k": "ten"}, 400, "top_k",
                 id="top-k-word"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "top_k": "5"}, 400, "top_k",
                 id="top-k-numeric-string", marks=LAX_NUMBERS),
    pytest.param("POST", "/recommendations", {"user_id": "u", "top_k": 2.5}, 400, "Expected `int`",
                 id="top-k-fraction"),
    # user_id.
    pytest.param("POST", "/recommendations", {"context": "space"}, 400,
                 "missing required field `user_id`", id="user-id-missing"),
    pytest.param("POST", "/recommendations", {"user_id": ""}, 400, "length >= 1", id="user-id-empty"),
    pytest.param("POST", "/recommendations", {"user_id": "a/b"}, 400, "user_id", id="user-id-slash"),
    pytest.param("POST", "/feedback", like(user_id="a\nb"), 400, "user_id",
                 id="user-id-control-character"),
    pytest.param("POST", "/feedback", like(user_id="u" * 257), 400, "length <= 256",
                 id="user-id-too-long"),
    pytest.param("POST", "/recommendations", {"user_id": 7}, 400, "Expected `str`",
                 id="user-id-number"),
    # Feedback.
    pytest.param("POST", "/feedback", like(interaction_type="rating", rating=6), 400, "<= 5.0",
                 id="rating-6"),
    pytest.param("POST", "/feedback", like(interaction_type="rating", rating=-1), 400, ">= 0.0",
                 id="rating-negative"),
    pytest.param("POST", "/feedback", like(interaction_type="love"), 400, "Invalid enum value 'love'",
                 id="interaction-type-unknown"),
    pytest.param("POST", "/feedback", like(interaction_type="rating"), 400, "needs a rating",
                 id="rating-missing"),
    pytest.param("POST", "/feedback", {"user_id": "alice", "rating": 5}, 400,
                 "missing required field `item_id`", id="item-id-missing"),
    pytest.param("POST", "/feedback", like(item_id="nope"), 404, "POST /items",
                 id="feedback-unknown-item"),
    pytest.param("POST", "/feedback", like(timestamp="2999-01-01T00:00:00Z"), 400, "in the future",
                 id="timestamp-future"),
    pytest.param("POST", "/feedback", like(timestamp="yesterday"), 400, "timestamp",
                 id="timestamp-not-a-time"),
    pytest.param("POST", "/feedback", like(timestamp="9999-12-31T23:59:59-01:00"), 400,
                 "in the future", id="timestamp-beyond-year-9999", marks=TIMESTAMP_OVERFLOW),
    pytest.param("POST", "/feedback", like(timestamp="0001-01-01T00:00:00+01:00"), 400, "timestamp",
                 id="timestamp-before-year-1", marks=TIMESTAMP_OVERFLOW),
    pytest.param("POST", "/feedback", like(request_id="r" * 65), 400, "length <= 64",
                 id="request-id-too-long"),
    # Filters.
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"category": []}}, 400,
                 "length >= 1", id="filter-empty-list"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"year": {}}}, 400,
                 "give at least one of gt, gte, lt, lte", id="filter-range-without-bounds"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"year": {"between": 1}}},
                 400, "unknown field `between`", id="filter-range-unknown-key"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"year": {"gte": "old"}}},
                 400, "Expected `float | null`", id="filter-range-bound-not-a-number"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"release year": 1999}},
                 400, "matching regex", id="filter-field-with-space"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "filters": {"year": None}}, 400,
                 "got `null`", id="filter-null"),
    pytest.param("POST", "/recommendations", {"user_id": "u", "context": "x" * 4001}, 400,
                 "length <= 4000", id="context-too-long"),
    # Items.
    pytest.param("POST", "/items", {"items": []}, 400, "length >= 1", id="items-none"),
    pytest.param("POST", "/items", {"items": [item(item_id=f"bulk-{n}") for n in range(1001)]}, 400,
                 "length <= 1000", id="items-oversized-batch"),
    pytest.param("POST", "/items", {"items": [item(item_id="twin"), item(item_id="twin", title="B")]},
                 400, "'twin' appears more than once", id="items-duplicate-id"),
    pytest.param("POST", "/items", {"items": [item(title="")]}, 400, "items[0].title",
                 id="item-empty-title"),
    pytest.param("POST", "/items", {"items": [item(text="x" * 20_001)]}, 400, "length <= 20000",
                 id="item-text-too-long"),
    pytest.param("POST", "/items", {"items": [item(metadata=["fiction"])]}, 400,
                 "Expected `object`, got `array`", id="item-metadata-list"),
    pytest.param("POST", "/items", {"items": [item(metadata="fiction")]}, 400,
                 "Expected `object`, got `str`", id="item-metadata-string"),
    pytest.param("POST", "/items", {"items": [item(item_id="a/b")]}, 400, "items[0].item_id",
                 id="item-id-slash"),
    pytest.param("POST", "/items", {"items": [item(metadata={f"k{n}": n for n in range(65)})]}, 400,
                 "length <= 64", id="item-metadata-too-many-fields"),
    # Malformed JSON.
    pytest.param("POST", "/items", '{"items": [', 400, "truncated", id="json-truncated"),
    pytest.param("POST", "/feedback", '{"user_id": "alice", "item_id": "tt-1",}', 400,
                 "JSON is malformed", id="json-trailing-comma"),
    pytest.param("POST", "/recommendations", '["user_id", "u"]', 400, "Expected `object`",
                 id="json-not-an-object"),
    # Query parameters and paths.
    pytest.param("GET", "/items?limit=0", None, 400, ">= 1", id="items-limit-0"),
    pytest.param("GET", "/items?limit=1001", None, 400, "<= 1000", id="items-limit-too-big"),
    pytest.param("GET", "/items?limit=many", None, 400, "limit", id="items-limit-word"),
    pytest.param("GET", "/items/unknown", None, 404, "'unknown' is not in the catalog",
                 id="get-unknown-item"),
    pytest.param("DELETE", "/items/unknown", None, 404, "'unknown' is not in the catalog",
                 id="delete-unknown-item"),
    pytest.param("GET", "/users/unknown", None, 404, "'unknown' has no feedback", id="get-unknown-user"),
    pytest.param("DELETE", "/users/unknown", None, 404, "'unknown' has no feedback",
                 id="delete-unknown-user"),
    pytest.param("POST", "/admin/users/rebuild?user_id=unknown", None, 404, "'unknown' has no feedback",
                 id="rebuild-unknown-user"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "expected"), CASES)
def test_bad_input_is_a_4xx_that_says_what_to_fix(
    shared: TestClient[Any],
    method: str,
    path: str,
    body: dict[str, Any] | str | None,
    status: int,
    expected: str,
) -> None:
    before = counts(shared)
    if isinstance(body, str):
        response = shared.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = shared.request(method, path, json=body)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["status_code"] == status
    assert answer["detail"]
    assert expected in response.text
    if answer["detail"].startswith("Validation failed"):
        # Litestar's validation errors name the offending field in `extra`.
        assert answer["extra"]
        assert all({"message", "key", "source"} <= set(e) for e in answer["extra"])
    # Nothing the rejected request carried was stored.
    assert counts(shared) == before


def test_accepted_data_survives_the_rejections(shared: TestClient[Any]) -> None:
    assert counts(shared) == {"items": 36, "users": 1, "feedback_events": 2, "index_points": 36}
    assert shared.get("/users/alice").json()["feedback_count"] == 2
    assert shared.get("/items/tt-1").json()["title"] == "The Clockmaker's Return"
    for rejected in ("new-1", "twin", "bulk-0"):
        assert shared.get(f"/items/{rejected}").status_code == 404


def test_non_json_content_is_rejected(shared: TestClient[Any]) -> None:
    before = counts(shared)
    for path, content, kind in (
        ("/items", b"item_id=x&title=y", "application/x-www-form-urlencoded"),
        ("/feedback", b"user_id,item_id\nalice,tt-1\n", "text/csv"),
        ("/recommendations", b"\x00\x01\x02", "application/octet-stream"),
    ):
        response = shared.post(path, content=content, headers={"content-type": kind})
        assert response.status_code == 400, (path, kind, response.text)
        answer = response.json()
        assert answer["status_code"] == 400
        assert "JSON is malformed" in answer["detail"]
    # An empty body is no request at all.
    empty = shared.post("/feedback")
    assert 400 <= empty.status_code < 500, empty.text
    assert empty.json()["detail"]
    assert counts(shared) == before


def test_recommendations_on_an_empty_catalog(client: TestClient[Any]) -> None:
    for body in (
        {"user_id": "u"},
        {"user_id": "u", "context": "time travel"},
        {"user_id": "u", "context": "time travel", "filters": {"category": "space"}},
    ):
        response = client.post("/recommendations", json=body)
        assert response.status_code == 409, response.text
        answer = response.json()
        assert answer["status_code"] == 409
        assert "catalog is empty" in answer["detail"]
        assert "POST /items" in answer["detail"]
