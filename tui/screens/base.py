"""What every page of the dashboard has in common."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from textual.widget import Widget
from textual.widgets import DataTable, Static, TabPane

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

    def report(self, error: ApiError, line: Static | None = None, what: str = "error") -> None:
        """Show an error answer (see the module's ``report``)."""
        report(self, error, line, what)

    def action_refresh(self) -> None:
        """Key r."""
        self.reload()


def report(
    widget: Widget, error: ApiError, line: Static | None = None, what: str = "error"
) -> None:
    """Show an error answer as a notification, and in ``line`` as ``what: detail`` when given.

    The line keeps saying what went wrong after the notification has gone. An unreachable
    server is not notified: the app's banner says so, once, instead of every poll.
    """
    if line is not None:
        line.update(f"{what}: {error.detail}")
    if isinstance(error, UnreachableError):
        return
    widget.notify(
        error.detail,
        title=f"{error.method} {error.path} failed ({error.status_code})",
        severity="error",
        timeout=8,
        markup=False,
    )


def selected_key(table: DataTable[Any]) -> str | None:
    """Return the key of the row under the cursor, or ``None`` for an empty table."""
    if table.row_count == 0:
        return None
    row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    return None if row_key.value is None else str(row_key.value)


def add_columns(table: DataTable[Any], columns: Iterable[str] | Mapping[str, str]) -> None:
    """Add columns keyed by name, each labelled by its name or, from a mapping, its label.

    Rows, ``get_column`` and the tests address columns by these keys, not by position.
    """
    labels = columns if isinstance(columns, Mapping) else {name: name for name in columns}
    for key, label in labels.items():
        table.add_column(label, key=key)
