from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta

from appliance.domain import InteractionType
from appliance.schemas.base import Id, Request, Response


class FeedbackRequest(Request):
    """What a user did with an item."""

    user_id: Id
    item_id: Id
    rating: Annotated[float, Meta(ge=0.0, le=5.0)] | None = None
    """A 0-5 rating; required when interaction_type is "rating"."""
    interaction_type: InteractionType = InteractionType.RATING
    timestamp: datetime | None = None
    """When it happened (default: now); lets historical events be imported."""
    request_id: Annotated[str, Meta(max_length=64)] | None = None
    """The recommendation response this feedback answers."""


class FeedbackResponse(Response):
    """The event is stored and the user's preferences updated."""

    status: str
    user_id: str
    item_id: str
    weight: float
    """The event's signed weight in the user's preference vector."""
    feedback_count: int
    """Events stored for this user so far."""
    preference_updated: bool
