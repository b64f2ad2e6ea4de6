"""Feedback: a live tail of the events as the appliance stores them."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static
from textual.worker import Worker

from appliance.schemas.admin import FeedbackEventOut
from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.base import Pane, add_columns

KEEP = 500
"""Rows kept in the tail; older ones scroll away."""
PAGE = 500
"""Events asked for per request."""
PAGES_PER_POLL = 20
"""How far one poll catches up with a long history before it shows what it has."""


class FeedbackPane(Pane):
    """Polls GET /feedback?after=<last event id> on an interval; newest events at the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause", "Pause/resume"),
        Binding("c", "clear", "Clear"),
        Binding("f", "follow", "Newest"),
    ]

    def __init__(self, api: ApplianceApi, *, interval: float) -> None:
        super().__init__("5 Feedback", api, pane_id="feedback")
        self.interval = interval
        self.after: int | None = None
        """The id of the last event shown: the cursor of the next poll (none before the first)."""
        self.keys: deque[str] = deque()
        self.paused = False
        self.received = 0
        self._poll: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        """Status line and the tail."""
        yield Static("waiting for the first poll", id="tail-status", classes="status", markup=False)
        yield DataTable(id="tail", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Columns; poll now and on every interval."""
        add_columns(
            self.query_one("#tail", DataTable),
            ("event", "time", "user", "interaction", "rating", "weight", "item", "request"),
        )
        self.set_interval(self.interval, self.tick)
        self.tick()

    def focus_main(self) -> None:
        """Focus the tail."""
        self.query_one("#tail", DataTable).focus()

    def reload(self) -> None:
        """Poll now (the tail keeps polling by itself)."""
        self.tick()

    def tick(self) -> None:
        """Poll unless paused or the previous poll is still running."""
        if self.paused:
            return
        if self._poll is None or self._poll.is_finished:
            self._poll = self.poll()

    @work(group="feedback-tail", exit_on_error=False)
    async def poll(self) -> None:
        """Fetch what arrived after the last event shown, catching up page by page.

        The first poll asks for the latest events only, however long the history is.
        """
        fresh: deque[FeedbackEventOut] = deque(maxlen=KEEP)
        after = self.after
        try:
            for _ in range(PAGES_PER_POLL):
                tail = await self.api.feedback_tail(after=after, limit=PAGE)
                fresh.extend(tail.events)
                first = after is None
                after = tail.last_event_id
                if first or len(tail.events) < PAGE:
                    break
        except ApiError as e:
            self.report(e, self.query_one("#tail-status", Static), "cannot poll /feedback")
            return
        self.after = after
        self.append(fresh)

    def append(self, events: deque[FeedbackEventOut]) -> None:
        """Add rows at the bottom, drop the oldest beyond ``KEEP``, follow the end."""
        table = self.query_one("#tail", DataTable)
        following = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        for event in events:
            key = str(event.event_id)
            if key in table.rows:
                continue
            table.add_row(*_cells(event), key=key)
            self.keys.append(key)
            self.received += 1
        while len(self.keys) > KEEP:
            table.remove_row(self.keys.popleft())
        if events and following:
            table.move_cursor(row=table.row_count - 1)
        paused = " · paused (space resumes)" if self.paused else ""
        self._status(
            f"{table.row_count} events shown (last {KEEP} kept) · "
            f"last event id {self.after or 0} · polling every {self.interval:g} s{paused}"
        )

    def _status(self, text: str) -> None:
        self.query_one("#tail-status", Static).update(text)

    def action_pause(self) -> None:
        """Space: stop or restart polling."""
        self.paused = not self.paused
        self._status("paused (space resumes)" if self.paused else "following")
        if not self.paused:
            self.tick()

    def action_clear(self) -> None:
        """Key c: empty the table; new events keep arriving."""
        self.keys.clear()
        self.query_one("#tail", DataTable).clear()

    def action_follow(self) -> None:
        """Key f: jump to the newest event."""
        table = self.query_one("#tail", DataTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)


def _cells(event: FeedbackEventOut) -> tuple[Text, ...]:
    weight = Text(fmt.signed(event.weight), style="green" if event.weight > 0 else "red")
    return fmt.row(
        str(event.event_id),
        fmt.when(event.event_time),
        event.user_id,
        event.interaction_type,
        "" if event.rating is None else f"{event.rating:g}",
        weight,
        fmt.excerpt(event.title or event.item_id, 40),
        (event.request_id or "")[:8],
    )
