"""The appliance on a Qdrant server's collection (the qdrant-server index) through HTTP: every
source that searches the index, restarts and a lost collection, and a server that fails.

qdrant-client's in-process mode stands in for the server (see ``tests/qdrant_server.py``); the
model, the database and the HTTP application are the real ones.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from qdrant_client import QdrantClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.indexes.qdrant_server import QdrantServerIndex
from appliance.backends.registry import Backends, build_index
from appliance.errors import ConfigError
from appliance.settings import Settings
from tests.api.calls import counts, feedback, ids, recommend, similar, upsert
from tests.api.test_persistence import assert_same_answers, encoded_texts, populate, take
from tests.conftest import make_settings
from tests.qdrant_server import stand_in_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """An appliance that keeps phrase vectors, so that every source that searches runs."""
    return make_settings(tmp_path / "data", index={"phrases": True})


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """Where the stand-in server keeps the collection."""
    return tmp_path / "qdrant"


@contextmanager
def running(settings: Settings, embedder: Embedder, server: Any) -> Iterator[TestClient[Any]]:
    """The application on the collection "items" of ``server``; closed on exit (the collection
    stays)."""
    index = QdrantServerIndex(
        server,
        "items",
        dimension=embedder.dimension,
        location="qdrant:6333",
        phrases=settings.index.phrases,
    )
    try:
        app = create_app(settings, backends=Backends(embedder=embedder, index=index))
        with TestClient(app) as client:
            yield client
    finally:
        index.close()


def ask(client: TestClient[Any], context: str, *sources: str, **body: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"user_id": "reader", "context": context, "top_k": 5, **body}
    return recommend(client, **fields, sources=list(sources))


def test_every_index_source_answers_from_the_server(
    minilm: Embedder, settings: Settings, collection: Path, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm, stand_in_server(collection)) as client:
        upsert(client, test_items)
        assert counts(client)["index_points"] == len(test_items)

        time_travel = {f"tt-{n}" for n in range(1, 7)}
        by_meaning = ids(ask(client, "a journey through time", "vector"))
        assert len(by_meaning) == 5
        assert set(by_meaning) <= time_travel
        # A rare word of one item's text, which the embedding alone misses (test_text_sources).
        assert ids(ask(client, "coastal", "keyword")) == ["ro-2"]
        assert ids(ask(client, "coastal", "vector"))[0] != "ro-2"
        phrased = ids(ask(client, "a journey through time", "phrases"))
        assert len(phrased) == 5
        assert set(phrased) <= time_travel
        named = ask(client, "Something like Paradox Station, please", "named", top_k=4)
        assert "tt-2" not in ids(named)
        assert all(r["item_id"].startswith("tt-") for r in named["recommendations"][:2])

        novels = ask(client, "time travel", "keyword", top_k=20, filters={"format": "novel"})
        assert ids(novels)
        assert all(r["metadata"]["format"] == "novel" for r in novels["recommendations"])

        feedback(client, "fan", "tt-4", interaction_type="like")
        feedback(client, "fan", "ro-1", interaction_type="dislike")
        history = recommend(client, user_id="fan", top_k=5, sources=["history"])
        assert ids(history)
        assert "tt-4" not in ids(history)
        assert all(set(r["sources"]) == {"history"} for r in history["recommendations"])
        assert all(r["via"]["history"] == "tt-4" for r in history["recommendations"])
        assert ids(history)[0] in time_travel

        more = similar(client, "tt-1", top_k=5)
        assert "tt-1" not in ids(more)
        assert ids(more)[0] in time_travel

        # An item's new text is searched at once; a deleted item is gone from every search.
        upsert(client, [{"item_id": "tt-1", "title": "The Narwhal Clock", "text": "A narwhal."}])
        assert ids(ask(client, "narwhal", "keyword")) == ["tt-1"]
        assert client.delete("/items/tt-1").status_code == 204
        assert ask(client, "narwhal", "keyword")["recommendations"] == []
        assert counts(client)["index_points"] == len(test_items) - 1


def test_a_restart_finds_the_collection_as_it_was(
    minilm: Embedder, settings: Settings, collection: Path, test_items: list[dict[str, Any]]
) -> None:
    with running(settings, minilm, stand_in_server(collection)) as first:
        populate(first, test_items)
        before = take(first)
        counts_before = counts(first)

    with running(settings, minilm, stand_in_server(collection)) as second:
        # Nothing was re-embedded: the collection agreed with the database.
        assert encoded_texts(second) == 0
        assert counts(second) == counts_before
        after = take(second)
    assert_same_answers(after, before, tolerance=1e-6)


def test_a_lost_collection_is_rebuilt_from_the_database(
    minilm: Embedder, tmp_path: Path, collection: Path, test_items: list[dict[str, Any]]
) -> None:
    # Without phrase vectors, so that rebuilding encodes one text an item.
    settings = make_settings(tmp_path / "data")
    with running(settings, minilm, stand_in_server(collection)) as first:
        populate(first, test_items)
        before = take(first)

    lost = QdrantClient(path=str(collection))
    lost.delete_collection("items")
    lost.close()

    with running(settings, minilm, stand_in_server(collection)) as second:
        assert encoded_texts(second) == len(test_items)
        assert counts(second)["index_points"] == len(test_items)
        after = take(second)
    assert_same_answers(after, before, tolerance=1e-4)


def test_a_server_that_fails_is_a_503_that_names_it(
    minilm: Embedder, settings: Settings, collection: Path, test_items: list[dict[str, Any]]
) -> None:
    server = stand_in_server(collection)
    with running(settings, minilm, server) as client:
        upsert(client, test_items[:6])
        assert client.get("/health").status_code == 200
        # The collection disappears under the running appliance (an operator's mistake).
        server.delete_collection("items")
        where = "the Qdrant server at qdrant:6333"
        health = client.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["detail"] == (
            f"{where} no longer holds the collection 'items': run `appliance reindex` to "
            "rebuild it from the store"
        )
        asked = {"user_id": "u", "context": "a journey through time", "sources": ["vector"]}
        response = client.post("/recommendations", json=asked)
        assert response.status_code == 503, response.text
        assert where in response.json()["detail"]
        # Feedback needs the item's vector: refused, so not stored (the client retries).
        liked = {"user_id": "u", "item_id": "tt-1", "interaction_type": "like"}
        response = client.post("/feedback", json=liked)
        assert response.status_code == 503, response.text
        assert where in response.json()["detail"]
        assert client.get("/users/u").status_code == 404

        # Rebuilt from the database, the appliance answers again.
        assert client.post("/admin/reindex").status_code == 200
        assert client.get("/health").status_code == 200
        assert ids(recommend(client, **asked))
        assert feedback(client, **liked)["preference_updated"]


def test_what_a_down_server_missed_is_written_at_the_next_write(
    minilm: Embedder, settings: Settings, collection: Path, test_items: list[dict[str, Any]]
) -> None:
    server = stand_in_server(collection)
    with running(settings, minilm, server) as client:
        upsert(client, test_items)
        new = {"item_id": "nw-1", "title": "The Narwhal Atlas", "text": "Narwhal migrations."}
        edited = dict(test_items[0], text="A lighthouse keeper counts the ships in a storm.")
        late = {"item_id": "nw-2", "title": "Walrus Tales", "text": "Stories of the walrus."}
        with server.down():
            assert client.get("/health").status_code == 503
            # The store takes each write, the index cannot: the answers say so.
            refused = client.post("/items", json={"items": [new, edited]})
            assert refused.status_code == 503, refused.text
            assert "the Qdrant server at qdrant:6333 could not write items" in refused.text
            refused = client.delete("/items/ro-2")
            assert refused.status_code == 503, refused.text
            assert "the Qdrant server at qdrant:6333 could not delete items" in refused.text
            assert client.get("/items/nw-1").status_code == 200
            assert client.get("/items/ro-2").status_code == 404

        # The client sends the refused items again: what the index missed is written first, so
        # they are unchanged by then, and every search agrees with the store.
        again = upsert(client, [new, edited])
        assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
        assert ids(ask(client, "narwhal", "keyword")) == ["nw-1"]
        assert ids(ask(client, "lighthouse", "keyword")) == ["tt-1"]
        assert ask(client, "coastal", "keyword")["recommendations"] == []

        # Any write makes good what the index missed, not only the same one sent again.
        with server.down():
            assert client.post("/items", json={"items": [late]}).status_code == 503
        assert client.delete("/items/ro-3").status_code == 204
        assert ids(ask(client, "walrus", "keyword")) == ["nw-2"]
        assert counts(client)["index_points"] == counts(client)["items"] == len(test_items)


def test_an_unreachable_server_is_a_config_error_that_names_it(
    minilm: Embedder, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    # The port was free a moment ago and nothing listens on it now.
    settings = make_settings(tmp_path / "data", index={"kind": "qdrant-server", "url": url})
    with pytest.raises(ConfigError, match=re.escape(f"cannot reach the Qdrant server at {url}")):
        build_index(settings, minilm)
