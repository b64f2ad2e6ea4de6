"""What only the Qdrant server index does (the contract suite covers the rest): it sends a large
write in requests of bounded size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_server import QdrantServerIndex
from tests.qdrant_server import stand_in_server

DIM = 16
PHRASES = 8


def test_a_large_write_goes_in_requests_of_at_most_1024_vectors(tmp_path: Path) -> None:
    server = stand_in_server(tmp_path / "qdrant")
    index = QdrantServerIndex(server, "items", dimension=DIM, location="qdrant:6333", phrases=True)
    vectors = np.random.default_rng(0).standard_normal((300 * (1 + PHRASES), DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    entries = [
        IndexEntry(
            f"item-{n}",
            vectors[n * (1 + PHRASES)],
            f"hash-{n}",
            n + 1,
            phrases=vectors[n * (1 + PHRASES) + 1 : (n + 1) * (1 + PHRASES)],
        )
        for n in range(300)
    ]
    try:
        server.calls.clear()
        index.upsert(entries)
        # Nine vectors an item: 113 items (1,017 vectors) a request, the last taking 74.
        assert server.calls.count("upsert") == 3
        assert index.count() == 300
        kept = index.phrase_vectors(["item-0", "item-299"])
        np.testing.assert_allclose(kept["item-299"], entries[299].phrases, atol=1e-6)
        assert kept["item-0"].shape == (PHRASES, DIM)
    finally:
        index.close()
