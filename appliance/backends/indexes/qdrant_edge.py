from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from appliance.backends.indexes.protocol import IndexEntry, Vector
from appliance.backends.indexes.qdrant_common import (
    KEYWORDS,
    META,
    PHRASES,
    KeywordAnalyser,
    PayloadReads,
    best_first,
    new_fields,
    point_payload,
    to_filter,
    via_nearest_example,
)
from appliance.cpus import usable_cpus
from appliance.domain import Hit, Range, Selection, point_id
from appliance.errors import BackendError, ConfigError

_SCROLL_PAGE = 2048
#: Points an upsert converts while queries wait (see ``upsert``): about 5 ms of queries' time.
_POINTS_PER_PAUSE = 200
#: The dense vector is the unnamed one (as in indexes built before keyword search existed).
_DENSE = ""


#: Beam of the phrase vectors' graph build. Comparing two items' phrases compares every pair of
#: their vectors: at the dense graph's 100 the build took six times as long as the dense one's
#: (28 against 4 s for 50,000 items of three phrases), holding the interpreter lock. At 32 it
#: takes 10 s, and searching with twice the dense search's beam makes up the recall (on the
#: demo catalog, of the exact 20 best items: 0.937, against 0.932 at 100 with the dense beam).
_PHRASE_EF_CONSTRUCT = 32
#: Phrase vectors score an item by the best of them.
_MAX_SIM = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
#: How a metadata field is indexed for filtering, by ``field_kind``.
_SCHEMAS = {"keyword": qe.PayloadSchemaType.Keyword, "float": qe.PayloadSchemaType.Float}
#: Stored precisions of the dense vectors, by the name the settings and the shard's config use.
_DATATYPES = {
    "float32": qe.VectorStorageDatatype.Float32,
    "float16": qe.VectorStorageDatatype.Float16,
}
#: The shard's own record of its configuration, in its folder.
_SHARD_CONFIG = "edge_config.json"


