"""Concurrent requests share the encoder's forward passes, on the real model (the application
runs on the test's event loop: see ``tests.api.calls.serving``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.api.calls import serving
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

TOPICS = (
    "time travel",
    "cooking",
    "outer space",
    "romance",
    "sport",
    "gardening",
    "history",
    "the sea",
)
ANGLES = ("a film about", "a book on", "stories of", "something light about")
CONTEXTS = [f"{angle} {topic}" for topic in TOPICS for angle in ANGLES]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def encoder_stats(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/stats")
    assert response.status_code == 200, response.text
    return dict(response.json()["encoder"])


def ranked(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(r["item_id"], r["score"]) for r in response.json()["recommendations"]]


async def test_concurrent_requests_share_encoder_batches(
    minilm: Embedder, tmp_path: Path, test_items: list[dict[str, Any]]
) -> None:
    assert len(CONTEXTS) == len(set(CONTEXTS)) == 32
    # Without the caches, whose hits would answer the repeated requests without the encoder.
    settings = make_settings(tmp_path / "data", cache={"context_vectors": 0, "results": 0})
    async with serving(settings, Backends(embedder=minilm)) as client:
        # One item per request, so that no batch so far holds more than one text.
        for item in test_items:
            response = await client.post("/items", json={"items": [item]})
            assert response.status_code == 200, response.text
        # Each context alone first: the reference answers, one forward pass each.
        alone = [
            ranked(await client.post("/recommendations", json={"user_id": f"u{n}", "context": c}))
            for n, c in enumerate(CONTEXTS)
        ]
        before = await encoder_stats(client)
        assert before == {"batches": 36 + 32, "texts": 36 + 32, "largest_batch": 1}

        responses = await asyncio.gather(
            *(
                client.post("/recommendations", json={"user_id": f"u{n}", "context": c})
                for n, c in enumerate(CONTEXTS)
            )
        )
        after = await encoder_stats(client)

    assert [r.status_code for r in responses] == [200] * 32
    assert after["texts"] - before["texts"] == 32
    assert after["batches"] - before["batches"] < 32
    assert after["largest_batch"] > 1
    # Sharing a batch changes no answer: each request got the vector of its own context.
    for n, response in enumerate(responses):
        together = ranked(response)
        assert [i for i, _ in together] == [i for i, _ in alone[n]], CONTEXTS[n]
        assert [s for _, s in together] == pytest.approx([s for _, s in alone[n]], abs=1e-4)
