from __future__ import annotations

from collections.abc import Sequence

from appliance.backends.rerankers.protocol import RerankCandidate


class PassthroughReranker:
    """Keeps the retrieval order; the default until a re-ranker is shown to help."""

    name = "none"

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate], *, deadline: float
    ) -> list[tuple[str, float]]:
        """Return the candidates as given, scored by their position."""
        del context, deadline
        n = len(candidates)
        return [(c.item_id, float(n - i) / n) for i, c in enumerate(candidates)]

    async def close(self) -> None:
        """Nothing to release."""
