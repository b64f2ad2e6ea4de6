import math

import numpy as np
import pytest

from appliance.evaluation.metrics import (
    Interval,
    bootstrap_interval,
    hit_rate_at_k,
    ndcg_at_k,
    paired_difference,
    precision_at_k,
    recall_at_k,
)

LOG2_3 = math.log2(3)


# --- NDCG -----------------------------------------------------------------------------------


def test_ndcg_perfect_ranking_is_one() -> None:
    assert ndcg_at_k(["a", "b", "x"], {"a": 1, "b": 1}, 3) == pytest.approx(1.0)


def test_ndcg_binary_hand_computed() -> None:
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) ≈ 1.63093.
    value = ndcg_at_k(["a", "x", "b"], {"a": 1, "b": 1}, 3)
    assert value == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert value == pytest.approx(0.919720, abs=1e-6)


def test_ndcg_graded_hand_computed() -> None:
    # Gains 2**g - 1: a=7, b=3, c=1. DCG = 3/1 + 7/log2(3) + 1/2 ≈ 7.91650;
    # IDCG = 7/1 + 3/log2(3) + 1/2 ≈ 9.39279.
    value = ndcg_at_k(["b", "a", "c"], {"a": 3, "b": 2, "c": 1}, 3)
    assert value == pytest.approx((3 + 7 / LOG2_3 + 0.5) / (7 + 3 / LOG2_3 + 0.5))
    assert value == pytest.approx(0.842828, abs=1e-6)


def test_ndcg_ideal_longer_than_k_is_cut_at_k() -> None:
    # Four relevant items but k=2: IDCG uses only two of them, 1 + 1/log2(3). DCG = 1.
    value = ndcg_at_k(["a", "x", "b", "c"], {"a": 1, "b": 1, "c": 1, "d": 1}, 2)
    assert value == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert value == pytest.approx(0.613147, abs=1e-6)


def test_ndcg_relevant_items_absent_from_ranking_are_misses() -> None:
    # "z" was never returned (not in the catalogue) but still counts in the ideal.
    assert ndcg_at_k(["a", "b"], {"a": 1, "z": 1}, 10) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert ndcg_at_k(["a", "b"], {"y": 2, "z": 1}, 10) == 0.0


def test_ndcg_no_relevant_items_is_zero() -> None:
    assert ndcg_at_k(["a", "b"], {}, 5) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 0, "b": -1}, 5) == 0.0


def test_ndcg_non_positive_grades_gain_nothing() -> None:
    # "n" graded negative must not subtract from DCG.
    assert ndcg_at_k(["n", "a"], {"a": 1, "n": -2}, 2) == pytest.approx(1 / LOG2_3)


def test_ndcg_duplicate_credited_once_but_takes_its_slot() -> None:
    assert ndcg_at_k(["a", "a", "a"], {"a": 1}, 3) == pytest.approx(1.0)
    # The duplicate "a" occupies rank 2, pushing "b" to rank 3 without adding gain.
    value = ndcg_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 3)
    assert value == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert value <= 1.0


def test_ndcg_empty_ranking_is_zero() -> None:
    assert ndcg_at_k([], {"a": 1}, 5) == 0.0


# --- precision, recall, hit rate ------------------------------------------------------------


def test_prh_basic() -> None:
    ranked = ["a", "x", "b", "y"]
    relevant = {"a", "b", "c"}
    assert precision_at_k(ranked, relevant, 2) == pytest.approx(0.5)
    assert recall_at_k(ranked, relevant, 4) == pytest.approx(2 / 3)
    assert hit_rate_at_k(ranked, relevant, 1) == 1.0
    assert hit_rate_at_k(["x", "a"], relevant, 1) == 0.0


def test_k_larger_than_ranking_divides_precision_by_k() -> None:
    ranked = ["a", "b"]
    relevant = ["a", "c"]
    assert precision_at_k(ranked, relevant, 5) == pytest.approx(1 / 5)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(1 / 2)
    assert hit_rate_at_k(ranked, relevant, 5) == 1.0


def test_duplicates_in_ranking_counted_once() -> None:
    ranked = ["a", "a", "a"]
    assert precision_at_k(ranked, {"a", "b"}, 3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"a", "b"}, 3) == pytest.approx(1 / 2)
    assert hit_rate_at_k(ranked, {"a", "b"}, 3) == 1.0


def test_grade_mapping_non_positive_grades_are_not_relevant() -> None:
    relevant = {"a": 0.0, "b": 2.0, "c": -1.0}
    assert precision_at_k(["a", "c"], relevant, 2) == 0.0
    assert recall_at_k(["a", "c"], relevant, 2) == 0.0
    assert hit_rate_at_k(["a", "c"], relevant, 2) == 0.0
    # Only "b" is relevant, so finding it is full recall.
    assert recall_at_k(["a", "b"], relevant, 2) == 1.0
    assert precision_at_k(["a", "b"], relevant, 2) == pytest.approx(0.5)


