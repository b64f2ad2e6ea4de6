from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from appliance.api.feedback import event_out
from appliance.api.openapi import error_responses
from appliance.api.paging import PageCursor, PageLimit
from appliance.errors import NotFoundError
from appliance.schemas.admin import UserFeedbackPage, UserPage, UserSummary
from appliance.schemas.base import MAX_ID_LENGTH
from appliance.schemas.users import UserDeleted, UserProfileOut
from appliance.services.runtime import Runtime


class UserController(Controller):
    """Users, as known from their feedback."""

    path = "/users"
    tags = ["users"]

    @get(summary="List users")
    async def list_users(
        self,
        runtime: NamedDependency[Runtime],
        cursor: PageCursor = None,
        limit: PageLimit = 100,
        q: Annotated[
            str | None,
            Parameter(
                max_length=MAX_ID_LENGTH,
                description="Only users whose id contains this, ignoring case",
            ),
        ] = None,
    ) -> UserPage:
        """Page through the users in id order, with their event counts."""
        users, next_cursor = await runtime.feedback.users(cursor, limit, q or None)
        return UserPage(
            users=[
                UserSummary(
                    user_id=u.user_id,
                    feedback_count=u.feedback_count,
                    last_event_at=u.last_event_at,
                )
                for u in users
            ],
            next_cursor=next_cursor,
        )

    @get(
        "/{user_id:str}/feedback",
        summary="A user's feedback history",
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def history(
        self,
        user_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        limit: PageLimit = 100,
        before: Annotated[
            int | None, Parameter(ge=1, description="next_cursor of the previous page")
        ] = None,
    ) -> UserFeedbackPage:
        """Return the user's events, newest first, with the titles of items still in the catalog."""
        events, next_cursor = await runtime.feedback.history(user_id, before, limit)
        return UserFeedbackPage(
            user_id=user_id, events=[event_out(e) for e in events], next_cursor=next_cursor
        )

    @get(
        "/{user_id:str}",
        summary="Get a user's profile",
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def profile(
        self, user_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> UserProfileOut:
        """Return the user's feedback count and preference state."""
        p = await runtime.feedback.profile(user_id)
        return UserProfileOut(
            user_id=p.user_id,
            feedback_count=p.feedback_count,
            has_preference=p.has_preference,
            created_at=p.created_at,
            vector_updated_at=p.vector_updated_at,
        )

    @delete(
        "/{user_id:str}",
        summary="Delete a user and all their data",
        status_code=200,
        responses=error_responses(HTTPStatus.NOT_FOUND),
    )
    async def delete_user(
        self, user_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> UserDeleted:
        """Delete the user's profile, every feedback event they sent and their impressions.

        A user who only asked for recommendations has impressions and nothing else; 404 when
        the appliance holds neither.
        """
        try:
            deleted = await runtime.feedback.delete_user(user_id)
        except NotFoundError as e:
            unknown: NotFoundError | None = e
            deleted = 0
        else:
            unknown = None
        impressions = await runtime.impressions.forget_user(user_id)
        if unknown is not None and not impressions:
            raise unknown
        return UserDeleted(user_id=user_id, deleted_events=deleted, deleted_impressions=impressions)
