import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest

from appliance.backends.stores.impressions import TrainingSet
from appliance.domain import Candidate, Hit
from appliance.services.fusion import (
    RRF_K,
    fit_weights,
    preference_pairs,
    rank_features,
    reciprocal_rank_fusion,
)
from appliance.services.learning import FusionLearner, FusionState, RequestKind, TrainingStatus
from appliance.settings import FusionSettings

if TYPE_CHECKING:
    from appliance.services.impressions import ImpressionLog


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


def test_each_candidate_keeps_its_rank_per_source_and_its_fused_score() -> None:
    fused = reciprocal_rank_fusion(
        {"vector": _hits(("a", 0.9), ("b", 0.8)), "popular": _hits(("b", 3.0))},
        {"popular": 2.0},
    )
    by_id = {c.item_id: c for c in fused}
    assert by_id["a"].ranks == {"vector": 1}
    assert by_id["b"].ranks == {"vector": 2, "popular": 1}
    assert by_id["a"].fused == pytest.approx(1 / (RRF_K + 1))
    assert by_id["b"].fused == pytest.approx(1 / (RRF_K + 2) + 2 / (RRF_K + 1))
    assert [c.fused for c in fused] == sorted((c.fused for c in fused), reverse=True)


def test_rank_features_are_rrf_terms_scaled_to_one_at_the_top() -> None:
    features = rank_features(np.array([[1, 0], [2, 40]]))
    expected = [[1.0, 0.0], [(RRF_K + 1) / (RRF_K + 2), (RRF_K + 1) / (RRF_K + 40)]]
    assert np.allclose(features, expected)


# -- learning the weights -------------------------------------------------------------------


def usage(
    impressions: int,
    liked_source: int,
    *,
    seed: int = 0,
    like_rate: float = 0.5,
    per_source: int = 5,
    top_k: int = 4,
) -> TrainingSet:
    """Impressions of two sources with disjoint lists, interleaved by RRF (a1 b1 a2 b2 ...);
    the users like shown items of ``liked_source`` only (each with ``like_rate``)."""
    rng = np.random.default_rng(seed)
    owner, ranks, shown, label = [], [], [], []
    for n in range(impressions):
        for rank in range(1, per_source + 1):
            for source in (0, 1):
                row = [0, 0]
                row[source] = rank
                position = 2 * (rank - 1) + source + 1
                is_shown = position <= top_k
                liked = is_shown and source == liked_source and rng.random() < like_rate
                owner.append(n)
                ranks.append(row)
                shown.append(is_shown)
                label.append(1.0 if liked else 0.0)
    return TrainingSet(
        sources=("alpha", "beta"),
        impression=np.array(owner, dtype=np.int64),
        ranks=np.array(ranks, dtype=np.int64),
        shown=np.array(shown),
        label=np.array(label),
        has_context=np.ones(len(label), dtype=bool),
        names_items=np.zeros(len(label), dtype=bool),
    )


def _in_turn(*parts: TrainingSet) -> TrainingSet:
    """One training set of ``parts``' impressions, each part's after the one before."""
    offsets = np.cumsum([0, *(part.impressions for part in parts[:-1])])
    return TrainingSet(
        sources=parts[0].sources,
        impression=np.concatenate([p.impression + o for p, o in zip(parts, offsets, strict=True)]),
        ranks=np.concatenate([p.ranks for p in parts]),
        shown=np.concatenate([p.shown for p in parts]),
        label=np.concatenate([p.label for p in parts]),
        has_context=np.concatenate([p.has_context for p in parts]),
        names_items=np.concatenate([p.names_items for p in parts]),
    )


@pytest.mark.parametrize(("liked", "other"), [(0, 1), (1, 0)])
def test_weights_move_towards_the_source_users_like(liked: int, other: int) -> None:
    data = usage(200, liked_source=liked)
    fit = fit_weights(preference_pairs(data), prior_strength=10.0)
    assert fit is not None
    names = data.sources
    assert fit.weights[names[liked]] > 1.5 > fit.weights[names[other]]
    assert sum(fit.weights.values()) == pytest.approx(2.0)
    # Checked on the newest impressions, the learned order beats plain RRF's.
    assert fit.validation_learned is not None
    assert fit.validation_rrf is not None
    assert fit.validation_learned > fit.validation_rrf
    # Weighted RRF with these weights puts the liked source's whole list first.
    ranked = {
        "alpha": _hits(*((f"a{n}", 1.0) for n in range(3))),
        "beta": _hits(*((f"b{n}", 1.0) for n in range(3))),
    }
    order = _ids(reciprocal_rank_fusion(ranked, fit.weights))
    assert [i[0] for i in order[:3]] == ["ab"[liked]] * 3


