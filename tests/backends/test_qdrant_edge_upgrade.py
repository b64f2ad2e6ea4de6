"""An index written by an earlier version opens: without keyword vectors it reports what needs
rewriting, without int8 vectors it gets them, with float32 vectors it keeps them until rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.domain import Hit, Selection, point_id
from appliance.errors import ConfigError

DIM = 8
TEXTS = ("Arctic narwhal documentary.", "Cordless drill.", "Tomato soup.")


def write_legacy_index(path: Path, entries: list[IndexEntry], dimension: int = DIM) -> None:
    """Write ``entries`` as the index did before it kept keyword vectors.

    One unnamed dense vector per point, no sparse vectors, and the payload without the
    analyser field.
    """
    shard = qe.EdgeShard.create(
        str(path),
        qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        ),
    )
    shard.update(
        qe.UpdateOperation.create_field_index(
            "seq", qe.IntegerIndexParams(lookup=False, range=True)
        )
    )
    shard.update(
        qe.UpdateOperation.upsert_points(
            [
                qe.Point(
                    id=point_id(e.item_id),
                    vector=np.asarray(e.vector, dtype=np.float32).tolist(),
                    payload={
                        "item_id": e.item_id,
                        "hash": e.content_hash,
                        "seq": e.seq,
                        "metadata": dict(e.metadata),
                    },
                )
                for e in entries
            ]
        )
    )
    shard.flush()
    shard.close()


def _entries() -> list[IndexEntry]:
    vectors = np.eye(DIM, dtype=np.float32)
    # Phrases along axes no whole vector uses: item-1 has two.
    phrases = (vectors[3:4], vectors[4:6], vectors[6:7])
    return [
        IndexEntry(f"item-{i}", vectors[i], f"hash-{i}", i + 1, {"genre": "x"}, text, phrases[i])
        for i, text in enumerate(TEXTS)
    ]


def test_a_legacy_index_opens_and_lists_every_entry_as_outdated(tmp_path: Path) -> None:
    path = tmp_path / "index"
    entries = _entries()
    write_legacy_index(path, entries)

    index = QdrantEdgeIndex(path, dimension=DIM, phrases=True)
    try:
        # The dense side is intact: reconcile keeps the vectors and re-embeds nothing.
        assert index.fingerprints() == {e.item_id: e.content_hash for e in entries}
        assert index.search(entries[1].vector, 1, Selection())[0].item_id == "item-1"
        assert sorted(index.outdated()) == ["item-0", "item-1", "item-2"]
        assert index.keyword_search("narwhal", 5, Selection()) == []
        assert index.phrase_search(np.eye(DIM, dtype=np.float32)[5], 5, Selection()) == []
        assert index.phrase_vectors(["item-1"]) == {}
        # The phrase vectors were added with the graph of a new index, not the dense one's.
        vectors = json.loads((path / "edge_config.json").read_text())["vectors"]
        assert vectors["phrases"]["hnsw_config"]["ef_construct"] == 32
        assert vectors["phrases"]["multivector_config"] == {"comparator": "max_sim"}

        stored = index.vectors([e.item_id for e in entries])
        index.upsert([IndexEntry(**{**_fields(e), "vector": stored[e.item_id]}) for e in entries])

        assert index.outdated() == []
        assert [h.item_id for h in index.keyword_search("narwhal", 5, Selection())] == ["item-0"]
        assert index.search(entries[2].vector, 1, Selection())[0].item_id == "item-2"
        assert _best(index.phrase_search(np.eye(DIM, dtype=np.float32)[5], 5, Selection())) == (
            "item-1"
        )
    finally:
        index.close()
    # Upgraded for good: reopening (now with phrase vectors) finds nothing left to do.
    again = QdrantEdgeIndex(path, dimension=DIM, phrases=True)
    try:
        assert again.outdated() == []
        assert [h.item_id for h in again.keyword_search("drill", 5, Selection())] == ["item-1"]
        assert _best(again.phrase_search(np.eye(DIM, dtype=np.float32)[6], 5, Selection())) == (
            "item-2"
        )
    finally:
        again.close()


def _best(hits: list[Hit]) -> str:
    return hits[0].item_id


def test_another_text_language_makes_every_entry_outdated(tmp_path: Path) -> None:
    path = tmp_path / "index"
    english = QdrantEdgeIndex(path, dimension=DIM, text_language="english")
    english.upsert(_entries())
    assert english.outdated() == []
    # English stems "narwhals" to the stored "narwhal".
    assert [h.item_id for h in english.keyword_search("narwhals", 5, Selection())] == ["item-0"]
    english.close()

    plain = QdrantEdgeIndex(path, dimension=DIM, text_language="none")
    try:
        assert sorted(plain.outdated()) == ["item-0", "item-1", "item-2"]
        plain.upsert(_entries())
        assert plain.outdated() == []
        # Without stems, words match only as written.
        assert plain.keyword_search("narwhals", 5, Selection()) == []
        assert [h.item_id for h in plain.keyword_search("narwhal", 5, Selection())] == ["item-0"]
    finally:
        plain.close()


def test_an_unknown_text_language_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"index\.text_language.*english"):
        QdrantEdgeIndex(tmp_path / "index", dimension=DIM, text_language="klingon")


def _fields(entry: IndexEntry) -> dict[str, object]:
    return {
        "item_id": entry.item_id,
        "vector": entry.vector,
        "content_hash": entry.content_hash,
        "seq": entry.seq,
        "metadata": entry.metadata,
        "text": entry.text,
        "phrases": entry.phrases,
    }


def test_an_index_of_float_vectors_only_opens_with_int8_ones_and_answers_alike(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(400, DIM)).astype(np.float32)
    entries = [
        IndexEntry(f"item-{i}", vectors[i], f"hash-{i}", i + 1, {}, text=f"item {i}")
        for i in range(len(vectors))
    ]
    path = tmp_path / "index"
    # As written before int8 vectors (and float16 ones) were the default.
    floats = QdrantEdgeIndex(path, dimension=DIM, quantized=False, precision="float32")
    floats.upsert(entries)
    floats.optimize()
    floats.close()

    quantized = QdrantEdgeIndex(path, dimension=DIM)
    try:
        quantized.optimize()  # what the next start does: the int8 vectors are built
        config = json.loads((path / "edge_config.json").read_text())
        assert config["quantization_config"] == {"scalar": {"type": "int8", "always_ram": True}}
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        found = 0
        for query in rng.normal(size=(30, DIM)).astype(np.float32):
            hits = quantized.search(query, 10, Selection())
            # Scores are the float vectors' cosines (rescored), best first.
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            exact = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
            np.testing.assert_allclose(
                scores[0], float(unit[exact[0]] @ (query / np.linalg.norm(query))), rtol=1e-5
            )
            found += len({h.item_id for h in hits} & {f"item-{i}" for i in exact})
        assert found / (30 * 10) >= 0.95
    finally:
        quantized.close()


def _stored_datatype(path: Path) -> str:
    config = json.loads((path / "edge_config.json").read_text())
    # A config without a datatype has Qdrant's default.
    return str(config["vectors"][""].get("datatype", "float32"))


def test_an_index_keeps_the_precision_it_was_written_with_until_rebuilt(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = [
        IndexEntry(f"item-{i}", vectors[i], f"hash-{i}", i + 1, {}, text=f"item {i}")
        for i in range(len(vectors))
    ]
    queries = rng.normal(size=(20, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def best_scores(index: QdrantEdgeIndex) -> tuple[np.ndarray, np.ndarray]:
        found = [index.search(query, 1, Selection())[0] for query in queries]
        exact = [float(np.max(unit @ query)) for query in queries]
        assert [h.item_id for h in found] == [
            f"item-{int(np.argmax(unit @ query))}" for query in queries
        ]
        return np.array([h.score for h in found]), np.array(exact)

    path = tmp_path / "index"
    written = QdrantEdgeIndex(path, dimension=DIM, precision="float32")
    written.upsert(entries)
    written.optimize()
    written.close()

    index = QdrantEdgeIndex(path, dimension=DIM)  # float16 for new indexes
    try:
        assert _stored_datatype(path) == "float32"
        found, exact = best_scores(index)
        np.testing.assert_allclose(found, exact, rtol=1e-6)

        index.clear()  # what `appliance reindex` does before writing every item again
        index.upsert(entries)
        index.optimize()
        assert _stored_datatype(path) == "float16"
        found, exact = best_scores(index)
        np.testing.assert_allclose(found, exact, atol=1e-3)
    finally:
        index.close()
