"""The neighbourhood on its own: which neighbours an item gets, its blended vector, its search."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.services.collaborative import _BLOCK_ROWS, ItemSimilarity
from appliance.services.neighbourhood import Neighbourhood, strongest_in_rows
from tests.unit.test_collaborative_model import fitted, groups


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_the_strongest_neighbours_are_the_largest_positive_weights_in_order() -> None:
    rows = np.array(
        [
            [0.0, 0.2, 0.9, -0.5, 0.4],
            [0.3, 0.0, -0.1, -0.2, 0.0],
        ],
        dtype=np.float32,
    )
    assert strongest_in_rows(rows, 3).tolist() == [[2, 4, 1], [0, -1, -1]]
    # Never more neighbours than other items.
    assert strongest_in_rows(rows, 10).shape == (2, 4)


def test_a_models_strongest_neighbours_are_in_its_own_group() -> None:
    model = fitted(groups())
    strongest = model.strongest_neighbours(2)
    assert strongest.shape == (len(model.item_ids), 2)
    # Each item's strongest neighbours are in its own group: the same people took them.
    for item, row in zip(model.item_ids, strongest.tolist(), strict=True):
        assert {model.item_ids[j][0] for j in row if j >= 0} == {item[0]}
    assert len(model.item_ids) < _BLOCK_ROWS  # several blocks: the test below


def test_a_models_neighbours_over_several_blocks_match_one_pass() -> None:
    rng = np.random.default_rng(3)
    size = _BLOCK_ROWS * 2 + 5
    weights = rng.normal(size=(size, size)).astype(np.float32)
    np.fill_diagonal(weights, 0.0)
    model = ItemSimilarity(
        [f"item-{n}" for n in range(size)], weights, pairs=0, users=0, build_seconds=0.0
    )
    assert (model.strongest_neighbours(4) == strongest_in_rows(weights, 4)).all()


def test_an_item_is_found_by_the_words_that_fit_its_company() -> None:
    items = ["bare", "tent", "stove", "paint"]
    vectors = {
        "bare": unit(0, 0, 1),  # its own text says nothing of camping
        "tent": unit(1, 0, 0.2),
        "stove": unit(1, 0.1, 0),
        "paint": unit(0, 1, 0),
    }
    strongest = np.array([[1, 2], [2, 0], [1, -1], [-1, -1]], dtype=np.int64)
    hood = Neighbourhood.build(items, strongest, vectors)
    assert hood is not None
    # The paint has no neighbour: nothing to blend, so it is left to the vector source.
    assert hood.item_ids == ["bare", "tent", "stove"]
    camping = unit(1, 0, 0)
    ranked = hood.search(camping, 3)
    assert [i for i, _ in ranked] == ["stove", "tent", "bare"]
    bare = dict(ranked)["bare"]
    # Its own vector is orthogonal to the words; blended with its company's it is not.
    assert float(vectors["bare"] @ camping) == pytest.approx(0.0)
    assert bare > 0.5
    # Found through the neighbour nearest the words.
    assert hood.closest_neighbours(["bare", "paint"], camping) == {"bare": "stove"}
    assert hood.search(camping, 1) == ranked[:1]
    assert hood.search(camping, 0) == []


def test_items_without_a_vector_are_neither_found_nor_blended_in() -> None:
    items = ["gone", "tent", "stove"]
    vectors = {"tent": unit(1, 0), "stove": unit(0, 1)}
    strongest = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)
    hood = Neighbourhood.build(items, strongest, vectors)
    assert hood is not None
    assert hood.item_ids == ["tent", "stove"]
    # The tent's one usable neighbour is the stove: half its own, half the stove's.
    assert hood.search(unit(1, 1), 1) == [("tent", pytest.approx(1.0))]
    assert hood.closest_neighbours(["tent"], unit(1, 0)) == {"tent": "stove"}
    assert Neighbourhood.build(items, strongest, {}) is None
    lonely = np.array([[-1, -1], [-1, -1], [-1, -1]], dtype=np.int64)
    assert Neighbourhood.build(items, lonely, vectors) is None
