"""The whole recommendation pipeline at the edges the index must handle inside its search: a
filter that admits 1% of the catalog, and a user who has seen a thousand items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from appliance.domain import FieldCondition, InteractionType, Item
from appliance.services.feedback import FeedbackInput
from appliance.services.recommend import RecommendationQuery
from appliance.services.runtime import Runtime, open_runtime
from tests.conftest import make_settings

CATALOG = 2_000
WORDS = [
    "river",
    "forest",
    "desert",
    "ocean",
    "mountain",
    "valley",
    "glacier",
    "canyon",
    "island",
    "meadow",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def appliance(path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(path, embedder={"kind": "hashing"})
    async with open_runtime(settings) as runtime:
        items = [
            Item(
                f"p{n}",
                f"{WORDS[n % 10]} {WORDS[(n // 10) % 10]} trail",
                f"guide {n}",
                # One item in a hundred is in the rare edition.
                {"edition": "rare" if n % 100 == 7 else "common", "rank": n},
            )
            for n in range(CATALOG)
        ]
        for start in range(0, CATALOG, 500):
            await runtime.catalog.upsert(items[start : start + 500])
        yield runtime


@pytest.mark.anyio
async def test_a_one_percent_filter_still_fills_top_k(tmp_path: Path) -> None:
    async with appliance(tmp_path / "data") as runtime:
        rare = (FieldCondition("edition", equals="rare"),)
        for context in ("river trail", "glacier canyon", ""):
            result = await runtime.recommender.recommend(
                RecommendationQuery("walker", context, top_k=10, conditions=rare)
            )
            got = [r.item for r in result.recommendations]
            assert len(got) == 10
            assert all(i.metadata["edition"] == "rare" for i in got)
        everything = await runtime.recommender.recommend(
            RecommendationQuery("walker", "river", top_k=100, conditions=rare)
        )
        assert len(everything.recommendations) == CATALOG // 100


@pytest.mark.anyio
async def test_a_user_with_a_thousand_seen_items_still_gets_top_k(tmp_path: Path) -> None:
    async with appliance(tmp_path / "data") as runtime:
        seen = [f"p{n}" for n in range(1_000)]
        await runtime.feedback.import_events(
            [FeedbackInput("hiker", item, InteractionType.VIEW) for item in seen]
        )
        for context in ("river trail", ""):
            result = await runtime.recommender.recommend(
                RecommendationQuery("hiker", context, top_k=25)
            )
            ids = [r.item.item_id for r in result.recommendations]
            assert len(ids) == 25
            assert not set(ids) & set(seen)
        # Seen and filtered together: the rare items the user has not seen, all of them.
        rare = (FieldCondition("edition", equals="rare"),)
        result = await runtime.recommender.recommend(
            RecommendationQuery("hiker", "trail", top_k=100, conditions=rare)
        )
        ids = {r.item.item_id for r in result.recommendations}
        expected = {f"p{n}" for n in range(1_000, CATALOG) if n % 100 == 7}
        assert ids == expected
        assert len(expected) == 10


@pytest.mark.anyio
async def test_candidates_deleted_after_the_search_give_way_to_the_next(tmp_path: Path) -> None:
    async with appliance(tmp_path / "data") as runtime:
        query = RecommendationQuery("walker", "river forest trail", top_k=5)
        before = [
            r.item.item_id for r in (await runtime.recommender.recommend(query)).recommendations
        ]
        # Gone from the store but still in the index: what a delete racing the request looks like.
        runtime.store.delete_items(before[:3])

        after = await runtime.recommender.recommend(query)

        ids = [r.item.item_id for r in after.recommendations]
        assert len(ids) == 5
        assert not set(ids) & set(before[:3])
        assert ids[:2] == before[3:]
        # Every answer carries its item as stored.
        assert all(r.item.title for r in after.recommendations)
