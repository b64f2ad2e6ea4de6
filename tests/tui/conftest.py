"""A real appliance for the dashboard to talk to: the application under uvicorn, in a thread, on
a free loopback port, with the real MiniLM model and the generic test catalog."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from tests.conftest import make_settings


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
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.fixture
def appliance(serve: Callable[..., Served], test_items: list[dict[str, Any]]) -> Served:
    """A running appliance holding the 36-item test catalog.

    Its OpenAI-compatible re-ranker points at a closed port, so switching to it costs nothing
    and every call to it fails fast.
    """
    served = serve(reranker={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    response = httpx.post(f"{served.url}/items", json={"items": test_items}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == len(test_items)
    return served
