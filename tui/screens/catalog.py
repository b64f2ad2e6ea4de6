"""Catalog: search and page through items, open (with more like each), delete and import them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from textual import work
from textual.binding import Binding, BindingType

from appliance.schemas.items import ItemOut
from appliance.schemas.recommendations import SimilarItemsResponse
from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.paged import PagedSearchPage, Row
from tui.widgets.dialogs import ItemScreen
from tui.widgets.importer import ImportScreen, ImportTotals


class CatalogPane(PagedSearchPage[ItemOut]):
    """GET /items with ``q`` and cursor paging; DELETE /items/{id}; POST /items from a file."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("i", "import_file", "Import file")]

    NOUN = "items"
    SEARCH_ID = "catalog-search"
    TABLE_ID = "items"
    STATUS_ID = "catalog-status"
    PLACEHOLDER = "/ search titles and text, Enter to search (empty: everything)"
    COLUMNS: ClassVar[Mapping[str, str]] = {
        "item_id": "item_id",
        "title": "title",
        "metadata": "metadata",
        "text": "text",
    }

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__("2 Catalog", api, pane_id="catalog")

    async def fetch(
        self, query: str, cursor: str | None, limit: int
    ) -> tuple[Sequence[ItemOut], str | None]:
        """GET /items."""
        page = await self.api.items(query, cursor, limit)
        return page.items, page.next_cursor

    def row(self, entry: ItemOut) -> Row:
        """Show the id, title, metadata and the start of the text."""
        return entry.item_id, (
            entry.item_id,
            fmt.excerpt(entry.title, 40),
            fmt.metadata(entry.metadata, 40),
            fmt.excerpt(entry.text, 60),
        )

    def open(self, key: str) -> None:
        """Show the item in full."""
        self.open_item(key)

    @work(exclusive=True, group="catalog-open", exit_on_error=False)
    async def open_item(self, item_id: str) -> None:
        """GET /items/{id} and /items/{id}/similar, then the item dialog."""
        try:
            item = await self.api.item(item_id)
        except ApiError as e:
            self.report(e)
            return
        try:
            similar: SimilarItemsResponse | str = await self.api.similar(item_id)
        except ApiError as e:
            # The item is worth showing without them.
            similar = str(e)
        await self.app.push_screen(ItemScreen(item, similar))

    def deletion_question(self, key: str) -> str:
        """Warn that a deleted item is never recommended again."""
        return f"Delete item {key!r}? It will never be recommended again."

    async def delete(self, key: str) -> str:
        """DELETE /items/{id}."""
        await self.api.delete_item(key)
        return f"item {key!r} deleted"

    def action_import_file(self) -> None:
        """Key i: the import dialog; the list is reloaded when it closes."""

        def closed(totals: ImportTotals | None) -> None:
            if totals is not None:
                self.notify(f"import: {totals.summary()}")
            self.load()

        self.app.push_screen(ImportScreen(self.api), closed)
