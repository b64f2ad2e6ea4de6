"""The dashboard driven by Textual's Pilot against a real appliance served on loopback: what each
page shows, what its keys do, and how it copes with an appliance that does not answer."""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, ProgressBar, Select, Static, Tree
from textual.widgets.tree import TreeNode

from appliance.schemas.fusion import FusionKindOut, FusionOut, ImpressionLogOut
from tests.conftest import Served, free_port
from tui.app import DashboardApp, make_app
from tui.screens.overview import OverviewPane
from tui.screens.settings import describe_fusion
from tui.screens.users import UserScreen
from tui.testing import wait_until
from tui.widgets.dialogs import ConfirmScreen, ItemScreen
from tui.widgets.importer import ImportScreen

pytestmark = pytest.mark.anyio

SIZE = (140, 42)
ADMIN_KEY = "s3cret-admin-key"


def dashboard(url: str) -> DashboardApp:
    # Short intervals keep the tests quick; the app does the same at any interval. (Much
    # shorter ones keep the in-process server so busy that the Pilot's waits for idle time out.)
    return make_app(url, ADMIN_KEY, poll_interval=0.5, tail_interval=0.5)


def text(widget: Widget) -> str:
    return str(widget.render())


def svg_text(app: DashboardApp) -> str:
    """The screenshot's SVG with its escapes undone, so words can be searched."""
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


def keys(table: DataTable[Any]) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


def column(table: DataTable[Any], name: str) -> list[str]:
    return [str(cell) for cell in table.get_column(name)]


def labels(node: TreeNode[Any]) -> Iterator[str]:
    yield str(node.label)
    for child in node.children:
        yield from labels(child)


async def test_overview_shows_health_counts_traffic_and_errors(appliance: Served) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        items = app.query_one("#count-items", Static)
        await wait_until(pilot, lambda: text(items) == "36", what="36 items")
        components = app.query_one("#components", DataTable)
        assert str(components.get_row("model")[1]) == "all-MiniLM-L6-v2"
        assert str(components.get_row("reranker")[1]) == "none"
        assert str(components.get_row("status")[1]) == "ready"

        async with httpx.AsyncClient(base_url=appliance.url, timeout=30) as client:
            for _ in range(4):
                answer = await client.post(
                    "/recommendations", json={"user_id": "visitor", "context": "time travel"}
                )
                assert answer.status_code == 200
            missing = {"user_id": "visitor", "item_id": "no-such-item", "interaction_type": "like"}
            assert (await client.post("/feedback", json=missing)).status_code == 404

        overview = app.query_one(OverviewPane)
        routes = app.query_one("#routes", DataTable)
        await wait_until(
            pilot,
            lambda: "POST /recommendations" in keys(routes) and max(overview.rps) > 0,
            what="the recommendations in the traffic",
        )
        assert "requests/s:" in text(app.query_one("#rps-label"))
        assert "p95" in text(app.query_one("#latency-label"))
        errors = app.query_one("#errors", DataTable)
        await wait_until(pilot, lambda: errors.row_count >= 1, what="the 404 in recent errors")
        assert column(errors, "status")[0] == "404"
        assert column(errors, "request")[0] == "POST /feedback"
        assert "no-such-item" in column(errors, "detail")[0]

        screenshot = svg_text(app)
        assert "1 Overview" in screenshot
        assert "all-MiniLM-L6-v2" in screenshot
        assert ADMIN_KEY not in screenshot


