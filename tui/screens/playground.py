"""Playground: ask for recommendations, react to them, watch them change."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, NamedTuple

import msgspec
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import DescendantFocus
from textual.widgets import DataTable, Input, Label, Static

from appliance.domain import InteractionType
from appliance.schemas.feedback import FeedbackRequest
from appliance.schemas.recommendations import RecommendationRequest, RecommendationResponse
from tui import format as fmt
from tui.api import ApiError, ApplianceApi
from tui.screens.base import Pane, add_columns, selected_key

TOP_K = 10
#: The result columns: id suffix, title shown above the table, the request's ``rerank``.
SIDES: dict[str, tuple[str, bool | None]] = {
    "left": ("recommendations", None),
    "right": ("re-ranked (rerank: true)", True),
}
SIDE_BY_SIDE_LEFT = ("vector only (rerank: false)", False)


class Question(NamedTuple):
    """What the playground asks, as typed."""

    user: str
    context: str
    like: tuple[str, ...]
    """The items to go with (``like_items``)."""
    filters: str
    """The metadata conditions, as JSON text (empty: none)."""


class PlaygroundPane(Pane):
    """POST /recommendations for a user and a context; POST /feedback on a row, then again."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "feedback('like')", "Like"),
        Binding("x", "feedback('dislike')", "Dislike"),
        Binding("1", "rate(1)", "Rate 1-5", key_display="1-5"),
        *(Binding(str(n), f"rate({n})", show=False) for n in range(2, 6)),
        Binding("s", "side_by_side", "Side by side"),
        Binding("r", "refresh", "Run again"),
        Binding("escape", "edit_context", "Edit context", show=False),
    ]

    def __init__(self, api: ApplianceApi, *, user_id: str = "demo-user") -> None:
        super().__init__("3 Playground", api, pane_id="playground")
        self.default_user = user_id
        self.side_by_side = False
        self.responses: dict[str, RecommendationResponse] = {}
        """The answer shown in each table ("left", "right")."""
        self.asked: Question | None = None
        """The question of the answers shown: changes are highlighted only within one."""
        self.active_side = "left"

    def compose(self) -> ComposeResult:
        """Lay out the inputs, the result table(s) and a line about the last feedback."""
        with Horizontal(id="pg-inputs"):
            yield Label("user", classes="field-label")
            yield Input(self.default_user, placeholder="user id", id="pg-user")
            yield Label("like", classes="field-label")
            yield Input(placeholder="ids, comma-separated", id="pg-like")
            yield Label("context", classes="field-label")
            yield Input(
                placeholder="what the user is looking for, e.g. space adventure (Enter: run)",
                id="pg-context",
            )
        with Horizontal(id="pg-conditions"):
            yield Label("filters", classes="field-label")
            yield Input(
                placeholder='metadata conditions as JSON, e.g. {"category": "cooking"} or '
                '{"year": {"gte": 2010}}',
                id="pg-filters",
            )
        with Horizontal(id="pg-results"):
            for side in SIDES:
                with Vertical(id=f"pg-{side}", classes="pg-side"):
                    yield Static("", id=f"pg-{side}-title", classes="section")
                    yield Static(
                        "Enter a context (or none) and press Enter",
                        id=f"pg-{side}-info",
                        markup=False,
                    )
                    yield DataTable(id=f"pg-{side}-table", cursor_type="row", zebra_stripes=True)
        yield Static(
            "keys on a row: l like · x dislike · 1-5 rate · s side by side (vector-only vs "
            "re-ranked) · Esc edit the context",
            id="pg-feedback",
            classes="status",
            markup=False,
        )

    def on_mount(self) -> None:
        """Columns; the right-hand side only shows side by side."""
        for side in SIDES:
            add_columns(
                self.query_one(f"#pg-{side}-table", DataTable),
                ("change", "#", "title", "score", "sources"),
            )
        self.query_one("#pg-right").display = False
        self._titles()

    def focus_main(self) -> None:
        """Focus the context box, ready to type."""
        self.query_one("#pg-context", Input).focus()

    def reload(self) -> None:
        """Nothing to load until asked; re-runs the last question when there was one."""
        if self.responses:
            self.run()

    # -- asking ---------------------------------------------------------------------------------

    @on(Input.Submitted)
    def submitted(self) -> None:
        """Enter in either box runs the request and moves the keyboard to the results."""
        self.run()
        self.query_one(f"#pg-{self.active_side}-table", DataTable).focus()

    def question(self) -> Question:
        """Return the question as typed."""
        like = self.query_one("#pg-like", Input).value.split(",")
        return Question(
            self.query_one("#pg-user", Input).value.strip(),
            self.query_one("#pg-context", Input).value.strip(),
            tuple(i.strip() for i in like if i.strip()),
            self.query_one("#pg-filters", Input).value.strip(),
        )

    def run(self) -> None:
        """Ask for recommendations on every visible side."""
        question = self.question()
        if not question.user:
            self.notify("enter a user id", severity="warning")
            return
        try:
            # Only the JSON is checked here: what the conditions may say, the API checks and
            # explains (its 400 shows in the answer's line).
            filters = msgspec.json.decode(question.filters) if question.filters else None
        except msgspec.DecodeError as e:
            self.query_one("#pg-left-info", Static).update(
                f'filters: not JSON ({e}); e.g. {{"category": "cooking"}}'
            )
            return
        if self.asked != question:
            self.responses.clear()
        self.asked = question
        self.recommend(question, filters)

    @work(exclusive=True, group="playground", exit_on_error=False)
    async def recommend(self, question: Question, filters: Any) -> None:
        """POST /recommendations once per side, concurrently."""
        sides = ["left", "right"] if self.side_by_side else ["left"]
        requests = [
            RecommendationRequest(
                user_id=question.user,
                context=question.context or None,
                like_items=list(question.like) or None,
                top_k=TOP_K,
                rerank=self._rerank(side),
                filters=filters,
            )
            for side in sides
        ]
        try:
            answers = await asyncio.gather(*(self.api.recommend(r) for r in requests))
        except ApiError as e:
            self.report(e, self.query_one("#pg-left-info", Static))
            return
        for side, answer in zip(sides, answers, strict=True):
            self.show(side, answer)

    def _rerank(self, side: str) -> bool | None:
        if side == "left" and self.side_by_side:
            return SIDE_BY_SIDE_LEFT[1]
        return SIDES[side][1]

    def _titles(self) -> None:
        left = SIDE_BY_SIDE_LEFT[0] if self.side_by_side else SIDES["left"][0]
        self.query_one("#pg-left-title", Static).update(left)
        self.query_one("#pg-right-title", Static).update(SIDES["right"][0])

    # -- showing --------------------------------------------------------------------------------

    def show(self, side: str, answer: RecommendationResponse) -> None:
        """Fill one side, marking what changed since the previous answer on that side."""
        previous = self.responses.get(side)
        before = [r.item_id for r in previous.recommendations] if previous else None
        self.responses[side] = answer
        table = self.query_one(f"#pg-{side}-table", DataTable)
        row = table.cursor_row
        table.clear()
        for rank, item in enumerate(answer.recommendations, start=1):
            table.add_row(
                *fmt.row(
                    _change(before, item.item_id, rank),
                    str(rank),
                    fmt.excerpt(item.title, 40),
                    f"{item.score:.3f}",
                    fmt.sources(item.sources),
                ),
                key=item.item_id,
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        self.query_one(f"#pg-{side}-info", Static).update(_describe(answer))

    # -- feedback -------------------------------------------------------------------------------

    @on(DescendantFocus)
    def focused(self, event: DescendantFocus) -> None:
        """Feedback keys act on the table that last had the keyboard."""
        widget_id = event.widget.id or ""
        for side in SIDES:
            if widget_id == f"pg-{side}-table":
                self.active_side = side

    def action_feedback(self, kind: str) -> None:
        """Keys l and x."""
        self.send(InteractionType(kind), None)

    def action_rate(self, stars: int) -> None:
        """Keys 1 to 5."""
        self.send(InteractionType.RATING, float(stars))

    def send(self, kind: InteractionType, rating: float | None) -> None:
        """POST /feedback on the selected row, answering the request that showed it."""
        answer = self.responses.get(self.active_side)
        item_id = selected_key(self.query_one(f"#pg-{self.active_side}-table", DataTable))
        if answer is None or item_id is None:
            self.notify("run a recommendation first, then pick a row", severity="warning")
            return
        self.send_feedback(
            FeedbackRequest(
                user_id=answer.user_id,
                item_id=item_id,
                interaction_type=kind,
                rating=rating,
                request_id=answer.request_id or None,
            )
        )

    @work(group="playground-feedback", exit_on_error=False)
    async def send_feedback(self, request: FeedbackRequest) -> None:
        """Record the event, say so, and ask again so the effect shows."""
        try:
            result = await self.api.send_feedback(request)
        except ApiError as e:
            self.report(e)
            return
        title = request.item_id
        for answer in self.responses.values():
            for item in answer.recommendations:
                if item.item_id == request.item_id:
                    title = item.title
        what = str(request.interaction_type)
        if request.rating is not None:
            what = f"rated {request.rating:g}"
        self.query_one("#pg-feedback", Static).update(
            f"{result.user_id}: {what} {title!r} (weight {fmt.signed(result.weight)}, "
            f"{result.feedback_count} events) · recommendations asked again: + new, ↑↓ moved"
        )
        self.run()

    def action_side_by_side(self) -> None:
        """Key s: vector-only next to re-ranked, or back to one list."""
        self.side_by_side = not self.side_by_side
        self.query_one("#pg-right").display = self.side_by_side
        if not self.side_by_side:
            self.active_side = "left"
        self.responses.clear()
        self._titles()
        if self.asked is not None:
            self.run()

    def action_edit_context(self) -> None:
        """Escape: back to the context box."""
        self.focus_main()


def _change(before: list[str] | None, item_id: str, rank: int) -> Text:
    if before is None:
        return Text("")
    if item_id not in before:
        return Text("+ new", style="bold green")
    moved = before.index(item_id) + 1 - rank
    if moved > 0:
        return Text(f"↑{moved}", style="green")
    if moved < 0:
        return Text(f"↓{-moved}", style="yellow")
    return Text("")


def _describe(answer: RecommendationResponse) -> Text:
    reranked = "yes" if answer.reranked else "no"
    status = f" ({answer.rerank_status})" if answer.rerank_status else ""
    timings = " · ".join(
        f"{stage} {fmt.milliseconds(ms)}" for stage, ms in answer.timings_ms.items()
    )
    request = answer.request_id[:8] if answer.request_id else "-"
    return Text.assemble(
        "strategy ",
        (answer.strategy or "-", "bold"),
        f" · re-ranked {reranked}{status} · request {request}\n{timings}",
    )
