from __future__ import annotations

from http import HTTPStatus

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from appliance.api.openapi import error_responses
from appliance.errors import NotFoundError
from appliance.schemas.fusion import (
    FusionKindOut,
    FusionOut,
    ImpressionCandidateOut,
    ImpressionLogOut,
    ImpressionOut,
)
from appliance.services.learning import RequestKind
from appliance.services.runtime import Runtime


async def fusion_out(runtime: Runtime) -> FusionOut:
    """Describe the fusion in use, the latest training and the impression log."""
    state = runtime.fusion.state
    log = runtime.impressions
    stats = log.stats
    return FusionOut(
        kinds={kind: _kind_out(runtime, kind) for kind in RequestKind},
        min_labelled_impressions=runtime.settings.fusion.min_labelled_impressions,
        sources=runtime.recommender.source_names,
        impressions=ImpressionLogOut(
            stored=await log.count(),
            pending=log.pending,
            logged=stats.logged,
            written=stats.written,
            candidate_rows=stats.candidate_rows,
            batches=stats.batches,
            largest_batch=stats.largest_batch,
            write_ms_per_batch=round(1000 * stats.write_seconds / max(stats.batches, 1), 3),
            dropped=stats.dropped,
            failed=stats.failed,
            pruned=stats.pruned,
        ),
        trained_at=state.trained_at,
        trainings=state.trainings,
        error=state.error,
    )


def _kind_out(runtime: Runtime, kind: RequestKind) -> FusionKindOut:
    state = runtime.fusion.state.kinds[kind]
    fit = state.fit
    default, _ = runtime.fusion.choose(None, kind)
    return FusionKindOut(
        default=default,
        status=state.status,
        detail=state.detail,
        weights=state.weights or {},
        learned_weights={} if fit is None else fit.weights,
        temperature=None if fit is None else round(fit.temperature, 6),
        teaching_impressions=0 if fit is None else fit.impressions,
        pairs=0 if fit is None else fit.pairs,
        validation_learned=None if fit is None else fit.validation_learned,
        validation_rrf=None if fit is None else fit.validation_rrf,
    )


class FusionController(Controller):
    """The learned fusion and the impression log it learns from."""

    tags = ["admin"]

    @get("/admin/fusion", summary="The fusion in use and what its learning found")
    async def fusion(self, runtime: NamedDependency[Runtime]) -> FusionOut:
        """Return the default fusion, the learned weights and the impression log's counters."""
        return await fusion_out(runtime)

    @post("/admin/fusion/train", status_code=200, summary="Learn the fusion weights now")
    async def train(self, runtime: NamedDependency[Runtime]) -> FusionOut:
        """Learn from the impressions and their feedback now instead of at the next schedule."""
        await runtime.fusion.train()
        return await fusion_out(runtime)

    @get(
        "/admin/impressions/{request_id:str}",
        summary="One logged recommendation response",
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def impression(
        self, request_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> ImpressionOut:
        """Return every fused candidate of a response, its sources and the feedback on it."""
        found = await runtime.impressions.get(request_id)
        if found is None:
            raise NotFoundError(
                f"no impression with request_id {request_id!r}: it was never logged "
                "(fusion.log_impressions), or the retention limits have deleted it"
            )
        i = found.impression
        return ImpressionOut(
            request_id=i.request_id,
            user_id=i.user_id,
            created_at=i.created_at,
            strategy=i.strategy,
            fusion=i.fusion,
            top_k=i.top_k,
            kind=RequestKind.of(has_context=i.has_context, names_items=i.names_items),
            candidates=[
                ImpressionCandidateOut(
                    item_id=c.item_id,
                    position=c.position,
                    shown=c.shown,
                    fused_score=round(c.fused_score, 6),
                    sources={s.source: round(s.score, 6) for s in c.sources},
                    source_ranks={s.source: s.rank for s in c.sources},
                    label=found.labels.get(c.item_id),
                )
                for c in i.candidates
            ],
        )
