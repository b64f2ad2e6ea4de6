"""Measurements in the benchmark's own process, for comparison with the server's figures.

- The encoder alone: the appliance's embedder encoding what ingesting the ingest scenario's items
  encodes (their texts, and their phrases when the index keeps phrase vectors) in batches of the
  server's size, the ceiling of what ingest can reach end to end.
- Vector search: the data directory's vectors queried through qdrant-client's local mode (what a
  straightforward implementation would use) and through the appliance's own Qdrant Edge index,
  in-process, one query at a time; and how many of the exact nearest neighbours (local mode
  compares the query with every vector) the appliance's approximate search finds.

Both run while no server holds the data directory, so that they have the cores to themselves.
"""

from __future__ import annotations

import itertools
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from appliance.backends.embedders.protocol import Embedder, Vectors
from appliance.backends.indexes.protocol import VectorIndex
from appliance.backends.registry import build_index
from appliance.datadir import DataDirLock
from appliance.domain import FieldCondition, Item, Selection
from appliance.services.catalog import texts_to_encode
from appliance.settings import Settings
from bench import catalog

#: Nearest neighbours asked for: twice a default request's 5 results. The appliance's sources
#: retrieve at least 20 (a first page of 10 is fused from them); the reference stays at 10 so
#: that its figures compare with earlier reports.
LIMIT = 10
_PAGE = 2048
_COLLECTION = "bench"


def encoder_throughput(
    embedder: Embedder,
    items: Sequence[Item],
    *,
    request_items: int,
    batch: int,
    phrases: bool,
) -> dict[str, Any]:
    """Encode what ingesting ``items`` encodes, ``request_items`` a request; return the rates.

    Each request's items need their whole texts encoded, and their phrases where the index keeps
    phrase vectors (``texts_to_encode``); the server's encoder queue encodes them in batches of
    ``batch`` texts of about the same length, and so does this.
    """
    requests = [
        sorted(texts_to_encode(part, part if phrases else []), key=len)
        for part in (items[i : i + request_items] for i in range(0, len(items), request_items))
    ]
    embedder.embed(requests[0][:batch])  # warm-up, not timed
    started = time.perf_counter()
    for texts in requests:
        for start in range(0, len(texts), batch):
            embedder.embed(texts[start : start + batch])
    seconds = time.perf_counter() - started
    texts = sum(len(r) for r in requests)
    return {
        "items": len(items),
        "texts": texts,
        "request_items": request_items,
        "batch": batch,
        "seconds": round(seconds, 2),
        "items_per_second": round(len(items) / seconds, 1),
        "texts_per_second": round(texts / seconds, 1),
    }


def latencies(
    run: Callable[[Vectors], object], queries: Vectors, *, budget_s: float, at_least: int = 5
) -> dict[str, Any]:
    """Time ``run`` on each query vector in turn, until all are done or the budget is spent."""
    run(queries[0])  # warm-up, not timed
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    for query in queries:
        started = time.perf_counter()
        run(query)
        timings.append((time.perf_counter() - started) * 1000.0)
        if len(timings) >= at_least and time.perf_counter() > deadline:
            break
    return summary(timings)


