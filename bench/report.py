"""The benchmark's figures: one record per scenario and concurrency, the targets, the tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.wrk import WrkResult

# The targets (issue 4), for 100K items on two cores.
UNIQUE_P95_C1_MS = 20.0
UNIQUE_RPS_C32 = 400.0
UNIQUE_P95_C32_MS = 100.0
REPEATED_RPS_C32 = 2000.0
"""Repeated contexts and known users without context alike."""
FILTERED_MAX_RATIO = 1.5
FEEDBACK_RPS_C32 = 2000.0
INGEST_SHARE_OF_ENCODER = 0.8
RERANK_P95_C1_MS = 350.0
RERANK_MIN_RAN_SHARE = 0.95
"""Share of the re-rank requests that must have been re-ranked for their p95 to count: one that
ran out of the re-rank budget is answered in time, in the fused order, having done none of it."""
#: Server RSS allowed at 100K items and at 1M.
MEMORY_LIMIT_MB = {100_000: 2048, 1_000_000: 4096}


def _delta(after: dict[str, Any], before: dict[str, Any], *path: str) -> int:
    a: Any = after
    b: Any = before
    for key in path:
        a = a.get(key, {}) if isinstance(a, dict) else {}
        b = b.get(key, {}) if isinstance(b, dict) else {}
    return int(a or 0) - int(b or 0)


def _rate(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None


def server_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return what the server counted during a run (the difference of two GET /stats)."""
    batches = _delta(after, before, "encoder", "batches")
    texts = _delta(after, before, "encoder", "texts")
    rerank = {k: v - before.get("rerank", {}).get(k, 0) for k, v in after.get("rerank", {}).items()}
    return {
        "result_cache_hit_rate": _rate(
            _delta(after, before, "cache", "results", "hits"),
            _delta(after, before, "cache", "results", "misses"),
        ),
        "context_cache_hit_rate": _rate(
            _delta(after, before, "cache", "context_vectors", "hits"),
            _delta(after, before, "cache", "context_vectors", "misses"),
        ),
        "encoder_batches": batches,
        "encoder_texts": texts,
        "mean_encoder_batch": round(texts / batches, 1) if batches else None,
        "rerank": {k: v for k, v in rerank.items() if v},
        "items_added": _delta(after, before, "items"),
        "feedback_added": _delta(after, before, "feedback_events"),
    }


def level_record(
    scenario: str,
    concurrency: int,
    result: WrkResult,
    *,
    rss_peak_mb: float,
    rss_end_mb: float,
    server: dict[str, Any],
) -> dict[str, Any]:
    """One scenario at one concurrency, as the JSON report holds it."""

    def ms(value: float | None) -> float | None:
        return round(value, 2) if value is not None else None

    p = result.percentiles_ms
    return {
        "scenario": scenario,
        "concurrency": concurrency,
        "duration_s": round(result.duration_s, 2),
        "requests": result.requests,
        "requests_per_second": round(result.rate, 1),
        "p50_ms": ms(p.get("50")),
        "p90_ms": ms(p.get("90")),
        "p95_ms": ms(p.get("95")),
        "p99_ms": ms(p.get("99")),
        "max_ms": ms(result.max_ms),
        "errors": result.errors,
        "error_count": result.error_count,
        "succeeded": result.succeeded,
        "rss_peak_mb": round(rss_peak_mb),
        "rss_end_mb": round(rss_end_mb),
        "server": server,
    }


def find(records: Sequence[dict[str, Any]], scenario: str, concurrency: int) -> dict[str, Any]:
    """Return the record of a scenario at a concurrency, or an empty dict."""
    for record in records:
        if record.get("scenario") == scenario and record.get("concurrency") == concurrency:
            return record
    return {}


@dataclass(frozen=True, slots=True)
class Target:
    """One target of issue 4 and what was measured against it."""

    name: str
    goal: str
    measured: str
    met: bool | None
    """``None`` when the run did not measure it."""


def _target(
    name: str,
    goal: str,
    values: Sequence[float | None],
    met: Callable[..., bool],
    describe: Callable[..., str],
) -> Target:
    """Return a target met when ``met(*values)``; "not measured" if a value is missing."""
    if any(v is None for v in values):
        return Target(name, goal, "not measured", None)
    return Target(name, goal, describe(*values), met(*values))


