"""The dashboard application: six pages in tabs, a connection banner, keys in the footer."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.logging import TextualHandler
from textual.reactive import reactive
from textual.widgets import Footer, Header, Static, TabbedContent

from tui.api import ApplianceApi
from tui.screens.base import Pane
from tui.screens.catalog import CatalogPane
from tui.screens.feedback import FeedbackPane
from tui.screens.overview import OverviewPane
from tui.screens.playground import PlaygroundPane
from tui.screens.settings import SettingsPane
from tui.screens.users import UsersPane

#: Tab ids in the order of their number keys.
TABS = ("overview", "catalog", "playground", "users", "feedback", "settings")


class DashboardApp(App[None]):
    """A terminal dashboard of one running appliance, reached over HTTP only.

    Args:
        api: The client of the appliance (its ``on_reachability`` is taken over).
        poll_interval: Seconds between polls of health, counts and metrics; also how often an
            unreachable appliance is tried again.
        tail_interval: Seconds between polls of the feedback tail.
        user_id: The playground's user, prefilled.

    """

    CSS_PATH = "app.tcss"
    TITLE = "appliance"
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(str(n), f"show_tab('{tab}')", show=False) for n, tab in enumerate(TABS, 1)),
        # The number keys mean something else in the playground's results and in text boxes.
        *(Binding(f"f{n}", f"show_tab('{tab}')", show=False) for n, tab in enumerate(TABS, 1)),
        Binding("q", "quit", "Quit"),
    ]

    unreachable: reactive[str | None] = reactive(None, init=False)
    """Why the appliance cannot be reached, or ``None`` while it answers."""

    def __init__(
        self,
        api: ApplianceApi,
        *,
        poll_interval: float = 2.0,
        tail_interval: float = 1.0,
        user_id: str = "demo-user",
    ) -> None:
        super().__init__()
        self.api = api
        self.poll_interval = poll_interval
        self.tail_interval = tail_interval
        self.user_id = user_id

    def compose(self) -> ComposeResult:
        """Header, banner, the six pages, footer."""
        yield Header()
        yield Static("", id="banner", markup=False)
        with TabbedContent(initial="overview", id="tabs"):
            yield OverviewPane(self.api, interval=self.poll_interval)
            yield CatalogPane(self.api)
            yield PlaygroundPane(self.api, user_id=self.user_id)
            yield UsersPane(self.api)
            yield FeedbackPane(self.api, interval=self.tail_interval)
            yield SettingsPane(self.api)
        yield Footer()

    def on_mount(self) -> None:
        """Listen to every answer for the banner; the overview's polls keep trying."""
        self.sub_title = self.api.base_url
        self.api.on_reachability = self.reachability

    async def on_unmount(self) -> None:
        """Close the connections."""
        self.api.on_reachability = None
        await self.api.aclose()

    def reachability(self, reason: str | None) -> None:
        """After every request: show the banner, or take it down and refresh when back."""
        was = self.unreachable
        self.unreachable = reason
        if reason is None and was is not None:
            self.notify(f"{self.api.base_url} answers again", markup=False)
            pane = self.active_pane()
            if pane is not None and not isinstance(pane, OverviewPane | FeedbackPane):
                pane.reload()

    def watch_unreachable(self, reason: str | None) -> None:
        """Say in the banner what is wrong and that the dashboard keeps trying."""
        banner = self.query_one("#banner", Static)
        if reason is None:
            banner.display = False
            banner.update("")
            self.sub_title = self.api.base_url
            return
        banner.update(
            f"cannot reach {self.api.base_url}: {reason} — retrying every {self.poll_interval:g} s"
        )
        banner.display = True
        self.sub_title = f"{self.api.base_url} (unreachable)"

    def active_pane(self) -> Pane | None:
        """Return the page on show."""
        pane = self.query_one(TabbedContent).active_pane
        return pane if isinstance(pane, Pane) else None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Let a page that was shown (by key or mouse) focus and load."""
        if isinstance(event.pane, Pane):
            event.pane.activate()

    def action_show_tab(self, tab: str) -> None:
        """Keys 1 to 6 (and F1 to F6)."""
        self.query_one(TabbedContent).active = tab


def make_app(
    url: str,
    admin_key: str | None = None,
    *,
    poll_interval: float = 2.0,
    tail_interval: float = 1.0,
    user_id: str = "demo-user",
    timeout: float = 10.0,
) -> DashboardApp:
    """Build the dashboard of the appliance at ``url`` (for the CLI, the tests, the scripts).

    Args:
        url: The appliance, e.g. ``http://127.0.0.1:8000``.
        admin_key: Sent as a bearer token on every request; never shown or logged.
        poll_interval: Seconds between polls (and between retries when unreachable).
        tail_interval: Seconds between polls of the feedback tail.
        user_id: The playground's user, prefilled.
        timeout: Seconds one request may take.

    Returns:
        The application, not yet running.

    """
    api = ApplianceApi(url, admin_key, timeout=timeout)
    return DashboardApp(
        api, poll_interval=poll_interval, tail_interval=tail_interval, user_id=user_id
    )


def run(url: str, admin_key: str | None = None, *, poll_interval: float = 2.0) -> None:
    """Run the dashboard in this terminal until the user quits (``appliance tui``)."""
    # Log records would be written over the screen; Textual's handler sends them to its devtools.
    logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
    make_app(url, admin_key, poll_interval=poll_interval).run()
