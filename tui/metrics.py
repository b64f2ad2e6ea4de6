"""Request rates and latency percentiles from the appliance's Prometheus text (GET /metrics).

The server exports cumulative counters (``<prefix>_requests_total``) and a request-duration
histogram (``<prefix>_request_duration_seconds_bucket``), labelled by method, route path template
and status code. :class:`TrafficMeter` keeps the previous poll and turns the differences into
requests per second and p50/p95 latency over the interval, as Prometheus' ``rate()`` and
``histogram_quantile()`` would.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")

REQUESTS_SUFFIX = "_requests_total"
BUCKET_SUFFIX = "_request_duration_seconds_bucket"

#: Requests this dashboard makes on its own while polling; they are left out of the traffic
#: figures so that an idle appliance shows no traffic.
MONITORING = frozenset(
    {
        ("GET", "/metrics"),
        ("GET", "/health"),
        ("GET", "/stats"),
        ("GET", "/admin/errors"),
        ("GET", "/admin/config"),
        ("GET", "/admin/fusion"),
        ("GET", "/feedback"),
    }
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the exposition: a metric name, its labels and its value."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Parse the Prometheus text format, with prometheus_client's parser when it is installed.

    Args:
        text: The body of GET /metrics.

    Returns:
        Every sample, in order.

    Raises:
        ValueError: If a line cannot be parsed.

    """
    try:
        parser = importlib.import_module("prometheus_client.parser")
    except ImportError:
        return parse_text(text)
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    ]


_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_text(text: str) -> list[Sample]:
    """Parse the Prometheus text format without prometheus_client (a small subset parser).

    Args:
        text: The body of GET /metrics.

    Returns:
        Every sample, in order; comments (HELP, TYPE) are skipped.

    Raises:
        ValueError: If a line is not a sample.

    """
    samples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"line {number} is not a Prometheus sample: {line[:80]!r}")
        name, label_text, value = match.groups()
        labels: dict[str, str] = {}
        position = 0
        label_text = label_text or ""
        while position < len(label_text.rstrip()):
            label = _LABEL.match(label_text, position)
            if label is None:
                raise ValueError(f"line {number} has malformed labels: {label_text[:80]!r}")
            labels[label.group(1)] = re.sub(
                r"\\.", lambda m: _ESCAPES.get(m.group(), m.group()), label.group(2)
            )
            position = label.end()
        samples.append(Sample(name, labels, _number(value)))
    return samples


def _number(value: str) -> float:
    lowered = value.lower()
    if lowered in {"+inf", "inf"}:
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(value)


@dataclass(frozen=True, slots=True)
class RouteTraffic:
    """What one route (method and path template) has served."""

    method: str
    path: str
    total: float
    """Requests since the server started."""
    errors: float
    """Of those, answered with 4xx or 5xx."""
    per_second: float
    """Requests per second over the last interval."""
    p95_ms: float | None
    """95th percentile latency over the last interval; ``None`` without requests."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """The appliance's traffic over the interval between two polls."""

    seconds: float
    requests_per_second: float
    """Requests per second, without the dashboard's own monitoring calls."""
    p50_ms: float | None
    p95_ms: float | None
    routes: list[RouteTraffic] = field(default_factory=list)
    """Every route seen, busiest first."""


_Key = tuple[str, str, str]  # method, path, status code


@dataclass(slots=True)
class _Snapshot:
    time: float
    requests: dict[_Key, float]
    buckets: dict[tuple[_Key, float], float]


class TrafficMeter:
    """Turns successive /metrics polls into rates and percentiles.

    Args:
        exclude: (method, path) pairs left out of the totals; they still appear in the routes.

    """

    def __init__(self, exclude: Iterable[tuple[str, str]] = MONITORING) -> None:
        self.exclude = frozenset(exclude)
        self._previous: _Snapshot | None = None

    def reset(self) -> None:
        """Forget the previous poll (after the server was unreachable)."""
        self._previous = None

    def update(self, samples: Iterable[Sample], now: float) -> Traffic | None:
        """Take one poll.

        Args:
            samples: The parsed /metrics body.
            now: A monotonic clock reading, in seconds.

        Returns:
            The traffic since the previous poll, or ``None`` for the first one.

        """
        current = _snapshot(samples, now)
        previous, self._previous = self._previous, current
        if previous is None or current.time <= previous.time:
            return None
        seconds = current.time - previous.time
        requests = _deltas(current.requests, previous.requests)
        buckets = _deltas(current.buckets, previous.buckets)

        def included(key: _Key) -> bool:
            return (key[0], key[1]) not in self.exclude

        total = sum(n for key, n in requests.items() if included(key))
        overall = _merge((key, le, n) for (key, le), n in buckets.items() if included(key))
        return Traffic(
            seconds=seconds,
            requests_per_second=total / seconds,
            p50_ms=_quantile(overall, 0.5),
            p95_ms=_quantile(overall, 0.95),
            routes=_routes(current, requests, buckets, seconds),
        )


def _snapshot(samples: Iterable[Sample], now: float) -> _Snapshot:
    requests: dict[_Key, float] = defaultdict(float)
    buckets: dict[tuple[_Key, float], float] = defaultdict(float)
    for sample in samples:
        key = (
            sample.labels.get("method", ""),
            sample.labels.get("path", ""),
            sample.labels.get("status_code", ""),
        )
        if sample.name.endswith(REQUESTS_SUFFIX):
            requests[key] += sample.value
        elif sample.name.endswith(BUCKET_SUFFIX) and "le" in sample.labels:
            buckets[key, _number(sample.labels["le"])] += sample.value
    return _Snapshot(now, dict(requests), dict(buckets))


def _deltas(current: dict[K, float], previous: dict[K, float]) -> dict[K, float]:
    deltas = {}
    for key, value in current.items():
        delta = value - previous.get(key, 0.0)
        # A counter that went down was reset (the server restarted): count from zero.
        deltas[key] = value if delta < 0 else delta
    return deltas


def _merge(buckets: Iterable[tuple[_Key, float, float]]) -> dict[float, float]:
    merged: dict[float, float] = defaultdict(float)
    for _, le, count in buckets:
        merged[le] += count
    return merged


def _quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding the rank, in ms."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (upper - lower) * share) * 1000
        lower, below = upper, count
    return lower * 1000


def _routes(
    current: _Snapshot,
    requests: Mapping[_Key, float],
    buckets: Mapping[tuple[_Key, float], float],
    seconds: float,
) -> list[RouteTraffic]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    errors: dict[tuple[str, str], float] = defaultdict(float)
    recent: dict[tuple[str, str], float] = defaultdict(float)
    for (method, path, status), value in current.requests.items():
        totals[method, path] += value
        if status[:1] in {"4", "5"}:
            errors[method, path] += value
    for (method, path, _), value in requests.items():
        recent[method, path] += value
    by_route: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for ((method, path, _), le), count in buckets.items():
        by_route[method, path][le] += count
    routes = [
        RouteTraffic(
            method=method,
            path=path,
            total=total,
            errors=errors[method, path],
            per_second=recent[method, path] / seconds,
            p95_ms=_quantile(by_route.get((method, path), {}), 0.95),
        )
        for (method, path), total in totals.items()
    ]
    routes.sort(key=lambda r: (-r.total, r.path, r.method))
    return routes