def test_nothing_relevant_or_empty_ranking_is_zero() -> None:
    for metric in (precision_at_k, recall_at_k, hit_rate_at_k):
        assert metric(["a", "b"], set(), 2) == 0.0
        assert metric(["a", "b"], {"a": 0.0}, 2) == 0.0
        assert metric([], {"a"}, 2) == 0.0


@pytest.mark.parametrize("metric", [precision_at_k, recall_at_k, hit_rate_at_k])
def test_invalid_k_raises(metric: object) -> None:
    assert callable(metric)
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ndcg_at_k(["a"], {"a": 1}, 0)


def test_strings_instead_of_collections_are_rejected() -> None:
    with pytest.raises(TypeError):
        precision_at_k("abc", {"a"}, 2)
    with pytest.raises(TypeError):
        recall_at_k(["a"], "a", 2)


# --- bootstrap ------------------------------------------------------------------------------


def test_interval_str_has_three_decimals() -> None:
    assert str(Interval(0.1534, 0.12149, 0.1871, 10)) == "0.153 [0.121, 0.187]"


def test_bootstrap_contains_the_mean() -> None:
    values = np.random.default_rng(7).random(100).tolist()
    interval = bootstrap_interval(values)
    assert interval.n == 100
    assert interval.mean == pytest.approx(float(np.mean(values)))
    assert interval.low < interval.mean < interval.high


def test_bootstrap_narrows_as_n_grows() -> None:
    rng = np.random.default_rng(3)
    small = bootstrap_interval(rng.random(50).tolist())
    large = bootstrap_interval(rng.random(2000).tolist())
    assert large.high - large.low < (small.high - small.low) / 2


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    values = np.random.default_rng(11).random(60).tolist()
    assert bootstrap_interval(values, seed=5) == bootstrap_interval(values, seed=5)
    assert bootstrap_interval(values, seed=5) != bootstrap_interval(values, seed=6)


def test_bootstrap_degenerate_sizes() -> None:
    empty = bootstrap_interval([])
    assert empty.n == 0
    assert math.isnan(empty.mean)
    assert math.isnan(empty.low)
    assert math.isnan(empty.high)
    assert bootstrap_interval([0.4]) == Interval(0.4, 0.4, 0.4, 1)


def test_bootstrap_wider_with_higher_confidence() -> None:
    values = np.random.default_rng(2).random(80).tolist()
    narrow = bootstrap_interval(values, confidence=0.5)
    wide = bootstrap_interval(values, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1.0, 2.0], resamples=0)


def test_bootstrap_covers_a_known_bernoulli_mean() -> None:
    # Over 200 draw seeds this interval covered 0.3 in 94.5% of them; seed 0 is one that does.
    draws = (np.random.default_rng(0).random(400) < 0.3).astype(float).tolist()
    interval = bootstrap_interval(draws, confidence=0.95, seed=0)
    assert interval.low <= 0.3 <= interval.high
    # Normal approximation: 2 * 1.96 * sqrt(0.3 * 0.7 / 400) ≈ 0.090.
    assert 0.06 <= interval.high - interval.low <= 0.12


# --- paired difference ----------------------------------------------------------------------


def test_paired_identical_inputs_give_zero() -> None:
    values = np.random.default_rng(4).random(50).tolist()
    assert paired_difference(values, values) == Interval(0.0, 0.0, 0.0, 50)


def test_paired_constant_shift_is_exact() -> None:
    b = np.random.default_rng(5).random(50)
    a = b + 0.1
    interval = paired_difference(a.tolist(), b.tolist())
    assert interval.n == 50
    for bound in (interval.mean, interval.low, interval.high):
        assert bound == pytest.approx(0.1)


def test_paired_is_tighter_than_independent_when_queries_vary() -> None:
    # Per-query difficulty dominates the spread; pairing cancels it.
    rng = np.random.default_rng(6)
    difficulty = rng.random(200)
    a = difficulty + 0.05 + rng.normal(0, 0.01, 200)
    b = difficulty
    paired = paired_difference(a.tolist(), b.tolist())
    assert paired.low > 0.0
    alone = bootstrap_interval(a.tolist())
    assert paired.high - paired.low < (alone.high - alone.low) / 5


def test_paired_mismatched_lengths_raise_naming_both() -> None:
    with pytest.raises(ValueError, match=r"len\(a\)=3.*len\(b\)=2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])


def test_paired_degenerate_sizes() -> None:
    assert paired_difference([], []).n == 0
    assert paired_difference([0.5], [0.25]) == Interval(0.25, 0.25, 0.25, 1)
