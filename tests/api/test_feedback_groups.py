"""Group commit of feedback, on the real store: concurrent events share transactions, each caller
is answered for its own event only, and a bad event fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

USERS = 8
ITEMS = ("tt-1", "tt-2", "sp-1", "sp-2", "ck-1", "ck-2")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_events_are_committed_in_groups(
    minilm: Embedder, tmp_path: Path, test_items: list[dict[str, Any]]
) -> None:
    app = create_app(make_settings(tmp_path / "data"), backends=Backends(embedder=minilm))
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://appliance"
        ) as client,
    ):
        assert (await client.post("/items", json={"items": test_items})).status_code == 200
        bodies = [
            {"user_id": f"u{n % USERS}", "item_id": ITEMS[n % len(ITEMS)], "rating": 4.0}
            for n in range(96)
        ]
        # Two events naming items that do not exist, in the middle of the burst.
        bodies[10]["item_id"] = "no-such-item"
        bodies[50]["item_id"] = "no-such-item-either"

        responses = await asyncio.gather(*(client.post("/feedback", json=b) for b in bodies))

        statuses = [r.status_code for r in responses]
        assert statuses[10] == statuses[50] == 404
        assert "no-such-item" in responses[10].json()["detail"]
        assert statuses.count(200) == 94
        tail = (await client.get("/feedback", params={"after": 0, "limit": 1000})).json()
        stored = sorted((e["user_id"], e["item_id"]) for e in tail["events"])
        expected = sorted(
            (b["user_id"], b["item_id"])
            for b, r in zip(bodies, responses, strict=True)
            if r.status_code == 200
        )
        assert stored == expected
        # Each user's count is what their own events add up to, and every receipt is within it.
        for n in range(USERS):
            profile = (await client.get(f"/users/u{n}")).json()
            mine = [
                r.json()
                for b, r in zip(bodies, responses, strict=True)
                if b["user_id"] == f"u{n}" and r.status_code == 200
            ]
            assert profile["feedback_count"] == len(mine)
            assert all(1 <= r["feedback_count"] <= len(mine) for r in mine)
        groups = app.state.runtime.feedback.groups
        assert groups.events == 94
        assert groups.commits < 94  # concurrent events shared transactions
        assert groups.largest > 1
