"""The llama.cpp re-ranker fits each call to the time it has, on the real model."""

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.backends.rerankers.llamacpp import MIN_ITEM_TOKENS, LlamaCppReranker
from appliance.backends.rerankers.protocol import RerankCandidate

pytestmark = pytest.mark.anyio

ITEM_TOKENS = 10
# Texts far longer than ITEM_TOKENS, so the cut is what decides each candidate's length.
TEN = [
    RerankCandidate(f"m{n}", f"Film number {n}", "A long story about travels in time. " * 5)
    for n in range(10)
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reranker(reranker_model: Path) -> AsyncIterator[LlamaCppReranker]:
    # A reranker of its own: the test sets the engine's speed measure.
    built = LlamaCppReranker(reranker_model, item_tokens=ITEM_TOKENS)
    yield built
    await built.close()


async def test_candidates_are_cut_shorter_when_their_full_length_would_not_fit(
    reranker: LlamaCppReranker,
) -> None:
    engine = reranker._engine  # the measure the cut is planned from
    ranking = await reranker.rerank("time travel", TEN, deadline=time.monotonic() + 60)
    assert len(ranking) == len(TEN)
    assert engine.last_item_tokens == ITEM_TOKENS

    # As measured on a machine 10-20 times slower than this one: two seconds then buy about 80
    # tokens, so 10 candidates get about 6 each (the real pass takes a fraction of the time).
    engine.seconds_per_token = 0.02
    ranking = await reranker.rerank("time travel", TEN, deadline=time.monotonic() + 2.0)
    assert len(ranking) == len(TEN)
    assert MIN_ITEM_TOKENS <= engine.last_item_tokens < ITEM_TOKENS
    # The measure learns from the call: this machine processed tokens faster than planned.
    assert engine.seconds_per_token < 0.02

    # Never fewer than MIN_ITEM_TOKENS, however little time is left.
    engine.seconds_per_token = 1.0
    await reranker.rerank("time travel", TEN, deadline=time.monotonic() + 30)
    assert engine.last_item_tokens == MIN_ITEM_TOKENS
