"""A Qdrant server or cluster, through qdrant-client: for an appliance that outgrows one machine.

The index is one collection on the server, which holds what the embedded index would: each item's
vector, its BM25 keyword vector (computed in this process, as the embedded index does; the server
applies IDF over the points it holds), its phrase vectors when kept, and the same payload (see
``qdrant_common``). Like the embedded index it is derived from the store: start-up brings it in
line with the store (missing items embedded, others' points deleted), so one collection serves one
appliance, and `appliance reindex` rebuilds it. The server does its own graph building and
persistence; a write returns once the server has applied it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

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
from appliance.domain import Hit, Range, Selection, point_id
from appliance.errors import BackendError, ConfigError

#: The items' dense vectors (named: the collection holds phrase vectors beside them).
_DENSE = "dense"
_SCROLL_PAGE = 2048
#: Vectors (an item's own and its phrases') sent in one request: at 384 dimensions, each is
#: about 8 kB of JSON, so a request stays near 8 MB, under the server's limit (32 MB by default).
_VECTORS_PER_REQUEST = 1024
_SCHEMAS = {"keyword": qm.PayloadSchemaType.KEYWORD, "float": qm.PayloadSchemaType.FLOAT}
_DATATYPES = {"float32": qm.Datatype.FLOAT32, "float16": qm.Datatype.FLOAT16}


def reach(client: QdrantClient, location: str) -> None:
    """Check that the server answers.

    Raises:
        ConfigError: It does not (nothing listens at ``location``, or not a Qdrant server, or
            one that refuses the API key).

    """
    try:
        client.get_collections()
    except Exception as e:  # transport and server errors alike
        raise ConfigError(
            f"cannot reach the Qdrant server at {location}: {e}; check index.url, the API key "
            "(index.api_key_env) and that the server is running"
        ) from e


class QdrantServerIndex(PayloadReads):
    """One collection of a Qdrant server (or cluster), reached through qdrant-client."""

    # Searches wait on the network with the interpreter lock released.
    searches_hold_interpreter = False

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        dimension: int,
        location: str,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int = 160,
        quantized: bool = True,
        precision: str = "float16",
        text_language: str = "english",
        phrases: bool = False,
        shards: int = 1,
        replicas: int = 1,
    ) -> None:
        """Open the collection, creating it if the server has none of that name.

        Args:
            client: The server's client; the index closes it.
            collection: The collection's name.
            dimension: The dense vectors' size; an existing collection must have it.
            location: Where the server is, for messages (its URL).
            hnsw_m: Graph degree of a new collection.
            hnsw_ef_construct: Build-time beam of a new collection.
            hnsw_ef: Search-time beam.
            quantized: Whether a new collection keeps an int8 copy of the vectors to search
                with, the float vectors rescoring the best.
            precision: How a new collection stores the dense vectors.
            text_language: Language of the item texts for keyword search.
            phrases: Whether to keep and search phrase vectors (a new collection always has
                room for them, so turning them on later needs no new collection).
            shards: Shards of a new collection.
            replicas: Copies of each shard a new collection keeps.

        Raises:
            ConfigError: The server cannot be reached, or the collection was written otherwise
                (another dimension, or not by the appliance).

        """
        self.dimension = dimension
        self.phrases = phrases
        self._client = client
        self._collection = collection
        self._location = location
        self._keywords = KeywordAnalyser(text_language)
        self._graph = qm.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
        self._quantization = (
            qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True)
            )
            if quantized
            else None
        )
        rescoring = (
            qm.QuantizationSearchParams(rescore=True, oversampling=2.0) if quantized else None
        )
        self._search_params = qm.SearchParams(hnsw_ef=hnsw_ef, quantization=rescoring)
        self._phrase_search_params = qm.SearchParams(hnsw_ef=2 * hnsw_ef, quantization=rescoring)
        self._precision = precision
        self._shards = shards
        self._replicas = replicas
        reach(client, location)
        with self._answering("describe the collections"):
            exists = client.collection_exists(collection)
        if exists:
            self._check_existing()
        else:
            self._create()
        self._indexed_fields = self._fields_indexed()

    def _check_existing(self) -> None:
        with self._answering("describe the collection"):
            vectors = self._client.get_collection(self._collection).config.params.vectors
        dense = vectors.get(_DENSE) if isinstance(vectors, dict) else None
        if dense is None or (isinstance(vectors, dict) and PHRASES not in vectors):
            raise ConfigError(
                f"the collection {self._collection!r} on the Qdrant server at {self._location} "
                "was not written by the appliance; name another one (index.collection)"
            )
        if dense.size != self.dimension:
            raise ConfigError(
                f"the collection {self._collection!r} on the Qdrant server at {self._location} "
                f"holds vectors of {dense.size} dimensions, the embedding model gives "
                f"{self.dimension}; name another collection (index.collection) or delete "
                "this one on the server"
            )

    def _create(self) -> None:
        datatype = _DATATYPES[self._precision]
        with self._answering("create the collection"):
            self._client.create_collection(
                self._collection,
                vectors_config={
                    _DENSE: qm.VectorParams(
                        size=self.dimension,
                        distance=qm.Distance.COSINE,
                        datatype=datatype,
                        hnsw_config=self._graph,
                        quantization_config=self._quantization,
                    ),
                    PHRASES: qm.VectorParams(
                        size=self.dimension,
                        distance=qm.Distance.COSINE,
                        datatype=datatype,
                        multivector_config=qm.MultiVectorConfig(
                            comparator=qm.MultiVectorComparator.MAX_SIM
                        ),
                    ),
                },
                sparse_vectors_config={KEYWORDS: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                shard_number=self._shards,
                replication_factor=self._replicas,
            )
            # The newest-items fallback orders by it; the server orders only by indexed fields.
            self._client.create_payload_index(
                self._collection, "seq", qm.PayloadSchemaType.INTEGER, wait=True
            )

    def _fields_indexed(self) -> set[str]:
        with self._answering("describe the collection"):
            schema = self._client.get_collection(self._collection).payload_schema
        return {name.removeprefix(f"{META}.") for name in schema if name.startswith(f"{META}.")}

    @contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """Turn whatever the client raises into an error that names the server."""
        try:
            yield
        except Exception as e:  # transport and server errors alike
            raise BackendError(
                f"the Qdrant server at {self._location} could not {doing}: {e}"
            ) from e

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Insert or replace items, indexing new metadata fields for filtering."""
        self._index_new_fields(entries)
        points: list[qm.PointStruct] = []
        vectors = 0
        for entry in entries:
            phrases = entry.phrases if self.phrases and entry.phrases is not None else ()
            if points and vectors + 1 + len(phrases) > _VECTORS_PER_REQUEST:
                self._write(points)
                points, vectors = [], 0
            points.append(self._point(entry))
            vectors += 1 + len(phrases)
        if points:
            self._write(points)

    def _write(self, points: list[qm.PointStruct]) -> None:
        with self._answering("write items"):
            self._client.upsert(self._collection, points, wait=True)

    def _point(self, entry: IndexEntry) -> qm.PointStruct:
        keywords = self._keywords.document(entry.text)
        vectors: dict[str, Any] = {
            _DENSE: np.asarray(entry.vector, dtype=np.float32).tolist(),
            KEYWORDS: qm.SparseVector(indices=list(keywords.indices), values=keywords.values),
        }
        if self.phrases and entry.phrases is not None and len(entry.phrases):
            vectors[PHRASES] = np.asarray(entry.phrases, dtype=np.float32).tolist()
        return qm.PointStruct(
            id=str(point_id(entry.item_id)),
            vector=vectors,
            payload=point_payload(entry, self._keywords.name, phrases=self.phrases),
        )

    def _index_new_fields(self, entries: Sequence[IndexEntry]) -> None:
        for name, kind in new_fields(entries, self._indexed_fields):
            with self._answering(f"index the metadata field {name!r}"):
                self._client.create_payload_index(
                    self._collection, f"{META}.{name}", _SCHEMAS[kind], wait=True
                )
            self._indexed_fields.add(name)

    def delete(self, item_ids: Iterable[str]) -> None:
        """Remove items; unknown ids are ignored."""
        ids: list[qm.ExtendedPointId] = [str(point_id(i)) for i in item_ids]
        if ids:
            with self._answering("delete items"):
                self._client.delete(self._collection, qm.PointIdsList(points=ids), wait=True)

    def search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return the nearest admitted items, best first."""
        return self._nearest(
            np.asarray(vector, dtype=np.float32).tolist(),
            _DENSE,
            limit,
            selection,
            self._search_params,
        )

    def keyword_search(self, text: str, limit: int, selection: Selection) -> list[Hit]:
        """Return the admitted items whose words best match ``text``, by BM25."""
        query = self._keywords.query(text)
        if not query.indices:
            return []
        sparse = qm.SparseVector(indices=list(query.indices), values=query.values)
        return self._nearest(sparse, KEYWORDS, limit, selection, None)

    def phrase_search(self, vector: Vector, limit: int, selection: Selection) -> list[Hit]:
        """Return the admitted items whose best phrase is nearest ``vector``, best first."""
        if not self.phrases:
            return []
        # A query of one vector: MaxSim scores each item by its best phrase.
        one = [np.asarray(vector, dtype=np.float32).tolist()]
        return self._nearest(one, PHRASES, limit, selection, self._phrase_search_params)

    def _nearest(
        self,
        query: Any,
        using: str,
        limit: int,
        selection: Selection,
        params: qm.SearchParams | None,
    ) -> list[Hit]:
        if selection.admits_nothing:
            return []
        points = self._query(query, using, limit, selection, params)
        return best_first([Hit(p.payload["item_id"], float(p.score)) for p in points if p.payload])

    def _query(
        self,
        query: Any,
        using: str,
        limit: int,
        selection: Selection,
        params: qm.SearchParams | None,
        *,
        with_vectors: list[str] | None = None,
    ) -> list[qm.ScoredPoint]:
        """Run one query among the admitted items; each point comes with its item id."""
        with self._answering("search"):
            return self._client.query_points(
                self._collection,
                query=query,
                using=using,
                limit=limit,
                query_filter=to_filter(selection, _FILTERS),
                search_params=params,
                with_payload=["item_id"],
                with_vectors=with_vectors or False,
            ).points

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
        query = qm.RecommendQuery(
            recommend=qm.RecommendInput(
                positive=[v.tolist() for v in liked.values()],
                negative=[v.tolist() for v in disliked],
                strategy=qm.RecommendStrategy.BEST_SCORE,
            )
        )
        points = self._query(
            query, _DENSE, limit, selection, self._search_params, with_vectors=[_DENSE]
        )
        return via_nearest_example(
            (
                (p.payload["item_id"], float(p.score), np.asarray(p.vector[_DENSE], np.float32))
                for p in points
                if p.payload and isinstance(p.vector, dict) and _DENSE in p.vector
            ),
            liked,
        )

    def newest(self, limit: int, selection: Selection) -> list[str]:
        """Return admitted item ids, most recently added first."""
        if selection.admits_nothing:
            return []
        with self._answering("list the newest items"):
            records, _ = self._client.scroll(
                self._collection,
                scroll_filter=to_filter(selection, _FILTERS),
                limit=limit,
                order_by=qm.OrderBy(key="seq", direction=qm.Direction.DESC),
                with_payload=["item_id"],
            )
        return [r.payload["item_id"] for r in records if r.payload]

    def phrase_vectors(self, item_ids: Sequence[str]) -> dict[str, Vector]:
        """Return the stored phrase vectors of the items that have them, a row per phrase."""
        if not self.phrases or not item_ids:
            return {}
        out: dict[str, Vector] = {}
        for record in self._retrieve(item_ids, ["item_id"], PHRASES):
            vector = record.vector
            if record.payload and isinstance(vector, dict) and vector.get(PHRASES):
                out[record.payload["item_id"]] = np.asarray(vector[PHRASES], dtype=np.float32)
        return out

    def hashed_vectors(self, item_ids: Sequence[str]) -> dict[str, tuple[Vector, str]]:
        """Return the stored vectors of the items that exist, with their content hashes."""
        if not item_ids:
            return {}
        out: dict[str, tuple[Vector, str]] = {}
        # One retrieve reads each point's vector and payload together.
        for record in self._retrieve(item_ids, ["item_id", "hash"], _DENSE):
            vector = record.vector
            if record.payload and isinstance(vector, dict) and _DENSE in vector:
                out[record.payload["item_id"]] = (
                    np.asarray(vector[_DENSE], dtype=np.float32),
                    record.payload.get("hash", ""),
                )
        return out

    def _retrieve(self, item_ids: Sequence[str], fields: list[str], vector: str) -> list[Any]:
        with self._answering("read items"):
            return self._client.retrieve(
                self._collection,
                [str(point_id(i)) for i in item_ids],
                with_payload=fields,
                with_vectors=[vector],
            )

    def _payloads(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        offset: qm.ExtendedPointId | None = None
        while True:
            with self._answering("list the items"):
                records, offset = self._client.scroll(
                    self._collection, offset=offset, limit=_SCROLL_PAGE, with_payload=fields
                )
            yield from (record.payload for record in records if record.payload)
            if offset is None:
                return

    def count(self) -> int:
        """Return the number of items."""
        with self._answering("count the items"):
            return int(self._client.count(self._collection, exact=True).count)

    def check(self) -> None:
        """Raise ``BackendError`` if the server cannot be reached or lost the collection."""
        with self._answering("answer"):
            held = self._client.collection_exists(self._collection)
        if not held:
            raise BackendError(
                f"the Qdrant server at {self._location} no longer holds the collection "
                f"{self._collection!r}: run `appliance reindex` to rebuild it from the store"
            )

    def optimize(self) -> None:
        """Leave the graphs to the server, which builds them as points arrive.

        A collection the server reports grey (optimisations pending since it restarted, which
        wait for an update) is nudged to start them; nothing waits for them to finish.

        Raises:
            BackendError: The server reports the collection red (an optimisation failed).

        """
        with self._answering("describe the collection"):
            status = self._client.get_collection(self._collection).status
        if status == qm.CollectionStatus.RED:
            raise BackendError(
                f"the Qdrant server at {self._location} reports the collection "
                f"{self._collection!r} red: an optimisation failed there (see its log)"
            )
        if status == qm.CollectionStatus.GREY:
            with self._answering("start optimising the collection"):
                self._client.update_collection(
                    self._collection, optimizers_config=qm.OptimizersConfigDiff()
                )

    def clear(self) -> None:
        """Delete the collection and create it empty."""
        with self._answering("delete the collection"):
            self._client.delete_collection(self._collection)
        self._create()
        self._indexed_fields = set()

    def close(self) -> None:
        """Release the connection (the server keeps the collection)."""
        self._client.close()


class _ServerFilters:
    """qdrant-client's filter objects, for ``to_filter``."""

    def within(self, key: str, bounds: Range) -> Any:
        return qm.FieldCondition(
            key=key, range=qm.Range(gt=bounds.gt, gte=bounds.gte, lt=bounds.lt, lte=bounds.lte)
        )

    def any_of(self, key: str, values: list[str]) -> Any:
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=values))

    def equals(self, key: str, value: Any) -> Any:
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def ids(self, points: list[uuid.UUID]) -> Any:
        return qm.HasIdCondition(has_id=[str(p) for p in points])

    def combined(self, must: list[Any], must_not: list[Any], should: list[Any]) -> Any:
        return qm.Filter(must=must or None, must_not=must_not or None, should=should or None)


_FILTERS = _ServerFilters()
