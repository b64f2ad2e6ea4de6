"""When users' preference vectors reach the database: a feedback commit stores the events, the
states follow in regular writes (folding events back in after a crash: tests/e2e). Against a real
runtime (Qdrant Edge, DuckDB) with the deterministic hashing embedder."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from appliance.domain import InteractionType, Item
from appliance.services.feedback import FeedbackInput
from appliance.services.runtime import open_runtime
from tests.conftest import make_settings
from tests.stores import written_users


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


ITEMS = [Item(f"i{n}", f"item {n}", f"a story about thing number {n}") for n in range(12)]


@pytest.mark.anyio
async def test_the_states_are_written_within_the_flush_interval(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        embedder={"kind": "hashing"},
        feedback={"preference_flush_seconds": 0.2},
    )
    async with open_runtime(settings) as runtime:
        await runtime.catalog.upsert(ITEMS)
        for n in range(3):
            await runtime.feedback.record(FeedbackInput("ann", f"i{n}", InteractionType.LIKE))
        receipt = await runtime.feedback.record(FeedbackInput("bo", "i5", InteractionType.LIKE))
        assert receipt.feedback_count == 1
        deadline = time.monotonic() + 10
        while written_users(runtime.store) != {"ann": 3, "bo": 1}:
            assert time.monotonic() < deadline, written_users(runtime.store)
            await anyio.sleep(0.05)
        assert runtime.store.unfolded_events() == []
