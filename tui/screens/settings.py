"""Settings: the effective configuration, switching the re-ranker, and the learned fusion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select, Static, Tree
from textual.widgets.tree import TreeNode

from appliance.schemas.admin import EffectiveConfig
from appliance.schemas.fusion import FusionOut
from tui.api import ApiError, ApplianceApi
from tui.screens.base import Pane


class SettingsPane(Pane):
    """GET /admin/config as a tree; PUT /admin/reranker from a Select; GET /admin/fusion."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh", "Refresh")]

    def __init__(self, api: ApplianceApi) -> None:
        super().__init__("6 Settings", api, pane_id="settings")
        self.config: EffectiveConfig | None = None
        self.reranker_kind: str | None = None

    def compose(self) -> ComposeResult:
        """Lay out the tree of settings beside the re-ranker switch."""
        with Horizontal(id="settings-body"):
            yield Tree("settings", id="config-tree")
            with Vertical(id="reranker-box"):
                yield Label("Re-ranker", classes="section")
                yield Select[str]([], prompt="re-ranker", id="reranker", allow_blank=True)
                yield Static("", id="reranker-status", markup=False)
                yield Label("Learned fusion", classes="section")
                yield Static("", id="fusion-status", markup=False)

    def on_mount(self) -> None:
        """Section titles."""
        self.query_one("#config-tree", Tree).border_title = "Effective configuration"

    def focus_main(self) -> None:
        """Focus the tree."""
        self.query_one("#config-tree", Tree).focus()

    def reload(self) -> None:
        """GET /admin/config again."""
        self.load()

    @work(exclusive=True, group="settings", exit_on_error=False)
    async def load(self) -> None:
        """Fetch and show the configuration and the fusion."""
        status = self.query_one("#reranker-status", Static)
        try:
            config = await self.api.config()
        except ApiError as e:
            self.report(e, status, "cannot read the configuration")
            return
        self.show(config)
        fusion = self.query_one("#fusion-status", Static)
        try:
            fusion.update(describe_fusion(await self.api.fusion()))
        except ApiError as e:
            self.report(e, fusion, "cannot read the fusion")

    def show(self, config: EffectiveConfig) -> None:
        """Rebuild the tree and the re-ranker switch."""
        self.config = config
        tree = self.query_one("#config-tree", Tree)
        tree.clear()
        _add(tree.root, config.settings)
        tree.root.expand_all()
        reranker = config.settings.get("reranker")
        configured = reranker.get("kind") if isinstance(reranker, Mapping) else None
        # reranker_kind is what runs now; settings.reranker.kind what was configured at start.
        kind = config.reranker_kind or configured
        in_use = str(kind) if kind is not None else None
        self.reranker_kind = in_use
        select: Select[str] = self.query_one("#reranker", Select)
        select.set_options((name, name) for name in config.reranker_kinds)
        if in_use is not None and in_use in config.reranker_kinds:
            select.value = in_use
        select.disabled = not config.reranker_switchable
        status = self.query_one("#reranker-status", Static)
        if config.reranker_switchable:
            status.update(
                f"in use: {self.reranker_kind or '-'}; pick another to switch while the "
                "appliance runs (its other settings stay as configured)"
            )
        else:
            status.update(
                f"in use: {self.reranker_kind or '-'}; this appliance cannot switch its "
                "re-ranker while it runs (change reranker.kind and restart)"
            )

    @on(Select.Changed, "#reranker")
    def reranker_picked(self, event: Select.Changed) -> None:
        """Switch to the kind picked, when it differs from the one in use."""
        value = event.value
        if not isinstance(value, str) or value == self.reranker_kind:
            return
        if self.config is None or not self.config.reranker_switchable:
            return
        self.switch(value)

    @work(exclusive=True, group="settings-switch", exit_on_error=False)
    async def switch(self, kind: str) -> None:
        """PUT /admin/reranker, then show the configuration as it now is."""
        status = self.query_one("#reranker-status", Static)
        status.update(f"switching to {kind} ...")
        try:
            state = await self.api.set_reranker(kind)
        except ApiError as e:
            self.report(e, status, f"could not switch to {kind}")
            if self.reranker_kind is not None:
                self.query_one("#reranker", Select).value = self.reranker_kind
            return
        self.reranker_kind = state.kind
        self.notify(f"re-ranker switched to {state.kind}", markup=False)
        self.load()


def describe_fusion(fusion: FusionOut) -> str:
    """Per kind of request: the fusion it gets, the weights in use and why, one kind a block."""
    blocks = []
    for kind, state in fusion.kinds.items():
        head = f"{kind}: {state.default}"
        if state.weights:
            weights = sorted(state.weights.items(), key=lambda pair: -pair[1])
            head += " (" + ", ".join(f"{source} {weight:.2f}" for source, weight in weights) + ")"
        blocks.append(f"{head}\n  {state.status}: {state.detail}")
    return "\n".join(blocks)


def _add(node: TreeNode[None], value: Mapping[str, Any]) -> None:
    for key, child in value.items():
        if isinstance(child, Mapping) and child:
            _add(node.add(Text(key, style="bold")), child)
        else:
            node.add_leaf(Text(f"{key} = {_show(child)}"))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
