from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RerankCandidate:
    """One candidate as a re-ranker sees it."""

    item_id: str
    title: str
    text: str


class Reranker(Protocol):
    """Reorders candidates by their relevance to a request.

    A re-ranker may only reorder what it was given: the appliance drops any id it returns that
    was not a candidate, and keeps the retrieval order for candidates it leaves out.
    """

    name: str

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate]
    ) -> list[tuple[str, float]]:
        """Score candidates for a request context.

        Args:
            context: What the user asked for (may be empty).
            candidates: Items in retrieval order.

        Returns:
            ``(item_id, score)`` pairs, best first.

        """
        ...

    async def close(self) -> None:
        """Release the model or connections."""
        ...
