"""The appliance under test: ``appliance serve`` in a process of its own, and its memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Start-up loads the model and reconciles the index with the store (a minute or more at 1M).
READY_TIMEOUT_S = 900.0
#: Longest wait for the requests a wrk run left in progress (an ingest backlog takes a while).
DRAIN_TIMEOUT_S = 900.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def appliance_command() -> list[str]:
    """Return the production command's executable: ``appliance`` next to this Python."""
    script = Path(sys.executable).with_name("appliance")
    return [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS), in MiB; 0 once it has exited."""
    return memory_mb(pid).get("VmRSS", 0.0)


def memory_mb(pid: int) -> dict[str, float]:
    """Return a process's memory figures now, in MiB by /proc status field; {} once it exited.

    ``VmRSS`` is all of its resident memory; ``RssAnon`` leaves out pages of mapped files (the
    index's), which the kernel may drop and read again when memory runs short.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return {}
    return {
        name: int(value.split()[0]) / 1024
        for name, _, value in (line.partition(":") for line in status.splitlines())
        if value.endswith(" kB")
    }


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (user and system), in seconds; 0 once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    # The fields after the command name, which is in parentheses and may contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class RssSampler:
    """Samples a process's resident memory in the background: the peak and the last value."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self._pid = pid
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_mb = 0.0
        self.last_mb = 0.0
        self.anon_peak_mb = 0.0

    def _run(self) -> None:
        while True:
            self._take()
            if self._stop.wait(self._interval):
                return

    def _take(self) -> None:
        memory = memory_mb(self._pid)
        self.last_mb = memory.get("VmRSS", 0.0)
        self.peak_mb = max(self.peak_mb, self.last_mb)
        self.anon_peak_mb = max(self.anon_peak_mb, memory.get("RssAnon", 0.0))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


@dataclass
class Server:
    """A running ``appliance serve`` on a data directory, answering at ``url``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def client(self, timeout_s: float = 600.0) -> httpx.Client:
        """Return an HTTP client of the server (a long timeout: admin calls may load a model)."""
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def in_flight(self) -> int:
        """Return how many requests the server is handling (its in-progress gauges)."""
        with self.client() as client:
            response = client.get("/metrics")
            response.raise_for_status()
        return round(
            sum(
                sample.value
                for family in text_string_to_metric_families(response.text)
                if family.name == "litestar_requests_in_progress"
                for sample in family.samples
            )
        )

    def wait_idle(self, timeout_s: float = DRAIN_TIMEOUT_S) -> float:
        """Wait until no request is in progress: wrk leaves its last ones behind when it stops.

        Returns:
            The seconds waited.

        Raises:
            RuntimeError: Requests were still in progress after ``timeout_s``.

        """
        started = time.monotonic()
        while self.in_flight():
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"requests still in progress after {timeout_s:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - started

    def wait_until_optimized(self) -> None:
        """Wait until the index has built the search graphs of everything written.

        Building them holds the interpreter (the index's binding does not release it), so the
        server answers nothing meanwhile: the wait is a long one.
        """
        # /stats omits the field when false.
        while self.stats(timeout_s=3600.0).get("index_graphs_pending", False):
            time.sleep(1.0)

    def stats(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """GET /stats."""
        with self.client(timeout_s) as client:
            response = client.get("/stats")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body


@contextlib.contextmanager
def serving(
    data_dir: Path,
    *,
    port: int,
    log: Path,
    environment: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start the production command on ``data_dir``, wait until it is ready, stop it at the end.

    Raises:
        RuntimeError: The server exited or did not become ready in time.

    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(environment or {})}
    argv = [*appliance_command(), "serve", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop(server)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.process.returncode} while starting; "
                f"see {server.log}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == httpx.codes.OK:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {READY_TIMEOUT_S:.0f} s; see {server.log}")


def stop(server: Server, timeout_s: float = 120.0) -> None:
    """Stop the server as an operator would (SIGTERM: graceful shutdown) and wait for it."""
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        server.process.kill()
        server.process.wait()
        raise RuntimeError(
            f"the server did not stop within {timeout_s:.0f} s; see {server.log}"
        ) from e
