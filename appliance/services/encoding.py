"""Encoding requests share forward passes.

A single worker owns the embedder. Requests that arrive while it is busy wait in a queue and are
encoded together in the next batch, so under load the encoder runs fewer, larger batches (far
cheaper per text on a CPU) without adding any wait when the appliance is idle.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
import numpy as np

from appliance.backends.embedders.protocol import Embedder, Vectors
from appliance.errors import NotReadyError


class Encoder(Protocol):
    """Turns texts into vectors without blocking the event loop."""

    async def encode(self, texts: Sequence[str]) -> Vectors:
        """Return one unit-length row per text, in order."""
        ...


@dataclass(slots=True)
class EncoderStats:
    """Counters of the encoding worker since start-up."""

    batches: int = 0
    texts: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Request:
    texts: Sequence[str]
    done: asyncio.Future[Vectors]


class EncoderQueue:
    """Batches concurrent ``encode`` calls onto one embedder worker."""

    def __init__(self, embedder: Embedder, *, max_batch: int) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.stats = EncoderStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._worker = asyncio.create_task(self._run(), name="encoder")

    async def close(self) -> None:
        """Stop the worker after the batch in progress; requests still queued fail.

        The batch being encoded is finished rather than cancelled: its thread cannot be
        stopped anyway, and its callers get their vectors.
        """
        if self._worker is not None:
            self._closing = True
            self._wakeup.set()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._queue:
            request = self._queue.popleft()
            if not request.done.done():
                request.done.set_exception(NotReadyError("the encoder is shutting down"))

    async def encode(self, texts: Sequence[str]) -> Vectors:
        """Encode texts, sharing a batch with whatever else is waiting.

        Args:
            texts: Texts to encode; more than ``max_batch`` are split across batches.

        Returns:
            One unit-length row per text, in order.

        Raises:
            NotReadyError: The encoder is not running.

        """
        if self._worker is None or self._closing:
            raise NotReadyError("the encoder is not running")
        if not texts:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        if len(texts) <= self.max_batch:
            request = _Request(texts, loop.create_future())
            self._queue.append(request)
            self._wakeup.set()
            return await request.done
        # A batch is padded to its longest text: batches of texts of about the same length
        # encode the same texts about twice as fast as batches in the caller's order.
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [by_length[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)]
        requests = [_Request([texts[i] for i in part], loop.create_future()) for part in parts]
        self._queue.extend(requests)
        self._wakeup.set()
        vectors = np.empty((len(texts), self.embedder.dimension), dtype=np.float32)
        for part, request in zip(parts, requests, strict=True):
            vectors[part] = await request.done
        return vectors

    async def _run(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and not self._closing:
                batch = self._take_batch()
                texts = [t for r in batch for t in r.texts]
                try:
                    vectors = await anyio.to_thread.run_sync(self.embedder.embed, texts)
                except Exception as e:  # noqa: BLE001 - handed to every waiting caller
                    for r in batch:
                        if not r.done.done():
                            r.done.set_exception(e)
                    continue
                self.stats.batches += 1
                self.stats.texts += len(texts)
                self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
                start = 0
                for r in batch:
                    end = start + len(r.texts)
                    if not r.done.done():  # the caller may have been cancelled
                        r.done.set_result(vectors[start:end])
                    start = end

    def _take_batch(self) -> list[_Request]:
        batch = [self._queue.popleft()]
        size = len(batch[0].texts)
        while self._queue and size + len(self._queue[0].texts) <= self.max_batch:
            request = self._queue.popleft()
            batch.append(request)
            size += len(request.texts)
        return batch
