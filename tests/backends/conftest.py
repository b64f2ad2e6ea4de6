"""Fixtures for the re-ranker suites: the real GGUF model in this process, and the same model
behind llama.cpp's own OpenAI-compatible server on loopback."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SERVER_START_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def llama_server(reranker_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port; yields its base URL (``.../v1``)."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    # A file, not a pipe: llama.cpp writes a lot to stderr, and an unread pipe would stall it.
    log_path = tmp_path_factory.mktemp("llama-server") / "stderr.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(reranker_model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    try:
        _wait_until_ready(server, base_url, log_path)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _die_with_parent() -> None:
    # Teardown does not run if the test process itself dies (a crash in a native extension);
    # the server, 600 MB and a core's worth of threads, must not outlive it.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    give_up = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < give_up:
        if server.poll() is not None:
            pytest.fail(
                f"llama_cpp.server exited with status {server.returncode}:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == httpx.codes.OK:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"llama_cpp.server did not answer within {SERVER_START_TIMEOUT:.0f} s:\n"
        + log_path.read_text(errors="replace")[-4000:]
    )
