"""The benchmark's report: server figures from two /stats answers, one record per run, the
targets and the Markdown tables, built from real wrk output."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import report, wrk
from tests.bench.test_wrk import sample

BEFORE: dict[str, Any] = {
    "items": 10000,
    "feedback_events": 10000,
    "encoder": {"batches": 10, "texts": 100, "largest_batch": 64},
    "rerank": {"not-configured": 5},
    "cache": {
        "results": {"hits": 10, "misses": 5, "entries": 5},
        "context_vectors": {"hits": 0, "misses": 5, "entries": 5},
    },
}


def after(**changes: Any) -> dict[str, Any]:
    stats = copy.deepcopy(BEFORE)
    for path, value in changes.items():
        node = stats
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return stats


def test_server_figures_are_differences() -> None:
    figures = report.server_figures(
        BEFORE,
        after(
            cache__results__hits=2980,
            cache__results__misses=35,
            cache__context_vectors__hits=25,
            encoder__batches=20,
            encoder__texts=180,
            rerank={"not-configured": 5, "ran": 3, "busy": 7},
            feedback_events=10100,
        ),
    )

    assert figures["result_cache_hit_rate"] == round(2970 / 3000, 4)
    assert figures["context_cache_hit_rate"] == 1.0
    assert figures["encoder_batches"] == 10
    assert figures["mean_encoder_batch"] == 8.0
    assert figures["rerank"] == {"ran": 3, "busy": 7}
    assert figures["feedback_added"] == 100
    assert figures["items_added"] == 0


def test_no_lookups_is_no_rate() -> None:
    figures = report.server_figures(BEFORE, BEFORE)
    assert figures["result_cache_hit_rate"] is None
    assert figures["mean_encoder_batch"] is None


def record(scenario: str, concurrency: int, name: str = "repeated-c8.txt") -> dict[str, Any]:
    return report.level_record(
        scenario,
        concurrency,
        wrk.parse(sample(name)),
        rss_peak_mb=812.4,
        rss_end_mb=790.0,
        server=report.server_figures(BEFORE, BEFORE),
    )


def test_a_record_of_a_real_run() -> None:
    r = record("repeated", 8)

    assert r["requests"] == 3075
    assert r["requests_per_second"] == 383.0
    assert (r["p50_ms"], r["p95_ms"], r["p99_ms"]) == (8.93, 436.56, 648.37)
    assert r["error_count"] == 0
    assert (r["rss_peak_mb"], r["rss_end_mb"]) == (812, 790)
    row = report.scenario_row(r)
    assert row.startswith("| repeated | 8 | 383 | 8.93 | 436.6 | 648.4 | 0 | 812 / 790 |")


def test_a_run_without_any_answer_in_time_has_no_latency() -> None:
    r = record("rerank", 32, "rerank-timeouts-c32.txt")

    assert r["p50_ms"] is None
    assert r["error_count"] == 1
    assert "| rerank | 32 | 0 |  |  |  | 1 |" in report.scenario_row(r)


def figures(scenario: str, concurrency: int, **values: Any) -> dict[str, Any]:
    return {"scenario": scenario, "concurrency": concurrency, "rss_peak_mb": 900, **values}


def passing_report() -> dict[str, Any]:
    return {
        "items": 100_000,
        "encoder": {"items_per_second": 300.0, "texts_per_second": 900.0},
        "scenarios": [
            figures("unique", 1, p95_ms=18.0, requests_per_second=60.0),
            figures("unique", 32, p95_ms=90.0, requests_per_second=420.0),
            figures("repeated", 32, requests_per_second=2500.0),
            figures("users", 32, requests_per_second=2100.0),
            figures("filtered", 1, p95_ms=20.0, requests_per_second=55.0),
            figures("filtered", 32, p95_ms=95.0, requests_per_second=400.0),
            figures("feedback", 1, requests_per_second=300.0, acknowledged=10, stored=10, lost=0),
            figures("feedback", 32, requests_per_second=2200.0, acknowledged=9, stored=9, lost=0),
            figures("ingest", 8, items_per_second=250.0),
            figures("rerank", 1, p95_ms=340.0, server={"rerank": {"ran": 60, "timeout": 3}}),
        ],
    }


def test_targets_met() -> None:
    found = report.targets(passing_report())

    assert [t.met for t in found] == [True] * len(found)
    assert len(found) == 9
    ingest = next(t for t in found if t.name.startswith("ingest"))
    assert ingest.measured == ("250.0 items/s at concurrency 8, 0.83x the encoder's 300.0 items/s")


def test_each_target_can_fail() -> None:
    base = passing_report()
    for scenario, concurrency, key, bad in [
        ("unique", 1, "p95_ms", 25.0),
        ("unique", 32, "requests_per_second", 300.0),
        ("repeated", 32, "requests_per_second", 1500.0),
        ("users", 32, "requests_per_second", 1999.0),
        ("filtered", 1, "p95_ms", 28.0),  # 1.56x the unfiltered 18 ms
        ("feedback", 32, "lost", 1),
        ("ingest", 8, "items_per_second", 200.0),
        ("rerank", 1, "p95_ms", 351.0),
        # Answered in time because the budget ran out: the fused order, not re-ranked.
        ("rerank", 1, "server", {"rerank": {"ran": 59, "timeout": 4}}),
        ("unique", 32, "rss_peak_mb", 2100),
    ]:
        changed = copy.deepcopy(base)
        report.find(changed["scenarios"], scenario, concurrency)[key] = bad
        failed = [t.name for t in report.targets(changed) if t.met is False]
        assert len(failed) == 1, (scenario, key, failed)


def test_missing_scenarios_are_not_measured() -> None:
    found = report.targets({"items": 10_000, "scenarios": []})

    assert {t.measured for t in found} == {"not measured"}
    assert {t.met for t in found} == {None}


def test_memory_limit_follows_the_catalog_size() -> None:
    big = passing_report()
    big["items"] = 1_000_000
    report.find(big["scenarios"], "unique", 32)["rss_peak_mb"] = 3500
    memory = next(t for t in report.targets(big) if t.name == "server memory")
    assert memory.met is True
    assert memory.goal == "<= 4 GB RSS at 1,000,000 items"


REAL_REPORT = Path(__file__).parents[1] / "data" / "bench" / "report-10k.json"


def test_markdown_of_a_real_10k_report() -> None:
    # Written by `python -m bench.run --items 10000 --duration 5` on a busy 2-core machine.
    full = json.loads(REAL_REPORT.read_text(encoding="utf-8"))

    text = report.markdown(full)

    assert text.startswith("Machine: AMD EPYC, 2 cores")
    assert "Catalog: 10,000 synthetic items, mean 16.3 MiniLM tokens per item" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum(line.startswith(("| unique |", "| ingest |")) for line in rows) == 6
    assert "| feedback | 32 | 197 |" in text
    assert "1,029 of 997 acknowledged stored" in text
    assert "| qdrant-client local mode | 10,000 | 84.1 | 107.5 | 11.8 | 1.000 |" in text
    assert "| Qdrant Edge in-process (the appliance's index) | 10,000 | 4.04 |" in text
    assert "Encoder alone (in the benchmark's process, nothing else running): 12.4 texts/s" in text
    # The targets, evaluated again from the figures, agree with those the run wrote.
    assert [asdict(t) for t in report.targets(full)] == full["targets"]


def test_a_continued_build_is_not_reported_as_a_whole_one() -> None:
    full = json.loads(REAL_REPORT.read_text(encoding="utf-8"))
    assert "Built in " in report.markdown(full)
    full["build"] |= {"continued_an_interrupted_build": True, "optimize_seconds": 12.0}

    text = report.markdown(full)

    assert "Built in " not in text
    assert "Built by continuing an interrupted build" in text
    assert "search graphs 12 s" in text
