"""The running appliance: its backends and services, opened and closed together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread
import msgspec

from appliance.backends.embedders.protocol import Embedder
from appliance.backends.indexes.protocol import VectorIndex
from appliance.backends.registry import (
    RERANKERS,
    Backends,
    build_embedder,
    build_index,
    build_reranker,
    build_store,
)
from appliance.backends.rerankers.protocol import Reranker
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.backends.stores.impressions import ImpressionStore
from appliance.datadir import DataDirLock
from appliance.errors import (
    ApplianceError,
    BackendError,
    ConflictError,
    InvalidInputError,
    NotReadyError,
)
from appliance.services.catalog import CatalogService
from appliance.services.encoding import EncoderQueue
from appliance.services.feedback import FeedbackService
from appliance.services.impressions import ImpressionLog
from appliance.services.learning import FusionLearner
from appliance.services.recommend import RecommendationService
from appliance.services.reranking import RerankStage
from appliance.services.sources import PopularitySource, VectorSource
from appliance.settings import Settings

log = logging.getLogger(__name__)


class RerankerSwitch:
    """Changes the re-ranker of the re-rank stage while the appliance runs.

    The runtime closes every re-ranker it built, once: a replaced one as soon as no call uses it,
    the one in use at shutdown. A re-ranker the caller passed in is never closed here.
    """

    def __init__(
        self, stage: RerankStage, settings: Settings, *, borrowed: Reranker | None
    ) -> None:
        self._stage = stage
        self._settings = settings
        self._borrowed = borrowed
        # Building a model takes seconds; one switch at a time, and none during shutdown.
        self._lock = anyio.Lock()
        self._closed = False

    @property
    def kinds(self) -> list[str]:
        """The re-ranker kinds this installation can build."""
        return sorted(RERANKERS)

    @property
    def switchable(self) -> bool:
        """Whether the settings allow changing the re-ranker at run time."""
        return self._settings.reranker.switchable

    async def switch(self, kind: str) -> str:
        """Build a re-ranker of ``kind`` from the settings and put it in the stage's place.

        The other re-ranker settings (model, budget, URL) are the configured ones. Asking for
        the kind already in use changes nothing. The replaced re-ranker is closed once the calls
        running on it have finished.

        Returns:
            The kind now in use.

        Raises:
            ConflictError: The settings forbid switching (reranker.switchable is false).
            InvalidInputError: ``kind`` is not an installed re-ranker kind.
            BackendError: The new re-ranker could not be built (a missing model file, a
                missing extra); the previous one stays in use.
            NotReadyError: The appliance is shutting down.

        """
        if not self.switchable:
            raise ConflictError(
                "the re-ranker cannot be changed while the appliance runs: the setting "
                "reranker.switchable (APPLIANCE_RERANKER__SWITCHABLE) is false"
            )
        if kind not in RERANKERS:
            raise InvalidInputError(
                f"unknown re-ranker kind {kind!r}; choose one of: {', '.join(self.kinds)}"
            )
        async with self._lock:
            if self._closed:
                raise NotReadyError("the appliance is shutting down")
            current = self._stage.backend
            if kind == current:
                return current
            settings = msgspec.structs.replace(
                self._settings, reranker=msgspec.structs.replace(self._settings.reranker, kind=kind)
            )
            # Shielded: a cancelled request must not leave a built model unowned, or the
            # replaced one unclosed.
            with anyio.CancelScope(shield=True):
                try:
                    built = await anyio.to_thread.run_sync(build_reranker, settings)
                except ApplianceError as e:
                    raise BackendError(
                        f"cannot switch the re-ranker to {kind}: {e.message}; "
                        f"the {current} re-ranker stays in use"
                    ) from e
                previous = await self._stage.replace(built)
                log.info("re-ranker switched from %s to %s", current, built.name)
                try:
                    await self._release(previous)
                except Exception:
                    # The switch itself succeeded; a re-ranker that fails to close is only logged.
                    log.exception("closing the replaced %s re-ranker failed", current)
            return built.name

    async def close(self) -> None:
        """Close the re-ranker in use if the runtime built it; later switches are refused."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._release(self._stage.reranker)

    async def _release(self, reranker: Reranker) -> None:
        if reranker is not self._borrowed:
            await reranker.close()


@dataclass(slots=True)
class Runtime:
    """Everything a request handler or an admin command needs."""

    settings: Settings
    store: DuckDBStore
    index: VectorIndex
    embedder: Embedder
    rerank: RerankStage
    reranker_switch: RerankerSwitch
    encoder: EncoderQueue
    catalog: CatalogService
    feedback: FeedbackService
    recommender: RecommendationService
    popularity: PopularitySource
    impressions: ImpressionLog
    fusion: FusionLearner


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    backends: Backends | None = None,
    *,
    advertise_url: str = "",
) -> AsyncIterator[Runtime]:
    """Open the data directory, load the models and bring the index in line with the store.

    Backends passed in are used as they are and left open; the ones built here are closed on
    exit, in the reverse order of opening (a re-ranker switched in at run time included).

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
        rerank = RerankStage(reranker, settings.reranker)
        # Closes whichever re-ranker is in use by then, unless it is the caller's.
        reranker_switch = RerankerSwitch(rerank, settings, borrowed=given.reranker)
        stack.push_async_callback(reranker_switch.close)

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
        impression_store = ImpressionStore(store.connection())
        stack.callback(impression_store.close)
        impressions = ImpressionLog(impression_store, settings.fusion)
        await impressions.start()
        stack.push_async_callback(impressions.close)
        fusion = FusionLearner(impressions, settings.fusion)
        await fusion.start()
        stack.push_async_callback(fusion.close)
        runtime = Runtime(
            settings=settings,
            store=store,
            index=index,
            embedder=embedder,
            rerank=rerank,
            reranker_switch=reranker_switch,
            encoder=encoder,
            catalog=catalog,
            feedback=FeedbackService(store, index, settings.feedback),
            recommender=RecommendationService(
                store,
                encoder,
                [VectorSource(index), popularity],
                rerank,
                settings.recommend,
                index=index,
                impressions=impressions,
                learner=fusion,
            ),
            popularity=popularity,
            impressions=impressions,
            fusion=fusion,
        )
        summary = await catalog.reconcile()
        log.info(
            "index reconciled with the store: %d embedded, %d removed, %d failed",
            summary.embedded,
            summary.removed,
            summary.failed,
        )
        yield runtime