def targets(report: dict[str, Any]) -> list[Target]:
    """Evaluate every target on a report (missing scenarios are "not measured")."""
    records: list[dict[str, Any]] = report.get("scenarios", [])

    def value(scenario: str, concurrency: int, key: str) -> float | None:
        v = find(records, scenario, concurrency).get(key)
        return float(v) if v is not None else None

    feedback = [r for r in records if r.get("scenario") == "feedback"]
    checked = feedback and all("lost" in r for r in feedback)
    lost = sum(r["lost"] for r in feedback) if checked else None
    # Each ratio: how much more the filtered request costs (time, or throughput given up).
    filtered = [
        _ratio(value("filtered", 1, "p95_ms"), value("unique", 1, "p95_ms")),
        _ratio(
            value("unique", 32, "requests_per_second"),
            value("filtered", 32, "requests_per_second"),
        ),
    ]
    # fmt: off
    return [
        _target("recommend, unique contexts, concurrency 1", "p95 <= 20 ms",
                [value("unique", 1, "p95_ms")],
                lambda p95: p95 <= UNIQUE_P95_C1_MS, lambda p95: f"p95 {p95:.1f} ms"),
        _target("recommend, unique contexts, concurrency 32", ">= 400 req/s with p95 <= 100 ms",
                [value("unique", 32, "requests_per_second"), value("unique", 32, "p95_ms")],
                lambda rps, p95: rps >= UNIQUE_RPS_C32 and p95 <= UNIQUE_P95_C32_MS,
                lambda rps, p95: f"{rps:,.0f} req/s, p95 {p95:.1f} ms"),
        _target("recommend, repeated contexts, concurrency 32", ">= 2,000 req/s",
                [value("repeated", 32, "requests_per_second")],
                lambda rps: rps >= REPEATED_RPS_C32, lambda rps: f"{rps:,.0f} req/s"),
        _target("recommend, known users without context, concurrency 32", ">= 2,000 req/s",
                [value("users", 32, "requests_per_second")],
                lambda rps: rps >= REPEATED_RPS_C32, lambda rps: f"{rps:,.0f} req/s"),
        _target("filtered recommend against unfiltered (unique contexts)", "within 1.5x",
                filtered, lambda p95, rps: max(p95, rps) <= FILTERED_MAX_RATIO,
                lambda p95, rps: f"p95 at concurrency 1: {p95:.2f}x; req/s at 32: 1/{rps:.2f}"),
        _target("feedback writes, concurrency 32",
                ">= 2,000 req/s, every acknowledged event in DuckDB",
                [value("feedback", 32, "requests_per_second"), lost],
                lambda rps, lost: rps >= FEEDBACK_RPS_C32 and lost == 0,
                lambda rps, lost: f"{rps:,.0f} req/s; {lost:.0f} acknowledged events missing"),
        _ingest(records, report.get("encoder", {})),
        _memory(records, report),
        _target("recommend with the llama.cpp re-ranker (10 candidates), concurrency 1",
                "p95 <= 350 ms, 95% of them re-ranked",
                [value("rerank", 1, "p95_ms"), *_rerank_outcomes(records)],
                lambda p95, ran, asked: p95 <= RERANK_P95_C1_MS
                and ran >= RERANK_MIN_RAN_SHARE * asked,
                lambda p95, ran, asked: f"p95 {p95:.1f} ms; re-ranked {ran:.0f} of {asked:.0f}"),
    ]
    # fmt: on


def _rerank_outcomes(records: Sequence[dict[str, Any]]) -> list[float | None]:
    """Return how many requests of the re-rank run at concurrency 1 were re-ranked, of how many."""
    outcomes = find(records, "rerank", 1).get("server", {}).get("rerank")
    if not outcomes:
        return [None, None]
    return [float(outcomes.get("ran", 0)), float(sum(outcomes.values()))]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ingest(records: Sequence[dict[str, Any]], encoder: dict[str, Any]) -> Target:
    runs = [r for r in records if r.get("scenario") == "ingest" and "items_per_second" in r]
    # Reports from before items had phrases encoded one text an item.
    unit = "items/s" if "items_per_second" in encoder else "texts/s"
    alone = encoder.get("items_per_second", encoder.get("texts_per_second"))
    if not runs or not alone:
        return Target("ingest, end to end", ">= 0.8x the encoder alone", "not measured", None)
    best = max(runs, key=lambda r: r["items_per_second"])
    share = best["items_per_second"] / alone
    return Target(
        "ingest, end to end",
        ">= 0.8x the encoder alone",
        f"{best['items_per_second']} items/s at concurrency {best['concurrency']}, "
        f"{share:.2f}x the encoder's {alone} {unit}",
        share >= INGEST_SHARE_OF_ENCODER,
    )