async def test_catalog_search_open_and_delete(appliance: Served) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#items", DataTable)
        await wait_until(pilot, lambda: table.row_count == 36, what="the catalog's first page")
        assert keys(table)[:2] == ["ck-1", "ck-2"]  # id order
        assert "The Clockmaker's Return" in column(table, "title")

        await pilot.press("slash")
        search = app.query_one("#catalog-search", Input)
        await wait_until(pilot, lambda: app.focused is search, what="the search box focused")
        search.value = "clockmaker"
        await pilot.press("enter")
        await wait_until(pilot, lambda: keys(table) == ["tt-1"], what="the search result")
        assert app.focused is table
        assert "matching 'clockmaker'" in text(app.query_one("#catalog-status"))

        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ItemScreen), what="the item")
        assert text(app.screen.query_one("#item-title")) == "The Clockmaker's Return"
        assert "watchmaker" in text(app.screen.query_one("#item-text"))
        assert '"category": "time travel"' in text(app.screen.query_one("#item-metadata"))
        # More like it, from GET /items/tt-1/similar: the other time-travel items first.
        similar = text(app.screen.query_one("#item-similar")).splitlines()
        assert similar[0] == "More like this"
        assert len(similar) == 11
        assert " tt-" in similar[1]
        assert not any(" tt-1 " in line for line in similar)
        await pilot.press("escape")

        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        assert "tt-1" in text(app.screen.query_one("#question"))
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 0, what="the item gone from the list")
        async with httpx.AsyncClient(base_url=appliance.url) as client:
            assert (await client.get("/items/tt-1")).status_code == 404
            assert (await client.get("/stats")).json()["items"] == 35


async def test_catalog_import_shows_progress_and_totals(appliance: Served, tmp_path: Path) -> None:
    catalog = tmp_path / "more.jsonl"
    lines = [
        {"item_id": f"new-{n}", "title": f"New arrival {n}", "text": "A rocket to the moon."}
        for n in range(3)
    ]
    catalog.write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + '{"item_id": "untitled"}\n'
    )
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#items", DataTable)
        await wait_until(pilot, lambda: table.row_count == 36, what="the catalog")
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, ImportScreen), what="the dialog")
        dialog = app.screen
        path = dialog.query_one("#import-path", Input)
        await wait_until(pilot, lambda: app.focused is path, what="the path box focused")
        path.value = str(catalog)
        await pilot.press("enter")
        bar = dialog.query_one("#import-progress", ProgressBar)
        result = dialog.query_one("#import-result", Static)
        await wait_until(pilot, lambda: text(result).startswith("done"), what="the import")
        assert bar.total == 4
        assert bar.progress == 4
        assert bar.percentage == 1
        assert text(result).splitlines()[:2] == [
            "done: 3 created, 0 updated, 0 unchanged (3 embedded), 1 rejected",
            "  line 4: missing title (key 'title')",
        ]
        await pilot.press("escape")
        await wait_until(pilot, lambda: table.row_count == 39, what="the imported items")
        assert {"new-0", "new-1", "new-2"} <= set(keys(table))


async def open_playground(app: DashboardApp, pilot: Pilot[None]) -> Input:
    """Switch to the playground and return its context box, which has the keyboard."""
    await pilot.press("3")
    context = app.query_one("#pg-context", Input)
    await wait_until(pilot, lambda: app.focused is context, what="the context box focused")
    return context


async def test_playground_feedback_changes_the_next_recommendations(appliance: Served) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        context = await open_playground(app, pilot)
        assert app.query_one("#pg-user", Input).value == "demo-user"
        context.value = "time travel"
        await pilot.press("enter")
        table = app.query_one("#pg-left-table", DataTable)
        info = app.query_one("#pg-left-info", Static)
        await wait_until(pilot, lambda: table.row_count == 10, what="recommendations")
        assert app.focused is table
        first = keys(table)
        assert first[0].startswith("tt-")
        assert "strategy context ·" in text(info)
        assert "re-ranked no (not-configured)" in text(info)
        assert "total" in text(info)
        assert all(s.startswith("vector") for s in column(table, "sources")[:3])

        liked = first[0]
        await pilot.press("l")
        await wait_until(pilot, lambda: liked not in keys(table), what="the liked item left out")
        assert "strategy context+preference" in text(info)
        assert "+ new" in column(table, "change")
        assert "like 'The " in text(app.query_one("#pg-feedback"))
        disliked = keys(table)[0]
        await pilot.press("x")
        await wait_until(pilot, lambda: disliked not in keys(table), what="the disliked item")

        await pilot.press("s")
        right = app.query_one("#pg-right-table", DataTable)
        await wait_until(pilot, lambda: right.row_count == 10, what="the re-ranked side")
        assert "vector only" in text(app.query_one("#pg-left-title"))
        await wait_until(pilot, lambda: "(off)" in text(info), what="the vector-only side")
        assert "(not-configured)" in text(app.query_one("#pg-right-info"))
        assert "re-ranked (rerank: true)" in svg_text(app)

        # The number keys rate in the playground's results; F5 switches pages from anywhere.
        await pilot.press("f5")
        await feedback_is_visible(app, pilot, liked)


