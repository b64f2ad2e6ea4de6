"""Bad input through HTTP: always a 4xx whose JSON body says what to fix, never a 500, and
never a change to what was stored before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.api.calls import counts, feedback, upsert
from tests.conftest import TEST_CATALOG, make_settings


@pytest.fixture(scope="module")
def shared(minilm: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    """One application with the catalog and some feedback, shared by the read-only cases."""
    settings = make_settings(Path(tmp_path_factory.mktemp("errors")) / "data")
    items = [json.loads(line) for line in TEST_CATALOG.read_text().splitlines() if line]
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        upsert(client, items)
        for item in ("ck-1", "sp-1"):
            feedback(client, "alice", item, interaction_type="like")
        yield client


def item(**fields: Any) -> dict[str, Any]:
    return {"item_id": "new-1", "title": "A title", **fields}


def like(**fields: Any) -> dict[str, Any]:
    return {"user_id": "alice", "item_id": "tt-1", "interaction_type": "like", **fields}


REC, FEEDBACK, ITEMS = "/recommendations", "/feedback", "/items"


class Case(NamedTuple):
    """A bad request and the answer it must get."""

    method: str
    path: str
    body: dict[str, Any] | str | None
    """JSON, or (a str) raw bytes sent as application/json."""
    status: int
    expected: str
    """Text the answer must contain."""


def bad(
    method: str,
    path: str,
    body: dict[str, Any] | str | None,
    status: int,
    expected: str,
    *,
    name: str,
    marks: Any = (),
) -> Any:
    return pytest.param(Case(method, path, body, status, expected), id=name, marks=marks)


# fmt: off
CASES = [
    # Unknown fields, in each request body and inside a nested one.
    bad("POST", REC, {"user_id": "u", "topk": 3}, 400, "unknown field `topk`",
        name="recommend-unknown-field"),
    bad("POST", FEEDBACK, like(score=5), 400, "unknown field `score`",
        name="feedback-unknown-field"),
    bad("POST", ITEMS, {"items": [item()], "upsert": True}, 400, "unknown field `upsert`",
        name="items-unknown-field"),
    bad("POST", ITEMS, {"items": [item(description="x")]}, 400,
        "unknown field `description`", name="item-unknown-field"),
    # top_k.
    bad("POST", REC, {"user_id": "u", "top_k": 0}, 400, ">= 1", name="top-k-0"),
    bad("POST", REC, {"user_id": "u", "top_k": 101}, 400, "<= 100",
        name="top-k-101"),
    bad("POST", REC, {"user_id": "u", "top_k": "ten"}, 400, "top_k",
        name="top-k-word"),
    bad("POST", REC, {"user_id": "u", "top_k": 2.5}, 400, "Expected `int`",
        name="top-k-fraction"),
    # Values of the wrong JSON type are refused, not converted: the schema says integer.
    bad("POST", REC, {"user_id": "u", "top_k": "5"}, 400, "Expected `int`, got `str`",
        name="top-k-numeric-string"),
    bad("POST", REC, {"user_id": "u", "rerank": 0}, 400, "Expected `bool | null`, got `int`",
        name="rerank-number"),
    bad("POST", REC, {"user_id": "u", "exclude_seen": "false"}, 400,
        "Expected `bool`, got `str`", name="exclude-seen-string"),
    bad("POST", FEEDBACK, like(interaction_type="rating", rating="4"), 400,
        "Expected `float | null`, got `str`", name="rating-numeric-string"),
    bad("PUT", "/admin/reranker", {"kind": 1}, 400, "Expected `str`, got `int`",
        name="reranker-kind-number"),
    # user_id.
    bad("POST", REC, {"context": "space"}, 400,
        "missing required field `user_id`", name="user-id-missing"),
    bad("POST", REC, {"user_id": ""}, 400, "length >= 1", name="user-id-empty"),
    bad("POST", REC, {"user_id": "a/b"}, 400, "user_id", name="user-id-slash"),
    bad("POST", FEEDBACK, like(user_id="a\nb"), 400, "user_id",
        name="user-id-control-character"),
    bad("POST", FEEDBACK, like(user_id="u" * 257), 400, "length <= 256",
        name="user-id-too-long"),
    bad("POST", REC, {"user_id": 7}, 400, "Expected `str`",
        name="user-id-number"),
    # Feedback.
    bad("POST", FEEDBACK, like(interaction_type="rating", rating=6), 400, "<= 5.0",
        name="rating-6"),
    bad("POST", FEEDBACK, like(interaction_type="rating", rating=-1), 400, ">= 0.0",
        name="rating-negative"),
    bad("POST", FEEDBACK, like(interaction_type="love"), 400, "Invalid enum value 'love'",
        name="interaction-type-unknown"),
    bad("POST", FEEDBACK, like(interaction_type="rating"), 400, "needs a rating",
        name="rating-missing"),
    bad("POST", FEEDBACK, {"user_id": "alice", "rating": 5}, 400,
        "missing required field `item_id`", name="item-id-missing"),
    bad("POST", FEEDBACK, like(item_id="nope"), 404, "POST /items",
        name="feedback-unknown-item"),
    bad("POST", FEEDBACK, like(timestamp="2999-01-01T00:00:00Z"), 400, "in the future",
        name="timestamp-future"),
    bad("POST", FEEDBACK, like(timestamp="yesterday"), 400, "timestamp",
        name="timestamp-not-a-time"),
    bad("POST", FEEDBACK, like(timestamp="9999-12-31T23:59:59-01:00"), 400,
        "timestamp", name="timestamp-beyond-year-9999"),
    bad("POST", FEEDBACK, like(timestamp="0001-01-01T00:00:00+01:00"), 400, "timestamp",
        name="timestamp-before-year-1"),
    bad("POST", FEEDBACK, like(request_id="r" * 65), 400, "length <= 64",
        name="request-id-too-long"),
    # Filters.
    bad("POST", REC, {"user_id": "u", "filters": {"category": []}}, 400,
        "length >= 1", name="filter-empty-list"),
    bad("POST", REC, {"user_id": "u", "filters": {"year": {}}}, 400,
        "give at least one of gt, gte, lt, lte", name="filter-range-without-bounds"),
    bad("POST", REC, {"user_id": "u", "filters": {"year": {"between": 1}}},
        400, "unknown field `between`", name="filter-range-unknown-key"),
    bad("POST", REC, {"user_id": "u", "filters": {"year": {"gte": "old"}}},
        400, "Expected `float | null`", name="filter-range-bound-not-a-number"),
    bad("POST", REC, {"user_id": "u", "filters": {"release year": 1999}},
        400, "not a metadata key", name="filter-field-with-space"),
    bad("POST", REC, {"user_id": "u", "filters": {"year.": 1999}}, 400,
        "year.", name="filter-field-trailing-dot"),
    bad("POST", REC, {"user_id": "u", "filters": {"meta..year": 1999}}, 400,
        "meta..year", name="filter-field-empty-segment"),
    bad("POST", REC, {"user_id": "u", "filters": {"year": None}}, 400,
        "got `null`", name="filter-null"),
    bad("POST", REC, {"user_id": "u", "context": "x" * 4001}, 400,
        "length <= 4000", name="context-too-long"),
    # Items.
    bad("POST", ITEMS, {"items": []}, 400, "length >= 1", name="items-none"),
    bad("POST", ITEMS, {"items": [item(item_id=f"bulk-{n}") for n in range(1001)]}, 400,
        "length <= 1000", name="items-oversized-batch"),
    bad("POST", ITEMS, {"items": [item(item_id="twin"), item(item_id="twin", title="B")]},
        400, "'twin' appears more than once", name="items-duplicate-id"),
    bad("POST", ITEMS, {"items": [item(title="")]}, 400, "items[0].title",
        name="item-empty-title"),
    bad("POST", ITEMS, {"items": [item(text="x" * 20_001)]}, 400, "length <= 20000",
        name="item-text-too-long"),
    bad("POST", ITEMS, {"items": [item(metadata=["fiction"])]}, 400,
        "Expected `object`, got `array`", name="item-metadata-list"),
    bad("POST", ITEMS, {"items": [item(metadata="fiction")]}, 400,
        "Expected `object`, got `str`", name="item-metadata-string"),
    bad("POST", ITEMS, {"items": [item(item_id="a/b")]}, 400, "items[0].item_id",
        name="item-id-slash"),
    bad("POST", ITEMS, {"items": [item(metadata={f"k{n}": n for n in range(65)})]}, 400,
        "length <= 64", name="item-metadata-too-many-fields"),
    # Malformed JSON.
    bad("POST", ITEMS, '{"items": [', 400, "truncated", name="json-truncated"),
    bad("POST", FEEDBACK, '{"user_id": "alice", "item_id": "tt-1",}', 400,
        "JSON is malformed", name="json-trailing-comma"),
    bad("POST", REC, '["user_id", "u"]', 400, "Expected `object`",
        name="json-not-an-object"),
    # Query parameters and paths.
    bad("GET", "/items?limit=0", None, 400, ">= 1", name="items-limit-0"),
    bad("GET", "/items?limit=1001", None, 400, "<= 1000", name="items-limit-too-big"),
    bad("GET", "/items?limit=many", None, 400, "limit", name="items-limit-word"),
    bad("GET", "/items/unknown", None, 404, "'unknown' is not in the catalog",
        name="get-unknown-item"),
    bad("DELETE", "/items/unknown", None, 404, "'unknown' is not in the catalog",
        name="delete-unknown-item"),
    bad("GET", "/users/unknown", None, 404, "'unknown' has no feedback", name="get-unknown-user"),
    bad("DELETE", "/users/unknown", None, 404, "'unknown' has no feedback",
        name="delete-unknown-user"),
    bad("POST", "/admin/users/rebuild?user_id=unknown", None, 404, "'unknown' has no feedback",
        name="rebuild-unknown-user"),
    # The operator endpoints.
    bad("GET", f"/items?q={'x' * 1001}", None, 400, "length <= 1000", name="items-q-too-long"),
    bad("GET", "/users?limit=0", None, 400, ">= 1", name="users-limit-0"),
    bad("GET", "/users?cursor=a&limit=1001", None, 400, "<= 1000", name="users-limit-too-big"),
    bad("GET", "/users/unknown/feedback", None, 404, "'unknown' has no feedback",
        name="history-unknown-user"),
    bad("GET", "/users/alice/feedback?before=abc", None, 400, "before",
        name="history-before-word"),
    bad("GET", "/feedback?after=-1", None, 400, ">= 0", name="tail-after-negative"),
    bad("GET", "/feedback?limit=5000", None, 400, "<= 1000", name="tail-limit-too-big"),
    bad("GET", "/admin/errors?limit=0", None, 400, ">= 1", name="errors-limit-0"),
    bad("GET", "/admin/errors?limit=many", None, 400, "limit", name="errors-limit-word"),
    bad("PUT", "/admin/reranker", {"kind": "none", "model": "x"}, 400,
        "unknown field `model`", name="reranker-unknown-field"),
    bad("PUT", "/admin/reranker", {}, 400, "missing required field `kind`",
        name="reranker-kind-missing"),
    bad("PUT", "/admin/reranker", {"kind": "gpt-9"}, 400, "choose one of: llamacpp, none",
        name="reranker-unknown-kind"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_4xx_that_says_what_to_fix(shared: TestClient[Any], case: Case) -> None:
    before = counts(shared)
    if isinstance(case.body, str):
        response = shared.request(
            case.method, case.path, content=case.body, headers={"content-type": "application/json"}
        )
    else:
        response = shared.request(case.method, case.path, json=case.body)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["status_code"] == case.status
    assert answer["detail"]
    assert case.expected in response.text
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


@pytest.mark.parametrize(
    "key",
    ["release year", "", "meta..year", "a:b"],
    ids=["space", "empty", "empty-segment", "colon"],
)
def test_metadata_key_that_cannot_be_indexed_is_rejected(
    catalog_client: TestClient[Any], key: str
) -> None:
    before = counts(catalog_client)
    response = catalog_client.post("/items", json={"items": [item(metadata={key: 1999})]})
    assert response.status_code == 400, response.text
    assert "metadata" in response.text
    assert counts(catalog_client) == before
    assert catalog_client.get("/items/new-1").status_code == 404


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
