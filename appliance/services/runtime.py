"""The running appliance: its backends and services, opened and closed together."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread
import msgspec

from appliance.archive import EmbedderIdentity
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
from appliance.services.backup import BackupService
from appliance.services.caching import CachedRecommender, ContextVectorCache, ResultCache
from appliance.services.catalog import CatalogService
from appliance.services.collaborative import CollaborativeModel
from appliance.services.encoding import EncoderQueue
from appliance.services.feedback import FeedbackService
from appliance.services.impressions import ImpressionLog
from appliance.services.learning import FusionLearner
from appliance.services.recommend import RecommendationService
from appliance.services.reranking import RerankStage
from appliance.services.sources import (
    CollaborativeSource,
    HistorySource,
    NeighbourhoodSource,
    PopularitySource,
    VectorSource,
)
from appliance.services.text_sources import KeywordSource, NamedItemSource, PhraseSource
from appliance.settings import Settings

log = logging.getLogger(__name__)

#: The data directory's folder for backup archives being written or read.
SCRATCH_DIR = "scratch"


class RerankerSwitch:
    """Changes the re-ranker of the re-rank stage while the appliance runs.

    The runtime closes every re-ranker it built, once: a replaced one as soon as no call uses it,
    the one in use at shutdown. A re-ranker the caller passed in is never closed here.
    """

    def __init__(
        self,
        stage: RerankStage,
        settings: Settings,
        *,
        borrowed: Reranker | None,
        on_switch: Callable[[], None] = lambda: None,
    ) -> None:
        self._stage = stage
        self._settings = settings
        self._borrowed = borrowed
        self._on_switch = on_switch
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
                self._on_switch()
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
    cached_recommender: CachedRecommender
    """The recommender behind the result cache: what the API answers with."""
    context_vectors: ContextVectorCache
    popularity: PopularitySource
    collaborative: CollaborativeModel
    impressions: ImpressionLog
    fusion: FusionLearner
    backup: BackupService

    def caches(self) -> dict[str, ContextVectorCache | ResultCache]:
        """Return the caches by the name their figures are reported under."""
        return {
            "context_vectors": self.context_vectors,
            "results": self.cached_recommender.cache,
        }


async def _open_learning(
    stack: AsyncExitStack,
    store: DuckDBStore,
    settings: Settings,
    *,
    on_weights_changed: Callable[[], None],
) -> tuple[ImpressionLog, FusionLearner]:
    """Start the impression log and the fusion learner; ``stack`` stops them, log last."""
    impression_store = ImpressionStore(store.connection())
    stack.callback(impression_store.close)
    impressions = ImpressionLog(impression_store, settings.fusion)
    await impressions.start()
    stack.push_async_callback(impressions.close)
    fusion = FusionLearner(impressions, settings.fusion, on_weights_changed=on_weights_changed)
    await fusion.start()
    stack.push_async_callback(fusion.close)
    return impressions, fusion


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
        results = ResultCache(
            max_entries=settings.cache.results,
            ttl_seconds=settings.cache.result_ttl_seconds,
            settle_seconds=settings.recommend.popularity_refresh_seconds,
        )
        # Closes whichever re-ranker is in use by then, unless it is the caller's.
        reranker_switch = RerankerSwitch(
            rerank, settings, borrowed=given.reranker, on_switch=results.everything_changed
        )
        stack.push_async_callback(reranker_switch.close)

        # The first forward pass initialises torch's kernels (hundreds of ms): pay it here, not
        # in the first request.
        await anyio.to_thread.run_sync(embedder.embed, ["warm-up"])
        encoder = EncoderQueue(embedder, max_batch=settings.embedder.max_batch)
        await encoder.start()
        stack.push_async_callback(encoder.close)
        collaborative = CollaborativeModel(
            store, settings.collaborative, on_rebuilt=results.shared_changed, vectors=index.vectors
        )
        catalog = CatalogService(
            store,
            index,
            encoder,
            on_change=results.everything_changed,
            on_delete=collaborative.changed,
        )
        stack.push_async_callback(catalog.close)
        popularity = PopularitySource(
            store,
            index,
            half_life_days=settings.recommend.popularity_half_life_days,
            refresh_seconds=settings.recommend.popularity_refresh_seconds,
        )
        impressions, fusion = await _open_learning(
            stack, store, settings, on_weights_changed=results.everything_changed
        )

        def users_changed(user_ids: Collection[str]) -> None:
            results.users_changed(user_ids)
            collaborative.changed()

        feedback = FeedbackService(store, index, settings.feedback, on_users_changed=users_changed)
        context_vectors = ContextVectorCache(encoder, max_entries=settings.cache.context_vectors)
        recommender = RecommendationService(
            store,
            context_vectors,
            [
                VectorSource(index),
                KeywordSource(index),
                *([PhraseSource(index)] if index.phrases else []),
                NamedItemSource(index),
                CollaborativeSource(collaborative, index),
                NeighbourhoodSource(collaborative, index),
                HistorySource(index, examples=settings.recommend.history_examples),
                popularity,
            ],
            rerank,
            settings.recommend,
            titles=catalog.titles,
            index=index,
            learner=fusion,
        )
        runtime = Runtime(
            settings=settings,
            store=store,
            index=index,
            embedder=embedder,
            rerank=rerank,
            reranker_switch=reranker_switch,
            encoder=encoder,
            catalog=catalog,
            feedback=feedback,
            recommender=recommender,
            cached_recommender=CachedRecommender(recommender, results, impressions=impressions),
            context_vectors=context_vectors,
            popularity=popularity,
            collaborative=collaborative,
            impressions=impressions,
            fusion=fusion,
            backup=BackupService(
                store=store,
                index=index,
                embedder=EmbedderIdentity(name=embedder.name, dimension=embedder.dimension),
                encoder=encoder,
                catalog=catalog,
                feedback=feedback,
                # The impressions and the fusion learned from them describe the appliance
                # before: its requests, not the restored users'.
                on_restored=[
                    popularity.forget,
                    collaborative.changed,
                    impressions.forget_all,
                    fusion.forget,
                    results.everything_changed,
                ],
                scratch=settings.data_dir / SCRATCH_DIR,
            ),
        )
        # Builds in the background: serving starts without waiting for it.
        await collaborative.start()
        stack.push_async_callback(collaborative.close)
        summary = await catalog.reconcile()
        log.info(
            "index reconciled with the store: %d embedded, %d rewritten, %d removed, %d failed",
            summary.embedded,
            summary.rewritten,
            summary.removed,
            summary.failed,
        )
        await feedback.start()
        stack.push_async_callback(feedback.close)
        started = time.perf_counter()
        items = await anyio.to_thread.run_sync(store.warm_items)
        users = await anyio.to_thread.run_sync(store.warm_users)
        log.info(
            "%d items and %d users read into memory in %.1f s",
            items,
            users,
            time.perf_counter() - started,
        )
        yield runtime
