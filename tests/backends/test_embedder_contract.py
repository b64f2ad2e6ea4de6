"""One suite for every Embedder: each implementation must pass the same assertions."""

import numpy as np
import pytest

from appliance.backends.embedders.hashing import HashingEmbedder
from appliance.backends.embedders.protocol import Embedder

TEXTS = [
    "A machine that travels back in time.",
    "A recipe for sourdough bread.",
    "Two astronauts stranded on Mars.",
    "",
    "Ünïcode, punctuation!? and    spaces",
]


@pytest.fixture(params=["onnx", "torch", "hashing"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "onnx":
        return request.getfixturevalue("minilm")  # type: ignore[no-any-return]
    if request.param == "torch":
        return request.getfixturevalue("minilm_torch")  # type: ignore[no-any-return]
    return HashingEmbedder()


def test_describes_itself(embedder: Embedder) -> None:
    assert isinstance(embedder.name, str)
    assert embedder.name
    assert isinstance(embedder.dimension, int)
    assert embedder.dimension > 0


def test_shape_and_dtype(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dimension)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()


def test_rows_are_unit_length(embedder: Embedder) -> None:
    norms = np.linalg.norm(embedder.embed(TEXTS), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_deterministic(embedder: Embedder) -> None:
    np.testing.assert_array_equal(embedder.embed(TEXTS), embedder.embed(TEXTS))


def test_batch_equals_one_by_one(embedder: Embedder) -> None:
    batch = embedder.embed(TEXTS)
    one_by_one = np.vstack([embedder.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)


def test_text_longer_than_the_model_window(embedder: Embedder) -> None:
    long_text = "A very long text about many things. " * 80
    vectors = embedder.embed([long_text, "short"])
    assert vectors.shape == (2, embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], embedder.embed([long_text])[0], atol=1e-5)


def test_accepts_any_sequence(embedder: Embedder) -> None:
    np.testing.assert_allclose(
        embedder.embed(tuple(TEXTS[:3])), embedder.embed(TEXTS[:3]), atol=1e-6
    )


def test_empty_input_gives_no_rows(embedder: Embedder) -> None:
    vectors = embedder.embed([])
    assert vectors.shape == (0, embedder.dimension)
    assert vectors.dtype == np.float32


def test_different_texts_give_different_vectors(embedder: Embedder) -> None:
    a, b = embedder.embed(TEXTS[:2])
    assert float(a @ b) < 0.99


def test_minilm_places_related_texts_closer(minilm: Embedder) -> None:
    query, related, unrelated = minilm.embed(
        ["time travel", "a machine that travels back in time", "a recipe for bread"]
    )
    assert minilm.dimension == 384
    assert float(query @ related) > float(query @ unrelated) + 0.2
