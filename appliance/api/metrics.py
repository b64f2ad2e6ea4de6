"""GET /metrics: Prometheus text format.

Request counts and latencies come from Litestar's Prometheus middleware, labelled with the route
template (``/users/{user_id}``, not each user's path). The appliance's own figures (records held,
re-rank outcomes, encoder batching) are read when the metrics are scraped, never updated per
request.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio.to_thread
from litestar import get
from litestar.di import NamedDependency
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
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


def prometheus_config() -> PrometheusConfig:
    """Configure the request metrics' middleware."""
    return PrometheusConfig(
        app_name="appliance",
        group_path=True,
        buckets=LATENCY_BUCKETS,
        exclude_opt_key=NOT_MEASURED,
    )


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
