"""Operator endpoints: users, feedback as it arrives, recent errors and the configuration.

The terminal dashboard reads these; so can any other client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from appliance.schemas.base import Request, Response


class UserSummary(Response):
    """One user in a listing."""

    user_id: str
    feedback_count: int
    last_event_at: datetime | None = None
    """When their most recent feedback event happened."""


class UserPage(Response):
    """A page of users in id order."""

    users: list[UserSummary]
    next_cursor: str | None = None
    """Pass as ?cursor= to get the next page; absent on the last page."""


class FeedbackEventOut(Response):
    """One stored feedback event."""

    event_id: int
    """Increases with every stored event: a cursor for following new ones."""
    user_id: str
    item_id: str
    interaction_type: str
    weight: float
    """Signed weight of the event in the user's preference vector."""
    event_time: datetime
    received_at: datetime
    rating: float | None = None
    request_id: str | None = None
    title: str | None = None
    """The item's title, when the item is still in the catalog."""


class UserFeedbackPage(Response):
    """A user's feedback history, newest first."""

    user_id: str
    events: list[FeedbackEventOut]
    next_cursor: int | None = None
    """Pass as ?before= to get older events; absent when there are none."""


class FeedbackTail(Response):
    """Feedback events after a cursor, oldest first."""

    events: list[FeedbackEventOut]
    last_event_id: int
    """Pass as ?after= to get only what arrives next (0 when nothing is stored)."""


class ErrorRecord(Response):
    """One request that was answered with an error."""

    time: datetime
    method: str
    path: str
    status_code: int
    detail: str


class RecentErrors(Response):
    """The latest error answers, newest first (kept in memory since start-up)."""

    errors: list[ErrorRecord]


class EffectiveConfig(Response):
    """The settings the appliance runs with; secrets are masked."""

    settings: dict[str, Any]
    reranker_kinds: list[str]
    """Re-ranker kinds this installation can build."""
    reranker_switchable: bool
    """Whether PUT /admin/reranker may change the re-ranker while the appliance runs."""
    reranker_kind: str = ""
    """The re-ranker in use now, which PUT /admin/reranker may have changed from the configured
    one (settings.reranker.kind)."""


class RerankerChange(Request):
    """Switch the re-ranker while the appliance runs."""

    kind: str
    """One of EffectiveConfig.reranker_kinds; its other settings are the configured ones."""


class RerankerState(Response):
    """The re-ranker in use."""

    kind: str


class RestoreResult(Response):
    """A backup archive loaded into the appliance."""

    items: int
    users: int
    feedback_events: int
    backup_created_at: datetime
    """When the backup was taken."""
    embedded: int = 0
    """Items embedded again with this appliance's model (restores with reembed only); 0 when the
    archive's vectors were loaded as they are."""
