"""What every page of the dashboard has in common."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, TabPane

from tui.api import ApiError, ApplianceApi, UnreachableError


class Pane(TabPane):
    """One page (tab) of the dashboard, talking to the appliance through ``api``."""

    def __init__(self, title: str, api: ApplianceApi, *, pane_id: str) -> None:
        super().__init__(title, id=pane_id)
        self.api = api

    def activate(self) -> None:
        """Its tab was shown: focus the main widget and load fresh data."""
        self.focus_main()
        self.reload()

    def focus_main(self) -> None:
        """Give the keyboard to the page's main widget."""

    def reload(self) -> None:
        """Fetch what the page shows again."""

    def report(self, error: ApiError) -> None:
        """Show an error answer; an unreachable server is shown by the app's banner instead."""
        if isinstance(error, UnreachableError):
            return
        self.notify(
            error.detail,
            title=f"{error.method} {error.path} failed ({error.status_code})",
            severity="error",
            timeout=8,
            markup=False,
        )

    def action_refresh(self) -> None:
        """Key r."""
        self.reload()


def selected_key(table: DataTable[Any]) -> str | None:
    """Return the key of the row under the cursor, or ``None`` for an empty table."""
    if table.row_count == 0:
        return None
    row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    return None if row_key.value is None else str(row_key.value)
