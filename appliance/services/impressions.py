"""Logging impressions off the request path.

A response hands its impression to ``ImpressionLog.record``, which only appends it to a queue in
memory. One writer task takes what waits, in batches, and stores each batch in one transaction
on a worker thread (``ImpressionStore.append``), at least every ``flush_seconds`` and at once
when a batch is full. It also applies the retention limits from time to time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread

from appliance.backends.stores.impressions import (
    Impression,
    ImpressionStore,
    StoredImpression,
    TrainingSet,
)
from appliance.services.background import stop
from appliance.settings import FusionSettings

log = logging.getLogger(__name__)

#: Seconds between two applications of the retention limits.
PRUNE_INTERVAL = 60.0


@dataclass(slots=True)
class ImpressionStats:
    """Counters of the impression log since start-up."""

    logged: int = 0
    """Impressions handed in by responses."""
    written: int = 0
    candidate_rows: int = 0
    dropped: int = 0
    """Impressions refused because too many were waiting (fusion.max_pending)."""
    failed: int = 0
    """Impressions lost to a failed write (see the server log)."""
    batches: int = 0
    largest_batch: int = 0
    write_seconds: float = 0.0
    """Time spent in the writes, on the writer's thread."""
    pruned: int = 0


class ImpressionLog:
    """Queues impressions and writes them in batches on a worker thread."""

    def __init__(self, store: ImpressionStore, settings: FusionSettings) -> None:
        self.store = store
        self.settings = settings
        self.stats = ImpressionStats()
        self._pending: collections.deque[Impression] = collections.deque()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        # One write at a time: the writer task, and callers that need everything stored now.
        self._writing = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._pruned_at = float("-inf")

    @property
    def label_window(self) -> timedelta:
        """How long after an impression feedback that names no request still answers it."""
        return timedelta(hours=self.settings.label_window_hours)

    @property
    def pending(self) -> int:
        """Impressions waiting to be written."""
        return len(self._pending)

    async def start(self) -> None:
        """Apply the retention limits once, then start the writer task."""
        await self._prune()
        self._worker = asyncio.create_task(self._run(), name="impression-writer")

    async def close(self) -> None:
        """Stop the writer and write what still waits."""
        await stop(self._worker)
        self._worker = None
        with anyio.CancelScope(shield=True):
            await self.flush()

    def record(self, impression: Impression) -> None:
        """Queue an impression for writing; never waits (runs on the event loop)."""
        if not self.settings.log_impressions:
            return
        self.stats.logged += 1
        if len(self._pending) >= self.settings.max_pending:
            self.stats.dropped += 1
            return
        self._pending.append(impression)
        self._arrived.set()
        if len(self._pending) >= self.settings.batch_size:
            self._full.set()

    async def flush(self) -> None:
        """Write every impression waiting now, one batch at a time."""
        async with self._writing:
            while self._pending:
                size = min(len(self._pending), self.settings.batch_size)
                batch = [self._pending.popleft() for _ in range(size)]
                started = time.perf_counter()
                try:
                    rows = await anyio.to_thread.run_sync(self.store.append, batch)
                except Exception:
                    self.stats.failed += len(batch)
                    log.exception("writing %d impressions failed", len(batch))
                    continue
                self.stats.write_seconds += time.perf_counter() - started
                self.stats.written += len(batch)
                self.stats.candidate_rows += rows
                self.stats.batches += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            if not self._pending:
                self._arrived.clear()
                self._full.clear()

    async def forget_user(self, user_id: str) -> int:
        """Delete a user's impressions, the ones still waiting included.

        Returns:
            How many were deleted.

        """
        await self.flush()
        return await anyio.to_thread.run_sync(self.store.delete_user, user_id)

    async def forget_all(self) -> int:
        """Delete every impression, the ones still waiting included.

        For a restore: the impressions of the appliance before it name users and requests that
        the restored feedback knows nothing of, and could be mistaken for what it answers.

        Returns:
            How many stored impressions were deleted.

        """
        async with self._writing:
            self._pending.clear()
            self._arrived.clear()
            self._full.clear()
            return await anyio.to_thread.run_sync(self.store.clear)

    async def get(self, request_id: str) -> StoredImpression | None:
        """Return one impression with its labels so far (writing what waits first)."""
        await self.flush()
        return await anyio.to_thread.run_sync(self.store.impression, request_id, self.label_window)

    async def training_set(self) -> TrainingSet:
        """Return the labelled candidates of the newest impressions (writing what waits first)."""
        await self.flush()
        return await anyio.to_thread.run_sync(
            self.store.training_set, self.label_window, self.settings.max_training_impressions
        )

    async def count(self) -> int:
        """Return how many impressions are stored."""
        return await anyio.to_thread.run_sync(self.store.count)

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            # A quiet appliance writes a batch per flush interval; a busy one, full batches.
            with anyio.move_on_after(self.settings.flush_seconds):
                await self._full.wait()
            # Shielded: closing cancels waits, never a write half-way.
            with anyio.CancelScope(shield=True):
                await self.flush()
            if time.monotonic() - self._pruned_at > PRUNE_INTERVAL:
                await self._prune()

    async def _prune(self) -> None:
        async with self._writing:
            older_than = datetime.now(UTC) - timedelta(days=self.settings.retention_days)
            try:
                self.stats.pruned += await anyio.to_thread.run_sync(
                    self.store.prune, older_than, self.settings.max_impressions
                )
            except Exception:
                log.exception("deleting expired impressions failed")
            self._pruned_at = time.monotonic()
