"""The context-vector and result caches through HTTP, on the real model, index and database:
repeated requests are answered from memory, and whatever changes an answer drops it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from appliance.settings import Settings
from tests.api.calls import feedback, ids, logged, recommend, stats, upsert
from tests.conftest import make_settings

CONTEXT = "a story about travelling through time"


def cached(answer: dict[str, Any]) -> bool:
    """Whether the answer came from the result cache (its timings say so)."""
    return set(answer["timings_ms"]) == {"cache", "total"}


def cache_stats(client: TestClient[Any], name: str) -> dict[str, int]:
    return dict(stats(client)["cache"][name])


def test_a_repeated_request_is_answered_from_the_cache(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    first = recommend(client, user_id="alice", context=CONTEXT, top_k=4)
    again = recommend(client, user_id="alice", context=CONTEXT, top_k=4)

    assert not cached(first)
    assert cached(again)
    assert ids(again) == ids(first)
    assert again["recommendations"] == first["recommendations"]
    assert again["strategy"] == first["strategy"]
    # Each answer is an answer of its own.
    assert again["request_id"] != first["request_id"]
    assert again["timestamp"] >= first["timestamp"]
    assert cache_stats(client, "results") == {"hits": 1, "misses": 1, "entries": 1}


def test_every_answer_is_logged_once_under_its_own_request_id(
    catalog_client: TestClient[Any],
) -> None:
    client = catalog_client
    first = recommend(client, user_id="alice", context=CONTEXT, top_k=4)
    again = recommend(client, user_id="alice", context=CONTEXT, top_k=4)
    assert cached(again)

    log = client.get("/admin/fusion").json()["impressions"]
    assert log["logged"] == 2
    assert log["stored"] + log["pending"] == 2
    kept = [logged(client, a["request_id"]) for a in (first, again)]
    assert [i["request_id"] for i in kept] == [first["request_id"], again["request_id"]]
    assert kept[0]["candidates"] == kept[1]["candidates"]
    assert [c["item_id"] for c in kept[1]["candidates"] if c["shown"]] == ids(again)
    # The reused answer's candidates were stored once, with the answer computed.
    written = client.get("/admin/fusion").json()["impressions"]
    assert written["stored"] == 2
    assert written["candidate_rows"] == len(kept[0]["candidates"])
    # Feedback naming the reused answer answers it, not the one it was kept from.
    feedback(
        client, "alice", ids(again)[0], interaction_type="like", request_id=again["request_id"]
    )
    labels = [
        {
            c["item_id"]: c["label"]
            for c in logged(client, a["request_id"])["candidates"]
            if "label" in c
        }
        for a in (first, again)
    ]
    assert labels == [{}, {ids(again)[0]: 1.0}]


def test_any_other_field_is_another_request(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    base = {"user_id": "alice", "context": CONTEXT, "top_k": 4}
    recommend(client, **base)
    variants: list[dict[str, Any]] = [
        {**base, "top_k": 3},
        {**base, "user_id": "bob"},
        {**base, "context": "cooking at home"},
        {**base, "exclude_seen": False},
        {**base, "rerank": False},
        {**base, "filters": {"category": "time travel"}},
        {**base, "filters": {"category": ["time travel", "cooking"]}},
        {**base, "filters": {"year": {"gte": 2000}}},
        {**base, "filters": {"year": 1998}},
        {**base, "sources": ["vector"]},
        {**base, "sources": ["vector", "keyword"]},
        {**base, "fusion": "rrf"},
        {**base, "fusion": "learned"},
        {**base, "diversity": 0.5},
    ]
    for body in variants:
        assert not cached(recommend(client, **body)), body
    # Each is kept under its own key.
    for body in variants:
        assert cached(recommend(client, **body)), body


def test_a_known_context_is_not_encoded_again(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    recommend(client, user_id="alice", context=CONTEXT)
    texts = stats(client)["encoder"]["texts"]

    # Another user: a new answer, but the context's vector is known.
    answer = recommend(client, user_id="bob", context=CONTEXT)

    assert not cached(answer)
    assert stats(client)["encoder"]["texts"] == texts
    assert cache_stats(client, "context_vectors") == {"hits": 1, "misses": 1, "entries": 1}


def test_the_users_feedback_drops_their_answers(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    feedback(client, "alice", "ck-1", interaction_type="like")
    before = recommend(client, user_id="alice", top_k=3)
    assert before["strategy"] == "preference"
    assert cached(recommend(client, user_id="alice", top_k=3))
    shown = ids(before)[0]

    # A seen item is left out of her next answer, which therefore cannot be the kept one.
    feedback(client, "alice", shown, interaction_type="click")
    after = recommend(client, user_id="alice", top_k=3)

    assert not cached(after)
    assert shown not in ids(after)
    assert cached(recommend(client, user_id="alice", top_k=3))


def test_another_users_feedback_keeps_the_answer(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    feedback(client, "alice", "sp-1", interaction_type="like")
    first = recommend(client, user_id="alice", context=CONTEXT)

    feedback(client, "bob", ids(first)[0], interaction_type="like")
    again = recommend(client, user_id="alice", context=CONTEXT)

    assert cached(again)
    assert ids(again) == ids(first)


def test_a_cold_user_who_sends_feedback_gets_a_fresh_answer(
    catalog_client: TestClient[Any],
) -> None:
    client = catalog_client
    assert recommend(client, user_id="carol")["strategy"] == "popularity"

    feedback(client, "carol", "gd-1", interaction_type="like")
    answer = recommend(client, user_id="carol", top_k=3)

    assert not cached(answer)
    assert answer["strategy"] == "preference"
    assert "gd-1" not in ids(answer)


def test_deleting_the_user_drops_their_answers(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    for item in ("ck-1", "ck-2"):
        feedback(client, "alice", item, interaction_type="like")
    assert recommend(client, user_id="alice")["strategy"] == "preference"
    assert cached(recommend(client, user_id="alice"))

    assert client.delete("/users/alice").status_code == 200
    answer = recommend(client, user_id="alice")

    assert not cached(answer)
    assert answer["strategy"] == "popularity"


def test_a_deleted_item_is_never_returned_from_the_cache(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    first = recommend(client, user_id="alice", context=CONTEXT, top_k=3)
    removed = ids(first)[0]
    assert cached(recommend(client, user_id="alice", context=CONTEXT, top_k=3))

    assert client.delete(f"/items/{removed}").status_code == 204
    answer = recommend(client, user_id="alice", context=CONTEXT, top_k=3)

    assert not cached(answer)
    assert removed not in ids(answer)
    assert len(ids(answer)) == 3


def test_a_new_item_drops_every_kept_answer(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    recommend(client, user_id="alice", context=CONTEXT, top_k=3)
    recommend(client, user_id="bob", top_k=3)

    upsert(
        client,
        [
            {
                "item_id": "tt-new",
                # A title the context does not name (a named item is never recommended).
                "title": "Across the Years",
                "text": "A story about travelling through time.",
            }
        ],
    )
    answer = recommend(client, user_id="alice", context=CONTEXT, top_k=3)

    assert not cached(answer)
    assert ids(answer)[0] == "tt-new"
    assert not cached(recommend(client, user_id="bob", top_k=3))
    assert cache_stats(client, "results")["entries"] == 2


def test_an_unchanged_upsert_keeps_the_answers(
    catalog_client: TestClient[Any], test_items: list[dict[str, Any]]
) -> None:
    client = catalog_client
    recommend(client, user_id="alice", context=CONTEXT)

    assert upsert(client, test_items[:3])["unchanged"] == 3

    assert cached(recommend(client, user_id="alice", context=CONTEXT))


def test_answers_expire_after_the_ttl(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    ttl = 0.2
    client = open_client(make_settings(tmp_path / "data", cache={"result_ttl_seconds": ttl}))
    upsert(client, test_items)
    recommend(client, user_id="alice", context=CONTEXT)

    time.sleep(ttl * 2)
    answer = recommend(client, user_id="alice", context=CONTEXT)

    assert not cached(answer)
    assert cache_stats(client, "results")["hits"] == 0


def test_caches_can_be_turned_off(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    client = open_client(
        make_settings(tmp_path / "data", cache={"context_vectors": 0, "results": 0})
    )
    upsert(client, test_items)
    texts = stats(client)["encoder"]["texts"]

    for _ in range(2):
        assert not cached(recommend(client, user_id="alice", context=CONTEXT))

    assert stats(client)["encoder"]["texts"] == texts + 2
    assert cache_stats(client, "results")["entries"] == 0
    assert cache_stats(client, "context_vectors")["entries"] == 0


def test_metrics_report_the_caches(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    for _ in range(3):
        recommend(client, user_id="alice", context=CONTEXT)

    text = client.get("/metrics").text

    assert 'appliance_cache_hits_total{cache="results"} 2.0' in text
    assert 'appliance_cache_misses_total{cache="results"} 1.0' in text
    assert 'appliance_cache_entries{cache="results"} 1.0' in text
    assert 'appliance_cache_misses_total{cache="context_vectors"} 1.0' in text
