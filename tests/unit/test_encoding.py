import asyncio
import threading
from collections.abc import Sequence

import anyio.to_thread
import numpy as np
import pytest

from appliance.backends.embedders.hashing import HashingEmbedder
from appliance.backends.embedders.protocol import Vectors
from appliance.errors import NotReadyError
from appliance.services.encoding import EncoderQueue

pytestmark = pytest.mark.anyio

DIM = 64
TEXTS = [f"text number {i} about topic {i % 7}" for i in range(40)]


@pytest.fixture
def anyio_backend() -> str:
    # The queue is built on asyncio primitives.
    return "asyncio"


class _FailingEmbedder(HashingEmbedder):
    """The hashing embedder, except that a batch containing "boom" fails like a broken model."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        if "boom" in texts:
            raise RuntimeError("the model failed")
        return super().embed(texts)


class _GatedEmbedder(HashingEmbedder):
    """The hashing embedder, holding each batch until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__(DIM)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.entered.set()
        self.release.wait()
        try:
            return super().embed(texts)
        finally:
            self.finished.set()


async def _started(embedder: HashingEmbedder, max_batch: int) -> EncoderQueue:
    queue = EncoderQueue(embedder, max_batch=max_batch)
    await queue.start()
    return queue


async def test_results_equal_direct_embedding() -> None:
    embedder = HashingEmbedder(DIM)
    queue = await _started(embedder, max_batch=16)
    try:
        vectors = await queue.encode(TEXTS[:5])
        assert vectors.shape == (5, DIM)
        assert vectors.dtype == np.float32
        for text, row in zip(TEXTS[:5], vectors, strict=True):
            np.testing.assert_array_equal(row, embedder.embed([text])[0])
    finally:
        await queue.close()


async def test_concurrent_requests_share_batches() -> None:
    embedder = HashingEmbedder(DIM)
    queue = await _started(embedder, max_batch=64)
    try:
        results = await asyncio.gather(*(queue.encode([t]) for t in TEXTS[:32]))
        for text, result in zip(TEXTS[:32], results, strict=True):
            assert result.shape == (1, DIM)
            np.testing.assert_array_equal(result[0], embedder.embed([text])[0])
        assert queue.stats.texts == 32
        assert queue.stats.batches < 32
        assert queue.stats.largest_batch > 1
    finally:
        await queue.close()


async def test_shared_batches_never_exceed_max_batch() -> None:
    embedder = HashingEmbedder(DIM)
    queue = await _started(embedder, max_batch=8)
    try:
        sizes = [3, 5, 2, 7, 1, 8, 4]
        requests = [TEXTS[i : i + n] for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(queue.encode(r) for r in requests))
        for request, result in zip(requests, results, strict=True):
            np.testing.assert_array_equal(result, embedder.embed(request))
        assert queue.stats.texts == sum(sizes)
        assert 1 < queue.stats.largest_batch <= 8
    finally:
        await queue.close()


async def test_request_larger_than_max_batch_is_split_and_reassembled() -> None:
    embedder = HashingEmbedder(DIM)
    queue = await _started(embedder, max_batch=4)
    try:
        vectors = await queue.encode(TEXTS[:10])
        np.testing.assert_array_equal(vectors, embedder.embed(TEXTS[:10]))
        assert queue.stats.batches == 3
        assert queue.stats.texts == 10
        assert queue.stats.largest_batch == 4
    finally:
        await queue.close()


class _RecordingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering the batches it was given."""

    def __init__(self) -> None:
        super().__init__(DIM)
        self.batches: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        return super().embed(texts)


async def test_a_split_request_is_batched_by_text_length_and_returned_in_order() -> None:
    # Lengths in no order: each batch is padded to its longest text, so like goes with like.
    texts = [("word " * ((i * 7) % 12 + 1)) + str(i) for i in range(12)]
    embedder = _RecordingEmbedder()
    queue = await _started(embedder, max_batch=4)
    try:
        vectors = await queue.encode(texts)
    finally:
        await queue.close()
    np.testing.assert_array_equal(vectors, HashingEmbedder(DIM).embed(texts))
    assert sorted(t for batch in embedder.batches for t in batch) == sorted(texts)
    longest = [max(len(t) for t in batch) for batch in embedder.batches]
    shortest = [min(len(t) for t in batch) for batch in embedder.batches]
    assert all(a <= b for a, b in zip(longest, shortest[1:], strict=False))


async def test_empty_request_returns_no_rows() -> None:
    queue = await _started(HashingEmbedder(DIM), max_batch=4)
    try:
        vectors = await queue.encode([])
        assert vectors.shape == (0, DIM)
        assert queue.stats.batches == 0
    finally:
        await queue.close()


async def test_encode_before_start_raises_not_ready() -> None:
    queue = EncoderQueue(HashingEmbedder(DIM), max_batch=4)
    with pytest.raises(NotReadyError):
        await queue.encode(["hello"])


async def test_encode_after_close_raises_not_ready() -> None:
    queue = await _started(HashingEmbedder(DIM), max_batch=4)
    assert (await queue.encode(["hello"])).shape == (1, DIM)
    await queue.close()
    with pytest.raises(NotReadyError):
        await queue.encode(["hello"])


async def test_embedder_failure_reaches_the_caller_and_the_worker_survives() -> None:
    embedder = _FailingEmbedder(DIM)
    queue = await _started(embedder, max_batch=4)
    try:
        with pytest.raises(RuntimeError, match="the model failed"):
            await queue.encode(["boom"])
        vectors = await queue.encode(["still working"])
        np.testing.assert_array_equal(vectors, embedder.embed(["still working"]))
        assert queue.stats.batches == 1
    finally:
        await queue.close()


async def test_close_during_a_batch_does_not_strand_its_caller() -> None:
    embedder = _GatedEmbedder()
    queue = await _started(embedder, max_batch=4)
    pending = asyncio.create_task(queue.encode(["in flight"]))
    try:
        await anyio.to_thread.run_sync(embedder.entered.wait)
        closing = asyncio.create_task(queue.close())
        await asyncio.sleep(0)
        embedder.release.set()
        await anyio.to_thread.run_sync(embedder.finished.wait)
        await closing
        for _ in range(20):
            await asyncio.sleep(0)
        # The batch in progress is finished, not abandoned: its caller gets its vector.
        assert pending.done()
        assert pending.result().shape == (1, embedder.dimension)
    finally:
        embedder.release.set()
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
