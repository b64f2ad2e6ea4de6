from __future__ import annotations

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from appliance.schemas.users import UserDeleted, UserProfileOut
from appliance.services.runtime import Runtime


class UserController(Controller):
    """Users, as known from their feedback."""

    path = "/users"
    tags = ["users"]

    @get("/{user_id:str}", summary="Get a user's profile")
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

    @delete("/{user_id:str}", summary="Delete a user and all their data", status_code=200)
    async def delete_user(
        self, user_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> UserDeleted:
        """Delete the user's profile and every feedback event they sent."""
        deleted = await runtime.feedback.delete_user(user_id)
        return UserDeleted(user_id=user_id, deleted_events=deleted)
