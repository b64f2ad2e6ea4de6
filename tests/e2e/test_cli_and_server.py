"""The production command end to end: `appliance serve` under uvicorn, admin commands against it
over HTTP, and the same commands on the data directory when no server holds it."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODELS_DIR, TEST_CATALOG

APPLIANCE = [sys.executable, "-m", "appliance"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line
        [*APPLIANCE, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_MODELS_DIR": str(MODELS_DIR),
    }


def wait_until_ready(process: subprocess.Popen[str], url: str, output: Callable[[], str]) -> None:
    """Poll /health until the server answers; fail with its ``output`` if it exits first."""
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, output()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == httpx.codes.OK:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.3)


@contextmanager
def server(env: dict[str, str], *args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [*APPLIANCE, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, lambda: process.stdout.read() if process.stdout else "")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        # A graceful stop: the lifespan's shutdown ran (stores flushed and closed); uvicorn then
        # re-raises SIGTERM, so the process ends by that signal.
        assert process.returncode in {0, -signal.SIGTERM}, output
        assert "Application shutdown complete" in output
        assert "Traceback" not in output, output


def recommend(url: str, **body: Any) -> list[tuple[str, float]]:
    response = httpx.post(f"{url}/recommendations", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [(r["item_id"], r["score"]) for r in response.json()["recommendations"]]


def test_serve_ingest_restart_and_admin_commands(env: dict[str, str]) -> None:
    with server(env) as url:
        # The server holds the data directory, so ingest goes through its HTTP API.
        ingested = run("ingest", str(TEST_CATALOG), env=env)
        assert ingested.returncode == 0, ingested.stderr
        assert "36 created, 0 updated, 0 unchanged (36 embedded), 0 rejected" in ingested.stdout

        assert httpx.get(f"{url}/stats").json()["items"] == 36
        # Vector search alone: the likes below make items popular, which would change the
        # fused answer; the index is what must answer the same after the restart.
        time_travel = recommend(
            url, user_id="visitor", context="time travel", top_k=3, sources=["vector"]
        )
        assert all(item.startswith("tt-") for item, _ in time_travel)
        for item in ("sp-1", "sp-3"):
            response = httpx.post(
                f"{url}/feedback",
                json={"user_id": "u1", "item_id": item, "interaction_type": "like"},
            )
            assert response.status_code == 200
        by_taste = recommend(url, user_id="u1", top_k=3)

        rebuilt = run("users", "rebuild", env=env)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "1 users rebuilt" in rebuilt.stdout

    # No server now: the same commands open the data directory themselves.
    again = run("ingest", str(TEST_CATALOG), env=env)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 36 unchanged (0 embedded)" in again.stdout
    reindexed = run("reindex", env=env)
    assert reindexed.returncode == 0, reindexed.stderr
    assert "36 items embedded" in reindexed.stdout

    with server(env) as url:
        after = recommend(
            url, user_id="visitor", context="time travel", top_k=3, sources=["vector"]
        )
        assert [i for i, _ in after] == [i for i, _ in time_travel]
        assert [s for _, s in after] == pytest.approx([s for _, s in time_travel], abs=1e-5)
        assert [i for i, _ in recommend(url, user_id="u1", top_k=3)] == [i for i, _ in by_taste]


def test_rejected_rows_are_reported(env: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "sku,name,description,colour\n"
        "a-1,Red kettle,A red electric kettle,red\n"
        "a-2,,Nameless thing,blue\n"
        "a/3,Slashed,Bad id,green\n"
        "a-4,Blue teapot,A blue ceramic teapot,blue\n"
    )
    result = run(
        "ingest",
        str(catalog),
        "--id-column",
        "sku",
        "--title-column",
        "name",
        "--text-column",
        "description",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "2 created" in result.stdout
    assert "2 rejected" in result.stdout
    assert "line 3: missing title" in result.stderr
    assert "line 4:" in result.stderr


def test_missing_model_fails_at_start_naming_the_fix(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    (empty / "manifest.toml").write_text((MODELS_DIR / "manifest.toml").read_text())
    result = run("serve", env={**env, "APPLIANCE_MODELS_DIR": str(empty)})
    assert result.returncode == 2
    assert "appliance models pull all-MiniLM-L6-v2" in result.stderr


def test_models_list_shows_verified_files(env: dict[str, str]) -> None:
    result = run("models", "list", env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "all-MiniLM-L6-v2" in line)
    assert line.startswith("ok")


def test_unknown_setting_is_refused(env: dict[str, str]) -> None:
    result = run("config", env={**env, "APPLIANCE_SERVER__PROT": "1"})
    assert result.returncode == 2
    assert "prot" in result.stderr


def test_serve_with_the_llamacpp_reranker_from_the_environment(env: dict[str, str]) -> None:
    env = {
        **env,
        "APPLIANCE_RERANKER__KIND": "llamacpp",
        # Generous: this asserts that the stage runs in the served process, not how fast.
        "APPLIANCE_RERANKER__BUDGET_MS": "30000",
    }
    with server(env) as url:
        assert httpx.get(f"{url}/health").json()["components"]["reranker"] == "llamacpp"
        assert run("ingest", str(TEST_CATALOG), env=env).returncode == 0
        response = httpx.post(
            f"{url}/recommendations",
            json={"user_id": "visitor", "context": "time travel", "top_k": 3},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["rerank_status"] == "ran"
        assert answer["reranked"] is True
        assert all("rerank" in r["sources"] for r in answer["recommendations"])
        assert httpx.get(f"{url}/stats").json()["rerank"] == {"ran": 1}


def test_a_missing_reranker_model_fails_at_start(env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **env,
        "APPLIANCE_RERANKER__KIND": "llamacpp",
        "APPLIANCE_RERANKER__MODEL": str(tmp_path / "absent.gguf"),
    }
    started = run("serve", "--port", str(free_port()), env=env)
    assert started.returncode != 0
    assert "absent.gguf does not exist" in started.stderr


def test_an_unreachable_qdrant_server_fails_at_start_naming_it(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**env, "APPLIANCE_INDEX__KIND": "qdrant-server", "APPLIANCE_INDEX__URL": url}
    started = run("serve", "--port", str(free_port()), env=env)
    assert started.returncode == 2
    assert f"error: cannot reach the Qdrant server at {url}: " in started.stderr
    assert "check index.url" in started.stderr
    assert "Traceback" not in started.stderr


def test_serve_refuses_a_network_host_without_keys(env: dict[str, str]) -> None:
    started = run("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env)  # noqa: S104
    assert started.returncode == 2
    assert "no API keys are configured" in started.stderr
    assert "APPLIANCE_AUTH__ALLOW_UNAUTHENTICATED=true" in started.stderr
    assert "APPLIANCE_AUTH__ADMIN_KEYS" in started.stderr


def test_serve_with_keys_on_every_interface(env: dict[str, str]) -> None:
    admin_key = "e2e-admin-key"
    env = {
        **env,
        "APPLIANCE_AUTH__ADMIN_KEYS": "sha256:" + hashlib.sha256(admin_key.encode()).hexdigest(),
        "APPLIANCE_AUTH__CLIENT_KEYS": "e2e-client-1, e2e-client-2",
    }
    with server(env, "--host", "0.0.0.0") as url:  # noqa: S104
        assert httpx.get(f"{url}/stats").status_code == 401
        # The admin key is stored hashed, so the command needs it from APPLIANCE_ADMIN_KEY.
        refused = run("ingest", str(TEST_CATALOG), env=env)
        assert refused.returncode == 2
        assert "(401)" in refused.stderr
        assert admin_key not in refused.stderr
        ingested = run("ingest", str(TEST_CATALOG), env={**env, "APPLIANCE_ADMIN_KEY": admin_key})
        assert ingested.returncode == 0, ingested.stderr
        assert "36 created" in ingested.stdout
        response = httpx.post(
            f"{url}/recommendations",
            json={"user_id": "visitor", "context": "time travel", "top_k": 3},
            headers={"X-API-Key": "e2e-client-2"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        stats = httpx.get(f"{url}/stats", headers={"Authorization": f"Bearer {admin_key}"})
        assert stats.json()["items"] == 36
    shown = run("config", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "e2e-client" not in shown.stdout
    assert hashlib.sha256(admin_key.encode()).hexdigest() not in shown.stdout


def test_serve_openly_on_every_interface_when_allowed(env: dict[str, str]) -> None:
    env = {**env, "APPLIANCE_AUTH__ALLOW_UNAUTHENTICATED": "true"}
    with server(env, "--host", "0.0.0.0") as url:  # noqa: S104
        assert httpx.get(f"{url}/stats").status_code == 200
