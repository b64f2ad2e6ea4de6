"""Screenshots of every page of the dashboard, taken headlessly from a running appliance.

Drives the real dashboard with Textual's Pilot at 140x42 through the six pages (the catalog with
its first item opened, the playground with a recommendation for a context and one like, the
users page with a user opened), saves each page as SVG and converts it to PNG with cairosvg into
docs/screenshots/<page>.png.

    .venv/bin/python scripts/screenshots.py --url http://127.0.0.1:8000     # e.g. `just demo`

It sends real requests: a few recommendations for the overview's traffic chart, and one like
from the playground's user, which the appliance stores like any other feedback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import cairosvg
import httpx
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, Tree

from tui.app import DashboardApp, make_app
from tui.screens.overview import OverviewPane
from tui.screens.users import UserScreen
from tui.testing import wait_until
from tui.widgets.dialogs import ItemScreen

REPO = Path(__file__).resolve().parents[1]
SIZE = (140, 42)
TRAFFIC_CONTEXTS = ("space adventure", "a quiet romance", "time travel", "heist comedy")


async def traffic(url: str, seconds: float) -> None:
    """Send a few recommendation requests a second, so the overview's charts show something."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        n = 0
        while time.monotonic() < deadline:
            context = TRAFFIC_CONTEXTS[n % len(TRAFFIC_CONTEXTS)]
            await client.post(
                "/recommendations", json={"user_id": f"visitor-{n % 7}", "context": context}
            )
            n += 1
            await asyncio.sleep(0.15)


Step = Callable[[DashboardApp, Pilot[None], argparse.Namespace], Awaitable[None]]


async def overview(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Wait for the counts, then send some traffic for the charts."""
    pane = app.query_one(OverviewPane)
    await wait_until(pilot, lambda: pane.stats is not None, seconds=30, what="/stats")
    await traffic(args.url, args.traffic_seconds)
    await wait_until(pilot, lambda: pane.traffic is not None, seconds=10, what="metrics")
    await pilot.pause(1.2)


async def catalog(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Open the first item of the first page, with the items most like it."""
    del args
    await pilot.press("f2")
    items = app.query_one("#items", DataTable)
    await wait_until(pilot, lambda: items.row_count > 0, what="the catalog")
    items.focus()
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, ItemScreen), what="the item")
    await pilot.pause(0.3)


async def playground(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Close the item, ask for the context, then like the second row."""
    await pilot.press("escape", "f3")
    app.query_one("#pg-context", Input).value = args.context
    await pilot.press("enter")
    results = app.query_one("#pg-left-table", DataTable)
    await wait_until(pilot, lambda: results.row_count > 0, what="recommendations")
    await pilot.press("down", "l")
    feedback = app.query_one("#pg-feedback", Static)
    await wait_until(pilot, lambda: "like" in str(feedback.render()), what="the like")
    await pilot.pause(1.0)


async def users(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Open the playground's user."""
    await pilot.press("f4")
    search = app.query_one("#users-search", Input)
    search.value = args.user
    search.focus()
    await pilot.press("enter")
    table = app.query_one("#users-table", DataTable)
    await wait_until(
        pilot, lambda: table.row_count > 0 and str(table.get_row_at(0)[0]) == args.user, what="user"
    )
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, UserScreen), what="the user")
    history = app.screen.query_one("#user-history", DataTable)
    await wait_until(pilot, lambda: history.row_count > 0, what="the user's history")
    await pilot.pause(0.5)


async def feedback(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Close the user, show the tail."""
    del args
    await pilot.press("escape", "f5")
    tail = app.query_one("#tail", DataTable)
    await wait_until(pilot, lambda: tail.row_count > 0, what="the feedback tail")


async def settings(app: DashboardApp, pilot: Pilot[None], args: argparse.Namespace) -> None:
    """Show the configuration tree."""
    del args
    await pilot.press("f6")
    tree = app.query_one("#config-tree", Tree)
    await wait_until(pilot, lambda: len(tree.root.children) > 0, what="the configuration")
    await pilot.pause(0.3)


STEPS: tuple[tuple[str, Step], ...] = (
    ("overview", overview),
    ("catalog", catalog),
    ("playground", playground),
    ("users", users),
    ("feedback", feedback),
    ("settings", settings),
)


async def shoot(args: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """Walk through the pages, saving an SVG of each."""
    app = make_app(
        args.url, args.admin_key, poll_interval=1.0, tail_interval=1.0, user_id=args.user
    )
    shots: dict[str, Path] = {}
    async with app.run_test(size=SIZE) as pilot:
        for page, step in STEPS:
            try:
                await step(app, pilot, args)
            except TimeoutError as e:
                reason = f" ({app.unreachable})" if app.unreachable else ""
                raise SystemExit(f"{page}: {e}{reason}") from e
            path = folder / f"{page}.svg"
            path.write_text(app.export_screenshot(title=f"appliance tui: {page}"), "utf-8")
            shots[page] = path
            print(f"{page}: captured")
    return shots


def main() -> None:
    """Parse the arguments, take the screenshots, convert them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running appliance")
    parser.add_argument("--admin-key", default=None, help="sent as a bearer token")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--context", default="space adventure", help="the playground's context")
    parser.add_argument("--user", default="demo-user", help="the playground's user")
    parser.add_argument(
        "--traffic-seconds", type=float, default=6.0, help="recommendation requests sent first"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="appliance-screens-") as scratch:
        shots = asyncio.run(shoot(args, Path(scratch)))
        for page, _ in STEPS:
            png = args.out / f"{page}.png"
            cairosvg.svg2png(url=str(shots[page]), write_to=str(png))
            print(f"{png.relative_to(REPO) if png.is_relative_to(REPO) else png}")
    sys.exit(0)


if __name__ == "__main__":
    main()
