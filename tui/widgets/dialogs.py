"""Modal dialogs: a yes/no confirmation and an item's details."""

from __future__ import annotations

import json
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from appliance.schemas.items import ItemOut
from appliance.schemas.recommendations import SimilarItemsResponse


class ConfirmScreen(ModalScreen[bool]):
    """Ask before doing something that cannot be undone; dismissed with True or False."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, action: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.action = action

    def compose(self) -> ComposeResult:
        """Lay out a question and two buttons."""
        with Vertical(classes="dialog confirm"):
            yield Static(self.question, id="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.action} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")
        yield Footer()

    def on_mount(self) -> None:
        """Focus Cancel, so that Enter alone never deletes."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Either button answers."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:  # noqa: FBT001 - an action's argument
        """Answer from the keyboard."""
        self.dismiss(yes)


class ItemScreen(ModalScreen[None]):
    """One catalog item: title, id, text, metadata, and the items most like it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "Close")]

    def __init__(self, item: ItemOut, similar: SimilarItemsResponse | str) -> None:
        """``similar``: GET /items/{id}/similar's answer, or why it could not be had."""
        super().__init__()
        self.item = item
        self.similar = similar

    def compose(self) -> ComposeResult:
        """Show the item's fields, scrollable."""
        item = self.item
        with VerticalScroll(classes="dialog item"):
            yield Static(Text(item.title, style="bold"), id="item-title")
            yield Static(Text.assemble(("id ", "dim"), item.item_id), id="item-id")
            yield Static(item.text or "(no text)", id="item-text", markup=False)
            yield Static(
                json.dumps(item.metadata, indent=2, ensure_ascii=False),
                id="item-metadata",
                markup=False,
            )
            yield Static(self._similar(), id="item-similar")
        yield Footer()

    def _similar(self) -> Text:
        """More like this: each item's title, id and the sources that found it."""
        lines = Text("More like this\n", style="bold")
        if isinstance(self.similar, str):
            lines.append(self.similar, style="red")
            return lines
        if not self.similar.recommendations:
            lines.append("(nothing yet)", style="dim")
        for n, r in enumerate(self.similar.recommendations, start=1):
            lines.append(f"{n:>2}. {r.title}  ")
            lines.append(f"{r.item_id}  {', '.join(r.sources)}\n", style="dim")
        return lines

    def action_close(self) -> None:
        """Back to the list."""
        self.dismiss(None)
