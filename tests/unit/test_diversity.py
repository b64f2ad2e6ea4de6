import numpy as np
import pytest

from appliance.domain import Candidate
from appliance.services.diversity import maximal_marginal_relevance


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def candidates(*ids: str) -> list[Candidate]:
    # Fused scores fall with the position, as fusion hands them over.
    return [Candidate(i, 0.0, fused=1.0 / (61 + n)) for n, i in enumerate(ids)]


#: Three copies of one item (a, a2, a3), then two different items (b, c).
VECTORS = {
    "a": unit(1, 0, 0),
    "a2": unit(1, 0.01, 0),
    "a3": unit(1, 0, 0.01),
    "b": unit(0, 1, 0),
    "c": unit(0, 0, 1),
}


def ids(ranked: list[Candidate]) -> list[str]:
    return [c.item_id for c in ranked]


def test_zero_diversity_keeps_the_fused_order() -> None:
    fused = candidates("a", "a2", "a3", "b", "c")
    assert ids(maximal_marginal_relevance(fused, VECTORS, 0.0)) == ["a", "a2", "a3", "b", "c"]


def test_near_duplicates_make_way_for_different_items() -> None:
    fused = candidates("a", "a2", "a3", "b", "c")
    reordered = ids(maximal_marginal_relevance(fused, VECTORS, 0.5))
    assert reordered[0] == "a"  # the best item stays first
    assert set(reordered[:3]) == {"a", "b", "c"}
    assert sorted(reordered) == sorted(ids(fused))


def test_more_diversity_moves_duplicates_further_down() -> None:
    fused = candidates("a", "a2", "b", "a3", "c")
    mild = ids(maximal_marginal_relevance(fused, VECTORS, 0.05))
    strong = ids(maximal_marginal_relevance(fused, VECTORS, 0.9))
    assert mild.index("a2") < strong.index("a2")
    assert strong[:3] == ["a", "b", "c"]


def test_an_item_without_a_vector_is_similar_to_nothing() -> None:
    fused = candidates("a", "a2", "new")
    vectors = {k: VECTORS[k] for k in ("a", "a2")}
    assert ids(maximal_marginal_relevance(fused, vectors, 0.5)) == ["a", "new", "a2"]


@pytest.mark.parametrize("size", [0, 1, 2])
def test_short_lists_are_returned_as_they_are(size: int) -> None:
    fused = candidates("a", "b")[:size]
    assert ids(maximal_marginal_relevance(fused, VECTORS, 1.0)) == ids(fused)
