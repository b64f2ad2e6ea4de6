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


class RerankTimeoutError(Exception):
    """The call's deadline passed before the candidates were scored."""


class Reranker(Protocol):
    """Reorders candidates by their relevance to a request.

    A re-ranker may only reorder what it was given: the appliance drops any id it returns that
    was not a candidate (or was already returned), and keeps the retrieval order for candidates
    it leaves out.
    """

    name: str

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate], *, deadline: float
    ) -> list[tuple[str, float]]:
        """Score candidates for a request context.

        Args:
            context: What the user asked for (never empty: without a request there is nothing
                to judge relevance against, and the stage does not run).
            candidates: Items in retrieval order.
            deadline: ``time.monotonic()`` by which the answer is needed; work still running
                then should stop, so that it does not delay the next call.

        Returns:
            ``(item_id, score)`` pairs, best first.

        Raises:
            RerankTimeoutError: The deadline passed first.

        """
        ...

    async def close(self) -> None:
        """Release the model or connections."""
        ...
