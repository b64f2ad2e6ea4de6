"""The item-similarity model on its own: EASE's weights, neighbours, and where they come from."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from appliance.services.collaborative import (
    _BLOCK_ROWS,
    COOCCURRENCE_NEIGHBOURS,
    ItemSimilarity,
    _invert_positive_definite,
    cooccurrence,
    fit,
)
from appliance.settings import CollaborativeSettings

SETTINGS = CollaborativeSettings(l2=1.0)


def pairs_table(pairs: list[tuple[str, str]]) -> pa.Table:
    """Interactions as the store returns them (weights and times do not matter to the model)."""
    return pa.table(
        {
            "user_id": pa.array([u for u, _ in pairs], type=pa.string()),
            "item_id": pa.array([i for _, i in pairs], type=pa.string()),
            "weight": pa.array([1.0] * len(pairs), type=pa.float64()),
            "event_time": pa.array([0.0] * len(pairs), type=pa.float64()),
        }
    )


def groups() -> list[tuple[str, str]]:
    """Three groups of five items; each user takes three items of one group."""
    rng = np.random.default_rng(7)
    return [
        (f"user-{group}-{n}", f"{group}-{i}")
        for group in ("a", "b", "c")
        for n in range(12)
        for i in rng.choice(5, size=3, replace=False)
    ]


def fitted(
    pairs: list[tuple[str, str]], settings: CollaborativeSettings = SETTINGS
) -> ItemSimilarity:
    model = fit(pairs_table(pairs), settings)
    assert model is not None
    return model


def test_weights_are_eases_closed_form() -> None:
    pairs = groups()
    model = fitted(pairs)
    items = model.item_ids
    x = np.zeros((36, len(items)))
    users = sorted({u for u, _ in pairs})
    for u, i in pairs:
        x[users.index(u), items.index(i)] = 1.0
    inverse = np.linalg.inv(x.T @ x + SETTINGS.l2 * np.eye(len(items)))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    for row, item in enumerate(items):
        # float32 against float64: weights that are zero in exact arithmetic may not be.
        expected = {items[j]: w for j, w in enumerate(weights[row]) if w > 1e-6}
        found = {i: w for i, w in model.neighbours({item: 1.0}, len(items)) if w > 1e-6}
        assert found.keys() == expected.keys()
        for other, score in found.items():
            assert score == pytest.approx(expected[other], rel=1e-4)
    assert model.pairs == len(pairs)
    assert model.users == len(users)


def test_each_build_keeps_the_cosine_similarity_of_who_chose_what() -> None:
    pairs = groups()
    model = fitted(pairs)
    alike = model.cooccurrence
    assert alike is not None
    assert alike.item_ids == model.item_ids
    items = model.item_ids
    users = sorted({u for u, _ in pairs})
    x = np.zeros((len(users), len(items)))
    for u, i in pairs:
        x[users.index(u), items.index(i)] = 1.0
    counts = x.sum(axis=0)
    cosine = (x.T @ x) / np.sqrt(np.outer(counts, counts))
    np.fill_diagonal(cosine, 0.0)
    for row, item in enumerate(items):
        expected = {items[j]: c for j, c in enumerate(cosine[row]) if c > 0}
        found = dict(alike.neighbours({item: 1.0}, len(items)))
        assert found.keys() == expected.keys()
        for other, score in found.items():
            assert score == pytest.approx(expected[other], rel=1e-5)
    assert model.nbytes > alike.nbytes > 0
    assert len(items) < COOCCURRENCE_NEIGHBOURS  # every neighbour kept here; fewer below
    sparse = cooccurrence(x, 2)
    for row in range(len(items)):
        kept = sparse.getrow(row)
        assert kept.nnz == 2
        assert sorted(kept.data) == pytest.approx(sorted(cosine[row])[-2:])


def test_neighbours_come_from_the_group_and_name_the_item_they_came_through() -> None:
    model = fitted(groups())
    found = model.neighbours({"a-0": 1.0, "b-0": 1.0}, 8)
    assert {i[0] for i, _ in found} == {"a", "b"}
    assert all(i not in {"a-0", "b-0"} for i, _ in found)
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    via = model.strongest_sources({"a-0": 1.0, "b-0": 1.0}, [i for i, _ in found])
    assert via == {i: ("a-0" if i.startswith("a") else "b-0") for i, _ in found}
    # Preferred items (the liked ones) are named whenever they contributed at all.
    profile = {"a-0": 1.0, "a-1": 1.0}
    targets = [i for i, _ in model.neighbours(profile, 3)]
    strongest = model.strongest_sources(profile, targets)
    for liked in ("a-0", "a-1"):
        # What the liked item alone contributes to each target is its score alone.
        alone = dict(model.neighbours({liked: 1.0}, 15))
        expected = {t: liked if alone.get(t, 0.0) > 0 else strongest[t] for t in targets}
        assert model.strongest_sources(profile, targets, {liked}) == expected
    assert any(
        model.strongest_sources(profile, [t], {w})[t] != strongest[t]
        for t in targets
        for w in profile
    )
    assert model.strongest_sources({**profile, "b-0": 1.0}, ["b-2"], {"a-0"}) == {"b-2": "b-0"}
    # Items outside the model are ignored, as are empty profiles.
    assert model.neighbours({"unknown": 1.0}, 5) == []
    assert model.strongest_sources({"a-0": 1.0}, ["unknown"]) == {}


def test_the_same_data_gives_the_same_model() -> None:
    pairs = groups()
    first = fitted(pairs)
    second = fitted(list(reversed(pairs)))
    for item in first.item_ids:
        one, other = first.neighbours({item: 1.0}, 15), second.neighbours({item: 1.0}, 15)
        assert [i for i, _ in one] == [i for i, _ in other]
        assert [s for _, s in one] == pytest.approx([s for _, s in other])


def test_the_model_covers_the_most_used_items_that_two_users_share() -> None:
    pairs = [
        *[(f"u{n}", "hit") for n in range(5)],
        *[(f"u{n}", "often") for n in range(3)],
        *[(f"u{n}", "twice") for n in range(2)],
        ("u0", "once"),
    ]
    assert sorted(fitted(pairs).item_ids) == ["hit", "often", "twice"]
    capped = fitted(pairs, CollaborativeSettings(l2=1.0, max_items=2))
    assert sorted(capped.item_ids) == ["hit", "often"]
    assert capped.pairs == 8
    assert fit(pairs_table([("u0", "a"), ("u1", "a"), ("u0", "b")]), SETTINGS) is None
    assert fit(pairs_table([]), SETTINGS) is None


@pytest.mark.parametrize("n", [1, 7, _BLOCK_ROWS + 3, 2 * _BLOCK_ROWS + 1])
def test_the_inverse_in_place_is_the_inverse(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.random((n + 5, n))
    gram = x.T @ x + 0.5 * np.eye(n)
    matrix = gram.astype(np.float32)

    _invert_positive_definite(matrix)

    expected = np.linalg.inv(gram)
    assert np.array_equal(matrix, matrix.T)
    # Single precision on matrices of condition number up to ~1e5: within 1e-3 of the largest
    # entry (ranking by these weights needs far less).
    assert np.abs(matrix - expected).max() <= 1e-3 * np.abs(expected).max()


def test_a_matrix_that_is_not_positive_definite_is_refused() -> None:
    matrix = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="spotrf"):
        _invert_positive_definite(matrix)
