"""Overview: component health, counts, live traffic and the latest errors."""

from __future__ import annotations

import time
from collections import deque
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Sparkline, Static
from textual.worker import Worker

from appliance.schemas.admin import RecentErrors
from appliance.schemas.system import Health, Stats
from tui import format as fmt
from tui.api import ApiError, ApplianceApi, UnreachableError
from tui.metrics import Traffic, TrafficMeter, parse
from tui.screens.base import Pane, add_columns

#: The counters shown as cards: (Stats attribute, label).
COUNTS = (
    ("items", "items"),
    ("users", "users"),
    ("feedback_events", "feedback"),
    ("index_points", "index points"),
)
HISTORY = 60
"""Polls kept in the sparklines."""
ERRORS_SHOWN = 50


class OverviewPane(Pane):
    """Polls /health, /stats, /metrics and /admin/errors on an interval, visible or not.

    It is also the dashboard's heartbeat: its polls tell the app whether the appliance can be
    reached.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh", "Refresh")]

    def __init__(self, api: ApplianceApi, *, interval: float) -> None:
        super().__init__("1 Overview", api, pane_id="overview")
        self.interval = interval
        self.meter = TrafficMeter()
        # Full of zeros from the start, so that the charts scroll in from the right.
        self.rps: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.p95: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.health: Health | None = None
        self.stats: Stats | None = None
        self.traffic: Traffic | None = None
        self._poll: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        """Components and counts on top, traffic in the middle, routes and errors below."""
        with Horizontal(id="overview-top"):
            yield DataTable(id="components", cursor_type="none", show_cursor=False)
            with Vertical(id="counts-box"):
                with Horizontal(id="counts"):
                    for key, _ in COUNTS:
                        yield Static("-", id=f"count-{key}", classes="card")
                yield Static("", id="stats-extra", markup=False)
        with Horizontal(id="charts"):
            with Vertical(classes="chart"):
                yield Label(
                    "requests/s: waiting for two polls of /metrics", id="rps-label", markup=False
                )
                yield Sparkline([], id="rps")
            with Vertical(classes="chart"):
                yield Label(
                    "latency: waiting for two polls of /metrics", id="latency-label", markup=False
                )
                yield Sparkline([], id="latency")
        with Horizontal(id="overview-bottom"):
            with Vertical(classes="titled"):
                yield Label("Routes (since start-up)", classes="section")
                yield DataTable(id="routes", cursor_type="row", zebra_stripes=True)
            with Vertical(classes="titled"):
                yield Label("Recent errors (newest first)", classes="section")
                yield DataTable(id="errors", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Lay out the tables, then poll now and on every interval."""
        components = self.query_one("#components", DataTable)
        add_columns(components, ("component", "state"))
        components.border_title = "Health"
        for key, label in COUNTS:
            self.query_one(f"#count-{key}", Static).border_title = label
        add_columns(
            self.query_one("#routes", DataTable),
            ("method", "route", "requests", "req/s", "p95", "errors"),
        )
        add_columns(self.query_one("#errors", DataTable), ("time", "status", "request", "detail"))
        self.set_interval(self.interval, self.reload)
        self.reload()

    def focus_main(self) -> None:
        """Focus the errors table, to scroll through them."""
        self.query_one("#errors", DataTable).focus()

    def reload(self) -> None:
        """Poll, unless the previous poll is still waiting for its answers."""
        if self._poll is None or self._poll.is_finished:
            self._poll = self.poll()

    @work(group="overview", exit_on_error=False)
    async def poll(self) -> None:
        """One round of requests; stops at the first one that finds the server unreachable."""
        try:
            self.show_health(await self.api.health())
        except ApiError as e:
            self.show_down(e)
            return
        try:
            self.show_stats(await self.api.stats())
            await self.poll_metrics()
            self.show_errors(await self.api.recent_errors(ERRORS_SHOWN))
        except ApiError as e:
            self.report(e)

    async def poll_metrics(self) -> None:
        """Rates and percentiles from the difference to the previous /metrics poll."""
        label = self.query_one("#rps-label", Label)
        try:
            text = await self.api.metrics()
        except UnreachableError:
            raise
        except ApiError as e:
            label.update(f"requests/s: /metrics is not available ({e.status_code}: {e.detail})")
            return
        try:
            samples = parse(text)
        except ValueError as e:
            label.update(f"requests/s: cannot read /metrics: {e}")
            return
        traffic = self.meter.update(samples, time.monotonic())
        if traffic is not None:
            self.show_traffic(traffic)

    # -- rendering ------------------------------------------------------------------------------

    def show_health(self, health: Health) -> None:
        """One row per component, plus the overall status."""
        self.health = health
        table = self.query_one("#components", DataTable)
        table.clear()
        table.add_row("status", Text(health.status, style="bold green"), key="status")
        for name, state in health.components.items():
            table.add_row(*fmt.row(name, state), key=name)

    def show_down(self, error: ApiError) -> None:
        """Mark every component unknown: the appliance did not answer /health."""
        self.health = None
        self.meter.reset()
        table = self.query_one("#components", DataTable)
        table.clear()
        reason = f"unreachable: {error.detail}"
        if error.status_code is not None:
            reason = f"{error.status_code}: {error.detail}"
        table.add_row("status", Text(fmt.excerpt(reason, 60), style="bold red"), key="status")
        if not isinstance(error, UnreachableError):
            self.report(error)

    def show_stats(self, stats: Stats) -> None:
        """Show the cards, the encoder's batching and the re-rank outcomes."""
        self.stats = stats
        for key, _ in COUNTS:
            self.query_one(f"#count-{key}", Static).update(f"{getattr(stats, key):,}")
        encoder = stats.encoder
        batching = (
            f"encoder: {encoder.texts:,} texts in {encoder.batches:,} batches "
            f"(largest {encoder.largest_batch})"
        )
        lines = [batching]
        if stats.rerank:
            outcomes = " · ".join(f"{name} {n:,}" for name, n in sorted(stats.rerank.items()))
            lines.append(f"re-rank stage: {outcomes}")
        else:
            lines.append("re-rank stage: no requests yet")
        self.query_one("#stats-extra", Static).update("\n".join(lines))

    def show_traffic(self, traffic: Traffic) -> None:
        """Sparklines of requests/s and p95 latency; the routes table."""
        self.traffic = traffic
        self.rps.append(traffic.requests_per_second)
        self.p95.append(traffic.p95_ms or 0.0)
        self.query_one("#rps", Sparkline).data = list(self.rps)
        self.query_one("#latency", Sparkline).data = list(self.p95)
        self.query_one("#rps-label", Label).update(
            f"requests/s: {traffic.requests_per_second:.2f} "
            f"(API traffic, without the dashboard's own polls)"
        )
        self.query_one("#latency-label", Label).update(
            f"latency: p50 {fmt.milliseconds(traffic.p50_ms)} · "
            f"p95 {fmt.milliseconds(traffic.p95_ms)} (sparkline: p95)"
        )
        table = self.query_one("#routes", DataTable)
        table.clear()
        for route in traffic.routes:
            table.add_row(
                *fmt.row(route.method, route.path),
                f"{route.total:,.0f}",
                f"{route.per_second:.2f}",
                fmt.milliseconds(route.p95_ms),
                f"{route.errors:,.0f}" if route.errors else "",
                key=f"{route.method} {route.path}",
            )

    def show_errors(self, errors: RecentErrors) -> None:
        """Show the latest error answers, newest first."""
        table = self.query_one("#errors", DataTable)
        table.clear()
        for index, error in enumerate(errors.errors):
            style = "red" if error.status_code >= 500 else "yellow"  # noqa: PLR2004
            table.add_row(
                *fmt.row(
                    fmt.when(error.time),
                    Text(str(error.status_code), style=style),
                    f"{error.method} {error.path}",
                    fmt.excerpt(error.detail, 120),
                ),
                key=str(index),
            )
