from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from appliance.backends.indexes.protocol import IndexEntry, Vector
from appliance.cpus import usable_cpus
from appliance.domain import FIELD_NAME, FieldCondition, Hit, Selection, point_id
from appliance.errors import BackendError, ConfigError

_SCROLL_PAGE = 2048
#: Points an upsert converts while queries wait (see ``upsert``): about 5 ms of queries' time.
_POINTS_PER_PAUSE = 200
_FIELD = re.compile(FIELD_NAME)
# Filterable metadata lives under this payload key so that it can never shadow the
# appliance's own payload fields.
_META = "metadata"
#: The dense vector is the unnamed one (as in indexes built before keyword search existed).
_DENSE = ""
#: The sparse BM25 vector of each item's text.
_KEYWORDS = "keywords"
#: The vectors of each item's phrases (``Item.phrases``), compared by their best match; the
#: payload field of the same name counts them, and entries without it lack them.
_PHRASES = "phrases"
#: Payload field naming how an entry's keyword vector was made; entries without it, or with
#: another value, are rewritten at start-up (see ``outdated``).
_ANALYSER = "analyser"
#: Bump when the text analysis changes in a way that needs every keyword vector rewritten.
_ANALYSER_VERSION = 1
#: Without stop words or stems: every word counts as written, in any language.
NO_LANGUAGE = "none"
#: Languages written without spaces between words, which need a segmenting tokenizer.
_UNSPACED_LANGUAGES = frozenset({"Chinese", "Japanese"})


#: Beam of the phrase vectors' graph build. Comparing two items' phrases compares every pair of
#: their vectors: at the dense graph's 100 the build took six times as long as the dense one's
#: (28 against 4 s for 50,000 items of three phrases), holding the interpreter lock. At 32 it
#: takes 10 s, and searching with twice the dense search's beam makes up the recall (on the
#: demo catalog, of the exact 20 best items: 0.937, against 0.932 at 100 with the dense beam).
_PHRASE_EF_CONSTRUCT = 32
#: Phrase vectors score an item by the best of them.
_MAX_SIM = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
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


