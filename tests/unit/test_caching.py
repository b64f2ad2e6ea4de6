"""The caches' own rules: keys, bounds, expiry and invalidation by version, including changes
that arrive while an answer is being computed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np
import pytest

from appliance.backends.embedders.hashing import HashingEmbedder
from appliance.domain import FieldCondition, Range
from appliance.services import caching
from appliance.services.caching import ContextVectorCache, ResultCache, Stamp
from appliance.services.encoding import EncoderQueue
from appliance.services.recommend import RecommendationQuery, RecommendationResult
from appliance.services.reranking import RerankStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(user_id: str) -> RecommendationResult:
    return RecommendationResult(
        request_id="r",
        user_id=user_id,
        recommendations=[],
        strategy="context",
        reranked=False,
        rerank_status=RerankStatus.NOT_CONFIGURED,
        timestamp=datetime.now(UTC),
    )


def kept(cache: ResultCache, query: RecommendationQuery) -> RecommendationResult | None:
    key = cache.key(query)
    assert key is not None
    return cache.get(key)


def store(cache: ResultCache, query: RecommendationQuery, stamp: Stamp | None = None) -> None:
    key = cache.key(query)
    assert key is not None
    cache.put(key, answer(query.user_id), cache.stamp() if stamp is None else stamp)


ALICE = RecommendationQuery("alice", "time travel")
BOB = RecommendationQuery("bob", "time travel")


def test_every_field_is_part_of_the_key() -> None:
    variants = [
        ALICE,
        BOB,
        RecommendationQuery("alice", "cooking"),
        RecommendationQuery("alice", "time travel", top_k=6),
        RecommendationQuery("alice", "time travel", exclude_seen=False),
        RecommendationQuery("alice", "time travel", rerank=False),
        RecommendationQuery("alice", "time travel", rerank=True),
        RecommendationQuery("alice", "time travel", conditions=(FieldCondition("year", 1),)),
        RecommendationQuery("alice", "time travel", conditions=(FieldCondition("year", 1.5),)),
        RecommendationQuery(
            "alice", "time travel", conditions=(FieldCondition("year", range=Range(gte=1)),)
        ),
        RecommendationQuery(
            "alice", "time travel", conditions=(FieldCondition("tags", any_of=("a", "b")),)
        ),
    ]
    keys = [ResultCache.key(q) for q in variants]
    assert len(set(keys)) == len(variants)
    assert ResultCache.key(RecommendationQuery("alice", "time travel")) == keys[0]


def test_values_python_counts_as_equal_are_different_requests() -> None:
    # True == 1 in Python, but the index stores booleans apart from numbers.
    flag = RecommendationQuery("alice", conditions=(FieldCondition("flag", equals=True),))
    one = RecommendationQuery("alice", conditions=(FieldCondition("flag", equals=1),))
    assert flag == one
    assert ResultCache.key(flag) != ResultCache.key(one)


def test_a_change_while_computing_keeps_the_answer_out() -> None:
    cache = ResultCache(max_entries=10, ttl_seconds=10)
    version = cache.stamp()  # alice's answer starts to be computed
    cache.users_changed(["alice"])  # her feedback commits meanwhile
    store(cache, ALICE, version)

    assert kept(cache, ALICE) is None
    # Bob's answer, computed over the same time, does not depend on her feedback.
    store(cache, BOB, version)
    assert kept(cache, BOB) is not None


def test_a_user_change_drops_only_that_users_answers() -> None:
    cache = ResultCache(max_entries=10, ttl_seconds=10)
    store(cache, ALICE)
    store(cache, BOB)

    cache.users_changed(["alice"])

    assert kept(cache, ALICE) is None
    assert kept(cache, BOB) is not None
    # Answers computed after the change are kept again.
    store(cache, ALICE)
    assert kept(cache, ALICE) is not None


def test_everything_changed_drops_every_answer() -> None:
    cache = ResultCache(max_entries=10, ttl_seconds=10)
    version = cache.stamp()
    store(cache, ALICE)

    cache.everything_changed()

    assert kept(cache, ALICE) is None
    assert len(cache) == 0
    store(cache, BOB, version)  # started before the change
    assert kept(cache, BOB) is None


def test_answers_outlive_the_ttl_while_nothing_changes() -> None:
    clock = FakeClock()
    cache = ResultCache(max_entries=10, ttl_seconds=5, settle_seconds=30, clock=clock)
    store(cache, ALICE)
    clock.now += 3600
    assert kept(cache, ALICE) is not None


def test_answers_expire_once_others_feedback_may_have_changed_the_shared_models() -> None:
    clock = FakeClock()
    cache = ResultCache(max_entries=10, ttl_seconds=5, settle_seconds=30, clock=clock)
    store(cache, ALICE)
    clock.now += 1
    cache.users_changed(["bob"])  # bob's feedback will reach popularity within 30 s
    clock.now += 3.9
    assert kept(cache, ALICE) is not None
    clock.now += 0.2
    assert kept(cache, ALICE) is None
    assert len(cache) == 0


def test_an_answer_computed_after_the_models_settled_is_kept() -> None:
    clock = FakeClock()
    cache = ResultCache(max_entries=10, ttl_seconds=5, settle_seconds=30, clock=clock)
    cache.users_changed(["bob"])
    clock.now += 10
    store(cache, ALICE)  # may use a popularity ranking from before bob's feedback
    clock.now += 21
    store(cache, RecommendationQuery("carol", "time travel"))  # 31 s after: up to date
    clock.now += 600
    assert kept(cache, ALICE) is None
    assert kept(cache, RecommendationQuery("carol", "time travel")) is not None


def test_a_rebuilt_shared_model_expires_answers_computed_before_it() -> None:
    clock = FakeClock()
    cache = ResultCache(max_entries=10, ttl_seconds=5, settle_seconds=30, clock=clock)
    store(cache, ALICE)
    clock.now += 60
    cache.shared_changed()  # e.g. the collaborative model was rebuilt
    assert kept(cache, ALICE) is None


def test_the_least_recently_used_answer_goes_first() -> None:
    cache = ResultCache(max_entries=2, ttl_seconds=10)
    carol = RecommendationQuery("carol", "time travel")
    store(cache, ALICE)
    store(cache, BOB)
    assert kept(cache, ALICE) is not None  # alice is now the most recently used

    store(cache, carol)

    assert len(cache) == 2
    assert kept(cache, BOB) is None
    assert kept(cache, ALICE) is not None
    assert kept(cache, carol) is not None


def test_forgetting_old_user_changes_never_revives_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(caching, "MAX_REMEMBERED_USERS", 2)
    cache = ResultCache(max_entries=10, ttl_seconds=10)
    version = cache.stamp()
    cache.users_changed(["alice"])
    cache.users_changed(["u1"])
    cache.users_changed(["u2"])  # alice's change is forgotten now

    store(cache, ALICE, version)

    assert kept(cache, ALICE) is None


def test_off_when_size_or_ttl_is_zero() -> None:
    for size, ttl in ((0, 10.0), (10, 0.0)):
        cache = ResultCache(max_entries=size, ttl_seconds=ttl)
        store(cache, ALICE)
        assert cache.enabled is False
        assert kept(cache, ALICE) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def encoder() -> AsyncIterator[EncoderQueue]:
    queue = EncoderQueue(HashingEmbedder(32), max_batch=8)
    await queue.start()
    yield queue
    await queue.close()


@pytest.mark.anyio
async def test_context_vectors_are_encoded_once(encoder: EncoderQueue) -> None:
    cache = ContextVectorCache(encoder, max_entries=2)
    first = await cache.encode(["a b", "c d", "a b"])

    again = await cache.encode(["c d", "a b"])

    assert encoder.stats.texts == 2
    np.testing.assert_array_equal(first, HashingEmbedder(32).embed(["a b", "c d", "a b"]))
    np.testing.assert_array_equal(again, first[[1, 0]])
    # Kept vectors are shared between callers, so nobody may change them.
    assert not cache._vectors["a b"].flags.writeable


@pytest.mark.anyio
async def test_context_vectors_drop_the_least_recently_used(encoder: EncoderQueue) -> None:
    cache = ContextVectorCache(encoder, max_entries=2)
    await cache.encode(["one"])
    await cache.encode(["two"])
    await cache.encode(["one"])
    await cache.encode(["three"])  # "two" goes

    await cache.encode(["one", "three"])
    assert encoder.stats.texts == 3
    await cache.encode(["two"])
    assert encoder.stats.texts == 4
    assert len(cache) == 2
    assert (cache.stats.hits, cache.stats.misses) == (3, 4)
