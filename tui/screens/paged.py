"""A page that searches one listing of the appliance and pages through it (catalog, users)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.base import Pane, add_columns, selected_key
from tui.widgets.dialogs import ConfirmScreen

PAGE_SIZE = 50

Entry = TypeVar("Entry")
Row = tuple[str, Sequence[str | Text]]
"""A table row: its key (the id that Enter and d act on) and its cells."""


class PagedSearchPage(Pane, Generic[Entry]):
    """A search box, one page of a listing in a table, and a status line; n and p page.

    A subclass names its widgets and columns in the class attributes and fills in the hooks:
    ``fetch`` a page, the ``row`` of an entry, what Enter does (``open``) and what d does
    (``deletion_question``, then ``delete``).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Prev page"),
        Binding("enter", "open", "Open", show=False),
        Binding("d", "delete", "Delete"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "to_list", "List", show=False),
    ]

    NOUN: ClassVar[str]
    """What the rows are, in the plural, as the status line says it."""
    SEARCH_ID: ClassVar[str]
    TABLE_ID: ClassVar[str]
    STATUS_ID: ClassVar[str]
    PLACEHOLDER: ClassVar[str]
    """The search box's prompt."""
    COLUMNS: ClassVar[Mapping[str, str]]
    """Column labels by key (the tests look columns up by key)."""
    HINT: ClassVar[str] = ""
    """Said at the end of the status line."""

    def __init__(self, title: str, api: ApplianceApi, *, pane_id: str) -> None:
        super().__init__(title, api, pane_id=pane_id)
        self.query_text = ""
        self.cursors: list[str | None] = [None]
        """The cursor of each page up to the current one (the first page has none): the API
        only pages forward, so going back means remembering where each page began."""
        self.next_cursor: str | None = None
        self.shown: tuple[str, str | None] | None = None
        """(search, cursor) of the page in the table, so loading it again keeps the row the
        cursor is on (after a delete or a dialog) while another page starts at the top."""

    # -- hooks ----------------------------------------------------------------------------------

    async def fetch(
        self, query: str, cursor: str | None, limit: int
    ) -> tuple[Sequence[Entry], str | None]:
        """Return one page of entries matching ``query`` and the cursor of the next page."""
        raise NotImplementedError

    def row(self, entry: Entry) -> Row:
        """Return the key and the cells of an entry's row."""
        raise NotImplementedError

    def open(self, key: str) -> None:
        """Open the entry (Enter on its row)."""
        raise NotImplementedError

    def deletion_question(self, key: str) -> str:
        """Return what to ask before deleting."""
        raise NotImplementedError

    async def delete(self, key: str) -> str:
        """Delete the entry; return what to say once it is gone."""
        raise NotImplementedError

    # -- the page -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Search box, table, status line."""
        yield Input(placeholder=self.PLACEHOLDER, id=self.SEARCH_ID)
        yield DataTable(id=self.TABLE_ID, cursor_type="row", zebra_stripes=True)
        yield Static("", id=self.STATUS_ID, classes="status", markup=False)

    def on_mount(self) -> None:
        """Columns of the table."""
        add_columns(self.table, self.COLUMNS)

    @property
    def table(self) -> DataTable[Any]:
        """The listing."""
        return self.query_one(f"#{self.TABLE_ID}", DataTable)

    def focus_main(self) -> None:
        """Focus the table."""
        self.table.focus()

    def reload(self) -> None:
        """Load the current page again."""
        self.load()

    @work(exclusive=True, group="page", exit_on_error=False)
    async def load(self) -> None:
        """Fetch the current page of the current search."""
        status = self.query_one(f"#{self.STATUS_ID}", Static)
        page = (self.query_text, self.cursors[-1])
        try:
            entries, next_cursor = await self.fetch(*page, PAGE_SIZE)
        except ApiError as e:
            self.report(e, status, f"cannot list {self.NOUN}")
            return
        self.next_cursor = next_cursor
        table = self.table
        row = table.cursor_row if page == self.shown else 0
        table.clear()
        for entry in entries:
            key, cells = self.row(entry)
            table.add_row(*fmt.row(*cells), key=key)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        self.shown = page
        found = f"matching {self.query_text!r}" if self.query_text else "in id order"
        more = " · n: next page" if next_cursor else " · last page"
        back = " · p: previous page" if len(self.cursors) > 1 else ""
        hint = f" · {self.HINT}" if self.HINT else ""
        status.update(
            f"page {len(self.cursors)} · {len(entries)} {self.NOUN} {found}{more}{back}{hint}"
        )

    # The page's only Input and only DataTable: no selector needed (dialogs are other screens).
    @on(Input.Submitted)
    def search(self, event: Input.Submitted) -> None:
        """Search from the first page, then give the keyboard back to the list."""
        self.query_text = event.value.strip()
        self.cursors = [None]
        self.load()
        self.focus_main()

    @on(DataTable.RowSelected)
    def row_selected(self) -> None:
        """Enter on a row."""
        self.action_open()

    def action_search(self) -> None:
        """Key /."""
        self.query_one(f"#{self.SEARCH_ID}", Input).focus()

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

    def action_open(self) -> None:
        """Open the entry under the cursor."""
        key = selected_key(self.table)
        if key is not None:
            self.open(key)

    def action_delete(self) -> None:
        """Key d: confirm, then delete the entry under the cursor."""
        key = selected_key(self.table)
        if key is None:
            return

        def answered(yes: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if yes:
                self.delete_entry(key)

        self.app.push_screen(ConfirmScreen(self.deletion_question(key)), answered)

    @work(group="delete", exit_on_error=False)
    async def delete_entry(self, key: str) -> None:
        """Delete, say so, and show the page without it."""
        try:
            done = await self.delete(key)
        except ApiError as e:
            self.report(e)
            return
        self.notify(done, markup=False)
        self.load()
