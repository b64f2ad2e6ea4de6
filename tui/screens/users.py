"""Users: who gave feedback, their history and what they are recommended now."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Label, Static

from appliance.schemas.admin import UserSummary
from appliance.schemas.recommendations import RecommendationRequest
from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.base import add_columns, report
from tui.screens.paged import PagedSearchPage, Row
from tui.widgets.dialogs import ConfirmScreen

HISTORY_SHOWN = 100
RECOMMENDED = 10


class UsersPane(PagedSearchPage[UserSummary]):
    """GET /users with ``q`` and cursor paging; Enter opens a user; DELETE /users/{id}."""

    NOUN = "users"
    SEARCH_ID = "users-search"
    TABLE_ID = "users-table"
    STATUS_ID = "users-status"
    PLACEHOLDER = "/ search user ids, Enter to search"
    COLUMNS: ClassVar[Mapping[str, str]] = {
        "user_id": "user_id",
        "feedback_count": "feedback events",
        "last_event_at": "last event",
    }
    HINT = "Enter: history and recommendations"

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__("4 Users", api, pane_id="users")

    async def fetch(
        self, query: str, cursor: str | None, limit: int
    ) -> tuple[Sequence[UserSummary], str | None]:
        """GET /users."""
        page = await self.api.users(query, cursor, limit)
        return page.users, page.next_cursor

    def row(self, entry: UserSummary) -> Row:
        """Show the id, how much feedback and when the last came."""
        return entry.user_id, (
            entry.user_id,
            str(entry.feedback_count),
            fmt.when(entry.last_event_at),
        )

    def open(self, key: str) -> None:
        """Show the user's dialog; reload the list when it closes (they may have been deleted)."""

        def closed(deleted: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if deleted:
                self.notify(f"user {key!r} deleted", markup=False)
            self.load()

        self.app.push_screen(UserScreen(self.api, key), closed)

    def deletion_question(self, key: str) -> str:
        """Warn that their feedback goes with them."""
        return _deletion_question(key)

    async def delete(self, key: str) -> str:
        """DELETE /users/{id}."""
        deleted = await self.api.delete_user(key)
        return f"user {key!r} deleted with {deleted.deleted_events} events"


def _deletion_question(user_id: str) -> str:
    return f"Delete user {user_id!r} and every feedback event of theirs?"


class UserScreen(ModalScreen[bool]):
    """A user's profile, feedback history and current recommendations; True if deleted."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("d", "delete", "Delete user"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, api: ApplianceApi, user_id: str) -> None:
        super().__init__()
        self.api = api
        self.user_id = user_id

    def compose(self) -> ComposeResult:
        """Profile line, then history and recommendations side by side."""
        with Vertical(classes="dialog user"):
            yield Static(f"user {self.user_id}", id="user-profile", markup=False)
            with Horizontal(id="user-panels"):
                with Vertical():
                    yield Label("Feedback history (newest first)", classes="section")
                    yield DataTable(id="user-history", cursor_type="row", zebra_stripes=True)
                with Vertical():
                    yield Label("Recommended now (no context)", classes="section")
                    yield Static("", id="user-strategy", markup=False)
                    yield DataTable(id="user-recs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        """Columns, then load."""
        history = self.query_one("#user-history", DataTable)
        add_columns(history, ("time", "interaction", "rating", "weight", "item"))
        add_columns(self.query_one("#user-recs", DataTable), ("#", "title", "score", "sources"))
        history.focus()
        self.load()

    def action_refresh(self) -> None:
        """Key r."""
        self.load()

    @work(exclusive=True, exit_on_error=False)
    async def load(self) -> None:
        """GET /users/{id}, GET /users/{id}/feedback and POST /recommendations."""
        profile_line = self.query_one("#user-profile", Static)
        try:
            profile = await self.api.user(self.user_id)
            history = await self.api.user_feedback(self.user_id, limit=HISTORY_SHOWN)
            recommended = await self.api.recommend(
                RecommendationRequest(user_id=self.user_id, top_k=RECOMMENDED)
            )
        except ApiError as e:
            report(self, e, profile_line, f"user {self.user_id}")
            return
        learned = "preference learned" if profile.has_preference else "no preference yet"
        profile_line.update(
            f"user {profile.user_id} · {profile.feedback_count} feedback events · {learned} · "
            f"first seen {fmt.when(profile.created_at)} · "
            f"preference updated {fmt.when(profile.vector_updated_at)}"
        )
        table = self.query_one("#user-history", DataTable)
        table.clear()
        for event in history.events:
            weight = Text(fmt.signed(event.weight), style="green" if event.weight > 0 else "red")
            table.add_row(
                *fmt.row(
                    fmt.when(event.event_time),
                    event.interaction_type,
                    "" if event.rating is None else f"{event.rating:g}",
                    weight,
                    fmt.excerpt(event.title or event.item_id, 40),
                ),
                key=str(event.event_id),
            )
        recs = self.query_one("#user-recs", DataTable)
        recs.clear()
        for rank, item in enumerate(recommended.recommendations, start=1):
            recs.add_row(
                *fmt.row(
                    str(rank),
                    fmt.excerpt(item.title, 40),
                    f"{item.score:.3f}",
                    fmt.sources(item.sources),
                ),
                key=item.item_id,
            )
        self.query_one("#user-strategy", Static).update(f"strategy: {recommended.strategy or '-'}")

    def action_delete(self) -> None:
        """Key d: confirm, then delete and close."""

        def answered(yes: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if yes:
                self.delete_user()

        self.app.push_screen(ConfirmScreen(_deletion_question(self.user_id)), answered)

    @work(exclusive=True, exit_on_error=False)
    async def delete_user(self) -> None:
        """DELETE /users/{id}."""
        try:
            await self.api.delete_user(self.user_id)
        except ApiError as e:
            report(self, e)
            return
        self.dismiss(True)  # noqa: FBT003 - the dialog's result

    def action_close(self) -> None:
        """Back to the list."""
        self.dismiss(False)  # noqa: FBT003 - the dialog's result
