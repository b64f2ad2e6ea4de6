"""Fixtures shared by every test: the real MiniLM model, settings on a fresh data directory,
and the real HTTP application, in process or served on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from appliance import model_files
from appliance.app import create_app
from appliance.backends.embedders.onnx_runtime import OnnxEmbedder
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.embedders.sentence_transformer import SentenceTransformerEmbedder
from appliance.backends.registry import DERIVED_DIR, Backends
from appliance.backends.rerankers.llamacpp import LlamaCppReranker
from appliance.backends.rerankers.protocol import Reranker
from appliance.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"
TEST_CATALOG = Path(__file__).parent / "data" / "catalog.jsonl"
EMBEDDER = "all-MiniLM-L6-v2"
RERANKER_MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The real embedding model on the default runtime, loaded once for the whole session."""
    return OnnxEmbedder(
        model_files.require(MODELS_DIR, EMBEDDER), MODELS_DIR / DERIVED_DIR, name=EMBEDDER
    )


@pytest.fixture(scope="session")
def minilm_torch() -> Embedder:
    """The real embedding model run by torch (the other runtime), loaded once."""
    return SentenceTransformerEmbedder(model_files.require(MODELS_DIR, EMBEDDER), name=EMBEDDER)


@pytest.fixture(scope="session")
def reranker_model() -> Path:
    """The default re-ranker's GGUF file (the install fetches it with the llamacpp extra)."""
    return model_files.require(MODELS_DIR, RERANKER_MODEL)


@pytest.fixture(scope="session")
def llamacpp_reranker(reranker_model: Path) -> Iterator[Reranker]:
    """The in-process llama.cpp re-ranker on the real model, loaded once for the session."""
    reranker = LlamaCppReranker(reranker_model)
    yield reranker
    asyncio.run(reranker.close())


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings on ``data_dir`` with the repository's models, ignoring the caller's environment."""
    tree: dict[str, Any] = {"data_dir": str(data_dir), "models_dir": str(MODELS_DIR), **overrides}
    return load_settings(environ={}, overrides=tree)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def test_items() -> list[dict[str, Any]]:
    """The generic test catalog in the wire format."""
    return [json.loads(line) for line in TEST_CATALOG.read_text().splitlines() if line]


def started_clients(app: Callable[..., Litestar]) -> Iterator[Callable[..., TestClient[Any]]]:
    """Yield a function that starts ``app(...)`` in a test client; all are closed afterwards."""
    clients: list[TestClient[Any]] = []

    def start(*args: Any, **kwargs: Any) -> TestClient[Any]:
        client: TestClient[Any] = TestClient(app(*args, **kwargs))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def open_client(minilm: Embedder) -> Iterator[Callable[..., TestClient[Any]]]:
    """Start the real application on given settings (and, optionally, an already loaded
    re-ranker); every client is closed at teardown."""

    def app(settings: Settings, reranker: Reranker | None = None) -> Litestar:
        return create_app(settings, backends=Backends(embedder=minilm, reranker=reranker))

    yield from started_clients(app)


@pytest.fixture
def client(
    open_client: Callable[[Settings], TestClient[Any]], settings: Settings
) -> TestClient[Any]:
    """The application on an empty data directory."""
    return open_client(settings)


@pytest.fixture
def catalog_client(client: TestClient[Any], test_items: list[dict[str, Any]]) -> TestClient[Any]:
    """The application with the generic test catalog loaded."""
    response = client.post("/items", json={"items": test_items})
    assert response.status_code == 200, response.text
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """The appliance's HTTP application served by uvicorn in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", workers=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="appliance", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "the appliance failed to start (see the log above)"
            assert time.monotonic() < deadline, "the appliance did not start within 60 s"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the appliance did not stop"


@pytest.fixture
def serve(minilm: Embedder, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start an appliance (on ``port``, or a free one) on a fresh data directory; each one
    started is stopped at teardown."""
    started: list[Served] = []

    def start(port: int | None = None, **overrides: Any) -> Served:
        settings = make_settings(tmp_path / f"data-{len(started)}", **overrides)
        app = create_app(settings, backends=Backends(embedder=minilm))
        served = Served(app, port or free_port())
        served.start()
        started.append(served)
        return served

    yield start
    for served in reversed(started):
        served.stop()
