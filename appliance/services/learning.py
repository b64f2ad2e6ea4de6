"""The learned fusion: weights learned in the background from the appliance's own impressions.

Until enough impressions have been answered by feedback, and whenever the learned weights do
worse than plain reciprocal-rank fusion on the newest impressions, requests are fused by plain
RRF. A failed training keeps whatever was in use before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from appliance.services.fusion import FitResult, fit_weights
from appliance.services.impressions import ImpressionLog
from appliance.settings import FusionSettings

log = logging.getLogger(__name__)


class FusionMode(enum.StrEnum):
    """How a request's candidate lists are fused."""

    RRF = "rrf"
    """Plain reciprocal-rank fusion: every source weighs 1."""
    LEARNED = "learned"
    """Weighted reciprocal-rank fusion, with the weights learned from impressions."""


class TrainingStatus(enum.StrEnum):
    """What the latest training concluded."""

    UNTRAINED = "untrained"
    """No training has run yet."""
    TOO_LITTLE_DATA = "too-little-data"
    """Fewer teaching impressions than fusion.min_labelled_impressions."""
    NOT_BETTER = "not-better"
    """The weights ordered held-out impressions worse than plain RRF."""
    TRAINED = "trained"
    """The learned weights are in use."""
    FAILED = "failed"
    """Training raised an error (see the server log); what was in use before stays."""


@dataclass(frozen=True, slots=True)
class FusionState:
    """The learned fusion as it stands."""

    status: TrainingStatus = TrainingStatus.UNTRAINED
    weights: dict[str, float] | None = None
    """The weights requests use for learned fusion; ``None`` while plain RRF stands in."""
    fit: FitResult | None = None
    """The latest training's findings, used or not."""
    trained_at: datetime | None = None
    trainings: int = 0
    detail: str = ""
    """Why the weights are (not) in use, in words."""
    sources: list[str] = field(default_factory=list)
    """The sources named in the impressions looked at."""


class FusionLearner:
    """Learns the fusion weights on a schedule and tells each request which fusion to use."""

    def __init__(self, impressions: ImpressionLog, settings: FusionSettings) -> None:
        self._impressions = impressions
        self._settings = settings
        self.state = FusionState()
        self._training = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None

    def choose(self, requested: FusionMode | None) -> tuple[FusionMode, dict[str, float] | None]:
        """Return the fusion a request gets, and its weights (``None`` for plain RRF).

        Learned fusion is the default once weights are learned; until then, and when a request
        asks for plain RRF, every source weighs 1. A request that asks for learned fusion before
        there is any gets plain RRF too: the response's ``fusion`` says which ran.
        """
        weights = self.state.weights
        if requested is FusionMode.RRF or weights is None:
            return FusionMode.RRF, None
        return FusionMode.LEARNED, weights

    async def start(self) -> None:
        """Start the scheduled learning, unless fusion.train_interval_seconds is 0."""
        if self._settings.train_interval_seconds > 0:
            self._worker = asyncio.create_task(self._run(), name="fusion-learner")

    async def close(self) -> None:
        """Stop the scheduled learning."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def train(self) -> FusionState:
        """Learn the weights from the stored impressions now, and use them if they qualify.

        Returns:
            The new state.

        """
        async with self._training:
            trainings = self.state.trainings + 1
            try:
                data = await self._impressions.training_set()
                fit = await anyio.to_thread.run_sync(
                    lambda: fit_weights(data, prior_strength=self._settings.prior_strength)
                )
            except Exception as e:
                log.exception("learning the fusion weights failed")
                self.state = replace(
                    self.state,
                    status=TrainingStatus.FAILED,
                    trainings=trainings,
                    detail=f"training failed ({type(e).__name__}: {e}); "
                    + ("the previous weights stay" if self.state.weights else "plain RRF stays"),
                )
                return self.state
            self.state = self._judge(fit, trainings, list(data.sources))
            log.info("fusion learning: %s (%s)", self.state.status, self.state.detail)
            return self.state

    def _judge(self, fit: FitResult | None, trainings: int, sources: list[str]) -> FusionState:
        """Decide whether the weights just learned replace plain RRF."""
        needed = self._settings.min_labelled_impressions
        now = datetime.now(UTC)
        teaching = 0 if fit is None else fit.impressions
        if fit is None or teaching < needed:
            return FusionState(
                status=TrainingStatus.TOO_LITTLE_DATA,
                fit=fit,
                trained_at=now,
                trainings=trainings,
                sources=sources,
                detail=f"{teaching} of the {needed} impressions needed can teach the fusion "
                "(a liked and a passed-over candidate, from at least two sources); plain RRF",
            )
        learned, plain = fit.validation_learned, fit.validation_rrf
        if learned is None or plain is None or learned < plain:
            return FusionState(
                status=TrainingStatus.NOT_BETTER,
                fit=fit,
                trained_at=now,
                trainings=trainings,
                sources=sources,
                detail=f"on the newest impressions the learned weights ordered {learned:.3f} of "
                f"the pairs right against {plain:.3f} for plain RRF; plain RRF",
            )
        return FusionState(
            status=TrainingStatus.TRAINED,
            weights=fit.weights,
            fit=fit,
            trained_at=now,
            trainings=trainings,
            sources=sources,
            detail=f"learned from {teaching} impressions ({fit.pairs} pairs); on the newest "
            f"ones {learned:.3f} of the pairs ordered right against {plain:.3f} for plain RRF",
        )

    async def _run(self) -> None:
        while True:
            await anyio.sleep(self._settings.train_interval_seconds)
            await self.train()