class QdrantEdgeIndex:
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
        self._bm25 = qe.Bm25(_bm25_config(text_language))
        self._analyser = f"bm25-{_ANALYSER_VERSION}-{text_language.lower()}"
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
            name.removeprefix(f"{_META}."): str(info.data_type)
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
                except Exception:  # noqa: BLE001 - the binding raises plain Exceptions
                    if self.phrases:
                        self._add_phrase_vectors(precision)
                        shard = qe.EdgeShard.load(str(self._path), wanted)
                    else:  # written with phrase vectors: they stay, unused
                        shard = qe.EdgeShard.load(
                            str(self._path), self._config(precision, keywords=False, phrases=True)
                        )
                shard.update(
                    qe.UpdateOperation.create_sparse_vector(_KEYWORDS, modifier=qe.Modifier.Idf)
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
            raise ConfigError(
                f"cannot open the vector index in {self._path}: {e}; if the embedding model "
                "changed, run `appliance reindex` to rebuild it"
            ) from e
        return shard

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
                    _PHRASES,
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
                _PHRASES: qe.EdgeVectorParams(
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
            sparse_vectors={_KEYWORDS: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
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
            _KEYWORDS: self._bm25.embed_document(entry.text),
        }
        payload: dict[str, Any] = {
            "item_id": entry.item_id,
            "hash": entry.content_hash,
            "seq": entry.seq,
            _ANALYSER: self._analyser,
            _META: {k: _filterable(v) for k, v in entry.metadata.items()},
        }
        if self.phrases and entry.phrases is not None:
            # The count marks the entry as written with its phrases (see ``outdated``).
            payload[_PHRASES] = len(entry.phrases)
            if len(entry.phrases):
                vectors[_PHRASES] = np.asarray(entry.phrases, dtype=np.float32).tolist()
        return qe.Point(id=point_id(entry.item_id), vector=vectors, payload=payload)

    def _reopen(self, shard: qe.EdgeShard) -> qe.EdgeShard:
        shard.flush()
        shard.close()
        return self._open()

    def _index_new_fields(self, shard: qe.EdgeShard, entries: Sequence[IndexEntry]) -> None:
        for entry in entries:
            for name, value in entry.metadata.items():
                # Keys the API would refuse (e.g. from an older database) stay unindexed
                # rather than failing the write.
                if name in self._indexed_fields or not _FIELD.fullmatch(name):
                    continue
                schema = _schema_for(_filterable(value))
                if schema is None:
                    continue
                shard.update(qe.UpdateOperation.create_field_index(f"{_META}.{name}", schema))
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
        query = self._bm25.embed_query(text)
        if not query.indices:
            return []
        return self._nearest(qe.Query.Nearest(query, using=_KEYWORDS), limit, selection, None)

    def phrase_search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return the admitted items whose best phrase is nearest ``vector``, best first."""
        if not self.phrases:
            return []
        return self._nearest(
            # A query of one vector: MaxSim scores each item by its best phrase.
            qe.Query.Nearest([np.asarray(vector, dtype=np.float32).tolist()], using=_PHRASES),
            limit,
            selection,
            self._phrase_search_params,
        )

    def _nearest(
        self, query: qe.Query, limit: int, selection: Selection, params: qe.SearchParams | None
    ) -> list[Hit]:
        """Run a nearest-neighbour query among the admitted items and return its hits."""
        if selection.only is not None and not selection.only:
            return []
        points = self._query(
            qe.QueryRequest(
                limit=limit,
                query=query,
                filter=_to_filter(selection),
                with_payload=["item_id"],
                params=params,
            )
        )
        # ``payload`` is converted from the engine's at every read: read it once a hit.
        return _best_first(
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
        examples = self.vectors([*positive, *negative])
        liked = [i for i in positive if i in examples]
        if not liked or (selection.only is not None and not selection.only):
            return []
        points = self._query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.RecommendBestScore(
                    qe.RecommendQuery(
                        positives=[examples[i].tolist() for i in liked],
                        negatives=[examples[i].tolist() for i in negative if i in examples],
                    )
                ),
                filter=_to_filter(selection),
                with_payload=["item_id"],
                with_vector=[_DENSE],
                params=self._search_params,
            )
        )
        # The nearest positive example, by cosine (the index keeps vectors normalised).
        matrix = np.stack([examples[i] for i in liked])
        hits: list[Hit] = []
        for p in points:
            vector: Any = p.vector
            payload = p.payload
            if not payload or vector is None:
                continue
            raw = vector[_DENSE] if isinstance(vector, dict) else vector
            nearest = int(np.argmax(matrix @ np.asarray(raw, dtype=np.float32)))
            hits.append(Hit(payload["item_id"], float(p.score), liked[nearest]))
        return _best_first(hits)

    def newest(self, limit: int, selection: Selection) -> list[str]:
        """Return admitted item ids, most recently added first."""
        if selection.only is not None and not selection.only:
            return []
        records, _ = self._scroll(
            qe.ScrollRequest(
                limit=limit,
                filter=_to_filter(selection),
                with_payload=["item_id"],
                order_by=qe.OrderBy("seq", direction=qe.Direction.Desc),
            )
        )
        return [payload["item_id"] for r in records if (payload := r.payload)]

    def vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored vectors of the items that exist."""
        return {k: vector for k, (vector, _) in self.hashed_vectors(item_ids).items()}

    def phrase_vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored phrase vectors of the items that have them, a row per phrase."""
        if not self.phrases or not item_ids:
            return {}
        with self._shard.use() as shard:
            records = shard.retrieve(
                [point_id(i) for i in item_ids], with_payload=["item_id"], with_vector=[_PHRASES]
            )
        out: dict[str, Vector] = {}
        for record in records:
            vector: Any = record.vector
            payload = record.payload
            if payload and isinstance(vector, dict) and vector.get(_PHRASES):
                out[payload["item_id"]] = np.asarray(vector[_PHRASES], dtype=np.float32)
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

    def fingerprints(self) -> dict[str, str]:
        """Return every item id with the content hash of its vector."""
        return {
            payload["item_id"]: payload.get("hash", "")
            for payload in self._payloads(["item_id", "hash"])
        }

    def outdated(self) -> list[str]:
        """Return the items lacking current keyword vectors, or phrase vectors when kept."""
        return [
            payload["item_id"]
            for payload in self._payloads(["item_id", _ANALYSER, _PHRASES])
            if payload.get(_ANALYSER) != self._analyser
            or (self.phrases and _PHRASES not in payload)
        ]

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


def _bm25_config(language: str) -> qe.Bm25Config:
    """Return the text analysis of keyword search.

    Words are split at Unicode word boundaries, which keeps numbers and part numbers
    ("ZQ-3537", "1995") searchable; Chinese and Japanese, written without spaces, are segmented
    by dictionary instead. Words are lower-cased and folded to ASCII, then the stop words of
    ``language`` are dropped and the rest stemmed. k1 and b keep BM25's usual values (1.2,
    0.75). The average length stays at the engine's default (256 words), far above an item's
    title and description: length normalisation is then mild, which suits catalog texts, where
    a longer text says more about its item rather than repeating itself.

    Raises:
        ConfigError: ``language`` is neither ``none`` nor a language the engine knows.

    """
    name = language.strip().capitalize()
    stopwords: Any = getattr(qe.Language, name, None)
    snowball = getattr(qe.SnowballLanguage, name, None)
    if language.strip().lower() == NO_LANGUAGE:
        stopwords, snowball = None, None
    elif stopwords is None and snowball is None:
        known = sorted(
            {n.lower() for n in dir(qe.Language) if not n.startswith("_")}
            | {n.lower() for n in dir(qe.SnowballLanguage) if not n.startswith("_")}
        )
        raise ConfigError(
            f"unknown keyword language {language!r} (index.text_language); choose "
            f"{NO_LANGUAGE} or one of: {', '.join(known)}"
        )
    unspaced = name in _UNSPACED_LANGUAGES
    return qe.Bm25Config(
        tokenizer=qe.TokenizerType.Multilingual if unspaced else qe.TokenizerType.Word,
        lowercase=True,
        ascii_folding=True,
        stopwords=stopwords if stopwords is not None else qe.StopwordsSet(custom=set()),
        stemmer=qe.SnowballParams(snowball) if snowball is not None else qe.DisabledStemmer(),
    )


def _filterable(value: Any) -> Any:
    """Return a metadata value as the payload stores it for filtering.

    The binding hands booleans to the engine as integers, so a boolean condition could never
    match a stored boolean; booleans are therefore stored, and matched, as "true"/"false".
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [_filterable(v) for v in value]
    return value


def _schema_for(value: Any) -> qe.PayloadSchemaType | None:
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return qe.PayloadSchemaType.Keyword
        return None
    if isinstance(value, int | float):
        # Float covers integers too, so a field mixing 2 and 2.5 is still range-filterable.
        return qe.PayloadSchemaType.Float
    # Long strings are prose, not categories: exact-match indexing them would waste memory.
    if isinstance(value, str) and len(value) <= 256:  # noqa: PLR2004
        return qe.PayloadSchemaType.Keyword
    return None


def _best_first(hits: list[Hit]) -> list[Hit]:
    """Order hits by score, equal ones by item id.

    Equal scores are common (BM25 gives the same to every item matching the same words alike;
    items of the same text have the same vector), and the engine orders them by where it keeps
    them, which depends on when its background optimisation ran: this way the same list comes
    out every time.
    """
    hits.sort(key=lambda hit: (-hit.score, hit.item_id))
    return hits


def _to_filter(selection: Selection) -> qe.Filter | None:
    must: list[Any] = [_condition(c) for c in selection.conditions]
    if selection.only is not None:
        must.append(qe.HasIdCondition({point_id(i) for i in selection.only}))
    must_not: list[Any] = []
    if selection.exclude:
        must_not.append(qe.HasIdCondition({point_id(i) for i in selection.exclude}))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _condition(condition: FieldCondition) -> Any:
    key = f"{_META}.{condition.field}"
    if condition.range is not None:
        r = condition.range
        return qe.FieldCondition(
            key=key, range=qe.RangeFloat(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
        )
    if condition.any_of is not None:
        values = [_filterable(v) for v in condition.any_of]
        if all(isinstance(v, str) for v in values):
            return qe.FieldCondition(key=key, match=qe.MatchAny(values))
        return qe.Filter(
            should=[_condition(FieldCondition(condition.field, equals=v)) for v in values]
        )
    value = _filterable(condition.equals)
    if isinstance(value, int | float):
        # A range matches 2 and 2.0 alike; an exact match would tell integers from floats.
        return qe.FieldCondition(key=key, range=qe.RangeFloat(gte=value, lte=value))
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))
