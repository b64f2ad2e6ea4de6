"""Importing a catalog file from the dashboard, as ``appliance ingest`` does over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, ProgressBar, Static

from appliance.ingest_files import Batch, Rejected, batches, count_records, read_items
from tui.api import ApiError, ApplianceApi

BATCH_SIZE = 256
"""Items per POST /items, as ``appliance ingest`` sends by default."""
REJECTED_SHOWN = 8


@dataclass(slots=True)
class ImportTotals:
    """What an import changed, summed over its batches."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    embedded: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def summary(self) -> str:
        """``36 created, 0 updated, 0 unchanged (36 embedded), 0 rejected``."""
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged "
            f"({self.embedded} embedded), {len(self.rejected)} rejected"
        )


def _next_batch(source: Iterator[Batch]) -> Batch | None:
    return next(source, None)


class ImportScreen(ModalScreen[ImportTotals | None]):
    """Asks for a file, reads it with ``appliance.ingest_files`` and posts it batch by batch."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__()
        self.api = api
        self.totals: ImportTotals | None = None

    def compose(self) -> ComposeResult:
        """Path, progress and result."""
        with Vertical(classes="dialog importer"):
            yield Label("Import a catalog file: JSON Lines in the items format, or CSV/TSV")
            yield Input(placeholder="path of the file, then Enter", id="import-path")
            yield ProgressBar(id="import-progress", show_eta=False)
            yield Static("", id="import-result", markup=False)
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Start importing the file named."""
        path = event.value.strip()
        if path:
            self.run_import(Path(path).expanduser())

    @work(exclusive=True, exit_on_error=False)
    async def run_import(self, path: Path) -> None:
        """Read, batch and upsert, advancing the bar by the records each batch covers."""
        bar = self.query_one("#import-progress", ProgressBar)
        result = self.query_one("#import-result", Static)
        try:
            # File reading is blocking work: keep it off the event loop.
            total = await asyncio.to_thread(count_records, path)
            records = await asyncio.to_thread(read_items, path)
        except (ValueError, OSError) as e:
            result.update(f"cannot read {path}: {e}")
            return
        bar.update(total=total, progress=0)
        result.update(f"importing {total} records from {path.name} ...")
        totals = ImportTotals()
        self.totals = totals
        source = batches(records, BATCH_SIZE)
        while (batch := await asyncio.to_thread(_next_batch, source)) is not None:
            totals.rejected.extend(batch.rejected)
            if batch.items:
                try:
                    answer = await self.api.upsert_items(batch.items)
                except ApiError as e:
                    result.update(f"stopped: {e}\nso far: {totals.summary()}")
                    return
                totals.created += answer.created
                totals.updated += answer.updated
                totals.unchanged += answer.unchanged
                totals.embedded += answer.embedded
            bar.advance(len(batch.items) + len(batch.rejected))
        lines = [f"done: {totals.summary()}"]
        lines += [f"  line {r.line}: {r.reason}" for r in totals.rejected[:REJECTED_SHOWN]]
        if len(totals.rejected) > REJECTED_SHOWN:
            lines.append(f"  ... and {len(totals.rejected) - REJECTED_SHOWN} more")
        lines.append("Esc: back to the catalog")
        result.update("\n".join(lines))

    def action_close(self) -> None:
        """Back to the catalog (an import still running is cancelled between batches)."""
        self.workers.cancel_node(self)
        self.dismiss(self.totals)
