"""The dashboard's HTTP client: what it sends, and how it reports error answers and an
appliance that cannot be reached."""

from __future__ import annotations

import json

import httpx
import pytest

from appliance.schemas.recommendations import RecommendationRequest
from tests.conftest import free_port
from tui.api import ApiError, ApplianceApi, UnreachableError

pytestmark = pytest.mark.anyio


def answering(status: int, body: bytes, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return httpx.MockTransport(handle)


async def test_the_admin_key_goes_in_every_request_and_nowhere_else() -> None:
    seen: list[httpx.Request] = []
    body = b'{"status": "ready", "components": {"model": "m"}}'
    reasons: list[str | None] = []
    api = ApplianceApi(
        "http://appliance.test/",
        "k-123",
        transport=answering(200, body, seen),
        on_reachability=reasons.append,
    )
    health = await api.health()
    await api.health()
    await api.aclose()
    assert health.components == {"model": "m"}
    assert [r.headers["authorization"] for r in seen] == ["Bearer k-123", "Bearer k-123"]
    assert "k-123" not in repr(api)
    assert reasons == [None, None]


async def test_requests_are_encoded_from_the_wire_contract() -> None:
    seen: list[httpx.Request] = []
    answered = {"user_id": "u/1", "recommendations": [], "timestamp": "2026-01-01T00:00:00Z"}
    body = json.dumps({**answered, "reranked": False}).encode()
    api = ApplianceApi("http://appliance.test", transport=answering(200, body, seen))
    answer = await api.recommend(RecommendationRequest(user_id="u/1", context="x", rerank=False))
    await api.aclose()
    listing = ApplianceApi(
        "http://appliance.test", transport=answering(200, b'{"users": []}', seen)
    )
    await listing.users(q="", cursor=None, limit=5)
    await listing.aclose()
    assert answer.recommendations == []
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {
        "user_id": "u/1",
        "context": "x",
        "like_items": None,
        "top_k": 5,
        "filters": None,
        "exclude_seen": True,
        "rerank": False,
        "sources": None,
        "fusion": None,
        "diversity": 0.0,
        "prior": True,
    }
    # Empty and absent parameters are left out; there is no key, so no Authorization header.
    assert str(seen[1].url) == "http://appliance.test/users?limit=5"
    assert "authorization" not in seen[1].headers


async def test_an_error_answer_carries_the_servers_detail() -> None:
    body = b'{"status_code": 404, "detail": "item \'x\' is not in the catalog"}'
    reasons: list[str | None] = []
    api = ApplianceApi(
        "http://appliance.test", transport=answering(404, body, []), on_reachability=reasons.append
    )
    with pytest.raises(ApiError) as raised:
        await api.item("x/y")
    await api.aclose()
    assert not isinstance(raised.value, UnreachableError)
    assert raised.value.status_code == 404
    assert raised.value.detail == "item 'x' is not in the catalog"
    assert raised.value.path == "/items/x%2Fy"
    assert reasons == [None]  # the server answered


async def test_a_5xx_or_no_answer_is_unreachable() -> None:
    reasons: list[str | None] = []
    api = ApplianceApi(
        "http://appliance.test",
        transport=answering(503, b'{"status_code": 503, "detail": "loading"}', []),
        on_reachability=reasons.append,
    )
    with pytest.raises(UnreachableError):
        await api.stats()
    await api.aclose()
    assert reasons == ["answers 503: loading"]

    closed = ApplianceApi(f"http://127.0.0.1:{free_port()}", on_reachability=reasons.append)
    with pytest.raises(UnreachableError) as raised:
        await closed.health()
    await closed.aclose()
    assert raised.value.status_code is None
    assert raised.value.detail == "connection refused"
    assert reasons[-1] == "connection refused"
