"""Bulk import of historical feedback, against a real runtime (Qdrant Edge, DuckDB) with the
deterministic hashing embedder."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from appliance.domain import InteractionType, Item
from appliance.errors import InvalidInputError, NotFoundError
from appliance.services.feedback import FeedbackInput
from appliance.services.preferences import preference_direction
from appliance.services.runtime import Runtime, open_runtime
from tests.conftest import make_settings

WORDS = [
    "space",
    "ocean",
    "forest",
    "desert",
    "city",
    "mountain",
    "river",
    "castle",
    "robot",
    "dragon",
    "garden",
    "train",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _items() -> list[Item]:
    return [
        Item(f"i{n}", f"{WORDS[n % 12]} {WORDS[(n * 5) % 12]}", f"story number {n}")
        for n in range(40)
    ]


def _events(seed: int = 7) -> list[FeedbackInput]:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    kinds = [
        InteractionType.LIKE,
        InteractionType.DISLIKE,
        InteractionType.VIEW,
        InteractionType.RATING,
    ]
    events = []
    for _ in range(200):
        kind = rng.choice(kinds)
        events.append(
            FeedbackInput(
                user_id=f"u{rng.randrange(5)}",
                item_id=f"i{rng.randrange(40)}",
                interaction_type=kind,
                rating=rng.choice([0.5, 2.0, 3.5, 5.0]) if kind is InteractionType.RATING else None,
                # Out of order on purpose: history exports rarely arrive sorted.
                timestamp=start + timedelta(days=rng.randrange(600)),
            )
        )
    return events


@asynccontextmanager
async def _runtime(path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(path, embedder={"kind": "hashing"})
    async with open_runtime(settings) as runtime:
        await runtime.catalog.upsert(_items())
        yield runtime


@pytest.mark.anyio
async def test_import_matches_recording_one_by_one(tmp_path: Path) -> None:
    events = _events()
    async with _runtime(tmp_path / "bulk") as bulk:
        assert await bulk.feedback.import_events(events) == 200
        imported = {u: bulk.store.preference(u) for u in {e.user_id for e in events}}
        assert bulk.store.counts().feedback_events == 200
        rebuilt = await bulk.feedback.rebuild()
        assert rebuilt.max_deviation < 1e-5
    async with _runtime(tmp_path / "single") as single:
        for event in events:
            await single.feedback.record(event)
        for user, state in imported.items():
            one_by_one = single.store.preference(user)
            assert state is not None
            assert one_by_one is not None
            assert state.feedback_count == one_by_one.feedback_count
            a, b = preference_direction(state), preference_direction(one_by_one)
            assert a is not None
            assert b is not None
            np.testing.assert_allclose(a, b, atol=1e-6)
            assert single.store.seen_item_ids(user) == bulk_seen(events, user)


def bulk_seen(events: list[FeedbackInput], user: str) -> set[str]:
    return {e.item_id for e in events if e.user_id == user}


@pytest.mark.anyio
async def test_a_bad_event_stores_nothing_and_names_its_position(tmp_path: Path) -> None:
    events = _events()
    events[17] = FeedbackInput("u1", "i3", InteractionType.RATING)  # a rating without a rating
    async with _runtime(tmp_path / "data") as runtime:
        with pytest.raises(InvalidInputError, match="event 17"):
            await runtime.feedback.import_events(events)
        future = [
            FeedbackInput(
                "u1", "i3", InteractionType.LIKE, timestamp=datetime(2999, 1, 1, tzinfo=UTC)
            )
        ]
        with pytest.raises(InvalidInputError, match="future"):
            await runtime.feedback.import_events(future)
        with pytest.raises(NotFoundError, match="not in the catalog"):
            await runtime.feedback.import_events(
                [FeedbackInput("u1", "nope", InteractionType.LIKE)]
            )
        assert runtime.store.counts().feedback_events == 0
        assert runtime.store.counts().users == 0


@pytest.mark.anyio
async def test_a_tail_sees_an_import_in_its_order(tmp_path: Path) -> None:
    events = _events()
    async with _runtime(tmp_path / "data") as runtime:
        await runtime.feedback.record(events[0])
        _, cursor = await runtime.feedback.tail(None, 10)
        assert await runtime.feedback.import_events(events[1:]) == 199

        seen: list[tuple[str, str]] = []
        while True:
            page, last = await runtime.feedback.tail(cursor, 64)
            if not page:
                assert last == cursor
                break
            seen.extend((e.event.user_id, e.event.item_id) for e in page)
            cursor = last

    assert seen == [(e.user_id, e.item_id) for e in events[1:]]
