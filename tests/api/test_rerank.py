"""The re-rank stage through HTTP: the real llama.cpp model reorders the fused candidates, and a
timeout, a full queue or a failing backend fall back to the retrieval order, saying so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from appliance.backends.rerankers.protocol import Reranker
from tests.api.calls import ids, logged, recommend, serving, stats, upsert
from tests.conftest import make_settings

CONTEXT = "a story about travelling through time"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def reranking(
    open_client: Callable[..., TestClient[Any]],
    llamacpp_reranker: Reranker,
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> Callable[..., TestClient[Any]]:
    """Start the application with the real llama.cpp re-ranker and the test catalog."""

    def start(**reranker_settings: Any) -> TestClient[Any]:
        settings = make_settings(
            tmp_path / f"data-{len(list(tmp_path.iterdir()))}",
            reranker={"kind": "llamacpp", **reranker_settings},
        )
        client = open_client(settings, llamacpp_reranker)
        upsert(client, test_items)
        return client

    return start


def test_reorders_exactly_the_retrieved_candidates(
    reranking: Callable[..., TestClient[Any]],
) -> None:
    client = reranking(budget_ms=30_000)
    # With top_k 5 the stage sees one source's 10 candidates, which rerank=false lists in order.
    one = {"user_id": "u", "context": CONTEXT, "sources": ["vector"]}
    retrieved = ids(recommend(client, **one, top_k=10, rerank=False))

    answer = recommend(client, **one, top_k=5)

    assert answer["reranked"] is True
    assert answer["rerank_status"] == "ran"
    assert set(ids(answer)) <= set(retrieved)
    assert len(ids(answer)) == 5
    assert {"query", "retrieve", "rerank", "total"} <= set(answer["timings_ms"])
    for item in answer["recommendations"]:
        assert 0.0 <= item["sources"]["rerank"] <= 1.0
    model_scores = [item["sources"]["rerank"] for item in answer["recommendations"]]
    assert model_scores == sorted(model_scores, reverse=True)
    assert stats(client)["rerank"]["ran"] == 1


def test_of_several_sources_it_reads_as_many_candidates_as_one_retrieves(
    reranking: Callable[..., TestClient[Any]],
) -> None:
    client = reranking(budget_ms=30_000)
    # top_k 3 retrieves 6 a source; the fused candidates of every source are more than that.
    query = {"user_id": "u", "context": CONTEXT, "top_k": 3}
    fused = logged_ids(client, recommend(client, **query, rerank=False))
    assert len(fused) > 6

    answer = recommend(client, **query)

    assert answer["rerank_status"] == "ran"
    reranked = logged_ids(client, answer)
    assert sorted(reranked[:6]) == sorted(fused[:6])
    assert reranked[6:] == fused[6:]
    assert set(ids(answer)) <= set(fused[:6])


def logged_ids(client: TestClient[Any], answer: dict[str, Any]) -> list[str]:
    """The answer's fused candidates in its final order, as the impression log kept them."""
    return [c["item_id"] for c in logged(client, answer["request_id"])["candidates"]]


def test_request_can_turn_it_off(reranking: Callable[..., TestClient[Any]]) -> None:
    client = reranking(budget_ms=30_000)

    answer = recommend(client, user_id="u", context=CONTEXT, rerank=False)

    assert answer["reranked"] is False
    assert answer["rerank_status"] == "off"
    assert "rerank" not in answer["timings_ms"]
    assert all("rerank" not in item["sources"] for item in answer["recommendations"])


def test_without_context_there_is_nothing_to_judge(
    reranking: Callable[..., TestClient[Any]],
) -> None:
    client = reranking(budget_ms=30_000)

    answer = recommend(client, user_id="u", rerank=True)

    assert answer["reranked"] is False
    assert answer["rerank_status"] == "no-context"
    assert len(ids(answer)) == 5


def test_past_the_budget_the_retrieval_order_stands(
    reranking: Callable[..., TestClient[Any]],
) -> None:
    # One millisecond is far less than one model pass (~0.3 s here).
    client = reranking(budget_ms=1)
    retrieved = ids(recommend(client, user_id="u", context=CONTEXT, rerank=False))

    for _ in range(3):
        answer = recommend(client, user_id="u", context=CONTEXT)
        assert answer["reranked"] is False
        assert answer["rerank_status"] == "timeout"
        assert ids(answer) == retrieved
        assert "rerank" in answer["timings_ms"]
    assert stats(client)["rerank"]["timeout"] == 3


@pytest.mark.anyio
async def test_a_full_queue_skips_the_stage_instead_of_waiting(
    minilm: Embedder, llamacpp_reranker: Reranker, tmp_path: Path, test_items: list[dict[str, Any]]
) -> None:
    settings = make_settings(
        tmp_path / "data", reranker={"kind": "llamacpp", "budget_ms": 30_000, "max_pending": 1}
    )
    async with serving(settings, Backends(embedder=minilm, reranker=llamacpp_reranker)) as client:
        assert (await client.post("/items", json={"items": test_items})).status_code == 200
        responses = await asyncio.gather(
            *(
                client.post("/recommendations", json={"user_id": "u", "context": f"{CONTEXT} {n}"})
                for n in range(6)
            )
        )

    answers = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses)
    statuses = [a["rerank_status"] for a in answers]
    # One call holds the model; the others find the queue full rather than waiting behind it.
    assert statuses.count("ran") >= 1
    assert "busy" in statuses
    assert set(statuses) == {"ran", "busy"}
    assert all(len(ids(a)) == 5 for a in answers)


def test_an_unreachable_backend_fails_soft(
    open_client: Callable[..., TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    # Nothing listens on port 9 of loopback: the OpenAI backend's calls are refused.
    settings = make_settings(
        tmp_path / "data",
        reranker={"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "budget_ms": 10_000},
    )
    client = open_client(settings)
    upsert(client, test_items)
    retrieved = ids(recommend(client, user_id="u", context=CONTEXT, rerank=False))

    answer = recommend(client, user_id="u", context=CONTEXT)

    assert answer["rerank_status"] == "failed"
    assert answer["reranked"] is False
    assert ids(answer) == retrieved
    assert stats(client)["rerank"]["failed"] == 1


def test_without_a_reranker_the_status_says_so(catalog_client: TestClient[Any]) -> None:
    answer = recommend(catalog_client, user_id="u", context=CONTEXT, rerank=True)

    assert answer["reranked"] is False
    assert answer["rerank_status"] == "not-configured"
