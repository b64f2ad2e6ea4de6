"""The running appliance: its backends and services, opened and closed together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread

from appliance.backends.embedders.protocol import Embedder
from appliance.backends.indexes.protocol import VectorIndex
from appliance.backends.registry import (
    Backends,
    build_embedder,
    build_index,
    build_reranker,
    build_store,
)
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.datadir import DataDirLock
from appliance.services.catalog import CatalogService
from appliance.services.encoding import EncoderQueue
from appliance.services.feedback import FeedbackService
from appliance.services.recommend import RecommendationService
from appliance.services.reranking import RerankStage
from appliance.services.sources import PopularitySource, VectorSource
from appliance.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """Everything a request handler or an admin command needs."""

    settings: Settings
    store: DuckDBStore
    index: VectorIndex
    embedder: Embedder
    rerank: RerankStage
    encoder: EncoderQueue
    catalog: CatalogService
    feedback: FeedbackService
    recommender: RecommendationService
    popularity: PopularitySource


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    backends: Backends | None = None,
    *,
    advertise_url: str = "",
) -> AsyncIterator[Runtime]:
    """Open the data directory, load the models and bring the index in line with the store.

    Backends passed in are used as they are and left open; the ones built here are closed on
    exit, in the reverse order of opening.

    Args:
        settings: The configuration.
        backends: Pre-built backends (tests share one loaded model this way).
        advertise_url: URL written into the data directory's lock for admin commands.

    Yields:
        The open runtime.

    """
    given = backends or Backends()
    async with AsyncExitStack() as stack:
        stack.enter_context(DataDirLock(settings.data_dir, advertise_url))
        store = given.store
        if store is None:
            store = await anyio.to_thread.run_sync(build_store, settings)
            stack.callback(store.close)
        embedder = given.embedder
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(build_embedder, settings)
            stack.callback(embedder.close)
        index = given.index
        if index is None:
            index = await anyio.to_thread.run_sync(build_index, settings, embedder)
            stack.callback(index.close)
        reranker = given.reranker
        if reranker is None:
            reranker = await anyio.to_thread.run_sync(build_reranker, settings)
            stack.push_async_callback(reranker.close)
        rerank = RerankStage(reranker, settings.reranker)

        # The first forward pass initialises torch's kernels (hundreds of ms): pay it here, not
        # in the first request.
        await anyio.to_thread.run_sync(embedder.embed, ["warm-up"])
        encoder = EncoderQueue(embedder, max_batch=settings.embedder.max_batch)
        await encoder.start()
        stack.push_async_callback(encoder.close)
        catalog = CatalogService(store, index, encoder)
        stack.push_async_callback(catalog.close)
        popularity = PopularitySource(
            store,
            index,
            half_life_days=settings.recommend.popularity_half_life_days,
            refresh_seconds=settings.recommend.popularity_refresh_seconds,
        )
        runtime = Runtime(
            settings=settings,
            store=store,
            index=index,
            embedder=embedder,
            rerank=rerank,
            encoder=encoder,
            catalog=catalog,
            feedback=FeedbackService(store, index, settings.feedback),
            recommender=RecommendationService(
                store, encoder, [VectorSource(index), popularity], rerank, settings.recommend
            ),
            popularity=popularity,
        )
        summary = await catalog.reconcile()
        log.info(
            "index reconciled with the store: %d embedded, %d removed, %d failed",
            summary.embedded,
            summary.removed,
            summary.failed,
        )
        yield runtime
