"""Users: who gave feedback, their history and what they are recommended now."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Static

from appliance.schemas.recommendations import RecommendationRequest
from tui import format as fmt
from tui.api import ApiError, ApplianceApi, UnreachableError
from tui.screens.base import Pane, selected_key
from tui.widgets.dialogs import ConfirmScreen

PAGE_SIZE = 50
HISTORY_SHOWN = 100
RECOMMENDED = 10


class UsersPane(Pane):
    """GET /users with ``q`` and cursor paging; Enter opens a user; DELETE /users/{id}."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Prev page"),
        Binding("d", "delete", "Delete"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "to_list", "List", show=False),
    ]

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__("4 Users", api, pane_id="users")
        self.query_text = ""
        self.cursors: list[str | None] = [None]
        self.next_cursor: str | None = None

    def compose(self) -> ComposeResult:
        """Search box, users, status line."""
        yield Input(placeholder="/ search user ids, Enter to search", id="users-search")
        yield DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="users-status", classes="status", markup=False)

    def on_mount(self) -> None:
        """Columns of the users table."""
        table = self.query_one("#users-table", DataTable)
        table.add_column("user_id", key="user_id")
        table.add_column("feedback events", key="feedback_count")
        table.add_column("last event", key="last_event_at")

    def focus_main(self) -> None:
        """Focus the users table."""
        self.query_one("#users-table", DataTable).focus()

    def reload(self) -> None:
        """Load the current page again."""
        self.load()

    @work(exclusive=True, group="users", exit_on_error=False)
    async def load(self) -> None:
        """Fetch the current page of the current search."""
        status = self.query_one("#users-status", Static)
        try:
            page = await self.api.users(self.query_text, self.cursors[-1], PAGE_SIZE)
        except ApiError as e:
            status.update(f"cannot list users: {e.detail}")
            self.report(e)
            return
        self.next_cursor = page.next_cursor
        table = self.query_one("#users-table", DataTable)
        row = table.cursor_row
        table.clear()
        for user in page.users:
            table.add_row(
                *fmt.row(user.user_id, str(user.feedback_count), fmt.when(user.last_event_at)),
                key=user.user_id,
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        found = f"matching {self.query_text!r}" if self.query_text else "in id order"
        more = " · n: next page" if page.next_cursor else " · last page"
        back = " · p: previous page" if len(self.cursors) > 1 else ""
        status.update(
            f"page {len(self.cursors)} · {len(page.users)} users {found}{more}{back}"
            " · Enter: history and recommendations"
        )

    @on(Input.Submitted, "#users-search")
    def search(self, event: Input.Submitted) -> None:
        """Search from the first page."""
        self.query_text = event.value.strip()
        self.cursors = [None]
        self.load()
        self.focus_main()

    @on(DataTable.RowSelected, "#users-table")
    def open_user(self) -> None:
        """Enter on a row: the user's dialog; the list is reloaded when it closes."""
        user_id = selected_key(self.query_one("#users-table", DataTable))
        if user_id is None:
            return

        def closed(deleted: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if deleted:
                self.notify(f"user {user_id!r} deleted", markup=False)
            self.load()

        self.app.push_screen(UserScreen(self.api, user_id), closed)

    def action_search(self) -> None:
        """Key /."""
        self.query_one("#users-search", Input).focus()

    def action_to_list(self) -> None:
        """Escape from the search box."""
        self.focus_main()

    def action_next_page(self) -> None:
        """Key n."""
        if self.next_cursor is None:
            self.notify("this is the last page")
            return
        self.cursors.append(self.next_cursor)
        self.load()

    def action_previous_page(self) -> None:
        """Key p."""
        if len(self.cursors) > 1:
            self.cursors.pop()
            self.load()

    def action_delete(self) -> None:
        """Key d: confirm, then DELETE /users/{id}."""
        user_id = selected_key(self.query_one("#users-table", DataTable))
        if user_id is None:
            return

        def answered(yes: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if yes:
                self.delete_user(user_id)

        self.app.push_screen(ConfirmScreen(_deletion_question(user_id)), answered)

    @work(group="users-delete", exit_on_error=False)
    async def delete_user(self, user_id: str) -> None:
        """DELETE /users/{id}, then the page without them."""
        try:
            deleted = await self.api.delete_user(user_id)
        except ApiError as e:
            self.report(e)
            return
        self.notify(f"user {user_id!r} deleted with {deleted.deleted_events} events", markup=False)
        self.load()


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
        for name in ("time", "interaction", "rating", "weight", "item"):
            history.add_column(name, key=name)
        recs = self.query_one("#user-recs", DataTable)
        for name in ("#", "title", "score", "sources"):
            recs.add_column(name, key=name)
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
            profile_line.update(f"user {self.user_id}: {e.detail}")
            if not isinstance(e, UnreachableError):
                self.notify(e.detail, severity="error", markup=False)
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
            self.notify(e.detail, severity="error", markup=False)
            return
        self.dismiss(True)  # noqa: FBT003 - the dialog's result

    def action_close(self) -> None:
        """Back to the list."""
        self.dismiss(False)  # noqa: FBT003 - the dialog's result
