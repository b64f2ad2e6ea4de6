from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from appliance.api.auth import CLIENT_ACCESS
from appliance.api.openapi import error_responses
from appliance.api.paging import PageLimit
from appliance.backends.stores.duckdb_store import StoredEvent
from appliance.schemas.admin import FeedbackEventOut, FeedbackTail
from appliance.schemas.feedback import FeedbackRequest, FeedbackResponse
from appliance.services.feedback import FeedbackInput
from appliance.services.runtime import Runtime


def event_out(stored: StoredEvent) -> FeedbackEventOut:
    """Describe a stored event on the wire."""
    e = stored.event
    return FeedbackEventOut(
        event_id=stored.event_id,
        user_id=e.user_id,
        item_id=e.item_id,
        interaction_type=e.interaction_type.value,
        weight=e.weight,
        event_time=e.timestamp,
        received_at=stored.received_at,
        rating=e.rating,
        request_id=e.request_id,
        title=stored.title,
    )


class FeedbackController(Controller):
    """Feedback events: record one, or follow the ones that arrive."""

    path = "/feedback"
    tags = ["feedback"]

    @post(
        status_code=200,
        summary="Record what a user did with an item",
        opt=CLIENT_ACCESS,
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def record(
        self, data: JSONBody[FeedbackRequest], runtime: NamedDependency[Runtime]
    ) -> FeedbackResponse:
        """Store the event durably, then update the user's preference vector."""
        receipt = await runtime.feedback.record(
            FeedbackInput(
                user_id=data.user_id,
                item_id=data.item_id,
                interaction_type=data.interaction_type,
                rating=data.rating,
                timestamp=data.timestamp,
                request_id=data.request_id,
            )
        )
        return FeedbackResponse(
            status="recorded",
            user_id=data.user_id,
            item_id=data.item_id,
            weight=receipt.weight,
            feedback_count=receipt.feedback_count,
            preference_updated=receipt.preference_updated,
        )

    @get(summary="Follow the feedback events as they arrive")
    async def tail(
        self,
        runtime: NamedDependency[Runtime],
        after: Annotated[
            int | None,
            Parameter(ge=0, description="last_event_id of the previous answer"),
        ] = None,
        limit: PageLimit = 100,
    ) -> FeedbackTail:
        """Return the events after ``after``, oldest first (without it, the latest ``limit``)."""
        events, last_event_id = await runtime.feedback.tail(after, limit)
        return FeedbackTail(events=[event_out(e) for e in events], last_event_id=last_event_id)