def _memory(records: Sequence[dict[str, Any]], report: dict[str, Any]) -> Target:
    items = report.get("items", 0)
    limits = [mb for n, mb in sorted(MEMORY_LIMIT_MB.items()) if items <= n]
    limit = limits[0] if limits else None
    peaks = [r["rss_peak_mb"] for r in records if "rss_peak_mb" in r]
    build = report.get("build", {}).get("build_peak_rss_mb")
    if build is not None and report.get("build", {}).get("built_now"):
        peaks.append(build)
    if limit is None or not peaks:
        return Target("server memory", "<= 2 GB at 100K, <= 4 GB at 1M", "not measured", None)
    return Target(
        "server memory",
        f"<= {limit / 1024:.0f} GB RSS at {items:,} items",
        f"peak {max(peaks)} MB",
        max(peaks) <= limit,
    )


def _share(value: float | None, base: float | None) -> str:
    return f"{value / base:.3f}" if value is not None and base else ""


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"  # noqa: PLR2004


#: Re-rank outcomes of requests that asked the re-ranker (the others were never meant to).
_RERANK_ATTEMPTS = {"ran", "timeout", "busy", "failed"}


def _notes(record: dict[str, Any]) -> str:
    notes = []
    server = record.get("server", {})
    if record.get("server_cpu_ms_per_request") is not None:
        notes.append(f"server CPU {record['server_cpu_ms_per_request']:.2f} ms/request")
    if "items_per_second" in record:
        notes.append(f"{record['items_per_second']:,.0f} items/s")
    if "stored" in record:
        notes.append(f"{record['stored']:,} of {record['acknowledged']:,} acknowledged stored")
    if server.get("result_cache_hit_rate") is not None:
        notes.append(f"result cache {server['result_cache_hit_rate']:.0%}")
    if server.get("mean_encoder_batch") and record.get("scenario") != "ingest":
        notes.append(f"encoder batch {server['mean_encoder_batch']}")
    outcomes = server.get("rerank", {})
    if set(outcomes) & _RERANK_ATTEMPTS:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(outcomes.items()) if s != "ran")
        notes.append(f"re-ranked {outcomes.get('ran', 0)} of {sum(outcomes.values())}")
        if parts:
            notes[-1] += f" ({parts})"
    return ", ".join(notes)


