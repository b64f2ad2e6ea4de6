"""The re-rank stage: a re-ranker behind a time budget and a bounded queue.

A re-ranker is the slowest and least dependable part of a request (a model on shared cores, or a
remote API), so the stage never lets it decide whether a request succeeds: on a timeout, a full
queue or any failure the retrieval order stands and the response says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum

from appliance.backends.rerankers.protocol import RerankCandidate, Reranker, RerankTimeoutError
from appliance.domain import Candidate, Item
from appliance.settings import RerankerSettings

logger = logging.getLogger(__name__)


class RerankStatus(StrEnum):
    """What became of the re-rank stage for one request."""

    RAN = "ran"
    OFF = "off"
    """The request turned it off."""
    NOT_CONFIGURED = "not-configured"
    """The appliance runs without a re-ranker (reranker.kind = none)."""
    NO_CONTEXT = "no-context"
    """Nothing to judge relevance against: the request had no context."""
    TIMEOUT = "timeout"
    BUSY = "busy"
    """Too many re-rank calls were already waiting for the model."""
    FAILED = "failed"


class _InUse:
    """A re-ranker and the calls that are still running on it."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.calls += 1
        self.idle.clear()

    def leave(self) -> None:
        self.calls -= 1
        if not self.calls:
            self.idle.set()


class RerankStage:
    """Reorders candidates with a re-ranker, within a budget."""

    def __init__(self, reranker: Reranker, settings: RerankerSettings) -> None:
        self._current = _InUse(reranker)
        self._budget = settings.budget_ms / 1000.0
        self._max_pending = settings.max_pending
        self._max_candidates = settings.max_candidates
        self._pending = 0
        self.outcomes: Counter[RerankStatus] = Counter()
        """How often each status occurred since start-up."""

    @property
    def backend(self) -> str:
        """The re-ranker's kind."""
        return self._current.reranker.name

    @property
    def reranker(self) -> Reranker:
        """The re-ranker in use."""
        return self._current.reranker

    async def replace(self, reranker: Reranker) -> Reranker:
        """Send the next calls to ``reranker``, and wait for the running ones to finish.

        Calls already running keep the old re-ranker until they end, which the budget bounds.

        Returns:
            The re-ranker used until now, no longer used by any call: the caller may close it.

        """
        previous, self._current = self._current, _InUse(reranker)
        await previous.idle.wait()
        return previous.reranker

    async def run(
        self,
        context: str,
        candidates: list[Candidate],
        items: dict[str, Item],
        *,
        requested: bool | None,
        retrieved: int,
    ) -> tuple[list[Candidate], RerankStatus]:
        """Reorder the best ``candidates`` for ``context`` if the request and the budget allow.

        Args:
            context: The request's words (stripped).
            candidates: The fused candidates, best first; each must be in ``items``.
            items: The candidates' items.
            requested: The request's choice; ``None`` runs the stage when a re-ranker is set.
            retrieved: How many candidates the request retrieves from each source: that many
                of the fused ones are re-ranked (at most ``max_candidates``), the others keep
                their fused order after them.

        Returns:
            The candidates in their new order (or unchanged), and what happened.

        """
        status = self._precondition(context, candidates, requested=requested)
        if status is not None:
            self.outcomes[status] += 1
            return candidates, status
        size = self._head_size(retrieved)
        head, tail = candidates[:size], candidates[size:]
        in_use = self._current
        in_use.enter()
        self._pending += 1
        deadline = time.monotonic() + self._budget
        try:
            # The event loop's clock is time.monotonic(), so the two deadlines are the same.
            async with asyncio.timeout_at(deadline):
                scored = await in_use.reranker.rerank(
                    context,
                    [_as_candidate(items[c.item_id]) for c in head],
                    deadline=deadline,
                )
        except (TimeoutError, RerankTimeoutError):
            status = RerankStatus.TIMEOUT
        except Exception:
            logger.exception(
                "re-ranker %s failed; keeping the retrieval order", in_use.reranker.name
            )
            status = RerankStatus.FAILED
        else:
            status = RerankStatus.RAN
        finally:
            self._pending -= 1
            in_use.leave()
        self.outcomes[status] += 1
        if status is not RerankStatus.RAN:
            return candidates, status
        return _reorder(head, scored) + tail, status

    def candidates_needed(self, context: str, *, requested: bool | None, retrieved: int) -> int:
        """How many of the best candidates ``run`` may hand to the re-ranker (their items needed).

        Zero when the stage will not run for such a request whatever the load.
        """
        return 0 if self._ruled_out(context, requested=requested) else self._head_size(retrieved)

    def _head_size(self, retrieved: int) -> int:
        # Fusing several sources' lists yields more candidates than any one retrieves; the
        # model's cost grows with each one it reads, so it reads as many as a source retrieves.
        return min(retrieved, self._max_candidates)

    def _ruled_out(self, context: str, *, requested: bool | None) -> RerankStatus | None:
        if requested is False:
            return RerankStatus.OFF
        if self._current.reranker.name == "none":
            return RerankStatus.NOT_CONFIGURED
        if not context:
            return RerankStatus.NO_CONTEXT
        return None

    def _precondition(
        self, context: str, candidates: Sequence[Candidate], *, requested: bool | None
    ) -> RerankStatus | None:
        if (status := self._ruled_out(context, requested=requested)) is not None:
            return status
        if not candidates:
            return RerankStatus.OFF
        if self._pending >= self._max_pending:
            return RerankStatus.BUSY
        return None


def _as_candidate(item: Item) -> RerankCandidate:
    return RerankCandidate(item.item_id, item.title, item.text)


def _reorder(candidates: list[Candidate], scored: list[tuple[str, float]]) -> list[Candidate]:
    by_id = {c.item_id: c for c in candidates}
    ordered: list[Candidate] = []
    for item_id, score in scored:
        candidate = by_id.pop(item_id, None)
        if candidate is None:  # not a candidate, or a duplicate: a re-ranker only reorders
            continue
        candidate.sources["rerank"] = score
        ordered.append(candidate)
    # Candidates the re-ranker left out keep their retrieval order, after the ones it scored.
    ordered.extend(c for c in candidates if c.item_id in by_id)
    return ordered