def summary(timings_ms: Sequence[float]) -> dict[str, Any]:
    """Median, 95th percentile and mean of timings, and the rate one caller gets."""
    ordered = sorted(timings_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    mean = statistics.fmean(ordered)
    return {
        "queries": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "mean_ms": round(mean, 3),
        "queries_per_second": round(1000.0 / mean, 1),
    }


def _category_filter(n: int) -> FieldCondition:
    return FieldCondition("category", catalog.CATEGORIES[n % len(catalog.CATEGORIES)])


def read_vectors(index: VectorIndex, limit: int) -> tuple[list[str], Vectors]:
    """Return the first ``limit`` item ids of the index (in id order) and their vectors."""
    ids = sorted(index.fingerprints())[:limit]
    vectors: dict[str, Vectors] = {}
    for start in range(0, len(ids), _PAGE):
        vectors.update(index.vectors(ids[start : start + _PAGE]))
    ids = [i for i in ids if i in vectors]
    return ids, np.stack([vectors[i] for i in ids]).astype(np.float32)


def search_reference(
    settings: Settings,
    embedder: Embedder,
    contexts: Sequence[str],
    *,
    max_points: int,
    budget_s: float,
) -> dict[str, Any]:
    """Query the data directory's vectors through qdrant-client local mode and Qdrant Edge.

    Both answer the same query vectors (``contexts`` encoded), without and with a filter on one
    of the 20 categories.
    """
    queries = embedder.embed(list(contexts))
    with DataDirLock(settings.data_dir):  # fails if a server holds the data directory
        index = build_index(settings, embedder)
        try:
            points = index.count()
            ids, vectors = read_vectors(index, max_points)
            ours = latencies(lambda q: index.search(q, LIMIT, Selection()), queries, budget_s=10)
            found = [[h.item_id for h in index.search(q, LIMIT, Selection())] for q in queries]
            counter = itertools.count()
            ours_filtered = latencies(
                lambda q: index.search(
                    q, LIMIT, Selection(conditions=(_category_filter(next(counter)),))
                ),
                queries,
                budget_s=10,
            )
        finally:
            index.close()
    local, load_s = _qdrant_local(ids, vectors)
    theirs = latencies(
        lambda q: local.query_points(_COLLECTION, query=q.tolist(), limit=LIMIT),
        queries,
        budget_s=budget_s,
    )
    counter = itertools.count()
    theirs_filtered = latencies(
        lambda q: local.query_points(
            _COLLECTION,
            query=q.tolist(),
            limit=LIMIT,
            query_filter=_local_filter(next(counter)),
        ),
        queries,
        budget_s=budget_s,
        at_least=3,
    )
    exact = [
        [ids[p.id] for p in local.query_points(_COLLECTION, query=q.tolist(), limit=LIMIT).points]
        for q in queries
    ]
    local.close()
    return {
        "limit": LIMIT,
        "qdrant_edge": {
            "points": points,
            "search": ours,
            "filtered": ours_filtered,
            # Only meaningful when local mode holds every point of the index.
            "recall": _recall(found, exact) if len(ids) == points else None,
        },
        "qdrant_client_local": {
            "points": len(ids),
            "load_seconds": round(load_s, 1),
            "search": theirs,
            "filtered": theirs_filtered,
        },
    }


def _recall(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Share of the exact nearest neighbours that the approximate search found, per query."""
    shares = [len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True) if e]
    return {"queries": len(shares), "mean": round(statistics.fmean(shares), 4)}


def _qdrant_local(ids: Sequence[str], vectors: Vectors) -> tuple[Any, float]:
    from qdrant_client import QdrantClient, models  # noqa: PLC0415 - only the benchmark needs it

    started = time.perf_counter()
    client = QdrantClient(location=":memory:")
    client.create_collection(
        _COLLECTION,
        vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE),
    )
    with warnings.catch_warnings():
        # Local mode warns that it is not meant for this many points, which is the point here.
        warnings.simplefilter("ignore")
        client.upload_collection(
            _COLLECTION,
            vectors=vectors,
            payload=({"category": _category_of(i)} for i in ids),
            ids=range(len(ids)),
            batch_size=1024,
        )
    return client, time.perf_counter() - started


def _category_of(item_id: str) -> str:
    # bench/catalog.py gives item n the category n % 20.
    n = int(item_id.rsplit("-", 1)[1])
    return catalog.CATEGORIES[n % len(catalog.CATEGORIES)]


def _local_filter(n: int) -> Any:
    from qdrant_client import models  # noqa: PLC0415

    return models.Filter(
        must=[
            models.FieldCondition(
                key="category",
                match=models.MatchValue(value=catalog.CATEGORIES[n % len(catalog.CATEGORIES)]),
            )
        ]
    )