async def test_playground_recommends_what_goes_with_items(appliance: Served) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        await open_playground(app, pilot)
        like = app.query_one("#pg-like", Input)
        table = app.query_one("#pg-left-table", DataTable)
        info = app.query_one("#pg-left-info", Static)

        # Like one time-travel item, no words: the others come first, found through it.
        like.value = "tt-1"
        await pilot.press("enter")
        await wait_until(pilot, lambda: table.row_count == 10, what="recommendations")
        assert "tt-1" not in keys(table)
        assert keys(table)[0].startswith("tt-")
        assert "named" in column(table, "sources")[0]

        # An item the catalog lacks is named in the answer's error.
        like.value = "tt-1, no-such-item"
        like.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "no-such-item" in text(info), what="the error")
        assert "'no-such-item' is not in the catalog" in text(info)


async def test_playground_filters_by_metadata(appliance: Served) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        context = await open_playground(app, pilot)
        filters = app.query_one("#pg-filters", Input)
        table = app.query_one("#pg-left-table", DataTable)
        info = app.query_one("#pg-left-info", Static)

        # Time travel among the cooking items only: cooking items, however far from the words.
        context.value = "time travel"
        filters.value = '{"category": "cooking"}'
        filters.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: table.row_count > 0, what="recommendations")
        assert keys(table)
        assert all(item_id.startswith("ck-") for item_id in keys(table))
        filters.value = '{"category": "cooking", "year": {"gte": 2018}}'
        filters.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(keys(table)) == 3, what="the newer cooking items")
        assert sorted(keys(table)) == ["ck-2", "ck-5", "ck-6"]

        # Text that is not JSON is refused before asking; conditions the API refuses, by it.
        filters.value = '{"category": cooking}'
        filters.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not JSON" in text(info), what="the JSON error")
        filters.value = '["cooking"]'
        filters.focus()
        await pilot.press("enter")
        # The answer's line says which value is wrong, not only that validation failed.
        await wait_until(pilot, lambda: "filters: Expected" in text(info), what="the API's 400")
        assert "filters: Expected `object | null`, got `array`" in text(info)


async def feedback_is_visible(app: DashboardApp, pilot: Pilot[None], liked: str) -> None:
    """The like and the dislike in the tail, the user's list and their history."""
    tail = app.query_one("#tail", DataTable)
    await wait_until(pilot, lambda: tail.row_count == 2, what="the feedback tail")
    assert column(tail, "user") == ["demo-user", "demo-user"]
    assert column(tail, "interaction") == ["like", "dislike"]
    assert column(tail, "weight") == ["+1.00", "-1.00"]
    assert all(column(tail, "request"))

    await pilot.press("4")
    users = app.query_one("#users-table", DataTable)
    await wait_until(pilot, lambda: keys(users) == ["demo-user"], what="the user")
    assert column(users, "feedback_count") == ["2"]
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, UserScreen), what="the user dialog")
    history = app.screen.query_one("#user-history", DataTable)
    recommended = app.screen.query_one("#user-recs", DataTable)
    await wait_until(
        pilot,
        lambda: history.row_count == 2 and recommended.row_count == 10,
        what="the user's history and recommendations",
    )
    assert column(history, "interaction") == ["dislike", "like"]  # newest first
    assert "strategy: preference" in text(app.screen.query_one("#user-strategy"))
    assert liked not in keys(recommended)
    await pilot.press("escape")


