from __future__ import annotations

from datetime import datetime

from appliance.schemas.base import Response


class UserProfileOut(Response):
    """What the appliance has learned about a user."""

    user_id: str
    feedback_count: int
    has_preference: bool
    created_at: datetime | None = None
    vector_updated_at: datetime | None = None
    """When the preference vector last changed."""


class UserDeleted(Response):
    """A user and all their data are gone."""

    user_id: str
    deleted_events: int
    deleted_impressions: int = 0
    """Logged recommendation responses of the user (GET /admin/impressions/{request_id})."""


class RebuildResult(Response):
    """Preference vectors recomputed from the stored events."""

    users: int
    max_deviation: float
    """Largest per-coordinate difference from the online vectors (unit length)."""
