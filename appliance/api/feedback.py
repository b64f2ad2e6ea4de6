from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from appliance.schemas.feedback import FeedbackRequest, FeedbackResponse
from appliance.services.feedback import FeedbackInput
from appliance.services.runtime import Runtime


class FeedbackController(Controller):
    """POST /feedback."""

    path = "/feedback"
    tags = ["feedback"]

    @post(status_code=200, summary="Record what a user did with an item")
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