def scenario_table(records: Sequence[dict[str, Any]]) -> str:
    """Render the scenarios as a Markdown table."""
    lines = [
        (
            "| scenario | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors "
            "| server RSS peak / end MB | notes |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [scenario_row(r) for r in records]
    return "\n".join(lines)


def scenario_row(r: dict[str, Any]) -> str:
    """Render one scenario record as a row of the scenario table."""
    if "skipped" in r:
        return f"| {r['scenario']} | | | | | | | | skipped: {r['skipped']} |"
    return (
        f"| {r['scenario']} | {r['concurrency']} | {r['requests_per_second']:,.0f} "
        f"| {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} "
        f"| {r['error_count']} | {r['rss_peak_mb']:,} / {r['rss_end_mb']:,} | {_notes(r)} |"
    )


def reference_table(report: dict[str, Any]) -> str:
    """Search latency of qdrant-client local mode, Qdrant Edge and the whole request."""
    ref = report.get("reference")
    if not ref:
        return ""
    local = ref["qdrant_client_local"]
    edge = ref["qdrant_edge"]
    records: list[dict[str, Any]] = report.get("scenarios", [])
    rows = [
        ("qdrant-client local mode", local["points"], local["search"], local["search"]),
        ("Qdrant Edge in-process (the appliance's index)", edge["points"], edge["search"],
         local["search"]),
        ("qdrant-client local mode, filtered", local["points"], local["filtered"],
         local["filtered"]),
        ("Qdrant Edge in-process, filtered", edge["points"], edge["filtered"], local["filtered"]),
    ]  # fmt: skip
    lines = [
        (
            f"| search, {ref['limit']} nearest | vectors | p50 ms | p95 ms | queries/s "
            "| p50 as a share of qdrant-client local |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, points, figures, base in rows:
        lines.append(
            f"| {label} | {points:,} | {_ms(figures['p50_ms'])} | {_ms(figures['p95_ms'])} "
            f"| {figures['queries_per_second']:,} | {_share(figures['p50_ms'], base['p50_ms'])} |"
        )
    for scenario, base in (("unique", local["search"]), ("filtered", local["filtered"])):
        record = find(records, scenario, 1)
        if record:
            lines.append(
                f"| POST /recommendations end to end ({scenario}, concurrency 1) "
                f"| {edge['points']:,} | {_ms(record['p50_ms'])} | {_ms(record['p95_ms'])} "
                f"| {record['requests_per_second']:,} "
                f"| {_share(record['p50_ms'], base['p50_ms'])} |"
            )
    recall = edge.get("recall")
    if recall:
        lines.append(
            f"\nQdrant Edge found {recall['mean']:.3f} of the exact {ref['limit']} nearest "
            f"neighbours (mean recall over {recall['queries']} queries; qdrant-client local mode "
            "compares each query with every vector)."
        )
    return "\n".join(lines)


def _built(build: dict[str, Any]) -> str:
    """Describe the build: how long it took, or that it went on from an interrupted one."""
    graphs = build.get("optimize_seconds")
    graphs_text = "" if graphs is None else f", search graphs {graphs:,.0f} s"
    if build.get("continued_an_interrupted_build"):
        return (
            f"Built by continuing an interrupted build ({build['build_seconds']:,.0f} s for the "
            f"rest{graphs_text}; the interrupted part's time is not recorded)."
        )
    anon = build.get("build_peak_anon_mb")
    anon_text = "" if anon is None else f", {anon:,} MB of it not in mapped files"
    return (
        f"Built in {build['build_seconds']:,.0f} s ({build['ingest_items_per_second']} items/s "
        f"through `appliance ingest`{graphs_text}, server peak RSS "
        f"{build['build_peak_rss_mb']:,} MB{anon_text})."
    )


def targets_table(found: Sequence[Target]) -> str:
    """Render the targets as a Markdown table."""
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = ["| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t.name} | {t.goal} | {t.measured} | {mark[t.met]} |" for t in found]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown: machine, catalog, scenarios, encoder, search, targets."""
    machine = report["machine"]
    build = report["build"]
    parts = [
        (
            f"Machine: {machine['cpu']}, {machine['cores']} cores, "
            f"{machine['memory_gb']} GB RAM, Linux {machine['kernel']}; load average "
            f"{machine['load_start']} at the start, {machine['load_end']} at the end."
        ),
        (
            f"Catalog: {report['items']:,} synthetic items, mean "
            f"{build.get('mean_tokens_per_item')} MiniLM tokens per item; "
            f"{build['known_users']:,} known users with {build['likes_per_user']} likes each. "
            + _built(build)
            + f" Each run: {report['settings']['duration_s']} s "
            f"per concurrency after a {report['settings']['warmup_s']} s warm-up; this report "
            f"took {report['elapsed_s'] / 60:.1f} min."
        ),
        scenario_table(report["scenarios"]),
    ]
    encoder = report.get("encoder")
    if encoder:
        parts.append(
            "Encoder alone (in the benchmark's process, nothing else running): "
            + (
                f"{encoder['items_per_second']} items/s ({encoder['texts_per_second']} texts/s) "
                f"on the ingest scenario's {encoder['items']:,} items ({encoder['texts']:,} "
                f"texts), {encoder['request_items']} items a request, in batches of "
                f"{encoder['batch']}."
                if "items_per_second" in encoder
                else f"{encoder['texts_per_second']} texts/s on the ingest scenario's "
                f"{encoder['texts']:,} texts in batches of {encoder['batch']}."
            )
        )
    table = reference_table(report)
    if table:
        parts.append(table)
    parts.append(targets_table(targets(report)))
    return "\n\n".join(parts) + "\n"
