"""GET /metrics: Prometheus text format.

Request counts and latencies come from ``RequestMetrics``, labelled with the route template
(``/users/{user_id}``, not each user's path), under the names and labels of Litestar's Prometheus
middleware. The appliance's own figures (records held, re-rank outcomes, encoder batching) are
read when the metrics are scraped, never updated per request.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import cast

import anyio.to_thread
from litestar import get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.prometheus import PrometheusController
from litestar.response import Response
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from appliance.services.reranking import RerankStatus
from appliance.services.runtime import Runtime

#: Prometheus' text format; Litestar adds the charset parameter itself to a text/* media type.
MEDIA_TYPE = CONTENT_TYPE_LATEST.removesuffix("; charset=utf-8")

#: A route handler whose ``opt`` holds this key is left out of the request metrics.
NOT_MEASURED = "not_measured"

#: Request duration buckets, in seconds: fine enough between 1 ms and 500 ms to estimate p50 and
#: p95 of every endpoint, with a tail for re-indexing and re-ranker switches.
LATENCY_BUCKETS: list[str | float] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
]  # fmt: skip


#: The request metrics' ``app_name`` label.
APP_NAME = "appliance"
_LABELS = ("method", "path", "status_code", "app_name")
_REQUESTS = Counter("litestar_requests_total", "Total requests", _LABELS)
_ERRORS = Counter("litestar_requests_error_total", "Total errors in requests", _LABELS)
_DURATIONS = Histogram(
    "litestar_request_duration_seconds",
    "Request duration, in seconds",
    _LABELS,
    buckets=LATENCY_BUCKETS,
)
# Labelled like the others, with the status an answer has before it is known.
_IN_PROGRESS = Gauge(
    "litestar_requests_in_progress",
    "Total requests currently in progress",
    _LABELS,
    multiprocess_mode="livesum",
)


class RequestMetrics(ASGIMiddleware):
    """Count and time each request by method, route template and status.

    The series of Litestar's Prometheus middleware, which took about a tenth of the event loop's
    time on a feedback write: this one builds no request object and looks each route's series up
    once.
    """

    scopes = (ScopeType.HTTP,)
    exclude_opt_key = NOT_MEASURED

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Pass the request on and record its status and duration."""
        method, path = cast("HTTPScope", scope)["method"], scope["path_template"]
        in_progress = _in_progress(method, path)
        in_progress.inc()
        started = time.perf_counter()
        status, duration = 200, 0.0

        async def measured_send(message: Message) -> None:
            nonlocal status, duration
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                duration = time.perf_counter() - started
            await send(message)

        try:
            await next_app(scope, receive, measured_send)
        finally:
            in_progress.dec()
            requests, durations = _answered(method, path, status)
            requests.inc()
            durations.observe(duration)
            if status >= 500:  # noqa: PLR2004 - the server errors
                _ERRORS.labels(method, path, status, APP_NAME).inc()


@functools.cache
def _in_progress(method: str, path: str) -> Gauge:
    return _IN_PROGRESS.labels(method, path, 200, APP_NAME)


@functools.cache
def _answered(method: str, path: str, status: int) -> tuple[Counter, Histogram]:
    labels = (method, path, status, APP_NAME)
    return _REQUESTS.labels(*labels), _DURATIONS.labels(*labels)


class ApplianceCollector:
    """The appliance's own figures, read at scrape time.

    Built on the event loop, where it copies the counters that live there; ``collect`` then
    runs in a worker thread, because counting the stored records reads the database and index.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._outcomes = dict(runtime.rerank.outcomes)
        self._encoder = (runtime.encoder.stats.batches, runtime.encoder.stats.texts)
        self._reranker = runtime.rerank.backend
        self._caches = {
            name: (c.stats.hits, c.stats.misses, len(c)) for name, c in runtime.caches().items()
        }

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family."""
        counts = self._runtime.store.counts()
        for name, value, text in (
            ("items", counts.items, "Items in the catalog."),
            ("users", counts.users, "Users with feedback."),
            ("feedback_events", counts.feedback_events, "Stored feedback events."),
            ("index_points", self._runtime.index.count(), "Vectors in the index."),
        ):
            yield GaugeMetricFamily(f"appliance_{name}", text, value=value)
        outcomes = CounterMetricFamily(
            "appliance_rerank_outcomes",
            "What became of the re-rank stage, per request since start-up.",
            labels=["status"],
        )
        for status in RerankStatus:
            outcomes.add_metric([status.value], self._outcomes.get(status, 0))
        yield outcomes
        batches, texts = self._encoder
        yield CounterMetricFamily(
            "appliance_encoder_batches", "Encoder forward passes since start-up.", value=batches
        )
        yield CounterMetricFamily(
            "appliance_encoder_texts", "Texts encoded since start-up.", value=texts
        )
        yield InfoMetricFamily(
            "appliance_reranker", "The re-ranker in use.", value={"kind": self._reranker}
        )
        hits = CounterMetricFamily(
            "appliance_cache_hits", "Cache lookups answered since start-up.", labels=["cache"]
        )
        misses = CounterMetricFamily(
            "appliance_cache_misses", "Cache lookups not answered since start-up.", labels=["cache"]
        )
        entries = GaugeMetricFamily("appliance_cache_entries", "Entries held.", labels=["cache"])
        for name, (hit, miss, held) in self._caches.items():
            hits.add_metric([name], hit)
            misses.add_metric([name], miss)
            entries.add_metric([name], held)
        yield from (hits, misses, entries)


def _render(collector: ApplianceCollector) -> bytes:
    return generate_latest(REGISTRY) + generate_latest(collector)


class MetricsController(PrometheusController):
    """GET /metrics: the request metrics and the appliance's own, in one text."""

    tags = ["system"]

    @get(
        opt={NOT_MEASURED: True},
        summary="Prometheus metrics",
        media_type=MEDIA_TYPE,
    )
    async def get(self, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        """Request counts and latency histograms by route template, and the appliance's counts."""
        text = await anyio.to_thread.run_sync(_render, ApplianceCollector(runtime))
        return Response(text, media_type=MEDIA_TYPE)
