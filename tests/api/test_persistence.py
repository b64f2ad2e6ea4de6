"""What survives a restart: the same data directory gives the same answers, a lost index is
rebuilt from the database, and only one process may own a data directory."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import INDEX_DIR, Backends
from appliance.errors import ConfigError
from appliance.settings import Settings
from tests.api.calls import counts, feedback, ids, recommend, scores, stats, upsert

#: One request per way of building the query.
REQUESTS: dict[str, dict[str, Any]] = {
    "context": {"user_id": "visitor", "context": "a journey through time", "top_k": 10},
    "preference": {"user_id": "alice", "top_k": 10},
    "popularity": {"user_id": "first-visit", "top_k": 10},
}


@contextmanager
def running(settings: Settings, embedder: Embedder) -> Iterator[TestClient[Any]]:
    """The application on ``settings``, stopped (and its data directory released) on exit."""
    with TestClient(create_app(settings, backends=Backends(embedder=embedder))) as client:
        yield client


def start_and_stop(settings: Settings, embedder: Embedder) -> None:
    with running(settings, embedder):
        pass


def encoded_texts(client: TestClient[Any]) -> int:
    return int(stats(client)["encoder"]["texts"])


def populate(client: TestClient[Any], items: list[dict[str, Any]]) -> None:
    upsert(client, items)
    for item, fields in (
        ("ck-1", {"interaction_type": "like"}),
        ("ck-2", {"rating": 4.5}),
        ("ro-1", {"interaction_type": "dislike"}),
        ("sp-1", {"rating": 5, "timestamp": "2024-03-01T10:00:00Z"}),
    ):
        feedback(client, "alice", item, **fields)
    for user in ("p1", "p2", "p3"):
        feedback(client, user, "ro-4", interaction_type="like")
    feedback(client, "p1", "sf-2", interaction_type="purchase")


def take(client: TestClient[Any]) -> dict[str, dict[str, Any]]:
    return {name: recommend(client, **body) for name, body in REQUESTS.items()}


def assert_same_answers(
    after: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], *, tolerance: float
) -> None:
    """Each answer in ``after`` has the strategy, the items and (within ``tolerance``) the scores
    of the answer to the same request in ``before``."""
    for name, answer in before.items():
        assert after[name]["strategy"] == answer["strategy"]
        assert ids(after[name]) == ids(answer), name
        assert scores(after[name]) == pytest.approx(scores(answer), abs=tolerance), name


def test_restart_gives_the_same_answers(
    minilm: Embedder, settings: Settings, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm) as first:
        populate(first, test_items)
        before = take(first)
        counts_before = counts(first)
        profile_before = first.get("/users/alice").json()
        catalog_before = first.get("/items", params={"limit": 1000}).json()
    assert {n: a["strategy"] for n, a in before.items()} == {
        "context": "context",
        "preference": "preference",
        "popularity": "popularity",
    }
    assert ids(before["popularity"])[:2] == ["ro-4", "sf-2"]

    with running(settings, minilm) as second:
        # Nothing was re-embedded: the index on disk agreed with the database.
        assert encoded_texts(second) == 0
        assert (
            counts(second)
            == counts_before
            == {
                "items": 36,
                "users": 4,
                "feedback_events": 8,
                "index_points": 36,
            }
        )
        assert second.get("/users/alice").json() == profile_before
        assert second.get("/items", params={"limit": 1000}).json() == catalog_before
        after = take(second)

    assert_same_answers(after, before, tolerance=1e-6)


def test_lost_index_is_rebuilt_from_the_database(
    minilm: Embedder, settings: Settings, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm) as first:
        populate(first, test_items)
        before = take(first)
        counts_before = counts(first)

    index_dir = settings.data_dir / INDEX_DIR
    assert index_dir.is_dir()
    shutil.rmtree(index_dir)

    with running(settings, minilm) as second:
        # Start-up reconciled the index with the database by embedding every item again.
        assert encoded_texts(second) == 36
        assert counts(second) == counts_before
        after = take(second)
        # The rebuilt index is complete: the whole catalog is reachable again.
        everything = recommend(second, user_id="u", context="x", top_k=50)
        assert len(ids(everything)) == 36

    # Every item was embedded again, so the scores are compared less tightly.
    assert_same_answers(after, before, tolerance=1e-4)


def test_a_data_directory_has_one_owner(
    minilm: Embedder, settings: Settings, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm) as owner:
        upsert(owner, test_items[:6])

        with pytest.raises(ExceptionGroup) as caught:
            start_and_stop(settings, minilm)
        message = f"the data directory {settings.data_dir} is in use by another appliance process"
        assert caught.group_contains(ConfigError, match=re.escape(message))
        assert caught.group_contains(ConfigError, match="stop it or choose another --data-dir")

        # The owner is unaffected by the failed start.
        upsert(owner, test_items[6:12])
        assert counts(owner)["items"] == 12

    # Once the owner has stopped, the directory can be opened again, with everything in it.
    with running(settings, minilm) as successor:
        assert counts(successor)["items"] == counts(successor)["index_points"] == 12


def test_an_item_the_index_refuses_never_blocks_start_up(
    minilm: Embedder, settings: Settings, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm) as first:
        upsert(first, test_items)
        # The answer to this item is checked in test_errors; here only what it leaves behind.
        first.post(
            "/items",
            json={"items": [{"item_id": "odd", "title": "O", "metadata": {"release year": 1999}}]},
        )

    with running(settings, minilm) as second:
        stored = counts(second)
        assert stored["items"] == stored["index_points"]
        assert recommend(second, user_id="u", context="time travel")