def test_a_strong_prior_or_little_data_keeps_the_weights_near_rrf() -> None:
    strong = fit_weights(preference_pairs(usage(200, liked_source=0)), prior_strength=1e6)
    assert strong is not None
    assert strong.weights == pytest.approx({"alpha": 1.0, "beta": 1.0}, abs=0.01)
    few = fit_weights(preference_pairs(usage(200, liked_source=0)), prior_strength=10.0)
    little = fit_weights(preference_pairs(usage(5, liked_source=0)), prior_strength=10.0)
    assert few is not None
    assert little is not None
    assert 1.0 < little.weights["alpha"] < few.weights["alpha"]


def test_no_preference_means_no_change() -> None:
    # Users like both sources' shown items alike: nothing to learn.
    data = usage(300, liked_source=0, seed=1)
    mirrored = usage(300, liked_source=1, seed=2)
    fit = fit_weights(preference_pairs(_in_turn(data, mirrored)), prior_strength=10.0)
    assert fit is not None
    assert fit.weights == pytest.approx({"alpha": 1.0, "beta": 1.0}, abs=0.1)


def test_only_impressions_that_can_teach_make_pairs() -> None:
    # Impression 0: a liked and a shown, unanswered candidate from two sources: one pair (the
    # third candidate, not shown, goes with no liked one that was shown).
    # 1: nothing liked. 2: one source only. 3: the liked candidate was shown, the unanswered one
    # not. 4: the liked candidate was not shown, the unanswered one was. 5: neither was shown.
    data = TrainingSet(
        sources=("alpha", "beta"),
        impression=np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
        ranks=np.array(
            [
                [1, 0],
                [0, 1],
                [2, 0],
                [1, 0],
                [0, 1],
                [1, 0],
                [2, 0],
                [1, 0],
                [0, 1],
                [0, 2],
                [1, 0],
                [0, 12],
                [11, 0],
            ]
        ),
        shown=np.array(
            [True, True, False, True, True, True, True, True, False, False, True, False, False]
        ),
        label=np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]),
        has_context=np.ones(13, dtype=bool),
        names_items=np.zeros(13, dtype=bool),
    )
    features = rank_features(data.ranks)
    pairs = preference_pairs(data)
    assert pairs.impressions.tolist() == [0, 5]
    assert pairs.diff.tolist() == [[1.0, -1.0], (features[11] - features[12]).tolist()]
    # A disliked candidate is a negative whether it was shown or not, and goes with every liked
    # one.
    disliked = replace(data, label=data.label.copy())
    disliked.label[8] = -1.0
    disliked.label[10] = -1.0
    assert preference_pairs(disliked).impressions.tolist() == [0, 3, 4, 5]


def test_each_distinct_difference_is_kept_once() -> None:
    pairs = preference_pairs(usage(200, liked_source=0))
    assert len(pairs.distinct) < len(pairs.row)
    np.testing.assert_array_equal(pairs.distinct, np.unique(pairs.diff, axis=0))


def test_nothing_to_learn_gives_no_fit() -> None:
    data = usage(10, liked_source=0, like_rate=0.0)
    assert fit_weights(preference_pairs(data), prior_strength=10.0) is None


def test_a_third_source_without_teaching_data_keeps_weight_one() -> None:
    data = usage(200, liked_source=0)
    widened = TrainingSet(
        sources=("alpha", "beta", "gamma"),
        impression=data.impression,
        ranks=np.column_stack([data.ranks, np.zeros(len(data.impression), dtype=np.int64)]),
        shown=data.shown,
        label=data.label,
        has_context=data.has_context,
        names_items=data.names_items,
    )
    fit = fit_weights(preference_pairs(widened), prior_strength=10.0)
    assert fit is not None
    assert set(fit.weights) == {"alpha", "beta"}
    ranked = {"gamma": _hits(("g", 1.0)), "beta": _hits(("b", 1.0))}
    # An unlisted source weighs 1: above the disfavoured beta.
    assert _ids(reciprocal_rank_fusion(ranked, fit.weights)) == ["g", "b"]


