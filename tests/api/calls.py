"""HTTP calls shared by the API tests: each sends one request, checks that it succeeded and
returns the JSON answer (test-only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.registry import Backends
from appliance.settings import Settings

#: The record counts that /stats reports next to the encoder's figures.
COUNTED = ("items", "users", "feedback_events", "index_points")


def upsert(client: TestClient[Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """POST ``items`` to /items and return the upsert counts."""
    response = client.post("/items", json={"items": items})
    assert response.status_code == 200, response.text
    return response.json()


def feedback(client: TestClient[Any], user_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
    """POST one feedback event to /feedback and return its receipt."""
    response = client.post("/feedback", json={"user_id": user_id, "item_id": item_id, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def recommend(client: TestClient[Any], **body: Any) -> dict[str, Any]:
    """POST ``body`` to /recommendations and return the answer."""
    response = client.post("/recommendations", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def similar(client: TestClient[Any], item_id: str, **params: Any) -> dict[str, Any]:
    """GET /items/{item_id}/similar and return the answer."""
    response = client.get(f"/items/{item_id}/similar", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ids(answer: dict[str, Any]) -> list[str]:
    """The recommended item ids, best first."""
    return [r["item_id"] for r in answer["recommendations"]]


def scores(answer: dict[str, Any]) -> list[float]:
    """The recommendation scores, best first."""
    return [r["score"] for r in answer["recommendations"]]


def logged(client: TestClient[Any], request_id: str) -> dict[str, Any]:
    """GET /admin/impressions/{request_id}: the answer as the impression log kept it."""
    response = client.get(f"/admin/impressions/{request_id}")
    assert response.status_code == 200, response.text
    return response.json()


def stats(client: TestClient[Any]) -> dict[str, Any]:
    """GET /stats: the record counts and the encoder's figures."""
    response = client.get("/stats")
    assert response.status_code == 200, response.text
    return response.json()


def counts(client: TestClient[Any]) -> dict[str, int]:
    """The record counts from /stats alone (see ``COUNTED``), to compare before and after."""
    body = stats(client)
    return {k: body[k] for k in COUNTED}


@asynccontextmanager
async def serving(settings: Settings, backends: Backends) -> AsyncIterator[httpx.AsyncClient]:
    """Run the application on the caller's event loop and yield a client for it.

    Litestar's ``AsyncTestClient`` cannot send concurrent requests: its transport's
    ``handle_async_request`` calls the blocking ``handle_request``, which waits on a portal
    thread, so requests gathered on the test's event loop reach the application one after
    another. Here the lifespan is entered directly and requests go through httpx's ASGI
    transport, so gathered requests really are in flight together.
    """
    app = create_app(settings, backends=backends)
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://appliance"
        ) as client,
    ):
        yield client
