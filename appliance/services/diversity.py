"""Diversity: maximal marginal relevance over the items' own vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from appliance.backends.indexes.protocol import Vector
from appliance.domain import Candidate


def maximal_marginal_relevance(
    candidates: Sequence[Candidate], vectors: Mapping[str, Vector], diversity: float
) -> list[Candidate]:
    """Reorder candidates so that near-duplicates do not crowd the top.

    Each next candidate is the one with the best ``(1 - diversity) * relevance - diversity *
    similarity``, where relevance is its fused score scaled to [0, 1] over the candidates and
    similarity its largest cosine similarity to a candidate already placed. A candidate without
    a vector is similar to nothing.

    Args:
        candidates: Fused candidates, best first.
        vectors: Unit-length item vectors by item id.
        diversity: 0 keeps the fused order; 1 looks at dissimilarity alone after the first.

    Returns:
        The same candidates, reordered.

    """
    if diversity <= 0.0 or len(candidates) < 3:  # noqa: PLR2004 - two items have one order
        return list(candidates)
    fused = np.array([c.fused for c in candidates], dtype=np.float64)
    spread = float(fused.max() - fused.min())
    relevance = (fused - fused.min()) / spread if spread > 0 else np.ones(len(candidates))
    width = len(next(iter(vectors.values()))) if vectors else 0
    matrix = np.zeros((len(candidates), width), dtype=np.float32)
    for row, candidate in enumerate(candidates):
        vector = vectors.get(candidate.item_id)
        if vector is not None:
            matrix[row] = vector
    similarity = matrix @ matrix.T
    closest = np.full(len(candidates), -np.inf)
    left = np.ones(len(candidates), dtype=bool)
    order: list[int] = []
    for _ in range(len(candidates)):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        gain = np.where(left, (1.0 - diversity) * relevance - diversity * penalty, -np.inf)
        chosen = int(np.argmax(gain))
        order.append(chosen)
        left[chosen] = False
        closest = np.maximum(closest, similarity[chosen])
    return [candidates[i] for i in order]