# -- which weights each kind of request gets -------------------------------------------------


class _Impressions:
    """Stands in for the impression log: the learner only reads its training set."""

    def __init__(self, data: TrainingSet) -> None:
        self._data = data

    async def training_set(self) -> TrainingSet:
        return self._data


def _of_kind(data: TrainingSet, *, has_context: bool, names_items: bool) -> TrainingSet:
    rows = len(data.impression)
    return replace(
        data,
        has_context=np.full(rows, has_context),
        names_items=np.full(rows, names_items),
    )


def _train(data: TrainingSet, settings: FusionSettings | None = None) -> FusionState:
    """Learn, by default with 100 teaching impressions needed and a prior strength of 10."""
    learner = FusionLearner(cast("ImpressionLog", _Impressions(data)), settings or FusionSettings())
    return asyncio.run(learner.train())


def test_a_kind_without_feedback_of_its_own_borrows_the_weights_of_all() -> None:
    worded = _of_kind(usage(200, liked_source=0, seed=3), has_context=True, names_items=False)
    naming = _of_kind(usage(200, liked_source=0, seed=4), has_context=True, names_items=True)
    state = _train(_in_turn(worded, naming))

    for kind, alone in ((RequestKind.CONTEXT, worded), (RequestKind.NAMED, naming)):
        own = state.kinds[kind]
        assert own.status is TrainingStatus.TRAINED, own.detail
        assert own.fit is not None
        assert own.weights == own.fit.weights
        # Learned from that kind's impressions only, as if they were all there was.
        fit = fit_weights(preference_pairs(alone), prior_strength=10.0)
        assert fit is not None
        assert own.weights == pytest.approx(fit.weights, abs=1e-6)
    pooled = fit_weights(preference_pairs(_in_turn(worded, naming)), prior_strength=10.0)
    assert pooled is not None
    wordless = state.kinds[RequestKind.NO_CONTEXT]
    assert wordless.status is TrainingStatus.SHARED, wordless.detail
    assert wordless.fit is None
    assert wordless.weights == pooled.weights
    assert wordless.weights["alpha"] > 1.5 > wordless.weights["beta"]
    assert "0 of the 100 impressions needed" in wordless.detail
    assert (
        f"the weights learned from the requests of every kind, {pooled.impressions} impressions"
        in wordless.detail
    )


def test_too_little_feedback_in_all_keeps_plain_rrf() -> None:
    worded = _of_kind(usage(60, liked_source=0), has_context=True, names_items=False)
    state = _train(worded)

    for kind, kind_state in state.kinds.items():
        assert kind_state.status is TrainingStatus.TOO_LITTLE_DATA, kind
        assert kind_state.weights is None
    assert state.kinds[RequestKind.CONTEXT].detail.endswith("; plain RRF")


def test_a_kind_whose_own_weights_fail_their_check_does_not_borrow() -> None:
    worded = _of_kind(usage(300, liked_source=0, seed=5), has_context=True, names_items=False)
    # Wordless requests liked alpha's items, then, in the newest impressions held out to check
    # the weights on, beta's: the weights learned from the older ones order those wrong.
    turned = _in_turn(usage(160, liked_source=0, seed=6), usage(40, liked_source=1, seed=7))
    wordless = _of_kind(turned, has_context=False, names_items=False)
    state = _train(_in_turn(wordless, worded))

    assert state.kinds[RequestKind.CONTEXT].status is TrainingStatus.TRAINED
    assert state.kinds[RequestKind.NAMED].status is TrainingStatus.SHARED
    own = state.kinds[RequestKind.NO_CONTEXT]
    assert own.status is TrainingStatus.NOT_BETTER, own.detail
    assert own.weights is None


def test_a_single_teaching_impression_has_none_left_to_check_on() -> None:
    one = _of_kind(usage(1, liked_source=0, like_rate=1.0), has_context=True, names_items=False)
    state = _train(one, FusionSettings(min_labelled_impressions=1))

    worded = state.kinds[RequestKind.CONTEXT]
    assert worded.fit is not None
    assert worded.fit.impressions == 1
    assert worded.status is TrainingStatus.NOT_BETTER
    assert worded.detail.startswith("a single teaching impression")
    assert worded.weights is None
