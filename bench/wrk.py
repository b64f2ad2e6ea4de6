"""Running wrk with bench/scenario.lua and reading what it reports.

wrk prints its usual summary, and the script's ``done()`` hook adds one line, ``BENCH {json}``,
with the exact counts and the latency distribution (microseconds) that the summary rounds. Both
are read: the JSON for the figures, the summary to check them against.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("scenario.lua")
_MARK = "BENCH "
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_DISTRIBUTION = re.compile(r"^\s+([\d.]+)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkError(RuntimeError):
    """wrk could not run, or printed something this module cannot read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: how many requests completed, how fast, and their latency."""

    duration_s: float
    requests: int
    """Responses received (of any status)."""
    errors: dict[str, int]
    """connect, read, write and timeout (socket errors) and status (HTTP status >= 400)."""
    percentiles_ms: dict[str, float]
    """Latency at "50", "90", "95", "99" and "99.9" percent, in milliseconds; empty when no
    response came back within the timeout."""
    mean_ms: float | None
    max_ms: float | None
    reported_rate: float | None = None
    """Requests/sec as wrk's own summary printed it."""
    non_2xx: int = 0
    """Responses with a status other than 2xx or 3xx, from wrk's summary."""
    reported_percentiles_ms: dict[str, float] | None = None
    """wrk's own "Latency Distribution" (50, 75, 90 and 99 %), rounded as it prints them."""

    @property
    def rate(self) -> float:
        """Responses per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        """Requests that failed: HTTP errors, timeouts and socket errors."""
        return sum(self.errors.values())

    @property
    def succeeded(self) -> int:
        """Responses with a status below 400 (the acknowledged ones, for writes)."""
        return self.requests - self.errors.get("status", 0)


def parse(stdout: str) -> WrkResult:
    """Read the output of a wrk run with bench/scenario.lua.

    Raises:
        WrkError: The ``BENCH`` line is missing or malformed.

    """
    lines = [line for line in stdout.splitlines() if line.startswith(_MARK)]
    if len(lines) != 1:
        raise WrkError(f"expected one {_MARK.strip()} line from the script, found {len(lines)}")
    try:
        data = json.loads(lines[0].removeprefix(_MARK))
        latency = data["latency_us"]
        # No latency recorded (no response in time): wrk reports a minimum of INT64_MIN.
        recorded = latency["min"] >= 0
        result = WrkResult(
            duration_s=data["duration_us"] / 1e6,
            requests=int(data["requests"]),
            errors={k: int(v) for k, v in data["errors"].items()},
            percentiles_ms={k: v / 1000.0 for k, v in latency["percentiles"].items() if recorded},
            mean_ms=latency["mean"] / 1000.0 if recorded else None,
            max_ms=latency["max"] / 1000.0 if recorded else None,
            reported_rate=_float(_RATE.search(stdout)),
            non_2xx=int(m.group(1)) if (m := _NON_2XX.search(stdout)) else 0,
            reported_percentiles_ms=summary_percentiles(stdout) or None,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise WrkError(f"unreadable {_MARK.strip()} line: {lines[0][:200]}") from e
    return result


def summary_percentiles(stdout: str) -> dict[str, float]:
    """Read the "Latency Distribution" that ``wrk --latency`` prints, in milliseconds."""
    return {
        f"{float(p):g}": float(value) * _TO_MS[unit]
        for p, value, unit in _DISTRIBUTION.findall(stdout)
    }


def _float(match: re.Match[str] | None) -> float | None:
    return float(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Load:
    """What one wrk run sends: a scenario mode of the script and its arguments."""

    mode: str
    first: int
    """Start of the request counter (runs with disjoint ranges never repeat a context or id)."""
    items: int
    tag: str
    words: Path
    pool: Path | None = None
    batch: int = 0

    def script_args(self) -> list[str]:
        """Return the arguments after ``--`` on wrk's command line."""
        args = [self.mode, str(self.first), str(self.items), self.tag, str(self.words)]
        if self.pool is not None:
            args += [str(self.pool), str(self.batch)]
        return args


def command(
    url: str,
    load: Load,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Return the wrk command line for one run."""
    return [
        "wrk",
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        f"--script={SCRIPT}",
        url,
        "--",
        *load.script_args(),
    ]


def run(
    url: str,
    load: Load,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 30.0,
) -> tuple[WrkResult, str]:
    """Run wrk and return its result with its raw output.

    Raises:
        WrkError: wrk is not installed, failed, or printed no result.

    """
    if shutil.which("wrk") is None:
        raise WrkError("wrk is not installed; run scripts/install-bench-tools.sh")
    argv = command(
        url,
        load,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        timeout_s=timeout_s,
    )
    done = subprocess.run(  # noqa: S603 - our own command line
        argv, capture_output=True, text=True, check=False, timeout=duration_s + timeout_s + 60
    )
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse(done.stdout), done.stdout
