"""Ranking metrics and bootstrap confidence intervals for offline evaluation.

Everything here is pure: rankings and ground truth go in, numbers come out. Per-query metric
values are then summarised with :func:`bootstrap_interval`, and two systems evaluated on the same
queries are compared with :func:`paired_difference`.

Conventions shared by the ranking metrics:

* ``ranked`` is best first and should not contain duplicates. If it does, each item still takes up
  its slot in the top ``k``, but a relevant item is credited at most once (at its first, best,
  position), so a list cannot score above the ideal by repeating a hit.
* ``relevant`` is independent of the ranking: relevant items that the system never returned (or
  that are missing from the catalogue altogether) are misses, not ignored.
* Items graded ``<= 0`` in a mapping are not relevant.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Upper bound on resampled indices held at once (about 32 MB of int64), so the bootstrap stays
#: vectorised without its memory growing as ``resamples * n`` on large evaluation sets.
_MAX_BLOCK_ELEMENTS = 4_000_000


def _check_ranking(ranked: Sequence[str], k: int) -> None:
    # A cut-off of zero makes precision a division by zero and every metric meaningless.
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if isinstance(ranked, str):
        # A bare string is a Sequence[str] of characters: almost certainly a caller's mistake.
        raise TypeError("ranked must be a sequence of item ids, not a string")


def _top_k(ranked: Sequence[str], k: int) -> list[str]:
    """Return the distinct items among the first ``k`` positions, in rank order."""
    _check_ranking(ranked, k)
    # dict.fromkeys keeps the first occurrence of each item, in order.
    return list(dict.fromkeys(ranked[:k]))


def _relevant_set(relevant: Collection[str] | Mapping[str, float]) -> set[str]:
    """Return every member of a collection, or the positively graded keys of a mapping."""
    if isinstance(relevant, str):
        raise TypeError("relevant must be a collection of item ids, not a string")
    if isinstance(relevant, Mapping):
        return {item for item, grade in relevant.items() if grade > 0}
    return set(relevant)


def _gain(grade: float) -> float:
    # Exponential gain rewards getting the most relevant items right; a non-positive grade is
    # "not relevant" and must not subtract from DCG (2**-1 - 1 would be negative).
    return 2.0**grade - 1.0 if grade > 0 else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k`` with graded relevance.

    ``DCG = sum over 1-based ranks i <= k of (2**grade - 1) / log2(i + 1)``; the ideal DCG takes
    the grades sorted descending, cut at ``k``. Relevant items absent from the ranking still count
    towards the ideal, so they lower the score as misses.

    Args:
        ranked: Item ids, best first; should not contain duplicates.
        relevant: Grade of each relevant item; grades ``<= 0`` (and unlisted items) gain nothing.
        k: Cut-off, at least 1.

    Returns:
        NDCG in ``[0, 1]``; ``0.0`` when no item is relevant.

    Raises:
        ValueError: If ``k`` is less than 1.
        TypeError: If ``ranked`` is a string.

    """
    _check_ranking(ranked, k)
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    idcg = sum(_gain(g) / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    # Ranks come from positions in the original list, so a duplicate still pushes later items
    # down; only its gain is dropped.
    dcg = 0.0
    seen: set[str] = set()
    for i, item in enumerate(ranked[:k], start=1):
        if item in seen:
            continue
        seen.add(item)
        dcg += _gain(relevant.get(item, 0.0)) / math.log2(i + 1)
    return dcg / idcg


def _hits(ranked: Sequence[str], relevant: set[str], k: int) -> int:
    return sum(1 for item in _top_k(ranked, k) if item in relevant)


def precision_at_k(
    ranked: Sequence[str], relevant: Collection[str] | Mapping[str, float], k: int
) -> float:
    """Fraction of the top ``k`` slots holding a relevant item.

    The denominator is ``k`` even when the ranking is shorter: a system that returns fewer
    results than asked for is not rewarded for it.

    Args:
        ranked: Item ids, best first; should not contain duplicates.
        relevant: Relevant item ids, or a grade mapping (grades ``<= 0`` are not relevant).
        k: Cut-off, at least 1.

    Returns:
        Distinct relevant items in the top ``k``, divided by ``k``.

    Raises:
        ValueError: If ``k`` is less than 1.
        TypeError: If ``ranked`` or ``relevant`` is a string.

    """
    return _hits(ranked, _relevant_set(relevant), k) / k


def recall_at_k(
    ranked: Sequence[str], relevant: Collection[str] | Mapping[str, float], k: int
) -> float:
    """Fraction of the relevant items found in the top ``k``.

    Args:
        ranked: Item ids, best first; should not contain duplicates.
        relevant: Relevant item ids, or a grade mapping (grades ``<= 0`` are not relevant).
        k: Cut-off, at least 1.

    Returns:
        Distinct relevant items in the top ``k`` divided by the number of relevant items;
        ``0.0`` when nothing is relevant.

    Raises:
        ValueError: If ``k`` is less than 1.
        TypeError: If ``ranked`` or ``relevant`` is a string.

    """
    wanted = _relevant_set(relevant)
    hits = _hits(ranked, wanted, k)
    return hits / len(wanted) if wanted else 0.0


def hit_rate_at_k(
    ranked: Sequence[str], relevant: Collection[str] | Mapping[str, float], k: int
) -> float:
    """Whether any relevant item appears in the top ``k``.

    Args:
        ranked: Item ids, best first.
        relevant: Relevant item ids, or a grade mapping (grades ``<= 0`` are not relevant).
        k: Cut-off, at least 1.

    Returns:
        ``1.0`` if at least one relevant item is in the top ``k``, else ``0.0``.

    Raises:
        ValueError: If ``k`` is less than 1.
        TypeError: If ``ranked`` or ``relevant`` is a string.

    """
    return 1.0 if _hits(ranked, _relevant_set(relevant), k) else 0.0


@dataclass(frozen=True, slots=True)
class Interval:
    """A sample mean with a bootstrap confidence interval.

    Attributes:
        mean: Mean of the observed values (not of the resamples).
        low: Lower percentile bound.
        high: Upper percentile bound.
        n: Number of observed values (queries, users).

    """

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _check_bootstrap_args(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _bootstrap(
    values: npt.NDArray[np.float64], confidence: float, resamples: int, seed: int
) -> Interval:
    """Percentile bootstrap of the mean of ``values`` (already validated)."""
    n = int(values.shape[0])
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n == 1:
        # Every resample is the single value: skip the work and return it exactly.
        return Interval(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    block = max(1, _MAX_BLOCK_ELEMENTS // n)
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean, float(low), float(high), n)


def bootstrap_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile bootstrap confidence interval for the mean of per-query values.

    Resamples the values with replacement ``resamples`` times and takes the ``(1 - confidence)/2``
    and ``1 - (1 - confidence)/2`` quantiles of the resampled means. No distributional
    assumption is needed, which suits bounded, skewed metrics such as per-query recall.

    Args:
        values: One metric value per query or user.
        confidence: Coverage of the interval, strictly between 0 and 1.
        resamples: Number of bootstrap resamples, at least 1.
        seed: Seed of the resampling; the same inputs and seed give the same interval.

    Returns:
        The sample mean and interval. With no values every field but ``n`` is NaN; with one
        value the interval collapses onto it.

    Raises:
        ValueError: If ``confidence`` or ``resamples`` is out of range.

    """
    _check_bootstrap_args(confidence, resamples)
    return _bootstrap(np.asarray(values, dtype=np.float64), confidence, resamples, seed)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Bootstrap confidence interval for ``mean(a - b)`` over paired queries.

    ``a[i]`` and ``b[i]`` must be two systems' values on the same query. Resampling the same
    query indices for both is what makes the comparison paired: per-query difficulty cancels,
    giving a much tighter interval than comparing two independent intervals. Resampling the
    per-query differences is exactly that, so it is how it is done.

    Args:
        a: One metric value per query for the first system.
        b: The same metric on the same queries, in the same order, for the second system.
        confidence: Coverage of the interval, strictly between 0 and 1.
        resamples: Number of bootstrap resamples, at least 1.
        seed: Seed of the resampling; the same inputs and seed give the same interval.

    Returns:
        The mean difference ``a - b`` and its interval; an interval excluding 0 suggests a real
        difference at that confidence.

    Raises:
        ValueError: If ``a`` and ``b`` differ in length, or ``confidence`` or ``resamples`` is
            out of range.

    """
    if len(a) != len(b):
        raise ValueError(
            f"paired values must have equal lengths, got len(a)={len(a)} and len(b)={len(b)}"
        )
    _check_bootstrap_args(confidence, resamples)
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return _bootstrap(differences, confidence, resamples, seed)
