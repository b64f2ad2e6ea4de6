"""One suite for every VectorIndex: each implementation must pass the same assertions.

Adding a backend is one line in ``FACTORIES``.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from appliance.backends.indexes.protocol import IndexEntry, VectorIndex
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.domain import FieldCondition, Hit, Range, Selection
from appliance.errors import ConfigError
from tests.qdrant_server import server_index

DIM = 32
GENRES = ("drama", "comedy", "horror", "scifi", "western")

FACTORIES: dict[str, Callable[..., VectorIndex]] = {
    "qdrant-edge": lambda path, dimension, **options: QdrantEdgeIndex(
        path, dimension=dimension, **options
    ),
    "qdrant-edge-float32": lambda path, dimension, **options: QdrantEdgeIndex(
        path, dimension=dimension, precision="float32", **options
    ),
    # qdrant-client's in-process mode stands in for the server; it keeps vectors as written.
    "qdrant-server": server_index,
}
#: How each kind stores a vector, and how far a stored vector, and so a score, may be from what
#: was written: float16 keeps three significant digits of a unit vector's components.
STORED_AS = {
    "qdrant-edge": np.float16,
    "qdrant-edge-float32": np.float32,
    "qdrant-server": np.float32,
}
STORED_ATOL = {"qdrant-edge": 1e-3, "qdrant-edge-float32": 1e-6, "qdrant-server": 1e-6}
#: What the message says to do about an index of another dimension.
ANOTHER_DIMENSION = {
    "qdrant-edge": r"expected vector size 64, but got 32; it is derived from the database: remove "
    "that folder and start again",
    "qdrant-edge-float32": r"expected vector size 64, but got 32; it is derived from the database: "
    "remove that folder and start again",
    "qdrant-server": r"holds vectors of 32 dimensions, the embedding model gives 64; name another "
    r"collection \(index.collection\)",
}

Matrix = npt.NDArray[np.float32]


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def atol(kind: str) -> float:
    return STORED_ATOL[kind]


@pytest.fixture
def index(kind: str, tmp_path: Path) -> Iterator[VectorIndex]:
    opened = FACTORIES[kind](tmp_path / "index", DIM)
    yield opened
    opened.close()


@pytest.fixture
def phrased(kind: str, tmp_path: Path) -> Iterator[VectorIndex]:
    """The index, keeping phrase vectors."""
    opened = FACTORIES[kind](tmp_path / "phrased", DIM, phrases=True)
    yield opened
    opened.close()


def _unit_vectors(n: int, seed: int = 0) -> Matrix:
    v = np.random.default_rng(seed).standard_normal((n, DIM))
    unit: Matrix = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return unit


def _metadata(i: int) -> dict[str, Any]:
    return {
        "genre": GENRES[i % len(GENRES)],
        "tags": [f"tag{i % 3}", f"tag{i % 4 + 10}"],
        "year": 1950 + i % 70,
        "rating": (i % 10) / 2,
        "flag": i % 2 == 0,
        "rare": "yes" if i % 100 == 7 else "no",
        "blurb": "long prose that is not a category " * 20,
    }


def _entries(vectors: Matrix, start: int = 0, *, full: bool = False) -> list[IndexEntry]:
    # Each new metadata field costs the index a payload index; small cases carry one field.
    return [
        IndexEntry(
            item_id=f"item-{start + i}",
            vector=vector,
            content_hash=f"hash-{start + i}",
            seq=start + i + 1,
            metadata=_metadata(start + i) if full else {"genre": GENRES[(start + i) % 5]},
        )
        for i, vector in enumerate(vectors)
    ]


def _ids(hits: Sequence[Hit]) -> list[str]:
    return [h.item_id for h in hits]


Exact = Callable[[Matrix, Matrix, Sequence[int], int], list[str]]


@pytest.fixture
def exact(kind: str) -> Exact:
    """The true nearest admitted items, by brute force at the precision the index stores.

    Qdrant compares float16 vectors with the query in float16 too.
    """
    dtype = STORED_AS[kind]

    def nearest(vectors: Matrix, query: Matrix, admitted: Sequence[int], limit: int) -> list[str]:
        stored = vectors.astype(dtype).astype(np.float32)
        asked = query.astype(dtype).astype(np.float32)
        ranked = sorted(admitted, key=lambda i: -float(stored[i] @ asked))
        return [f"item-{i}" for i in ranked[:limit]]

    return nearest


def _fill(index: VectorIndex) -> Matrix:
    vectors = _unit_vectors(3000, seed=1)
    entries = _entries(vectors, full=True)
    for start in range(0, len(entries), 500):
        index.upsert(entries[start : start + 500])
    return vectors


@pytest.fixture(scope="module")
def filled(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VectorIndex, Matrix]]:
    """An index holding 3,000 items with varied metadata, shared by the tests that only read."""
    opened = FACTORIES[kind](tmp_path_factory.mktemp("filled") / "index", DIM)
    vectors = _fill(opened)
    yield opened, vectors
    opened.close()


def _matching(predicate: Callable[[dict[str, Any]], bool], n: int = 3000) -> list[int]:
    return [i for i in range(n) if predicate(_metadata(i))]


def test_dimension(index: VectorIndex) -> None:
    assert index.dimension == DIM


def test_empty_index(index: VectorIndex) -> None:
    query = _unit_vectors(1)[0]
    assert index.count() == 0
    assert index.search(query, 10, Selection()) == []
    assert index.newest(10, Selection()) == []
    assert index.fingerprints() == {}
    assert index.vectors(["missing"]) == {}


def test_search_returns_nearest_first_with_cosine_scores(
    index: VectorIndex, atol: float, exact: Exact
) -> None:
    vectors = _unit_vectors(50)
    index.upsert(_entries(vectors))
    query = vectors[7]
    hits = index.search(query, 50, Selection())
    assert _ids(hits)[0] == "item-7"
    assert hits[0].score == pytest.approx(1.0, abs=atol)
    assert _ids(hits) == exact(vectors, query, range(50), 50)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 - atol <= s <= 1.0 + atol for s in scores)
    for hit in hits:
        i = int(hit.item_id.removeprefix("item-"))
        assert hit.score == pytest.approx(float(vectors[i] @ query), abs=atol)


def test_opposite_vector_scores_minus_one(index: VectorIndex, atol: float) -> None:
    vectors = _unit_vectors(5)
    index.upsert(_entries(vectors))
    hits = index.search(-vectors[2], 5, Selection())
    assert _ids(hits)[-1] == "item-2"
    assert hits[-1].score == pytest.approx(-1.0, abs=atol)


def test_limit_caps_the_hits(index: VectorIndex) -> None:
    vectors = _unit_vectors(20)
    index.upsert(_entries(vectors))
    assert len(index.search(vectors[0], 5, Selection())) == 5
    assert len(index.search(vectors[0], 100, Selection())) == 20


def test_upsert_replaces_an_item(index: VectorIndex, atol: float) -> None:
    vectors = _unit_vectors(10)
    index.upsert(_entries(vectors))
    replacement = IndexEntry("item-3", vectors[8], "hash-new", 4, {"genre": "western"})
    index.upsert([replacement])
    assert index.count() == 10
    np.testing.assert_allclose(index.vectors(["item-3"])["item-3"], vectors[8], atol=atol)
    assert index.fingerprints()["item-3"] == "hash-new"
    hits = index.search(vectors[8], 2, Selection())
    assert sorted(_ids(hits)) == ["item-3", "item-8"]
    assert all(h.score == pytest.approx(1.0, abs=atol) for h in hits)
    # The replaced metadata is what filters see.
    drama = Selection(conditions=(FieldCondition("genre", equals="drama"),))
    assert "item-3" not in _ids(index.search(vectors[3], 10, drama))
    western = Selection(conditions=(FieldCondition("genre", equals="western"),))
    assert "item-3" in _ids(index.search(vectors[3], 10, western))


def test_delete(index: VectorIndex) -> None:
    vectors = _unit_vectors(10)
    index.upsert(_entries(vectors))
    index.delete(["item-2", "item-5", "never-existed"])
    assert index.count() == 8
    assert set(index.fingerprints()) == {f"item-{i}" for i in range(10) if i not in (2, 5)}
    assert "item-2" not in _ids(index.search(vectors[2], 10, Selection()))
    assert index.vectors(["item-2", "item-3"]).keys() == {"item-3"}
    assert "item-5" not in index.newest(10, Selection())
    index.delete([])
    assert index.count() == 8


def test_exclusion_of_the_nearest_thousand_still_fills_the_limit(
    filled: tuple[VectorIndex, Matrix], exact: Exact
) -> None:
    index, vectors = filled
    query = vectors[0]
    nearest = exact(vectors, query, range(3000), 1000)
    selection = Selection(exclude=frozenset(nearest))
    hits = index.search(query, 10, selection)
    assert len(hits) == 10
    assert not set(_ids(hits)) & selection.exclude
    admitted = [i for i in range(3000) if f"item-{i}" not in selection.exclude]
    assert _ids(hits) == exact(vectors, query, admitted, 10)
    newest = index.newest(10, selection)
    assert len(newest) == 10
    assert not set(newest) & selection.exclude


def test_narrow_filter_still_fills_the_limit(
    filled: tuple[VectorIndex, Matrix], exact: Exact
) -> None:
    index, vectors = filled
    rare = _matching(lambda m: m["rare"] == "yes")
    assert len(rare) == 30
    selection = Selection(conditions=(FieldCondition("rare", equals="yes"),))
    for query in (vectors[0], vectors[1500], -vectors[7]):
        hits = index.search(query, 10, selection)
        assert len(hits) == 10
        assert _ids(hits) == exact(vectors, query, rare, 10)
    assert len(index.search(vectors[0], 100, selection)) == 30


@pytest.mark.parametrize(
    ("condition", "predicate"),
    [
        (FieldCondition("genre", equals="horror"), lambda m: m["genre"] == "horror"),
        (FieldCondition("tags", equals="tag12"), lambda m: "tag12" in m["tags"]),
        (
            FieldCondition("genre", any_of=("comedy", "western")),
            lambda m: m["genre"] in ("comedy", "western"),
        ),
        (
            FieldCondition("tags", any_of=("tag2", "tag13")),
            lambda m: "tag2" in m["tags"] or "tag13" in m["tags"],
        ),
        (FieldCondition("year", equals=1960), lambda m: m["year"] == 1960),
        (FieldCondition("year", any_of=(1951, 1999)), lambda m: m["year"] in (1951, 1999)),
        (
            FieldCondition("year", range=Range(gte=2000, lt=2010)),
            lambda m: 2000 <= m["year"] < 2010,
        ),
        (
            FieldCondition("year", range=Range(gt=2015)),
            lambda m: m["year"] > 2015,
        ),
        (
            FieldCondition("rating", range=Range(gt=1.0, lte=2.5)),
            lambda m: 1.0 < m["rating"] <= 2.5,
        ),
        (FieldCondition("rating", equals=3.5), lambda m: m["rating"] == 3.5),
        (FieldCondition("rating", any_of=(0.5, 4.0)), lambda m: m["rating"] in (0.5, 4.0)),
        pytest.param(FieldCondition("flag", equals=True), lambda m: m["flag"] is True),
        pytest.param(FieldCondition("flag", equals=False), lambda m: m["flag"] is False),
        pytest.param(FieldCondition("flag", any_of=(True,)), lambda m: m["flag"] is True),
        pytest.param(FieldCondition("rating", equals=2), lambda m: m["rating"] == 2),
        (FieldCondition("year", equals=1960.0), lambda m: m["year"] == 1960),
        (FieldCondition("genre", equals="no-such-genre"), lambda _m: False),
        (FieldCondition("no_such_field", equals="x"), lambda _m: False),
    ],
    ids=[
        "keyword",
        "value-in-list",
        "any-of-keywords",
        "any-of-list-values",
        "integer",
        "any-of-integers",
        "integer-range",
        "integer-open-range",
        "float-range",
        "float-equality",
        "any-of-floats",
        "bool-true",
        "bool-false",
        "any-of-bools",
        "integer-equals-float-field",
        "float-equals-integer-field",
        "no-match",
        "unknown-field",
    ],
)
def test_metadata_filters(
    filled: tuple[VectorIndex, Matrix],
    condition: FieldCondition,
    predicate: Callable[[dict[str, Any]], bool],
    exact: Exact,
) -> None:
    index, vectors = filled
    admitted = _matching(predicate)
    selection = Selection(conditions=(condition,))
    query = vectors[11]
    hits = index.search(query, 20, selection)
    assert _ids(hits) == exact(vectors, query, admitted, 20)
    newest = index.newest(20, selection)
    assert newest == [f"item-{i}" for i in sorted(admitted, reverse=True)[:20]]


def test_conditions_combine_with_and(filled: tuple[VectorIndex, Matrix], exact: Exact) -> None:
    index, vectors = filled
    selection = Selection(
        conditions=(
            FieldCondition("genre", equals="drama"),
            FieldCondition("tags", any_of=("tag0", "tag1")),
            FieldCondition("year", range=Range(lt=1990)),
        )
    )
    admitted = _matching(
        lambda m: (
            m["genre"] == "drama" and bool({"tag0", "tag1"} & set(m["tags"])) and m["year"] < 1990
        )
    )
    assert 0 < len(admitted) < 3000
    hits = index.search(vectors[5], 25, selection)
    assert _ids(hits) == exact(vectors, vectors[5], admitted, 25)


def test_only_restricts_to_the_given_ids(index: VectorIndex, exact: Exact) -> None:
    vectors = _unit_vectors(40)
    index.upsert(_entries(vectors))
    only = frozenset({"item-3", "item-17", "item-29", "not-in-index"})
    hits = index.search(vectors[0], 10, Selection(only=only))
    assert sorted(_ids(hits)) == ["item-17", "item-29", "item-3"]
    assert _ids(hits) == exact(vectors, vectors[0], [3, 17, 29], 10)
    assert index.search(vectors[0], 10, Selection(only=frozenset())) == []
    assert index.newest(10, Selection(only=frozenset())) == []
    assert index.newest(10, Selection(only=only)) == ["item-29", "item-17", "item-3"]
    both = Selection(only=only, exclude=frozenset({"item-17"}))
    assert sorted(_ids(index.search(vectors[0], 10, both))) == ["item-29", "item-3"]


def test_recommend_ranks_by_the_nearest_example(index: VectorIndex, kind: str) -> None:
    vectors = _unit_vectors(60)
    index.upsert(_entries(vectors))
    examples = frozenset({"item-0", "item-1", "item-2"})
    hits = index.recommend(["item-0", "item-1"], ["item-2"], 57, Selection(exclude=examples))
    assert len(hits) == 57
    # The examples are stored vectors too, compared at the stored precision.
    vectors = vectors.astype(STORED_AS[kind]).astype(np.float32)
    nearest_liked = {
        f"item-{j}": max(vectors[j] @ vectors[0], vectors[j] @ vectors[1]) for j in range(3, 60)
    }
    nearest_disliked = {f"item-{j}": vectors[j] @ vectors[2] for j in range(3, 60)}
    closer_to_liked = [i for i in nearest_liked if nearest_liked[i] > nearest_disliked[i]]
    # Items nearer a liked example come first, by that similarity; the others after them,
    # those least like the disliked example first.
    expected = [
        *sorted(closer_to_liked, key=lambda i: -nearest_liked[i]),
        *sorted(set(nearest_liked) - set(closer_to_liked), key=lambda i: nearest_disliked[i]),
    ]
    assert _ids(hits) == expected
    assert all((h.score > 0) == (h.item_id in closer_to_liked) for h in hits)
    for hit in hits:
        j = int(hit.item_id[5:])
        assert hit.via == (
            "item-0" if vectors[j] @ vectors[0] >= vectors[j] @ vectors[1] else "item-1"
        )


def test_recommend_respects_the_selection_and_needs_a_liked_example(
    index: VectorIndex, exact: Exact
) -> None:
    vectors = _unit_vectors(40)
    index.upsert(_entries(vectors))
    drama = Selection(conditions=(FieldCondition("genre", equals="drama"),))
    hits = index.recommend(["item-1", "missing"], [], 5, drama)
    assert _ids(hits) == exact(vectors, vectors[1], range(0, 40, 5), 5)
    assert {h.via for h in hits} == {"item-1"}
    assert index.recommend(["missing"], ["item-2"], 5, Selection()) == []
    assert index.recommend([], ["item-2"], 5, Selection()) == []
    assert index.recommend(["item-1"], [], 5, Selection(only=frozenset())) == []


def test_newest_orders_by_descending_seq(index: VectorIndex) -> None:
    vectors = _unit_vectors(30)
    entries = _entries(vectors)
    # Insertion order differs from seq order: seq alone decides.
    index.upsert(entries[15:])
    index.upsert(entries[:15])
    assert index.newest(5, Selection()) == [f"item-{i}" for i in (29, 28, 27, 26, 25)]
    assert index.newest(100, Selection()) == [f"item-{i}" for i in range(29, -1, -1)]
    selection = Selection(
        conditions=(FieldCondition("genre", equals="drama"),), exclude=frozenset({"item-25"})
    )
    # Drama is every fifth item, and item-25 is excluded.
    assert index.newest(3, selection) == ["item-20", "item-15", "item-10"]


def test_vectors_returns_the_stored_unit_vectors(index: VectorIndex, atol: float) -> None:
    vectors = _unit_vectors(10)
    index.upsert(_entries(vectors))
    found = index.vectors(["item-1", "item-4", "missing"])
    assert found.keys() == {"item-1", "item-4"}
    for item_id, vector in found.items():
        assert vector.dtype == np.float32
        assert vector.shape == (DIM,)
        np.testing.assert_allclose(vector, vectors[int(item_id[5:])], atol=atol)
    assert index.vectors([]) == {}


def test_hashed_vectors_pair_each_vector_with_the_hash_it_was_written_with(
    index: VectorIndex, atol: float
) -> None:
    vectors = _unit_vectors(10)
    index.upsert(_entries(vectors[:5]))
    replaced = IndexEntry("item-2", vectors[9], content_hash="hash-new", seq=3)
    index.upsert([replaced])
    found = index.hashed_vectors(["item-1", "item-2", "missing"])
    assert found.keys() == {"item-1", "item-2"}
    assert found["item-1"][1] == "hash-1"
    np.testing.assert_allclose(found["item-1"][0], vectors[1], atol=atol)
    assert found["item-2"][1] == "hash-new"
    np.testing.assert_allclose(found["item-2"][0], vectors[9], atol=atol)
    assert index.hashed_vectors([]) == {}


def test_fingerprints_return_every_content_hash(filled: tuple[VectorIndex, Matrix]) -> None:
    index, _ = filled
    assert index.fingerprints() == {f"item-{i}": f"hash-{i}" for i in range(3000)}


def test_count(index: VectorIndex) -> None:
    vectors = _unit_vectors(25)
    index.upsert(_entries(vectors[:20]))
    assert index.count() == 20
    index.upsert(_entries(vectors[15:], start=15))
    assert index.count() == 25
    index.upsert([])
    assert index.count() == 25


def test_a_working_index_passes_its_check(index: VectorIndex) -> None:
    index.check()
    index.upsert(_entries(_unit_vectors(5)))
    index.check()
    index.clear()
    index.check()


def test_search_after_optimize(index: VectorIndex, exact: Exact) -> None:
    vectors = _fill(index)
    index.optimize()
    assert index.count() == 3000
    hits = index.search(vectors[42], 10, Selection())
    assert _ids(hits)[0] == "item-42"
    exact = exact(vectors, vectors[42], range(3000), 10)
    # An approximate graph may now answer; it must still find nearly all true neighbours.
    assert len(set(_ids(hits)) & set(exact)) >= 9
    selection = Selection(conditions=(FieldCondition("rare", equals="yes"),))
    rare_hits = index.search(vectors[42], 10, selection)
    assert len(rare_hits) == 10
    rare = set(_matching(lambda m: m["rare"] == "yes"))
    assert all(int(i[5:]) in rare for i in _ids(rare_hits))
    index.upsert(_entries(_unit_vectors(5, seed=9), start=3000))
    assert index.count() == 3005
    assert _ids(index.search(_unit_vectors(5, seed=9)[2], 1, Selection())) == ["item-3002"]


def test_reopening_keeps_everything(kind: str, tmp_path: Path, atol: float, exact: Exact) -> None:
    path = tmp_path / "index"
    vectors = _unit_vectors(40)
    first = FACTORIES[kind](path, DIM)
    first.upsert(_entries(vectors))
    first.delete(["item-39"])
    first.close()
    again = FACTORIES[kind](path, DIM)
    try:
        assert again.count() == 39
        assert again.fingerprints() == {f"item-{i}": f"hash-{i}" for i in range(39)}
        assert _ids(again.search(vectors[12], 1, Selection())) == ["item-12"]
        np.testing.assert_allclose(again.vectors(["item-5"])["item-5"], vectors[5], atol=atol)
        assert again.newest(2, Selection()) == ["item-38", "item-37"]
        horror = Selection(conditions=(FieldCondition("genre", equals="horror"),))
        assert _ids(again.search(vectors[0], 100, horror)) == exact(
            vectors, vectors[0], [i for i in range(39) if i % 5 == 2], 100
        )
        # Writing after a reopen still works, including a field first seen now.
        extra = IndexEntry("extra", vectors[0], "hash-x", 100, {"studio": "acme"})
        again.upsert([extra])
        studio = Selection(conditions=(FieldCondition("studio", equals="acme"),))
        assert _ids(again.search(vectors[1], 10, studio)) == ["extra"]
    finally:
        again.close()


def test_clear_empties_the_index(index: VectorIndex) -> None:
    vectors = _unit_vectors(20)
    index.upsert(_entries(vectors))
    index.clear()
    assert index.count() == 0
    assert index.fingerprints() == {}
    assert index.search(vectors[0], 5, Selection()) == []
    assert index.newest(5, Selection()) == []
    # The index stays usable after a clear, filters and newest included.
    index.upsert(_entries(vectors[:3]))
    assert index.count() == 3
    drama = Selection(conditions=(FieldCondition("genre", equals="drama"),))
    assert _ids(index.search(vectors[1], 5, drama)) == ["item-0"]
    assert index.newest(5, Selection()) == ["item-2", "item-1", "item-0"]


def test_reopening_with_another_dimension_is_a_config_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "index"
    first = FACTORIES[kind](path, DIM)
    first.upsert(_entries(_unit_vectors(3)))
    first.close()
    with pytest.raises(ConfigError, match=ANOTHER_DIMENSION[kind]):
        FACTORIES[kind](path, DIM * 2)
    # The stored index is left intact for the right model.
    again = FACTORIES[kind](path, DIM)
    try:
        assert again.count() == 3
    finally:
        again.close()


# -- keyword search -------------------------------------------------------------------------

#: Short texts in the style of several catalogs; "narwhal" and "SKU-4417" occur once each.
TEXTS = (
    "A documentary about whales and dolphins of the Arctic sea.",
    "The narwhal, the unicorn of the sea, filmed under the Arctic ice.",
    "Cordless drill with two batteries, model SKU-4417, for wood and metal.",
    "Cordless screwdriver with one battery for wood.",
    "Tomato soup with basil and cream, ready in twenty minutes.",
    "Roasted tomatoes and garlic on sourdough toast.",
)


def _texts() -> list[IndexEntry]:
    vectors = _unit_vectors(len(TEXTS), seed=5)
    return [
        IndexEntry(f"item-{i}", vectors[i], f"hash-{i}", i + 1, {"genre": GENRES[i % 2]}, text=text)
        for i, text in enumerate(TEXTS)
    ]


def test_keyword_search_finds_rare_words_first(index: VectorIndex) -> None:
    index.upsert(_texts())
    assert _ids(index.keyword_search("narwhal", 10, Selection())) == ["item-1"]
    # Case, accents and punctuation aside; a rare word outweighs common ones.
    assert _ids(index.keyword_search("sku-4417 drill", 10, Selection()))[0] == "item-2"
    hits = index.keyword_search("arctic sea narwhal", 10, Selection())
    assert _ids(hits)[:2] == ["item-1", "item-0"]
    assert hits[0].score > hits[1].score > 0
    # Only items that share a word are returned.
    assert set(_ids(index.keyword_search("tomato", 10, Selection()))) <= {"item-4", "item-5"}
    assert index.keyword_search("xylophone", 10, Selection()) == []
    assert index.keyword_search("", 10, Selection()) == []
    assert len(index.keyword_search("cordless wood", 1, Selection())) == 1


def test_keyword_search_applies_the_selection(index: VectorIndex) -> None:
    index.upsert(_texts())
    everything = set(_ids(index.keyword_search("wood sea", 10, Selection())))
    assert everything == {"item-0", "item-1", "item-2", "item-3"}
    drama = Selection(conditions=(FieldCondition("genre", equals="drama"),))
    assert set(_ids(index.keyword_search("wood sea", 10, drama))) == {"item-0", "item-2"}
    excluded = Selection(exclude=frozenset({"item-1", "item-2"}))
    assert set(_ids(index.keyword_search("wood sea", 10, excluded))) == {"item-0", "item-3"}
    only = Selection(only=frozenset({"item-3", "item-4"}))
    assert _ids(index.keyword_search("wood sea", 10, only)) == ["item-3"]
    assert index.keyword_search("wood sea", 10, Selection(only=frozenset())) == []


def test_keyword_search_follows_upserts_and_deletes(index: VectorIndex) -> None:
    entries = _texts()
    index.upsert(entries)
    renamed = IndexEntry(
        "item-1", entries[1].vector, "hash-new", 2, {"genre": "comedy"}, text="Penguins at play."
    )
    index.upsert([renamed])
    assert index.keyword_search("narwhal", 10, Selection()) == []
    assert _ids(index.keyword_search("penguins", 10, Selection())) == ["item-1"]
    index.delete(["item-2"])
    assert index.keyword_search("SKU-4417", 10, Selection()) == []
    index.optimize()
    assert _ids(index.keyword_search("penguins", 10, Selection())) == ["item-1"]
    assert "item-2" not in _ids(index.keyword_search("cordless", 10, Selection()))


def test_equal_scores_come_in_item_order(index: VectorIndex) -> None:
    # Where the engine keeps an item (a segment written before or after an optimisation)
    # must not decide the order of items that match alike.
    vector = _unit_vectors(1, seed=9)[0]

    def lamps(*names: str) -> list[IndexEntry]:
        return [
            IndexEntry(f"lamp-{n}", vector, f"hash-{n}", 1, {}, text="A brass lamp.") for n in names
        ]

    index.upsert(lamps("c", "a", "e"))
    index.optimize()
    index.upsert(lamps("d", "b"))
    expected = ["lamp-a", "lamp-b", "lamp-c", "lamp-d", "lamp-e"]
    assert _ids(index.keyword_search("lamp", 10, Selection())) == expected
    assert _ids(index.search(vector, 10, Selection())) == expected
    alike = Selection(exclude=frozenset({"lamp-c"}))
    assert _ids(index.recommend(["lamp-c"], [], 10, alike)) == [
        "lamp-a",
        "lamp-b",
        "lamp-d",
        "lamp-e",
    ]


# -- phrase vectors -------------------------------------------------------------------------

#: Phrases per item of ``_phrased``; the last item has none.
PHRASE_COUNTS = (1, 3, 2, 4, 2, 0)


def _phrased() -> list[IndexEntry]:
    """``_texts`` with random phrase vectors (the last item without any)."""
    rows = _unit_vectors(sum(PHRASE_COUNTS), seed=9)
    bounds = np.cumsum((0, *PHRASE_COUNTS))
    return [
        replace(e, phrases=rows[bounds[i] : bounds[i + 1]] if PHRASE_COUNTS[i] else None)
        for i, e in enumerate(_texts())
    ]


def test_phrase_search_scores_each_item_by_its_best_phrase(
    phrased: VectorIndex, atol: float
) -> None:
    entries = _phrased()
    phrased.upsert(entries)
    for query in (entries[3].phrases[2], entries[1].phrases[0], *_unit_vectors(3, seed=11)):
        hits = phrased.phrase_search(query, 10, Selection())
        best = {
            e.item_id: float(np.max(e.phrases @ query)) for e in entries if e.phrases is not None
        }
        expected = sorted(best, key=lambda i: -best[i])
        assert _ids(hits) == expected
        np.testing.assert_allclose([h.score for h in hits], [best[i] for i in expected], atol=atol)
    # An item's own phrase finds it first, whichever of its phrases it is.
    assert _ids(phrased.phrase_search(entries[3].phrases[2], 1, Selection())) == ["item-3"]


def test_phrase_search_applies_the_selection(phrased: VectorIndex) -> None:
    entries = _phrased()
    phrased.upsert(entries)
    query = entries[2].phrases[1]
    drama = Selection(conditions=(FieldCondition("genre", equals="drama"),))
    assert set(_ids(phrased.phrase_search(query, 10, drama))) == {"item-0", "item-2", "item-4"}
    excluded = Selection(exclude=frozenset({"item-2"}))
    assert "item-2" not in _ids(phrased.phrase_search(query, 10, excluded))
    only = Selection(only=frozenset({"item-3", "item-5"}))
    assert _ids(phrased.phrase_search(query, 10, only)) == ["item-3"]
    assert phrased.phrase_search(query, 10, Selection(only=frozenset())) == []


def test_phrase_vectors_are_kept_replaced_and_deleted_with_their_item(
    phrased: VectorIndex, atol: float
) -> None:
    entries = _phrased()
    phrased.upsert(entries)
    stored = phrased.phrase_vectors([e.item_id for e in entries] + ["unknown"])
    assert set(stored) == {e.item_id for e in entries if e.phrases is not None}
    for e in entries[:-1]:
        assert e.phrases is not None
        np.testing.assert_allclose(stored[e.item_id], e.phrases, atol=atol)
    replaced = replace(entries[1], phrases=entries[3].phrases)
    phrased.upsert([replaced])
    np.testing.assert_allclose(
        phrased.phrase_vectors(["item-1"])["item-1"], entries[3].phrases, atol=atol
    )
    phrased.delete(["item-3"])
    phrased.optimize()
    assert phrased.phrase_vectors(["item-3"]) == {}
    assert "item-3" not in _ids(phrased.phrase_search(entries[3].phrases[0], 10, Selection()))


def test_entries_written_without_phrase_vectors_are_outdated(phrased: VectorIndex) -> None:
    entries = _phrased()
    phrased.upsert(entries)
    # Only the item written without them; rewritten with them, it is up to date.
    assert phrased.outdated() == ["item-5"]
    phrased.upsert([replace(entries[5], phrases=entries[0].phrases)])
    assert phrased.outdated() == []


def test_an_index_without_phrase_vectors_ignores_them(index: VectorIndex) -> None:
    entries = _phrased()
    index.upsert(entries)
    assert not index.phrases
    assert index.phrase_search(entries[3].phrases[0], 10, Selection()) == []
    assert index.phrase_vectors([e.item_id for e in entries]) == {}
    assert index.outdated() == []
