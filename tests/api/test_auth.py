"""Access control and limits on the real application: API keys and their roles, the body size
limit, the rate limit and the answer time limit."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from appliance.errors import ConfigError
from appliance.security import admin_key
from appliance.settings import Settings, load_settings
from tests.conftest import make_settings

CLIENT_KEY = "client-key-4f9a0c"
ADMIN_KEY = "admin-key-77d1e2"
HASHED_ADMIN_KEY = "hashed-admin-key-0b35"
ADMIN_ONLY = [
    ("GET", "/items"),
    ("GET", "/items/tt-1"),
    ("GET", "/users"),
    ("GET", "/users/u1"),
    ("GET", "/users/u1/feedback"),
    ("GET", "/feedback"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/admin/config"),
    ("GET", "/admin/errors"),
    ("GET", "/admin/reranker"),
    ("POST", "/admin/reindex"),
    ("POST", "/admin/users/rebuild"),
    ("GET", "/admin/backup"),
]
#: Admin routes that change things: only checked to be closed to client keys.
ADMIN_WRITES = [
    ("POST", "/items"),
    ("DELETE", "/items/tt-1"),
    ("DELETE", "/users/u1"),
    ("PUT", "/admin/reranker"),
    ("POST", "/admin/restore"),
]


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def keyed_settings(data_dir: Path, **overrides: Any) -> Settings:
    return make_settings(
        data_dir,
        auth={"client_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY, sha256(HASHED_ADMIN_KEY)]},
        **overrides,
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
def keyed(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> TestClient[Any]:
    """The application with keys configured and the test catalog loaded (with the admin key)."""
    client = open_client(keyed_settings(tmp_path / "data"))
    response = client.post("/items", json={"items": test_items}, headers=bearer(ADMIN_KEY))
    assert response.status_code == 200, response.text
    return client


def recommend(client: TestClient[Any], headers: dict[str, str]) -> Any:
    return client.post(
        "/recommendations",
        json={"user_id": "u1", "context": "time travel", "top_k": 3},
        headers=headers,
    )


def record(client: TestClient[Any], headers: dict[str, str]) -> Any:
    return client.post(
        "/feedback",
        json={"user_id": "u1", "item_id": "tt-1", "interaction_type": "like"},
        headers=headers,
    )


# -- keys and roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), api_key("wrong"), {"Authorization": f"Basic {CLIENT_KEY}"}],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "other-scheme"],
)
def test_no_or_a_wrong_key_is_401_with_a_challenge(
    keyed: TestClient[Any], headers: dict[str, str]
) -> None:
    for response in (recommend(keyed, headers), keyed.get("/stats", headers=headers)):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert body["status_code"] == 401
        assert "Authorization: Bearer <key>" in body["detail"]
        assert "X-API-Key: <key>" in body["detail"]


@pytest.mark.parametrize("send", [bearer, api_key], ids=["bearer", "x-api-key"])
def test_a_client_key_may_recommend_and_send_feedback(
    keyed: TestClient[Any], send: Callable[[str], dict[str, str]]
) -> None:
    response = recommend(keyed, send(CLIENT_KEY))
    assert response.status_code == 200, response.text
    assert response.json()["recommendations"]
    response = keyed.get("/items/tt-1/similar", headers=send(CLIENT_KEY))
    assert response.status_code == 200, response.text
    assert response.json()["recommendations"]
    response = record(keyed, send(CLIENT_KEY))
    assert response.status_code == 200, response.text


def test_a_client_key_is_403_on_admin_routes(keyed: TestClient[Any]) -> None:
    for method, path in ADMIN_ONLY + ADMIN_WRITES:
        for send in (bearer, api_key):
            response = keyed.request(method, path, headers=send(CLIENT_KEY), json={})
            assert response.status_code == 403, (method, path, response.text)
            # JSON on every route, also on GET /metrics, whose own answer is text.
            assert response.headers["content-type"] == "application/json", (method, path)
            assert response.json()["status_code"] == 403
            assert "needs an admin key (auth.admin_keys)" in response.json()["detail"]
    assert keyed.get("/items/tt-1", headers=bearer(ADMIN_KEY)).status_code == 200


def test_an_admin_key_may_call_everything(keyed: TestClient[Any]) -> None:
    assert record(keyed, bearer(ADMIN_KEY)).status_code == 200
    for key in (ADMIN_KEY, HASHED_ADMIN_KEY):
        for method, path in ADMIN_ONLY:
            response = keyed.request(method, path, headers=bearer(key))
            assert response.status_code == 200, (method, path, response.text)
        assert recommend(keyed, api_key(key)).status_code == 200


def test_a_hashed_client_key_entry_works(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(make_settings(tmp_path / "data", auth={"client_keys": [sha256("k")]}))
    assert client.post("/recommendations", json={}, headers=bearer("k")).status_code == 400
    assert client.post("/recommendations", json={}, headers=bearer("k2")).status_code == 401
    # Without an admin key, admin routes are closed to everyone.
    assert client.get("/stats", headers=bearer("k")).status_code == 403


def test_health_and_the_api_docs_stay_open(keyed: TestClient[Any]) -> None:
    assert keyed.get("/health").status_code == 200
    schema = keyed.get("/schema/openapi.json")
    assert schema.status_code == 200
    spec = schema.json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/health"]["get"]["security"] == [{}]


def test_without_keys_on_loopback_everything_is_open(client: TestClient[Any]) -> None:
    assert client.get("/stats").status_code == 200
    assert client.get("/admin/config", headers=bearer("anything")).status_code == 200


def test_a_malformed_hashed_entry_is_refused_without_showing_it(
    minilm: Embedder, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", auth={"admin_keys": ["sha256:my-real-key"]})
    with pytest.raises(ConfigError, match="admin_keys entry 1") as raised:
        create_app(settings, backends=Backends(embedder=minilm))
    assert "my-real-key" not in raised.value.message


def test_keys_from_the_environment_as_a_list_or_comma_separated() -> None:
    settings = load_settings(
        environ={
            "APPLIANCE_AUTH__CLIENT_KEYS": " c1, c2 ,",
            "APPLIANCE_AUTH__ADMIN_KEYS": f'["{ADMIN_KEY}", "a,b"]',
            # The clients' variables are not settings of the server.
            "APPLIANCE_ADMIN_KEY": ADMIN_KEY,
            "APPLIANCE_URL": "http://127.0.0.1:8000",
        }
    )
    assert settings.auth.client_keys == ("c1", "c2")
    assert settings.auth.admin_keys == (ADMIN_KEY, "a,b")
    with pytest.raises(ConfigError, match="APPLIANCE_AUTH__ADMIN_KEYS starts with"):
        load_settings(environ={"APPLIANCE_AUTH__ADMIN_KEYS": "[not json"})


# -- exposure ------------------------------------------------------------------------------------


def test_a_network_host_without_keys_is_refused(minilm: Embedder, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", server={"host": "0.0.0.0"})  # noqa: S104
    with pytest.raises(ConfigError, match=r"auth\.allow_unauthenticated = true"):
        create_app(settings, backends=Backends(embedder=minilm))


@pytest.mark.parametrize(
    "auth",
    [{"allow_unauthenticated": True}, {"admin_keys": [ADMIN_KEY]}],
    ids=["allowed", "keys"],
)
def test_a_network_host_with_keys_or_explicitly_open_is_accepted(
    minilm: Embedder, tmp_path: Path, auth: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path / "data", server={"host": "0.0.0.0"}, auth=auth)  # noqa: S104
    create_app(settings, backends=Backends(embedder=minilm))


# -- secrets -------------------------------------------------------------------------------------


def test_keys_never_appear_in_the_config_or_the_logs(
    keyed: TestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recommend(keyed, bearer(CLIENT_KEY))
    recommend(keyed, bearer("wrong-key-1234"))
    keyed.get("/stats", headers=api_key(CLIENT_KEY))
    response = keyed.get("/admin/config", headers=bearer(ADMIN_KEY))
    errors = keyed.get("/admin/errors", headers=bearer(ADMIN_KEY))

    assert response.status_code == 200, response.text
    auth = response.json()["settings"]["auth"]
    assert auth == {"client_keys": "***", "admin_keys": "***", "allow_unauthenticated": False}
    for secret in (CLIENT_KEY, ADMIN_KEY, HASHED_ADMIN_KEY, "wrong-key-1234"):
        assert secret not in response.text
        assert secret not in errors.text
        assert secret not in caplog.text
    assert hashlib.sha256(HASHED_ADMIN_KEY.encode()).hexdigest() not in response.text


# -- limits --------------------------------------------------------------------------------------


def test_an_oversized_body_is_413(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(make_settings(tmp_path / "data", server={"max_body_bytes": 1000}))
    items = [{"item_id": f"i-{n}", "title": "A title", "text": "x" * 500} for n in range(3)]
    response = client.post("/items", json={"items": items})
    assert response.status_code == 413, response.text
    assert response.json()["status_code"] == 413
    assert "server.max_body_bytes" in response.json()["detail"]
    assert client.post("/items", json={"items": items[:1]}).status_code == 200


def test_past_the_rate_limit_a_key_gets_429_with_retry_after(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(keyed_settings(tmp_path / "data", server={"rate_limit_per_minute": 3}))
    for _ in range(3):
        assert client.get("/stats", headers=bearer(ADMIN_KEY)).status_code == 200
    response = client.get("/stats", headers=bearer(ADMIN_KEY))
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "server.rate_limit_per_minute" in response.json()["detail"]
    # Per key: another key still has its allowance; /health is never limited.
    assert client.get("/stats", headers=bearer(HASHED_ADMIN_KEY)).status_code == 200
    for _ in range(5):
        assert client.get("/health").status_code == 200


def test_without_keys_the_rate_limit_is_per_client_address(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(make_settings(tmp_path / "data", server={"rate_limit_per_minute": 2}))
    assert [client.get("/stats").status_code for _ in range(3)] == [200, 200, 429]


def test_a_request_past_the_timeout_is_503_and_its_work_completes(
    minilm: Embedder, tmp_path: Path
) -> None:
    # A real slow request: embedding a hundred paragraphs takes far longer than 20 ms.
    items = [
        {"item_id": f"slow-{n}", "title": f"Item {n}", "text": f"text number {n} " * 30}
        for n in range(100)
    ]
    settings = make_settings(tmp_path / "data", server={"request_timeout_seconds": 0.02})
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        response = client.post("/items", json={"items": items})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert "server.request_timeout_seconds" in response.json()["detail"]
    # The lifespan waited for the upsert before closing the stores.
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        assert client.get("/stats").json()["items"] == len(items)


def test_admin_commands_send_the_key_from_the_environment_or_a_plain_admin_key(
    tmp_path: Path,
) -> None:
    settings = keyed_settings(tmp_path / "data")
    assert admin_key(settings, {}) == ADMIN_KEY
    assert admin_key(settings, {"APPLIANCE_ADMIN_KEY": "from-env"}) == "from-env"
    hashed_only = make_settings(tmp_path / "data", auth={"admin_keys": [sha256("k")]})
    assert admin_key(hashed_only, {}) is None
