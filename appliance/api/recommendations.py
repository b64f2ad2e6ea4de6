from __future__ import annotations

import re
from http import HTTPStatus

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from appliance.api.auth import CLIENT_ACCESS
from appliance.api.openapi import error_responses
from appliance.domain import FIELD_PATH, FieldCondition, Range
from appliance.errors import InvalidInputError
from appliance.schemas.recommendations import (
    Filters,
    FilterValue,
    RangeFilter,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)
from appliance.services.learning import FusionMode
from appliance.services.recommend import RecommendationQuery, RecommendationResult
from appliance.services.runtime import Runtime


class RecommendationController(Controller):
    """POST /recommendations."""

    path = "/recommendations"
    tags = ["recommendations"]

    @post(
        status_code=200,
        summary="Recommend items for a user",
        opt=CLIENT_ACCESS,
        responses=error_responses(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    )
    async def recommend(
        self, data: JSONBody[RecommendationRequest], runtime: NamedDependency[Runtime]
    ) -> RecommendationResponse:
        """Blend context and learned preferences, retrieve, re-rank and return top_k."""
        result = await runtime.cached_recommender.recommend(
            RecommendationQuery(
                user_id=data.user_id,
                context=data.context or "",
                like_items=tuple(dict.fromkeys(data.like_items or ())),
                top_k=data.top_k,
                conditions=conditions_of(data.filters),
                exclude_seen=data.exclude_seen,
                rerank=data.rerank,
                sources=None if data.sources is None else frozenset(data.sources),
                fusion=None if data.fusion is None else FusionMode(data.fusion),
                diversity=data.diversity,
                prior=data.prior,
            )
        )
        return RecommendationResponse(
            user_id=result.user_id,
            recommendations=recommended_items(result),
            timestamp=result.timestamp,
            request_id=result.request_id,
            strategy=result.strategy,
            reranked=result.reranked,
            rerank_status=result.rerank_status,
            timings_ms=result.timings_ms,
            fusion=result.fusion,
            fusion_weights=result.fusion_weights or {},
            diversity=result.diversity or None,
            prior=result.prior,
        )


def recommended_items(result: RecommendationResult) -> list[RecommendedItem]:
    """Describe an answer's recommendations as the API returns them."""
    return [
        RecommendedItem(
            item_id=r.item.item_id,
            title=r.item.title,
            score=round(r.score, 6),
            metadata=r.item.metadata,
            sources={k: round(v, 6) for k, v in r.sources.items()},
            via=r.via,
            fused_score=round(r.fused_score, 6),
            source_ranks=r.ranks,
        )
        for r in result.recommendations
    ]


def conditions_of(filters: Filters | None) -> tuple[FieldCondition, ...]:
    """Return the conditions a request's filters set on the items' metadata."""
    return tuple(_condition(field, value) for field, value in (filters or {}).items())


def filters_in_query(text: str) -> Filters:
    """Decode filters given as JSON in a query parameter (``?filters={"genres": "Comedy"}``).

    Raises:
        InvalidInputError: ``text`` is not a JSON object of filters.

    """
    try:
        return msgspec.json.decode(text, type=Filters)
    except msgspec.DecodeError as e:
        raise InvalidInputError(
            f"filters: {e}; give a JSON object of metadata conditions, as POST /recommendations "
            'takes them, e.g. {"genres": "Comedy", "year": {"gte": 1990}}'
        ) from None


def _condition(field: str, value: FilterValue) -> FieldCondition:
    if not re.fullmatch(FIELD_PATH, field):
        raise InvalidInputError(
            f"filter field {field!r} is not a metadata key: use letters, digits, '_' and '-', "
            "with '.' only between the names of nested fields"
        )
    if isinstance(value, RangeFilter):
        bounds = (value.gt, value.gte, value.lt, value.lte)
        if all(b is None for b in bounds):
            raise InvalidInputError(
                f"filter on {field!r} has no bounds; give at least one of gt, gte, lt, lte"
            )
        return FieldCondition(field, range=Range(*bounds))
    if isinstance(value, list):
        return FieldCondition(field, any_of=tuple(value))
    return FieldCondition(field, equals=value)
