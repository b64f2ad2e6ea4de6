"""The ``appliance`` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from appliance.errors import ApplianceError
from appliance.settings import Settings, describe, load_settings, redact

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

F = TypeVar("F", bound=Callable[..., Any])


def _server_options(command: F) -> F:
    for option in reversed(
        [
            click.option("--host", help="Interface to bind (default from settings: 127.0.0.1)."),
            click.option("--port", type=int, help="TCP port (default from settings: 8000)."),
            _data_dir_option,
        ]
    ):
        command = option(command)
    return command


_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Data directory (default: ./data)."
)
_url_option = click.option(
    "--url", help="Appliance to talk to (default: the server holding the data directory, if any)."
)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    tree: dict[str, Any] = {}
    if overrides.get("data_dir") is not None:
        tree["data_dir"] = overrides["data_dir"]
    server = {k: overrides[k] for k in ("host", "port") if overrides.get(k) is not None}
    if server:
        tree["server"] = server
    return load_settings(ctx.obj.get("config"), overrides=tree)


@dataclass(frozen=True, slots=True)
class _ProgressBar:
    """An evaluation's progress shown on a rich progress bar."""

    bar: Progress
    job: TaskID

    def total(self, queries: int) -> None:
        self.bar.update(self.job, total=queries)

    def advance(self, queries: int) -> None:
        self.bar.advance(self.job, queries)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ApplianceError as e:
        click.secho(f"error: {e.message}", fg="red", err=True)
        sys.exit(2)


