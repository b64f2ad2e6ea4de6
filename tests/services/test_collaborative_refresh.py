"""The live collaborative model in the real runtime (Qdrant Edge, DuckDB, the deterministic
hashing embedder): rebuilt after changes, never sooner than its pause allows, and used for the
items a request names."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pyarrow as pa
import pytest

from appliance.domain import InteractionType, Item, Selection
from appliance.services.collaborative import CollaborativeModel
from appliance.services.feedback import FeedbackInput
from appliance.services.runtime import Runtime, open_runtime
from appliance.services.sources import CollaborativeSource, Plan
from tests.conftest import make_settings

REFRESH_SECONDS = 0.5
ITEMS = [
    Item(f"{kind}-{n}", f"{kind.title()} {n}", f"A {kind}.")
    for kind in ("pen", "ink", "cup")
    for n in range(4)
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(
        tmp_path / "data",
        embedder={"kind": "hashing"},
        collaborative={"refresh_seconds": REFRESH_SECONDS, "max_cpu_share": 1.0},
    )
    async with open_runtime(settings) as opened:
        await opened.catalog.upsert(ITEMS)
        yield opened


def likes(*pairs: tuple[str, str]) -> list[FeedbackInput]:
    return [FeedbackInput(u, i, InteractionType.LIKE) for u, i in pairs]


def plan(
    runtime: Runtime, user_id: str, *, named: tuple[str, ...] = (), like: tuple[str, ...] = ()
) -> Plan:
    """What the recommendation service hands the sources for a request without words."""
    history = tuple(runtime.store.user_history(user_id))
    return Plan(
        user_id=user_id,
        context="",
        query_vector=None,
        selection=Selection(exclude=frozenset(h.item_id for h in history)),
        limit=5,
        history=history,
        named=like or named,
        like=like,
    )


@pytest.mark.anyio
async def test_changes_are_rebuilt_in_the_background_after_the_pause(runtime: Runtime) -> None:
    model = runtime.collaborative
    first = await model.wait_fresh()
    assert first is None  # no feedback yet: nothing to relate
    await runtime.feedback.import_events(
        likes(*((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0")))
    )
    assert model.status().pending
    started = time.monotonic()
    built = await model.wait_fresh()
    assert built is not None
    assert sorted(built.item_ids) == ["ink-0", "pen-0"]
    status = model.status()
    assert not status.pending
    assert status.items == 2
    assert status.pairs == 6
    assert status.built_at is not None
    assert status.built_at <= datetime.now(UTC)

    # A second change right after a build waits for the pause: never sooner, however idle.
    await runtime.feedback.import_events(likes(("writer-0", "cup-0"), ("writer-1", "cup-0")))
    rebuilt = await model.wait_fresh()
    assert rebuilt is not None
    assert "cup-0" in rebuilt.item_ids
    assert time.monotonic() - started >= REFRESH_SECONDS


@pytest.fixture
async def held_off(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime whose refresher is held off (as in the evaluation), three writers' pens and
    inks liked."""
    settings = make_settings(
        tmp_path / "data",
        embedder={"kind": "hashing"},
        collaborative={"refresh_seconds": math.inf, "max_cpu_share": 1.0},
    )
    async with open_runtime(settings) as opened:
        await opened.catalog.upsert(ITEMS)
        await opened.feedback.import_events(
            likes(*((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0")))
        )
        yield opened


#: Feedback that brings a third item into the model.
CUPS = likes(("writer-0", "cup-0"), ("writer-1", "cup-0"))


@pytest.mark.anyio
async def test_with_the_refresher_held_off_the_model_changes_only_when_rebuilt(
    held_off: Runtime,
) -> None:
    # How the evaluation decides when the model changes: never by the clock.
    model = held_off.collaborative
    built = await model.rebuild()
    assert built is not None
    assert sorted(built.item_ids) == ["ink-0", "pen-0"]
    assert not model.status().pending

    await held_off.feedback.import_events(CUPS)
    await anyio.sleep(5 * REFRESH_SECONDS)
    assert model.current is built
    assert model.status().pending
    rebuilt = await model.rebuild()
    assert rebuilt is not built
    assert rebuilt is not None
    assert "cup-0" in rebuilt.item_ids
    assert not model.status().pending
    assert await model.wait_fresh() is rebuilt


@pytest.mark.anyio
async def test_a_build_never_replaces_one_that_read_the_feedback_later(
    held_off: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresher's first build reads the feedback, then is held (a busy machine); new
    # feedback comes and the evaluation rebuilds at a set point meanwhile.
    store = held_off.store
    read, release = threading.Event(), threading.Event()
    read_feedback = store.interactions

    def first_read_held() -> pa.Table:
        interactions = read_feedback()
        if not read.is_set():
            read.set()
            release.wait(10)
        return interactions

    monkeypatch.setattr(store, "interactions", first_read_held)
    model = CollaborativeModel(store, held_off.settings.collaborative)
    await model.start()
    try:
        await anyio.to_thread.run_sync(read.wait, 10)
        await held_off.feedback.import_events(CUPS)
        rebuilding = asyncio.ensure_future(model.rebuild())
        await anyio.sleep(0.3)
        release.set()
        rebuilt = await rebuilding
        # Time for the held build to finish, had it still to.
        await anyio.sleep(0.5)
        assert rebuilt is not None
        assert "cup-0" in rebuilt.item_ids
        assert model.current is rebuilt
    finally:
        release.set()
        await model.close()


@pytest.mark.anyio
async def test_items_named_in_a_request_lead_the_collaborative_source(runtime: Runtime) -> None:
    await runtime.feedback.import_events(
        likes(
            *((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0")),
            *((f"drinker-{n}", i) for n in range(3) for i in ("cup-0", "cup-1")),
            ("asker", "cup-0"),
        )
    )
    await runtime.collaborative.wait_fresh()
    source = CollaborativeSource(runtime.collaborative, runtime.index)

    from_history = await source.candidates(plan(runtime, "asker"))
    assert [(h.item_id, h.via) for h in from_history] == [("cup-1", "cup-0")]
    # The request names a pen: its neighbours, found through it, whatever the history says.
    named = await source.candidates(plan(runtime, "asker", named=("pen-0",)))
    assert [(h.item_id, h.via) for h in named] == [("ink-0", "pen-0")]
    assert await source.candidates(plan(runtime, "nobody")) == []


@pytest.mark.anyio
async def test_more_like_one_item_is_what_was_chosen_with_it(runtime: Runtime) -> None:
    # Three writers take a pen, ink and a cup; seven others take the cup alone.
    await runtime.feedback.import_events(
        likes(
            *((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0", "cup-0")),
            *((f"drinker-{n}", "cup-0") for n in range(7)),
        )
    )
    await runtime.collaborative.wait_fresh()
    source = CollaborativeSource(runtime.collaborative, runtime.index)

    alike = await source.candidates(plan(runtime, "visitor", like=("pen-0",)))

    # Cosine similarity of who chose them: the ink always went with the pen (3 / sqrt(3 x 3)),
    # the cup with a pen's every buyer but seven others too (3 / sqrt(3 x 10)).
    assert [(h.item_id, h.via) for h in alike] == [("ink-0", "pen-0"), ("cup-0", "pen-0")]
    assert [h.score for h in alike] == pytest.approx([1.0, 3 / math.sqrt(30)], rel=1e-5)
    # Named in words, the pen's row of EASE's weights answers, with weights of its own.
    named = await source.candidates(plan(runtime, "visitor", named=("pen-0",)))
    assert [h.item_id for h in named] == ["ink-0", "cup-0"]
    assert [h.score for h in named] != pytest.approx([h.score for h in alike], rel=1e-3)


@pytest.mark.anyio
async def test_each_rebuild_blends_the_related_items_vectors_into_a_neighbourhood(
    runtime: Runtime,
) -> None:
    await runtime.feedback.import_events(
        likes(*((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0", "ink-1")))
    )
    built = await runtime.collaborative.wait_fresh()
    assert built is not None
    assert built.neighbourhood is not None
    assert sorted(built.neighbourhood.item_ids) == ["ink-0", "ink-1", "pen-0"]
    assert runtime.collaborative.status().memory_bytes > built.neighbourhood.nbytes

    # A deleted item leaves it at the next rebuild, as it leaves the model.
    await runtime.catalog.delete("ink-1")
    rebuilt = await runtime.collaborative.wait_fresh()
    assert rebuilt is not None
    assert rebuilt.neighbourhood is not None
    assert sorted(rebuilt.neighbourhood.item_ids) == ["ink-0", "pen-0"]


@pytest.mark.anyio
async def test_an_index_out_of_reach_leaves_the_model_without_its_neighbourhood(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    def out_of_reach(item_ids: object) -> dict[str, object]:
        raise ConnectionError("the index is out of reach")

    model = CollaborativeModel(runtime.store, runtime.settings.collaborative, vectors=out_of_reach)
    await runtime.feedback.import_events(
        likes(*((f"writer-{n}", i) for n in range(3) for i in ("pen-0", "ink-0")))
    )
    await model.start()
    try:
        built = await model.wait_fresh()
    finally:
        await model.close()
    # The feedback is in the model all the same.
    assert built is not None
    assert sorted(built.item_ids) == ["ink-0", "pen-0"]
    assert built.neighbourhood is None
    assert "this model has no neighbourhood" in caplog.text
