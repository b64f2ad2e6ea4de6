"""A real appliance for the dashboard to talk to: the application under uvicorn, in a thread, on
a free loopback port, with the real MiniLM model and the generic test catalog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Served, free_port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
