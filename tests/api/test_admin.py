"""The operator endpoints through HTTP, on the real model, index, database and re-ranker:
Prometheus metrics, the recent-errors log, the effective configuration and switching the
re-ranker at run time (and the client the dashboard calls them with)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import get
from litestar.testing import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from appliance.app import create_app
from appliance.backends import registry
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from appliance.backends.rerankers.protocol import RerankCandidate, Reranker
from appliance.client import ApplianceClient
from appliance.errors import ApplianceError
from appliance.settings import Settings
from tests.api.calls import feedback, ids, recommend, stats, upsert
from tests.conftest import make_settings

CONTEXT = "a story about travelling through time"
APP = {"app_name": "appliance"}


# -- metrics ---------------------------------------------------------------------------------


def scrape(client: TestClient[Any]) -> list[Sample]:
    """GET /metrics, parsed by Prometheus' own parser; every sample of every family."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    # Prometheus' own media type, its charset parameter once.
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_metrics_count_requests_by_route_template(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    item_route = {**APP, "method": "GET", "path": "/items/{item_id}"}
    before = scrape(client)

    for item in ("tt-1", "ck-1", "sp-1"):
        assert client.get(f"/items/{item}").status_code == 200
    assert client.get("/items/no-such-item").status_code == 404
    after = scrape(client)

    requests = "litestar_requests_total"
    assert value(after, requests, **item_route, status_code="200") == (
        value(before, requests, **item_route, status_code="200") + 3
    )
    assert value(after, requests, **item_route, status_code="404") == (
        value(before, requests, **item_route, status_code="404") + 1
    )
    # One series per route template, never one per item.
    assert not [s for s in after if "tt-1" in s.labels.get("path", "")]
    # The latency histogram has buckets fine enough for p50 and p95 of fast requests.
    duration = "litestar_request_duration_seconds"
    assert value(after, f"{duration}_count", **item_route, status_code="200") == (
        value(before, f"{duration}_count", **item_route, status_code="200") + 3
    )
    bounds = {
        float(s.labels["le"])
        for s in after
        if s.name == f"{duration}_bucket" and s.labels["path"] == "/items/{item_id}"
    }
    assert {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0} <= bounds
    # Scrapes are not counted as requests.
    assert not [s for s in after if s.labels.get("path") == "/metrics"]


def test_metrics_report_what_the_appliance_holds(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    feedback(client, "alice", "tt-1", interaction_type="like")
    feedback(client, "bob", "ck-1", interaction_type="like")
    recommend(client, user_id="alice", context=CONTEXT)
    recommend(client, user_id="alice", context=CONTEXT, rerank=False)
    counters = stats(client)

    samples = scrape(client)

    assert value(samples, "appliance_items") == counters["items"] == 36
    assert value(samples, "appliance_index_points") == counters["index_points"] == 36
    assert value(samples, "appliance_users") == 2
    assert value(samples, "appliance_feedback_events") == 2
    assert value(samples, "appliance_encoder_batches_total") == counters["encoder"]["batches"]
    assert value(samples, "appliance_encoder_texts_total") == counters["encoder"]["texts"] >= 37
    outcomes = {
        s.labels["status"]: s.value for s in samples if s.name == "appliance_rerank_outcomes_total"
    }
    # Every status is reported, so a rate can be taken from the first scrape on.
    assert outcomes == {
        "ran": 0,
        "off": 1,
        "not-configured": 1,
        "no-context": 0,
        "timeout": 0,
        "busy": 0,
        "failed": 0,
    }
    assert value(samples, "appliance_reranker_info", kind="none") == 1


# -- recent errors ---------------------------------------------------------------------------


def recent_errors(client: TestClient[Any], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/admin/errors", params=params)
    assert response.status_code == 200, response.text
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors


def test_error_answers_are_logged_newest_first(catalog_client: TestClient[Any]) -> None:
    client = catalog_client
    assert recent_errors(client) == []

    assert client.get("/users/nobody").status_code == 404
    assert client.post("/recommendations", json={"user_id": "u", "top_k": 500}).status_code == 400
    assert client.get("/no/such/route").status_code == 404
    assert client.delete("/health").status_code == 405

    errors = recent_errors(client)
    assert [(e["method"], e["path"], e["status_code"]) for e in errors] == [
        ("DELETE", "/health", 405),
        ("GET", "/no/such/route", 404),
        ("POST", "/recommendations", 400),
        ("GET", "/users/nobody", 404),
    ]
    assert errors[3]["detail"] == "user 'nobody' has no feedback"
    # A validation error names the field and what is wrong with it.
    assert "top_k" in errors[2]["detail"]
    assert "<= 100" in errors[2]["detail"]
    times = [datetime.fromisoformat(e["time"]) for e in errors]
    assert times == sorted(times, reverse=True)

    assert [e["path"] for e in recent_errors(client, limit=2)] == ["/health", "/no/such/route"]
    # Asking for the log wrongly is an error too, and is logged.
    assert client.get("/admin/errors", params={"limit": 0}).status_code == 400
    newest = recent_errors(client, limit=1)
    assert [(e["path"], e["status_code"]) for e in newest] == [("/admin/errors", 400)]


def test_the_log_keeps_only_the_latest_errors(client: TestClient[Any]) -> None:
    for n in range(205):
        assert client.get(f"/items/missing-{n}").status_code == 404

    errors = recent_errors(client, limit=200)
    assert len(errors) == 200
    assert errors[0]["path"] == "/items/missing-204"
    assert errors[-1]["path"] == "/items/missing-5"
    assert client.get("/admin/errors", params={"limit": 201}).status_code == 400


class Records(logging.Handler):
    """Keeps what the appliance logs (Litestar's logging set-up replaces pytest's root handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def appliance_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger("appliance")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def test_an_unexpected_error_is_a_logged_500_that_hides_its_cause(
    minilm: Embedder, tmp_path: Path, appliance_log: Records
) -> None:
    @get("/test-only/bug", sync_to_thread=False)
    def bug() -> None:
        raise RuntimeError("the cause, with internal details")

    app = create_app(make_settings(tmp_path / "data"), backends=Backends(embedder=minilm))
    app.register(bug)
    with TestClient(app) as client:
        response = client.get("/test-only/bug")

        assert response.status_code == 500
        assert response.json() == {"status_code": 500, "detail": "Internal Server Error"}
        [error] = recent_errors(client)
        assert error["status_code"] == 500
        assert error["path"] == "/test-only/bug"
        assert "RuntimeError: the cause, with internal details" in error["detail"]
    [logged] = [r for r in appliance_log.records if r.levelno >= logging.ERROR]
    assert logged.getMessage() == "unexpected error in GET /test-only/bug"
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], RuntimeError)


# -- configuration ---------------------------------------------------------------------------


def test_config_masks_credentials(
    open_client: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "data",
        reranker={"base_url": "https://alice:s3cr%40t@llm.example.com:8443/v1", "budget_ms": 500},
    )
    client = open_client(settings)

    response = client.get("/admin/config")

    assert response.status_code == 200, response.text
    config = response.json()
    assert "s3cr" not in response.text
    assert "alice" not in response.text
    reranker = config["settings"]["reranker"]
    assert reranker["base_url"] == "https://***@llm.example.com:8443/v1"
    # The name of the variable that holds the key is not a secret.
    assert reranker["api_key_env"] == "OPENAI_API_KEY"
    assert reranker["budget_ms"] == 500
    assert reranker["kind"] == "none"
    assert config["settings"]["data_dir"] == str(tmp_path / "data")
    assert config["settings"]["server"]["host"] == "127.0.0.1"
    assert config["settings"]["server"]["port"] == 8000
    assert config["reranker_kinds"] == ["llamacpp", "none", "openai"]
    assert config["reranker_switchable"] is True
    assert config["reranker_kind"] == "none"


# -- switching the re-ranker -----------------------------------------------------------------


def switch(client: TestClient[Any], kind: str) -> dict[str, Any]:
    response = client.put("/admin/reranker", json={"kind": kind})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def health_reranker(client: TestClient[Any]) -> str:
    reranker: str = client.get("/health").json()["components"]["reranker"]
    return reranker


def test_switch_to_llamacpp_and_back(
    open_client: Callable[..., TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    client = open_client(make_settings(tmp_path / "data", reranker={"budget_ms": 30_000}))
    upsert(client, test_items)
    assert recommend(client, user_id="u", context=CONTEXT)["rerank_status"] == "not-configured"

    assert switch(client, "llamacpp") == {"kind": "llamacpp"}

    assert health_reranker(client) == "llamacpp"
    assert client.get("/admin/reranker").json() == {"kind": "llamacpp"}
    assert client.get("/admin/config").json()["reranker_kind"] == "llamacpp"
    answer = recommend(client, user_id="u", context=CONTEXT)
    assert answer["rerank_status"] == "ran"
    assert all("rerank" in r["sources"] for r in answer["recommendations"])
    # Asking for the kind in use changes nothing.
    assert switch(client, "llamacpp") == {"kind": "llamacpp"}

    assert switch(client, "none") == {"kind": "none"}

    assert health_reranker(client) == "none"
    retrieved = recommend(client, user_id="u", context=CONTEXT)
    assert retrieved["rerank_status"] == "not-configured"
    assert ids(retrieved) == ids(recommend(client, user_id="u", context=CONTEXT, rerank=False))
    assert stats(client)["rerank"]["ran"] == 1


def test_switching_can_be_forbidden(
    open_client: Callable[..., TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(make_settings(tmp_path / "data", reranker={"switchable": False}))
    assert client.get("/admin/config").json()["reranker_switchable"] is False

    response = client.put("/admin/reranker", json={"kind": "llamacpp"})

    assert response.status_code == 409, response.text
    assert "reranker.switchable" in response.json()["detail"]
    assert health_reranker(client) == "none"


def test_unknown_kind_lists_the_installed_ones(client: TestClient[Any]) -> None:
    response = client.put("/admin/reranker", json={"kind": "gpt-9"})

    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (
        "unknown re-ranker kind 'gpt-9'; choose one of: llamacpp, none, openai"
    )
    assert health_reranker(client) == "none"
    assert client.put("/admin/reranker", json={"type": "none"}).status_code == 400


def test_a_reranker_that_cannot_be_built_leaves_the_old_one(
    open_client: Callable[..., TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    missing = tmp_path / "models" / "missing.gguf"
    client = open_client(make_settings(tmp_path / "data", reranker={"model": str(missing)}))
    upsert(client, test_items)

    response = client.put("/admin/reranker", json={"kind": "llamacpp"})

    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert str(missing) in detail
    assert "the none re-ranker stays in use" in detail
    assert health_reranker(client) == "none"
    assert recommend(client, user_id="u", context=CONTEXT)["rerank_status"] == "not-configured"
    assert recent_errors(client, limit=1)[0]["status_code"] == 503


class CountingReranker:
    """A real re-ranker (it reverses the retrieval order) that counts how often it is closed."""

    def __init__(self, name: str = "counting") -> None:
        self.name = name
        self.closed = 0

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate], *, deadline: float
    ) -> list[tuple[str, float]]:
        del context, deadline
        return [(c.item_id, float(n)) for n, c in enumerate(reversed(candidates))]

    async def close(self) -> None:
        self.closed += 1


@pytest.fixture
def counting_kind(monkeypatch: pytest.MonkeyPatch) -> list[CountingReranker]:
    """Install a "counting" re-ranker kind; the list holds every one the registry builds."""
    built: list[CountingReranker] = []

    def build(settings: Settings) -> Reranker:
        del settings
        built.append(CountingReranker())
        return built[-1]

    monkeypatch.setitem(registry.RERANKERS, "counting", build)
    return built


def test_the_runtime_closes_each_reranker_it_built_once(
    minilm: Embedder,
    tmp_path: Path,
    test_items: list[dict[str, Any]],
    counting_kind: list[CountingReranker],
) -> None:
    app = create_app(make_settings(tmp_path / "data"), backends=Backends(embedder=minilm))
    with TestClient(app) as client:
        upsert(client, test_items)
        switch(client, "counting")
        # One source: its 10 candidates for a top 5 are exactly the top 10 without re-ranking.
        one = {"user_id": "u", "context": CONTEXT, "sources": ["vector"]}
        retrieved = ids(recommend(client, **one, top_k=10, rerank=False))
        answer = recommend(client, **one)
        # The counting re-ranker reverses the candidates.
        assert answer["rerank_status"] == "ran"
        assert set(ids(answer)) <= set(retrieved)
        assert ids(answer) != retrieved[:5]
        switch(client, "none")
        [first] = counting_kind
        assert first.closed == 1  # replaced: closed at once

        switch(client, "counting")
        second = counting_kind[1]
        assert second.closed == 0
    # The one in use at shutdown is closed with the runtime, and nothing twice.
    assert [r.closed for r in counting_kind] == [1, 1]


def test_a_reranker_passed_in_is_never_closed(
    minilm: Embedder,
    tmp_path: Path,
    test_items: list[dict[str, Any]],
    counting_kind: list[CountingReranker],
) -> None:
    given = CountingReranker()
    settings = make_settings(tmp_path / "data", reranker={"kind": "counting"})
    app = create_app(settings, backends=Backends(embedder=minilm, reranker=given))
    with TestClient(app) as client:
        upsert(client, test_items)
        assert recommend(client, user_id="u", context=CONTEXT)["rerank_status"] == "ran"
        switch(client, "none")
        assert given.closed == 0
        switch(client, "counting")  # a new one, built by the runtime
        assert health_reranker(client) == "counting"
    assert given.closed == 0
    assert [r.closed for r in counting_kind] == [1]


# -- the client ------------------------------------------------------------------------------


def test_client_decodes_every_operations_endpoint(catalog_client: TestClient[Any]) -> None:
    http = catalog_client
    api = ApplianceClient(str(http.base_url), http=http)
    for item in ("tt-1", "tt-2", "ck-1"):
        feedback(http, "alice", item, interaction_type="like")
    feedback(http, "bob", "sp-1", rating=4)
    http.get("/users/nobody")

    assert [u.user_id for u in api.users().users] == ["alice", "bob"]
    assert [u.user_id for u in api.users(q="BO").users] == ["bob"]
    page = api.users(limit=1)
    assert page.next_cursor == "alice"
    assert [u.user_id for u in api.users(cursor=page.next_cursor).users] == ["bob"]
    history = api.user_feedback("alice", limit=2)
    assert [e.item_id for e in history.events] == ["ck-1", "tt-2"]
    assert history.events[0].title == "Salt, Fat and Fire"
    assert history.next_cursor is not None
    older = api.user_feedback("alice", before=history.next_cursor)
    assert [e.item_id for e in older.events] == ["tt-1"]
    tail = api.feedback_tail()
    assert [e.user_id for e in tail.events] == ["alice", "alice", "alice", "bob"]
    assert api.feedback_tail(after=tail.last_event_id).events == []
    assert [i.item_id for i in api.items(q="clockmaker").items] == ["tt-1"]
    assert api.recent_errors().errors[0].path == "/users/nobody"
    config = api.config()
    assert config.reranker_kinds == ["llamacpp", "none", "openai"]
    assert api.reranker().kind == "none"
    assert api.set_reranker("none").kind == "none"
    assert api.stats().feedback_events == 4
    assert "appliance_feedback_events 4.0" in api.metrics()
    with pytest.raises(ApplianceError, match=r"\(404\): user 'nobody' has no feedback"):
        api.user_feedback("nobody")
