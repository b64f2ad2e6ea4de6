import pytest

from appliance.domain import Candidate, Hit
from appliance.services.fusion import RRF_K, reciprocal_rank_fusion


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(item_id, score) for item_id, score in pairs]


def _ids(candidates: list[Candidate]) -> list[str]:
    return [c.item_id for c in candidates]


def test_single_list_keeps_its_order() -> None:
    fused = reciprocal_rank_fusion({"vector": _hits(("a", 0.9), ("b", 0.8), ("c", 0.1))})
    assert _ids(fused) == ["a", "b", "c"]
    assert [c.score for c in fused] == [0.9, 0.8, 0.1]


def test_two_disjoint_lists_interleave_by_rank() -> None:
    fused = reciprocal_rank_fusion(
        {
            "vector": _hits(("a", 0.9), ("b", 0.8), ("c", 0.7)),
            "popular": _hits(("x", 30.0), ("y", 20.0), ("z", 10.0)),
        }
    )
    # Equal ranks tie; ties keep the order of first appearance.
    assert _ids(fused) == ["a", "x", "b", "y", "c", "z"]


def test_item_in_both_lists_ranks_first() -> None:
    fused = reciprocal_rank_fusion(
        {
            "vector": _hits(("a", 0.9), ("b", 0.8), ("shared", 0.7)),
            "popular": _hits(("x", 3.0), ("y", 2.0), ("shared", 1.0)),
        }
    )
    assert _ids(fused)[0] == "shared"
    assert sorted(_ids(fused)) == ["a", "b", "shared", "x", "y"]


def test_sources_record_each_source_score_and_score_is_the_best() -> None:
    fused = reciprocal_rank_fusion(
        {
            "vector": _hits(("a", 0.4), ("b", 0.3)),
            "popular": _hits(("b", 7.5), ("c", 2.0)),
        }
    )
    by_id = {c.item_id: c for c in fused}
    assert by_id["a"].sources == {"vector": 0.4}
    assert by_id["b"].sources == {"vector": 0.3, "popular": 7.5}
    assert by_id["c"].sources == {"popular": 2.0}
    assert by_id["a"].score == 0.4
    assert by_id["b"].score == 7.5
    assert by_id["c"].score == 2.0


def test_best_score_also_holds_when_the_first_source_scored_higher() -> None:
    fused = reciprocal_rank_fusion({"vector": _hits(("a", 0.9)), "context": _hits(("a", 0.2))})
    assert fused[0].score == 0.9
    assert fused[0].sources == {"vector": 0.9, "context": 0.2}


def test_weights_change_the_order() -> None:
    ranked = {
        "vector": _hits(("a", 0.9), ("b", 0.8)),
        "popular": _hits(("x", 3.0), ("y", 2.0)),
    }
    assert _ids(reciprocal_rank_fusion(ranked))[:2] == ["a", "x"]
    assert _ids(reciprocal_rank_fusion(ranked, {"popular": 2.0}))[:2] == ["x", "y"]
    assert _ids(reciprocal_rank_fusion(ranked, {"vector": 0.1})) == ["x", "y", "a", "b"]


def test_unlisted_source_has_weight_one() -> None:
    ranked = {"vector": _hits(("a", 0.9)), "popular": _hits(("x", 3.0), ("y", 1.0))}
    # rank 1 at weight 1 beats rank 1 at weight 0.99 ...
    assert _ids(reciprocal_rank_fusion(ranked, {"vector": 0.99}))[0] == "x"
    # ... and loses to rank 1 at weight 1.01.
    assert _ids(reciprocal_rank_fusion(ranked, {"vector": 1.01}))[0] == "a"


def test_fused_order_follows_the_rrf_formula() -> None:
    # "b" is 2nd and 2nd; "a" is 1st and absent: 2/(k+2) > 1/(k+1).
    fused = reciprocal_rank_fusion(
        {"one": _hits(("a", 1.0), ("b", 1.0)), "two": _hits(("c", 1.0), ("b", 1.0))}
    )
    assert 2 / (RRF_K + 2) > 1 / (RRF_K + 1)
    assert _ids(fused) == ["b", "a", "c"]


def test_a_lower_rank_in_two_lists_can_lose_to_the_top_of_one() -> None:
    long_list = [Hit(f"v{i}", 1.0) for i in range(100)] + [Hit("deep", 0.1)]
    other = [Hit(f"p{i}", 1.0) for i in range(100)] + [Hit("deep", 0.1)]
    fused = reciprocal_rank_fusion({"vector": long_list, "popular": other})
    # 2/(k+101) < 1/(k+1): the first of one list still leads ...
    assert _ids(fused)[0] == "v0"
    # ... and "deep" lands between rank 20 (1/(k+20)) and rank 21 (1/(k+21)) of each list.
    assert 1 / (RRF_K + 20) > 2 / (RRF_K + 101) > 1 / (RRF_K + 21)
    assert _ids(fused).index("deep") == 40
    assert _ids(fused)[38:42] == ["v19", "p19", "deep", "v20"]


@pytest.mark.parametrize("ranked", [{}, {"vector": []}, {"vector": [], "popular": []}])
def test_empty_input_gives_no_candidates(ranked: dict[str, list[Hit]]) -> None:
    assert reciprocal_rank_fusion(ranked) == []


def test_every_item_appears_once() -> None:
    fused = reciprocal_rank_fusion(
        {
            "vector": _hits(("a", 0.9), ("b", 0.8), ("c", 0.7)),
            "context": _hits(("c", 0.9), ("a", 0.8)),
            "popular": _hits(("b", 5.0), ("d", 1.0)),
        }
    )
    assert sorted(_ids(fused)) == ["a", "b", "c", "d"]


def test_the_item_a_hit_came_through_is_kept_per_source() -> None:
    fused = reciprocal_rank_fusion(
        {
            "vector": _hits(("a", 0.9)),
            "similar": [Hit("a", 0.5, via="liked-1"), Hit("b", 0.4, via="liked-2")],
        }
    )
    assert {c.item_id: c.via for c in fused} == {
        "a": {"similar": "liked-1"},
        "b": {"similar": "liked-2"},
    }