@click.group()
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file (also APPLIANCE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Run and administer a self-hosted recommendation appliance."""
    ctx.obj = {"config": config}
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(settings: Settings, seed: Path | None) -> None:
    import uvicorn  # noqa: PLC0415 - only serving needs it

    from appliance.allocator import cap_malloc_arenas  # noqa: PLC0415
    from appliance.app import create_app  # noqa: PLC0415 - keeps --help fast
    from appliance.backends.registry import preflight  # noqa: PLC0415

    preflight(settings)
    # Before the threads that allocate start.
    cap_malloc_arenas(settings.server.malloc_arenas)
    url = f"http://{settings.server.host}:{settings.server.port}"
    app = create_app(settings, advertise_url=url, seed_catalog=seed, settle_heap=True)
    click.echo(f"loading models and data from {settings.data_dir}; serving at {url} when ready")
    # One process: the embedded index and database belong to it.
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="info",
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=30,
    )


@main.command()
@_server_options
@click.pass_context
def serve(ctx: click.Context, /, **options: Any) -> None:
    """Run the HTTP API."""
    with _errors():
        _serve(_settings(ctx, **options), None)


@main.command()
@_server_options
@click.pass_context
def demo(ctx: click.Context, /, **options: Any) -> None:
    """Load the demo catalog (MovieLens movies; re-runs skip unchanged items) and serve."""
    from appliance.demo import MOVIELENS_CATALOG  # noqa: PLC0415

    with _errors():
        _serve(_settings(ctx, **options), MOVIELENS_CATALOG)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "tsv"]), help="Default: by suffix."
)
@click.option(
    "--id-column", default="item_id", show_default=True, help="Field holding the item id."
)
@click.option("--title-column", default="title", show_default=True, help="Field holding the title.")
@click.option("--text-column", multiple=True, help="Field(s) joined into the text (default: text).")
@click.option(
    "--metadata-column",
    multiple=True,
    help="Field(s) kept as filterable metadata (default: JSONL 'metadata', else all other fields).",
)
@click.option("--list-separator", help="Split metadata strings on this into lists (e.g. '|').")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=256, show_default=True)
@_data_dir_option
@_url_option
@click.pass_context
def ingest(
    ctx: click.Context,
    file: Path,
    fmt: str | None,
    id_column: str,
    title_column: str,
    text_column: tuple[str, ...],
    metadata_column: tuple[str, ...],
    list_separator: str | None,
    batch_size: int,
    data_dir: Path | None,
    url: str | None,
) -> None:
    """Add or update catalog items from a JSONL or CSV FILE; unchanged items are skipped."""
    from rich.progress import Progress  # noqa: PLC0415

    from appliance.admin import admin_target  # noqa: PLC0415
    from appliance.ingest_files import (  # noqa: PLC0415
        ColumnMapping,
        Rejected,
        batches,
        count_records,
        read_items,
    )

    mapping = ColumnMapping(
        item_id=id_column,
        title=title_column,
        text=text_column or ("text",),
        metadata=metadata_column or None,
        list_separator=list_separator,
    )
    totals = {"created": 0, "updated": 0, "unchanged": 0, "embedded": 0}
    rejected: list[Rejected] = []
    with _errors(), admin_target(_settings(ctx, data_dir=data_dir), url) as target:
        try:
            total = count_records(file, fmt)
            rows = read_items(file, mapping, fmt)
        except ValueError as e:
            raise ApplianceError(str(e)) from e
        with Progress() as progress:
            task = progress.add_task(f"ingesting {file.name}", total=total)
            for batch in batches(rows, batch_size):
                rejected.extend(batch.rejected)
                if batch.items:
                    result = target.upsert_items(batch.items)
                    for key in totals:
                        totals[key] += getattr(result, key)
                progress.advance(task, len(batch.items) + len(batch.rejected))
    click.echo(
        f"{totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged ({totals['embedded']} embedded), {len(rejected)} rejected"
    )
    for r in rejected[:50]:
        click.echo(f"  line {r.line}: {r.reason}", err=True)
    if len(rejected) > 50:  # noqa: PLR2004
        click.echo(f"  ... and {len(rejected) - 50} more", err=True)


@main.command()
@_data_dir_option
@_url_option
@click.pass_context
def reindex(ctx: click.Context, data_dir: Path | None, url: str | None) -> None:
    """Rebuild the vector index from the catalog in DuckDB (re-embeds every item)."""
    from appliance.admin import admin_target  # noqa: PLC0415

    with _errors(), admin_target(_settings(ctx, data_dir=data_dir), url) as target:
        result = target.reindex()
    click.echo(f"index rebuilt: {result.embedded} items embedded, {result.removed} removed")


@main.group()
def users() -> None:
    """Users and their learned preferences."""


@users.command("rebuild")
@click.argument("user_id", required=False)
@_data_dir_option
@_url_option
@click.pass_context
def users_rebuild(
    ctx: click.Context, user_id: str | None, data_dir: Path | None, url: str | None
) -> None:
    """Recompute preference vectors from the stored feedback (one USER_ID, or everyone)."""
    from appliance.admin import admin_target  # noqa: PLC0415

    with _errors(), admin_target(_settings(ctx, data_dir=data_dir), url) as target:
        result = target.rebuild_users(user_id)
    click.echo(
        f"{result.users} users rebuilt; largest difference from the online vectors: "
        f"{result.max_deviation:.2e}"
    )


_admin_key_option = click.option(
    "--admin-key",
    envvar="APPLIANCE_ADMIN_KEY",
    help="Admin key sent to the appliance (also APPLIANCE_ADMIN_KEY); never shown.",
)


@main.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write the archive to (a tar).",
)
@_data_dir_option
@_url_option
@_admin_key_option
@click.pass_context
def backup(
    ctx: click.Context,
    output: Path,
    data_dir: Path | None,
    url: str | None,
    admin_key: str | None,
) -> None:
    """Write a backup archive (catalog, feedback, users, item vectors) to OUTPUT, while serving."""
    from appliance import archive  # noqa: PLC0415
    from appliance.admin import admin_target  # noqa: PLC0415

    settings = _settings(ctx, data_dir=data_dir)
    with _errors():
        with admin_target(settings, url, key=admin_key) as target:
            target.backup(output)
        manifest = archive.read(output)
    counts = manifest.counts
    click.echo(
        f"backup written to {output} ({output.stat().st_size} bytes, checked): "
        f"{counts['items']} items, {counts['users']} users, "
        f"{counts['feedback_events']} feedback events"
    )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--reembed",
    is_flag=True,
    help="Embed every item with this appliance's model and rebuild the preferences, instead of "
    "using the archive's vectors (for a backup made with another embedding model).",
)
@_data_dir_option
@_url_option
@_admin_key_option
@click.pass_context
def restore(
    ctx: click.Context,
    file: Path,
    reembed: bool,
    data_dir: Path | None,
    url: str | None,
    admin_key: str | None,
) -> None:
    """Restore the backup archive FILE into an empty appliance (running, or a new data dir)."""
    from appliance import archive  # noqa: PLC0415
    from appliance.admin import admin_target  # noqa: PLC0415

    settings = _settings(ctx, data_dir=data_dir)
    with _errors():
        # A damaged file is reported before anything is sent or opened.
        archive.read(file)
        with admin_target(settings, url, key=admin_key) as target:
            result = target.restore(file, reembed=reembed)
    embedded = f", {result.embedded} items embedded" if reembed else ""
    click.echo(
        f"restored the backup of {result.backup_created_at:%Y-%m-%d %H:%M:%S} UTC: "
        f"{result.items} items, {result.users} users, {result.feedback_events} feedback "
        f"events{embedded}"
    )


@main.group()
def models() -> None:
    """Model files in the models folder."""


@models.command("pull")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Also fetch optional models (the re-ranker).")
@click.option("--models-dir", type=click.Path(path_type=Path), help="Default: ./models.")
@click.pass_context
def models_pull(
    ctx: click.Context, names: tuple[str, ...], all_: bool, models_dir: Path | None
) -> None:
    """Fetch model files listed in models/manifest.toml and verify their sha256."""
    from appliance import model_files  # noqa: PLC0415

    with _errors():
        folder = models_dir or load_settings(ctx.obj.get("config")).models_dir
        statuses = model_files.pull(folder, list(names) or None, all_=all_, report=click.echo)
    for s in statuses:
        click.echo(f"{s.name}: {s.detail}")


@models.command("list")
@click.option("--models-dir", type=click.Path(path_type=Path), help="Default: ./models.")
@click.pass_context
def models_list(ctx: click.Context, models_dir: Path | None) -> None:
    """Show each model of the manifest, whether it is present and whether its sha256 matches."""
    from appliance import model_files  # noqa: PLC0415

    with _errors():
        folder = models_dir or load_settings(ctx.obj.get("config")).models_dir
        manifest = model_files.load_manifest(folder)
        for entry in manifest.models:
            s = model_files.verify(folder, entry)
            mark = "ok" if s.verified else ("MISSING" if not s.present else "BAD")
            click.echo(f"{mark:8} {s.name:32} {s.role:9} {s.detail}")


@main.command("eval")
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/datasets"),
    show_default=True,
    help="Folder with eval/ and movielens-small/.",
)
@click.option("--split", default="dev", show_default=True, help="Which query files to use.")
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Items (JSON Lines) to evaluate on; default: the demo catalog, or --items.",
)
@click.option(
    "--feedback",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own feedback log (CSV: user_id,item_id,rating,timestamp), time-split per user; "
    "use with --catalog.",
)
@click.option("--limit", type=click.IntRange(1), help="At most this many queries per task.")
@click.option(
    "--rerank",
    "rerankers",
    multiple=True,
    type=click.Choice(["llamacpp", "openai"]),
    help="Also evaluate retrieval + this re-ranker (repeatable); configured by the reranker.* "
    "settings.",
)
@click.option(
    "--rerank-budget-ms",
    type=click.IntRange(1),
    default=60_000,
    show_default=True,
    help="Re-rank time budget per query here: quality is measured without the serving budget "
    "(the table reports the latency instead).",
)
@click.option(
    "--rerank-candidates",
    type=click.IntRange(1, 64),
    default=10,
    show_default=True,
    help="Candidates each re-ranker reorders per query: 10 is what a default request (top_k 5) "
    "gives it.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("eval-results.json"),
    show_default=True,
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    dataset: Path,
    split: str,
    catalog: Path | None,
    feedback: Path | None,
    limit: int | None,
    rerankers: tuple[str, ...],
    rerank_budget_ms: int,
    rerank_candidates: int,
    out: Path,
) -> None:
    """Measure recommendation quality on data with ground truth, with 95% bootstrap intervals."""
    import asyncio  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415
    import json  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from appliance.demo import MOVIELENS_CATALOG  # noqa: PLC0415
    from appliance.evaluation import datasets, runner  # noqa: PLC0415

    with _errors():
        if feedback is not None:
            if catalog is None:
                raise ApplianceError("--feedback needs --catalog, the items it refers to")
            history, queries = datasets.time_split(datasets.read_interactions(feedback))
            holdout = runner.holdout_task(queries)
            tasks = [holdout]
        else:
            history = list(datasets.read_ratings(dataset / "movielens-small" / "ratings_train.csv"))
            tasks = runner.dataset_tasks(dataset, split)
            holdout = next(t for t in tasks if t.name == runner.LEAVE_LAST_OUT)
        tasks += [
            runner.more_like_this_task(holdout, history),
            runner.basket_task(holdout, history),
        ]
        if limit is not None:
            tasks = [dataclasses.replace(t, queries=t.queries[:limit]) for t in tasks]
        with tempfile.TemporaryDirectory(prefix="appliance-eval-") as scratch:
            settings = load_settings(
                ctx.obj.get("config"),
                overrides={
                    "data_dir": scratch,
                    "reranker": {
                        "budget_ms": rerank_budget_ms,
                        "max_candidates": rerank_candidates,
                    },
                },
            )
            with Progress() as bar:
                job = bar.add_task("evaluating", total=None)
                report = asyncio.run(
                    runner.run(
                        settings,
                        catalog or MOVIELENS_CATALOG,
                        history,
                        tasks,
                        rerankers=rerankers,
                        progress=_ProgressBar(bar, job),
                    )
                )
    table = Table(title="Quality (95% bootstrap intervals; paired differences)")
    columns = (
        "task",
        "system",
        "metric",
        "mean [95% CI]",
        *(f"vs {reference}" for reference in runner.REFERENCES),
        "ms p50/p95",
    )
    for column in columns:
        table.add_column(column)
    for result in report.results:
        for label in result.scores:
            diffs = [report.difference(result, label, r) for r in runner.REFERENCES]
            table.add_row(
                result.task,
                result.system,
                label,
                str(result.interval(label)),
                *(
                    "" if d is None else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
                    for d in diffs
                ),
                f"{result.latency_p50_ms:.0f} / {result.latency_p95_ms:.0f}",
            )
    Console(width=150).print(table)
    for line in report.notes():
        click.echo(line)
    for result in report.results:
        if result.rerank_outcomes and set(result.rerank_outcomes) != {"ran"}:
            click.echo(f"{result.task} / {result.system}: re-rank stage {result.rerank_outcomes}")
    out.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    markdown = out.with_suffix(".md")
    markdown.write_text(
        f"{report.to_markdown()}\n{report.differences_to_markdown()}", encoding="utf-8"
    )
    click.echo(f"written to {out} and {markdown}")


@main.command()
@click.option(
    "--url",
    envvar="APPLIANCE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The running appliance to watch (also APPLIANCE_URL).",
)
@click.option(
    "--admin-key",
    envvar="APPLIANCE_ADMIN_KEY",
    help="Sent as a bearer token on every request (also APPLIANCE_ADMIN_KEY); never shown.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2),
    default=2.0,
    show_default=True,
    help="Seconds between polls, and between retries while the appliance cannot be reached.",
)
def tui(url: str, admin_key: str | None, interval: float) -> None:
    """Open the terminal dashboard of a running appliance (needs the tui extra)."""
    try:
        from tui.app import run  # noqa: PLC0415 - the server never needs the dashboard
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("textual"):
            raise
        click.secho(
            "error: the dashboard needs Textual: pip install 'recommendation-appliance[tui]' "
            "(or scripts/install.sh tui)",
            fg="red",
            err=True,
        )
        sys.exit(2)
    run(url, admin_key, poll_interval=interval)


@main.command("config")
@click.option("--reference", is_flag=True, help="List every setting as a Markdown table instead.")
@click.pass_context
def show_config(ctx: click.Context, reference: bool) -> None:
    """Print the effective settings (defaults, file, APPLIANCE_* environment), secrets masked."""
    import json  # noqa: PLC0415

    from appliance.settings import reference as settings_reference  # noqa: PLC0415

    if reference:
        click.echo("| Environment variable | Default | Meaning |\n| --- | --- | --- |")
        for name, default, doc in settings_reference():
            click.echo(f"| `{name}` | `{default}` | {doc} |")
        return
    with _errors():
        click.echo(json.dumps(redact(describe(load_settings(ctx.obj.get("config")))), indent=2))


if __name__ == "__main__":
    main()