def _stored_precision(path: Path) -> str:
    """Return the precision an existing shard's dense vectors are stored in.

    The shard records its configuration as JSON; one that names no datatype has Qdrant's
    default, float32 (indexes written before the precision was a setting).
    """
    try:
        config = json.loads((path / _SHARD_CONFIG).read_text(encoding="utf-8"))
        stored = str(config["vectors"][_DENSE].get("datatype", "float32"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Without a readable record the load itself checks the vectors against float32.
        return "float32"
    return stored if stored in _DATATYPES else "float32"


class _SharedShard:
    """The open shard, which queries share and which a writer can close and open again.

    Queries run concurrently; a swap waits until the running ones have finished and holds new
    ones back until it is done, so none runs on a closed shard. A writer can pause them the same
    way for work that must not share the interpreter with them (see ``QdrantEdgeIndex.upsert``).
    """

    def __init__(self, shard: qe.EdgeShard) -> None:
        self._shard = shard
        self._changed = threading.Condition()
        self._using = 0
        self._pausing = 0

    @contextmanager
    def use(self) -> Iterator[qe.EdgeShard]:
        with self._changed:
            self._changed.wait_for(lambda: not self._pausing)
            self._using += 1
        try:
            yield self._shard
        finally:
            with self._changed:
                self._using -= 1
                if not self._using:
                    self._changed.notify_all()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Wait until the running queries have finished and hold new ones back meanwhile."""
        with self._changed:
            self._pausing += 1
            self._changed.wait_for(lambda: not self._using)
        try:
            yield
        finally:
            with self._changed:
                self._pausing -= 1
                self._changed.notify_all()

    def swap(self, reopen: Callable[[qe.EdgeShard], qe.EdgeShard]) -> None:
        """Replace the shard by what ``reopen`` makes of it, with no query running."""
        with self.paused():
            self._shard = reopen(self._shard)


class QdrantEdgeIndex(PayloadReads):
    """Qdrant's engine in-process: an ``EdgeShard`` in a folder of the data directory."""

    # qdrant-edge-py keeps the interpreter lock through a query: measured at 100K items, eight
    # threads together do 845 dense searches a second against 836 for one thread alone.
    searches_hold_interpreter = True

    def __init__(
        self,
        path: Path,
        *,
        dimension: int,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int = 160,
        quantized: bool = True,
        precision: str = "float16",
        text_language: str = "english",
        segment_items: int = 50_000,
        phrases: bool = False,
        search_threads: int = 0,
    ) -> None:
        self.dimension = dimension
        # Always a number: given none, the engine keeps what the shard was opened with last.
        self._search_threads = search_threads or usable_cpus()
        self.phrases = phrases
        self._path = path
        self._segment_items = segment_items
        # Points written since the graphs were last built (since the shard opened, at first).
        self._unbuilt = 0
        self._keywords = KeywordAnalyser(text_language)
        self._precision = precision
        self._hnsw = qe.HnswIndexConfig(
            m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=10_000
        )
        self._phrase_graph = qe.HnswIndexConfig(
            m=hnsw_m, ef_construct=_PHRASE_EF_CONSTRUCT, full_scan_threshold=10_000
        )
        # An int8 copy of each vector, in memory, walks the graph; the float vectors rescore the
        # best twice ``limit`` of it. Measured at 100K items: a search 35% faster than on the
        # float vectors with a beam wider by a quarter, and nearer the exact answer.
        self._quantization = (
            qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=True) if quantized else None
        )
        rescoring = (
            qe.QuantizationSearchParams(rescore=True, oversampling=2.0) if quantized else None
        )
        self._search_params = qe.SearchParams(hnsw_ef=hnsw_ef, quantization=rescoring)
        self._phrase_search_params = qe.SearchParams(hnsw_ef=2 * hnsw_ef, quantization=rescoring)
        # Writes and schema changes are serialised; queries run concurrently.
        self._write_lock = threading.Lock()
        shard = self._open()
        self._indexed_fields: dict[str, str] = {
            name.removeprefix(f"{META}."): str(info.data_type)
            for name, info in shard.info().payload_schema.items()
        }
        self._shard = _SharedShard(shard)

    def _open(self) -> qe.EdgeShard:
        try:
            if self._path.exists() and any(self._path.iterdir()):
                # Loading with the config checks that the stored vectors have our dimension and
                # applies the graph and quantization settings (a changed quantization at the
                # next optimize). The precision is the stored one: vectors are not converted in
                # place (`appliance reindex` rebuilds them). The keyword vectors are left out,
                # since an index written before they existed lacks them: they are added if
                # missing (a no-op otherwise), and the entries without them are listed by
                # ``outdated`` until rewritten. So are the phrase vectors (when kept), which the
                # engine checks when they are named: an index is opened as it was written, with
                # them or without, and given them if it lacks them and should have them.
                precision = _stored_precision(self._path)
                wanted = self._config(precision, keywords=False, phrases=self.phrases)
                try:
                    shard = qe.EdgeShard.load(str(self._path), wanted)
                except Exception as first:  # noqa: BLE001 - the binding raises plain Exceptions
                    try:
                        shard = self._load_otherwise(precision, wanted)
                    except Exception:  # noqa: BLE001
                        # Not a matter of phrase vectors then (another dimension, damaged
                        # files): what the first attempt said is what to report.
                        raise first from None
                shard.update(
                    qe.UpdateOperation.create_sparse_vector(KEYWORDS, modifier=qe.Modifier.Idf)
                )
            else:
                shard = qe.EdgeShard.create(
                    str(self._path),
                    self._config(self._precision, keywords=True, phrases=self.phrases),
                )
                shard.update(
                    qe.UpdateOperation.create_field_index(
                        "seq", qe.IntegerIndexParams(lookup=False, range=True)
                    )
                )
        except Exception as e:  # the binding raises plain Exceptions for I/O and format errors
            # `appliance reindex` would have to open it too; start-up rebuilds a missing index.
            raise ConfigError(
                f"cannot open the vector index in {self._path}: {e}; it is derived from the "
                "database: remove that folder and start again to rebuild it (every item is "
                "embedded again)"
            ) from e
        return shard

    def _load_otherwise(self, precision: str, wanted: qe.EdgeConfig) -> qe.EdgeShard:
        """Load an index that differs from ``wanted`` in having phrase vectors or not."""
        if self.phrases:
            self._add_phrase_vectors(precision)
            return qe.EdgeShard.load(str(self._path), wanted)
        # Written with phrase vectors: they stay, unused.
        return qe.EdgeShard.load(
            str(self._path), self._config(precision, keywords=False, phrases=True)
        )

    def _add_phrase_vectors(self, precision: str) -> None:
        """Give an index written before phrase vectors their (empty) storage.

        The shard is opened again afterwards with the whole config, which sets their graph's
        parameters (the operation that adds them takes none).
        """
        shard = qe.EdgeShard.load(
            str(self._path), self._config(precision, keywords=False, phrases=False)
        )
        try:
            shard.update(
                qe.UpdateOperation.create_dense_vector(
                    PHRASES,
                    self.dimension,
                    qe.Distance.Cosine,
                    multivector_config=_MAX_SIM,
                    datatype=_DATATYPES[precision],
                )
            )
            shard.flush()
        finally:
            shard.close()

    def _config(self, precision: str, *, keywords: bool, phrases: bool) -> qe.EdgeConfig:
        dense = qe.EdgeVectorParams(
            size=self.dimension, distance=qe.Distance.Cosine, datatype=_DATATYPES[precision]
        )
        return qe.EdgeConfig(
            vectors={
                _DENSE: dense,
                PHRASES: qe.EdgeVectorParams(
                    size=self.dimension,
                    distance=qe.Distance.Cosine,
                    datatype=_DATATYPES[precision],
                    multivector_config=_MAX_SIM,
                    hnsw_config=self._phrase_graph,
                ),
            }
            if phrases
            else dense,
            # IDF is computed by the engine over the points it holds, so it follows the catalog
            # as items come and go.
            sparse_vectors={KEYWORDS: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
            if keywords
            else None,
            hnsw_config=self._hnsw,
            quantization_config=self._quantization,
            max_search_threads=self._search_threads,
            # Segments are merged only up to ``segment_items`` points, so that no graph is built
            # over more of them at once (Qdrant's bound is in kilobytes of dense vectors; the
            # precisions are named as numpy names their dtypes).
            optimizers=qe.EdgeOptimizersConfig(
                max_segment_size=-(
                    -self._segment_items * self.dimension * np.dtype(precision).itemsize // 1024
                )
            ),
        )

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Insert or replace items, indexing new metadata fields for filtering."""
        if not entries:
            return
        points: list[qe.Point] = []
        for start in range(0, len(entries), _POINTS_PER_PAUSE):
            # The binding converts a payload value by trying one type after another, and lets
            # go of the interpreter lock for each type that fails; a query keeps the lock
            # throughout, so with queries running each hand-back waited for one. Measured with
            # one thread searching 40,000 items without a pause: 10-23 s to write 1,000 points
            # against 0.06 s alone. Queries wait for a short chunk instead.
            with self._shard.paused():
                points.extend(self._point(e) for e in entries[start : start + _POINTS_PER_PAUSE])
        with self._write_lock:
            try:
                with self._shard.use() as shard:
                    self._index_new_fields(shard, entries)
                    shard.update(qe.UpdateOperation.upsert_points(points))
            except Exception as e:  # the binding raises plain Exceptions
                raise BackendError(f"the vector index refused a write: {e}") from e
            self._unbuilt += len(points)
            if self._unbuilt >= self._segment_items:
                # New points gather in one segment that is searched exhaustively until an
                # optimize builds its graph, however large it grows: a bulk load builds one
                # graph per ``segment_items`` points as it goes, instead of one over all of
                # them at its end. Measured at 400K items: 41 s of graph building in
                # segments of 50K against 280 s in one, a build peak of 2.6 against 3.6 GB,
                # and recall@10 0.989 against 0.936.
                self._optimize()
                # The shard keeps memory it used to build a segment until it is closed
                # (measured: 100K items loaded left 250 MB anonymous, the same index opened
                # afresh 87 MB); opened again, it maps what it built from its files instead.
                # At 1M items, 20 segments, each reopening takes 0.1-3 s.
                self._shard.swap(self._reopen)

    def _point(self, entry: IndexEntry) -> qe.Point:
        vectors: dict[str, Any] = {
            _DENSE: np.asarray(entry.vector, dtype=np.float32).tolist(),
            KEYWORDS: self._keywords.document(entry.text),
        }
        if self.phrases and entry.phrases is not None and len(entry.phrases):
            vectors[PHRASES] = np.asarray(entry.phrases, dtype=np.float32).tolist()
        return qe.Point(
            id=point_id(entry.item_id),
            vector=vectors,
            payload=point_payload(entry, self._keywords.name, phrases=self.phrases),
        )

    def _reopen(self, shard: qe.EdgeShard) -> qe.EdgeShard:
        shard.flush()
        shard.close()
        return self._open()

    def _index_new_fields(self, shard: qe.EdgeShard, entries: Sequence[IndexEntry]) -> None:
        for name, kind in new_fields(entries, self._indexed_fields):
            schema = _SCHEMAS[kind]
            shard.update(qe.UpdateOperation.create_field_index(f"{META}.{name}", schema))
            self._indexed_fields[name] = str(schema)

    def delete(self, item_ids: Iterable[str]) -> None:
        """Remove items; unknown ids are ignored."""
        ids: list[qe.PointId] = [point_id(i) for i in item_ids]
        if ids:
            with self._write_lock, self._shard.use() as shard:
                shard.update(qe.UpdateOperation.delete_points(ids))

    def search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return the nearest admitted items, best first."""
        return self._nearest(
            qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            limit,
            selection,
            self._search_params,
        )

    def keyword_search(self, text: str, limit: int, selection: Selection) -> list[Hit]:
        """Return the admitted items whose words best match ``text``, by BM25."""
        query = self._keywords.query(text)
        if not query.indices:
            return []
        return self._nearest(qe.Query.Nearest(query, using=KEYWORDS), limit, selection, None)

    def phrase_search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return the admitted items whose best phrase is nearest ``vector``, best first."""
        if not self.phrases:
            return []
        return self._nearest(
            # A query of one vector: MaxSim scores each item by its best phrase.
            qe.Query.Nearest([np.asarray(vector, dtype=np.float32).tolist()], using=PHRASES),
            limit,
            selection,
            self._phrase_search_params,
        )

    def _nearest(
        self, query: qe.Query, limit: int, selection: Selection, params: qe.SearchParams | None
    ) -> list[Hit]:
        """Run a nearest-neighbour query among the admitted items and return its hits."""
        if selection.admits_nothing:
            return []
        points = self._query(
            qe.QueryRequest(
                limit=limit,
                query=query,
                filter=to_filter(selection, _FILTERS),
                with_payload=["item_id"],
                params=params,
            )
        )
        # ``payload`` is converted from the engine's at every read: read it once a hit.
        return best_first(
            [Hit(payload["item_id"], float(p.score)) for p in points if (payload := p.payload)]
        )

    def recommend(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        limit: int,
        selection: Selection,
    ) -> list[Hit]:
        """Qdrant's recommend query with the best-score strategy, on the examples' vectors."""
        liked, disliked = self._examples(positive, negative)
        if not liked or selection.admits_nothing:
            return []
        points = self._query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.RecommendBestScore(
                    qe.RecommendQuery(
                        positives=[v.tolist() for v in liked.values()],
                        negatives=[v.tolist() for v in disliked],
                    )
                ),
                filter=to_filter(selection, _FILTERS),
                with_payload=["item_id"],
                with_vector=[_DENSE],
                params=self._search_params,
            )
        )
        found = []
        for p in points:
            vector: Any = p.vector
            payload = p.payload
            if payload and vector is not None:
                raw = vector[_DENSE] if isinstance(vector, dict) else vector
                found.append(
                    (payload["item_id"], float(p.score), np.asarray(raw, dtype=np.float32))
                )
        return via_nearest_example(found, liked)

    def newest(self, limit: int, selection: Selection) -> list[str]:
        """Return admitted item ids, most recently added first."""
        if selection.admits_nothing:
            return []
        records, _ = self._scroll(
            qe.ScrollRequest(
                limit=limit,
                filter=to_filter(selection, _FILTERS),
                with_payload=["item_id"],
                order_by=qe.OrderBy("seq", direction=qe.Direction.Desc),
            )
        )
        return [payload["item_id"] for r in records if (payload := r.payload)]

    def phrase_vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored phrase vectors of the items that have them, a row per phrase."""
        if not self.phrases or not item_ids:
            return {}
        with self._shard.use() as shard:
            records = shard.retrieve(
                [point_id(i) for i in item_ids], with_payload=["item_id"], with_vector=[PHRASES]
            )
        out: dict[str, Vector] = {}
        for record in records:
            vector: Any = record.vector
            payload = record.payload
            if payload and isinstance(vector, dict) and vector.get(PHRASES):
                out[payload["item_id"]] = np.asarray(vector[PHRASES], dtype=np.float32)
        return out

    def hashed_vectors(self, item_ids: Sequence[str]) -> dict[str, tuple[Vector, str]]:
        """Return the stored vectors of the items that exist, with their content hashes."""
        if not item_ids:
            return {}
        # One retrieve reads each point's vector and payload together.
        with self._shard.use() as shard:
            records = shard.retrieve(
                [point_id(i) for i in item_ids],
                with_payload=["item_id", "hash"],
                with_vector=[_DENSE],
            )
        out: dict[str, tuple[Vector, str]] = {}
        for record in records:
            vector: Any = record.vector
            payload = record.payload
            if payload and vector is not None:
                raw = vector[_DENSE] if isinstance(vector, dict) else vector
                out[payload["item_id"]] = (
                    np.asarray(raw, dtype=np.float32),
                    payload.get("hash", ""),
                )
        return out

    def _payloads(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        offset: qe.PointId | None = None
        while True:
            # A page at a time: the shard may be reopened between pages, and the offset (a
            # point id) carries over.
            records, offset = self._scroll(
                qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, with_payload=fields)
            )
            yield from (payload for record in records if (payload := record.payload))
            if offset is None:
                return

    def _query(self, request: qe.QueryRequest) -> list[qe.ScoredPoint]:
        with self._shard.use() as shard:
            return shard.query(request)

    def _scroll(self, request: qe.ScrollRequest) -> tuple[list[qe.Record], qe.PointId | None]:
        with self._shard.use() as shard:
            return shard.scroll(request)

    def _info(self) -> qe.ShardInfo:
        with self._shard.use() as shard:
            return shard.info()

    def count(self) -> int:
        """Return the number of items."""
        with self._shard.use() as shard:
            return int(shard.count(qe.CountRequest(exact=True)))

    def check(self) -> None:
        """Pass: the shard is open in this process (a failing disk fails the writes instead)."""

    def indexed_vectors(self) -> int:
        """Return how many vectors the engine has in search structures (graphs, sparse indexes).

        Points written since the last optimize are searched exhaustively and not counted.
        """
        return int(self._info().indexed_vectors_count)

    def segments(self) -> int:
        """Return how many segments the shard holds, each searched on its own.

        One of them takes new points; the others are immutable, each with its own graph.
        """
        return int(self._info().segments_count)

    def optimize(self) -> None:
        """Merge segments and build HNSW graphs for what was written since the last call."""
        with self._write_lock:
            self._optimize()

    def _optimize(self) -> None:
        with self._shard.use() as shard:
            shard.optimize()
        self._unbuilt = 0

    def clear(self) -> None:
        """Delete the shard's files and start an empty one."""
        with self._write_lock:
            self._shard.swap(self._recreate)
            self._indexed_fields = {}
            self._unbuilt = 0

    def _recreate(self, shard: qe.EdgeShard) -> qe.EdgeShard:
        shard.close()
        shutil.rmtree(self._path, ignore_errors=True)
        return self._open()

    def close(self) -> None:
        """Flush and release the shard."""
        with self._write_lock, self._shard.use() as shard:
            shard.flush()
            shard.close()


class _EdgeFilters:
    """Qdrant Edge's filter objects, for ``to_filter``."""

    def within(self, key: str, bounds: Range) -> Any:
        return qe.FieldCondition(
            key=key, range=qe.RangeFloat(gt=bounds.gt, gte=bounds.gte, lt=bounds.lt, lte=bounds.lte)
        )

    def any_of(self, key: str, values: list[str]) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchAny(values))

    def equals(self, key: str, value: Any) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    def ids(self, points: list[uuid.UUID]) -> Any:
        return qe.HasIdCondition(set(points))

    def combined(self, must: list[Any], must_not: list[Any], should: list[Any]) -> Any:
        return qe.Filter(must=must or None, must_not=must_not or None, should=should or None)


_FILTERS = _EdgeFilters()
