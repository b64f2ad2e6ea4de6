"""Catalog: search and page through items, open, delete and import them."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.base import Pane, selected_key
from tui.widgets.dialogs import ConfirmScreen, ItemScreen
from tui.widgets.importer import ImportScreen, ImportTotals

PAGE_SIZE = 50


class CatalogPane(Pane):
    """GET /items with ``q`` and cursor paging; DELETE /items/{id}; POST /items from a file."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Prev page"),
        Binding("enter", "open", "Open", show=False),
        Binding("d", "delete", "Delete"),
        Binding("i", "import_file", "Import file"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "to_list", "List", show=False),
    ]

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__("2 Catalog", api, pane_id="catalog")
        self.query_text = ""
        self.cursors: list[str | None] = [None]
        """The cursor of each page up to the current one (the first page has none)."""
        self.next_cursor: str | None = None

    def compose(self) -> ComposeResult:
        """Search box, items, status line."""
        yield Input(
            placeholder="/ search titles and text, Enter to search (empty: everything)",
            id="catalog-search",
        )
        yield DataTable(id="items", cursor_type="row", zebra_stripes=True)
        yield Static("", id="catalog-status", classes="status", markup=False)

    def on_mount(self) -> None:
        """Columns of the items table."""
        table = self.query_one("#items", DataTable)
        table.add_column("item_id", key="item_id")
        table.add_column("title", key="title")
        table.add_column("metadata", key="metadata")
        table.add_column("text", key="text")

    def focus_main(self) -> None:
        """Focus the items table."""
        self.query_one("#items", DataTable).focus()

    def reload(self) -> None:
        """Load the current page again."""
        self.load()

    @work(exclusive=True, group="catalog", exit_on_error=False)
    async def load(self) -> None:
        """Fetch the current page of the current search."""
        status = self.query_one("#catalog-status", Static)
        try:
            page = await self.api.items(self.query_text, self.cursors[-1], PAGE_SIZE)
        except ApiError as e:
            status.update(f"cannot list items: {e.detail}")
            self.report(e)
            return
        self.next_cursor = page.next_cursor
        table = self.query_one("#items", DataTable)
        table.clear()
        for item in page.items:
            table.add_row(
                *fmt.row(
                    item.item_id,
                    fmt.excerpt(item.title, 40),
                    fmt.metadata(item.metadata, 40),
                    fmt.excerpt(item.text, 60),
                ),
                key=item.item_id,
            )
        found = f"matching {self.query_text!r}" if self.query_text else "in id order"
        more = " · n: next page" if page.next_cursor else " · last page"
        back = " · p: previous page" if len(self.cursors) > 1 else ""
        status.update(f"page {len(self.cursors)} · {len(page.items)} items {found}{more}{back}")

    @on(Input.Submitted, "#catalog-search")
    def search(self, event: Input.Submitted) -> None:
        """Search from the first page, then give the keyboard back to the list."""
        self.query_text = event.value.strip()
        self.cursors = [None]
        self.load()
        self.focus_main()

    @on(DataTable.RowSelected, "#items")
    def row_selected(self) -> None:
        """Enter on a row opens the item."""
        self.action_open()

    def action_search(self) -> None:
        """Key /."""
        self.query_one("#catalog-search", Input).focus()

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
        """Show the selected item in full."""
        item_id = selected_key(self.query_one("#items", DataTable))
        if item_id is not None:
            self.open_item(item_id)

    @work(exclusive=True, group="catalog-open", exit_on_error=False)
    async def open_item(self, item_id: str) -> None:
        """GET /items/{id}, then the item dialog."""
        try:
            item = await self.api.item(item_id)
        except ApiError as e:
            self.report(e)
            return
        await self.app.push_screen(ItemScreen(item))

    def action_delete(self) -> None:
        """Key d: confirm, then DELETE /items/{id}."""
        item_id = selected_key(self.query_one("#items", DataTable))
        if item_id is None:
            return

        def answered(yes: bool | None) -> None:  # noqa: FBT001 - the dialog's result
            if yes:
                self.delete_item(item_id)

        self.app.push_screen(
            ConfirmScreen(f"Delete item {item_id!r}? It will never be recommended again."),
            answered,
        )

    @work(group="catalog-delete", exit_on_error=False)
    async def delete_item(self, item_id: str) -> None:
        """DELETE /items/{id} and show the page without it."""
        try:
            await self.api.delete_item(item_id)
        except ApiError as e:
            self.report(e)
            return
        self.notify(f"item {item_id!r} deleted", markup=False)
        self.load()

    def action_import_file(self) -> None:
        """Key i: the import dialog; the list is reloaded when it closes."""

        def closed(totals: ImportTotals | None) -> None:
            if totals is not None:
                self.notify(f"import: {totals.summary()}")
            self.load()

        self.app.push_screen(ImportScreen(self.api), closed)
