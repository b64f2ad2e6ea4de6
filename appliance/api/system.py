from __future__ import annotations

from http import HTTPStatus

import anyio.to_thread
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from appliance.api.auth import PUBLIC_ACCESS
from appliance.api.limits import NOT_RATE_LIMITED, UNTIMED
from appliance.api.openapi import error_responses
from appliance.schemas.system import (
    CacheStatsOut,
    CollaborativeStatsOut,
    EncoderStatsOut,
    Health,
    ReindexResult,
    Stats,
)
from appliance.schemas.users import RebuildResult
from appliance.services.runtime import Runtime


async def reindex(runtime: Runtime) -> ReindexResult:
    """Rebuild the index from the store (POST /admin/reindex, ``appliance reindex``)."""
    summary = await runtime.catalog.reindex()
    return ReindexResult(embedded=summary.embedded, removed=summary.removed, failed=summary.failed)


async def rebuild_users(runtime: Runtime, user_id: str | None) -> RebuildResult:
    """Replay feedback into preferences (POST /admin/users/rebuild, ``appliance users rebuild``)."""
    summary = await runtime.feedback.rebuild(user_id)
    return RebuildResult(users=summary.users, max_deviation=summary.max_deviation)


class SystemController(Controller):
    """Health, counters and maintenance."""

    tags = ["system"]

    @get(
        "/health",
        summary="Readiness",
        opt={**PUBLIC_ACCESS, NOT_RATE_LIMITED: True},
        security=[{}],
    )
    async def health(self, runtime: NamedDependency[Runtime]) -> Health:
        """Ready once model, index and store are loaded (the server listens only then).

        503 while the index cannot answer (a Qdrant server that is down or lost the collection).
        """
        await anyio.to_thread.run_sync(runtime.index.check)
        return Health(
            status="ready",
            components={
                "model": runtime.embedder.name,
                "index": type(runtime.index).__name__,
                "store": f"duckdb schema v{runtime.store.schema_version()}",
                "reranker": runtime.rerank.backend,
            },
            sources=runtime.recommender.source_names,
        )

    @get("/stats", summary="Counts")
    async def stats(self, runtime: NamedDependency[Runtime]) -> Stats:
        """Return the counts, the encoder, re-rank and cache figures and the collaborative model."""
        counts = await anyio.to_thread.run_sync(runtime.store.counts)
        points = await anyio.to_thread.run_sync(runtime.index.count)
        e = runtime.encoder.stats
        model = runtime.collaborative.status()
        return Stats(
            items=counts.items,
            users=counts.users,
            feedback_events=counts.feedback_events,
            index_points=points,
            index_graphs_pending=runtime.catalog.optimization_pending,
            encoder=EncoderStatsOut(
                batches=e.batches, texts=e.texts, largest_batch=e.largest_batch
            ),
            rerank={str(status): n for status, n in runtime.rerank.outcomes.items()},
            cache={
                name: CacheStatsOut(hits=c.stats.hits, misses=c.stats.misses, entries=len(c))
                for name, c in runtime.caches().items()
            },
            collaborative=CollaborativeStatsOut(
                items=model.items,
                pairs=model.pairs,
                users=model.users,
                memory_bytes=model.memory_bytes,
                build_seconds=round(model.build_seconds, 3),
                built_at=model.built_at,
                pending=model.pending,
            ),
        )

    @post(
        "/admin/reindex",
        status_code=200,
        summary="Rebuild the vector index from the catalog",
        opt={UNTIMED: True},
    )
    async def reindex(self, runtime: NamedDependency[Runtime]) -> ReindexResult:
        """Drop the index and re-embed every item from the store."""
        return await reindex(runtime)

    @post(
        "/admin/users/rebuild",
        status_code=200,
        summary="Recompute preference vectors",
        opt={UNTIMED: True},
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def rebuild_users(
        self,
        runtime: NamedDependency[Runtime],
        user_id: str | None = Parameter(default=None, description="One user; default all"),
    ) -> RebuildResult:
        """Replay stored feedback into every user's preference vector."""
        return await rebuild_users(runtime, user_id)