async def test_delete_a_user(appliance: Served) -> None:
    async with httpx.AsyncClient(base_url=appliance.url) as client:
        for user in ("alice", "bob"):
            event = {"user_id": user, "item_id": "sp-1", "interaction_type": "like"}
            assert (await client.post("/feedback", json=event)).status_code == 200
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        users = app.query_one("#users-table", DataTable)
        await wait_until(pilot, lambda: keys(users) == ["alice", "bob"], what="two users")
        await pilot.press("slash", *"bo", "enter")
        await wait_until(pilot, lambda: keys(users) == ["bob"], what="the search")
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: users.row_count == 0, what="bob deleted")
        async with httpx.AsyncClient(base_url=appliance.url) as client:
            assert (await client.get("/users/bob")).status_code == 404
            assert (await client.get("/users/alice")).status_code == 200


async def test_settings_show_the_configuration_and_switch_the_reranker(
    appliance: Served,
) -> None:
    app = dashboard(appliance.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        tree = app.query_one("#config-tree", Tree)
        await wait_until(pilot, lambda: "kind = 'none'" in set(labels(tree.root)), what="config")
        shown = set(labels(tree.root))
        assert {"server", "embedder", "index", "reranker", "recommend", "feedback"} <= shown
        assert "model = 'all-MiniLM-L6-v2'" in shown
        select = app.query_one("#reranker", Select)
        assert not select.disabled
        assert select.value == "none"
        # The learned fusion, as GET /admin/fusion has it: nothing learned yet on a new appliance.
        fusion = app.query_one("#fusion-status", Static)
        await wait_until(pilot, lambda: "no-context" in text(fusion), what="the fusion")
        async with httpx.AsyncClient(base_url=appliance.url) as client:
            kinds = (await client.get("/admin/fusion")).json()["kinds"]
        assert text(fusion).splitlines() == [
            line
            for kind, state in kinds.items()
            for line in (f"{kind}: rrf", f"  untrained: {state['detail']}")
        ]

        select.value = "openai"
        status = app.query_one("#reranker-status", Static)
        await wait_until(pilot, lambda: "in use: openai" in text(status), what="the switch")
        async with httpx.AsyncClient(base_url=appliance.url) as client:
            health = (await client.get("/health")).json()
        assert health["components"]["reranker"] == "openai"


def test_learned_weights_are_listed_heaviest_first() -> None:
    log = ImpressionLogOut(
        stored=0,
        pending=0,
        logged=0,
        written=0,
        candidate_rows=0,
        batches=0,
        largest_batch=0,
        write_ms_per_batch=0.0,
    )
    trained = FusionKindOut(
        default="learned",
        status="trained",
        detail="learned from 414 impressions",
        weights={"vector": 0.25, "collaborative": 2.68, "popularity": 1.08},
    )
    waiting = FusionKindOut(default="rrf", status="too-little-data", detail="34 of the 100")
    fusion = FusionOut(
        kinds={"named": trained, "context": waiting},
        min_labelled_impressions=100,
        sources=["vector", "collaborative", "popularity"],
        impressions=log,
    )

    assert describe_fusion(fusion).splitlines() == [
        "named: learned (collaborative 2.68, popularity 1.08, vector 0.25)",
        "  trained: learned from 414 impressions",
        "context: rrf",
        "  too-little-data: 34 of the 100",
    ]


async def test_an_unreachable_appliance_shows_a_banner_until_it_answers(
    serve: Callable[..., Served],
) -> None:
    port = free_port()
    app = dashboard(f"http://127.0.0.1:{port}")
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner", Static)
        await wait_until(pilot, lambda: banner.display, what="the banner")
        assert text(banner) == (
            f"cannot reach http://127.0.0.1:{port}: connection refused — retrying every 0.5 s"
        )
        # Every page copes.
        for key in ("f2", "f3", "f4", "f5", "f6", "f1"):
            await pilot.press(key)
            await pilot.pause(0.1)
        assert app.is_running
        assert banner.display

        await asyncio.to_thread(serve, port)
        await wait_until(pilot, lambda: not banner.display, what="the banner gone")
        items = app.query_one("#count-items", Static)
        await wait_until(pilot, lambda: text(items) == "0", what="the empty appliance's counts")
        assert app.sub_title == f"http://127.0.0.1:{port}"
