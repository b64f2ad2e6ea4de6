"""The published OpenAPI description says what the server enforces: request bodies refuse
unknown fields, every constraint the decoder checks is in the schema, and each operation
declares every error it may answer, with the error body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.app import create_app
from appliance.schemas.base import Request
from tests.conftest import make_settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
#: Operations a client key may call; /health needs no key at all.
CLIENT = {"POST /recommendations", "GET /items/{item_id}/similar", "POST /feedback"}
PUBLIC = {"GET /health"}
NOT_FOUND = {
    "POST /recommendations",
    "POST /feedback",
    "GET /items/{item_id}",
    "GET /items/{item_id}/similar",
    "DELETE /items/{item_id}",
    "GET /users/{user_id}",
    "DELETE /users/{user_id}",
    "GET /users/{user_id}/feedback",
    "POST /admin/users/rebuild",
    "GET /admin/impressions/{request_id}",
}
CONFLICT = {
    "POST /recommendations",
    "GET /items/{item_id}/similar",
    "PUT /admin/reranker",
    "POST /admin/restore",
}
#: Takes a body that is not JSON (streamed to disk under a limit of its own).
RAW_BODY = {"POST /admin/restore"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document GET /schema/openapi.json serves (no model is needed to build it)."""
    settings = make_settings(Path(tmp_path_factory.mktemp("openapi")) / "data")
    return create_app(settings).openapi_schema.to_schema()


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    }


def request_structs() -> set[type[Request]]:
    found: set[type[Request]] = set()
    todo = [Request]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_request_bodies_refuse_unknown_fields_and_answers_may_grow(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    structs = request_structs()
    assert {s.__name__ for s in structs} >= {"RecommendationRequest", "ItemIn", "RangeFilter"}
    for struct in structs:
        assert components[struct.__name__]["additionalProperties"] is False, struct
    # Answers gain fields over time (append-only), so clients must accept unknown ones.
    for name in ("RecommendationResponse", "ErrorBody", "ItemPage"):
        assert "additionalProperties" not in components[name], name


def test_the_schema_holds_every_constraint_the_decoder_checks(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    rating = components["FeedbackRequest"]["properties"]["rating"]
    assert {"type": "number", "minimum": 0.0, "maximum": 5.0} in rating["anyOf"]
    filters = components["RecommendationRequest"]["properties"]["filters"]["anyOf"][0]
    assert filters["maxProperties"] == 32
    assert filters["propertyNames"]["maxLength"] == 512
    # anyOf, not oneOf: an integer is a number too, and {"year": 1998} is a valid filter.
    value_types = [s.get("type") for s in filters["additionalProperties"]["anyOf"]]
    assert {"integer", "number", "string", "boolean", "array"} <= set(value_types)
    metadata = components["ItemIn"]["properties"]["metadata"]
    assert metadata["maxProperties"] == 64
    assert metadata["propertyNames"]["pattern"]
    top_k = components["RecommendationRequest"]["properties"]["top_k"]
    assert (top_k["type"], top_k["minimum"], top_k["maximum"]) == ("integer", 1, 100)
    assert "oneOf" not in msgspec.json.encode(components).decode()


def test_every_operation_declares_the_errors_it_may_answer(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    assert len(ops) == 26
    for name, operation in ops.items():
        expected = {"503"}
        if "requestBody" in operation or name in RAW_BODY:
            expected |= {"400", "413"}
        if operation.get("parameters"):
            expected.add("400")
        if name not in PUBLIC:
            expected |= {"401", "429"}
            if name not in CLIENT:
                expected.add("403")
        if name in NOT_FOUND:
            expected.add("404")
        if name in CONFLICT:
            expected.add("409")
        declared = {code for code in operation["responses"] if code >= "400"}
        assert declared == expected, name
        for code in declared:
            body = operation["responses"][code]["content"]["application/json"]["schema"]
            assert body == ERROR_BODY, (name, code)
