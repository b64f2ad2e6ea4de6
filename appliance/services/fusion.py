"""Fusion: merge the ranked lists of several candidate sources into one."""

from __future__ import annotations

from collections.abc import Mapping

from appliance.domain import Candidate, Hit

#: The usual reciprocal-rank-fusion constant: it damps the advantage of the very top ranks.
RRF_K = 60


def reciprocal_rank_fusion(
    ranked: Mapping[str, list[Hit]], weights: Mapping[str, float] | None = None
) -> list[Candidate]:
    """Order items by the weighted sum of ``1 / (RRF_K + rank)`` over the sources.

    Rank-based fusion needs no calibration between sources whose scores live on different
    scales. Each candidate keeps every source's own score; its ``score`` is the best of them,
    which stays meaningful to a client (a cosine similarity, a relative popularity).

    Args:
        ranked: Each source's hits, best first.
        weights: Per-source weights (default 1).

    Returns:
        Candidates, best first; ties keep the order of first appearance.

    """
    fused: dict[str, float] = {}
    candidates: dict[str, Candidate] = {}
    for source, hits in ranked.items():
        weight = 1.0 if weights is None else weights.get(source, 1.0)
        for rank, hit in enumerate(hits, start=1):
            candidate = candidates.get(hit.item_id)
            if candidate is None:
                candidate = candidates[hit.item_id] = Candidate(hit.item_id, hit.score)
                fused[hit.item_id] = 0.0
            candidate.sources[source] = hit.score
            if hit.via is not None:
                candidate.via[source] = hit.via
            candidate.score = max(candidate.score, hit.score)
            fused[hit.item_id] += weight / (RRF_K + rank)
    order = sorted(candidates, key=lambda i: -fused[i])
    return [candidates[i] for i in order]
