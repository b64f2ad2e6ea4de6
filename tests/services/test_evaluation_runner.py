"""The evaluation harness on a generated, non-movie catalog: the real runtime (Qdrant Edge,
DuckDB) with the deterministic hashing embedder, so the whole run takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.evaluation.datasets import Interaction, Query, read_interactions, time_split
from appliance.evaluation.runner import (
    BASELINE,
    BASKET,
    BASKET_SIZE,
    FUSED,
    FUSED_LEARNED,
    ITEM_KNN,
    MORE_LIKE_THIS,
    USAGE_MIN_HISTORY,
    Task,
    basket_task,
    more_like_this_task,
    replay_liked,
    run,
    usage_visits,
)
from appliance.services.learning import RequestKind
from appliance.services.runtime import open_runtime
from tests.conftest import make_settings

TOPICS = {
    "kettle": "kitchen kettle teapot boiling water",
    "tent": "camping tent outdoor hiking shelter",
    "drill": "workshop drill power tool screws",
}


#: The pipelines of one candidate source each, besides vector search (the baseline).
SOURCES_ALONE = (
    "keyword only",
    "named only",
    "collaborative only",
    "neighbourhood only",
    "history only",
    "popularity only",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def made_up_name(topic: str, n: int) -> str:
    """A one-word name no other item shares, e.g. "Kelavo" (capitalised, as titles are)."""
    syllables = ["ka", "le", "mi", "no", "ru", "sa", "ti", "vo", "ze", "po"]
    first = "bdgkmprstz"[sorted(TOPICS).index(topic)]
    return (first + "".join(syllables[int(d)] for d in f"{n:02d}")).title()


def write_catalog(path: Path) -> Path:
    lines = [
        json.dumps(
            {
                "item_id": f"{topic}-{n}",
                "title": f"{topic.title()} model {n}",
                "text": f"A {words} product, variant {n}.",
                "metadata": {"topic": topic},
            }
        )
        for topic, words in TOPICS.items()
        for n in range(10)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def history() -> list[Interaction]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # Campers rate tents highly; everyone has bought kettle-0, the best seller.
    tents = [
        Interaction(f"camper-{user}", f"tent-{(user + n) % 10}", 5.0, start + timedelta(days=n))
        for user in range(8)
        for n in range(5)
    ]
    kettles = [Interaction(f"camper-{user}", "kettle-0", 3.0, start) for user in range(8)]
    return tents + kettles


class Recorder:
    """Keeps what an evaluation reports of its progress."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.answered: list[int] = []

    def total(self, queries: int) -> None:
        self.totals.append(queries)

    def advance(self, queries: int) -> None:
        self.answered.append(queries)


@pytest.mark.anyio
async def test_pipeline_and_baseline_are_scored_per_query(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "items.jsonl")
    train, holdout = time_split(history())
    topical = [
        Query(f"q-{topic}", f"asker-{topic}", f"{words}", {f"{topic}-{n}": 1.0 for n in range(10)})
        for topic, words in TOPICS.items()
    ]
    tasks = [
        Task("topics", topical, (("NDCG", 10), ("P", 5), ("R", 10))),
        Task("holdout", holdout, (("HR", 10), ("NDCG", 10)), personal=True),
    ]
    progress = Recorder()
    settings = make_settings(tmp_path / "data", embedder={"kind": "hashing"})
    report = await run(settings, catalog, train, tasks, progress=progress)

    systems = ("most-popular", BASELINE, *SOURCES_ALONE, FUSED, FUSED_LEARNED)
    # Item-kNN needs a history to start from: it answers the hold-out task only.
    assert progress.totals == [len(systems) * (len(topical) + len(holdout)) + len(holdout)]
    assert sum(progress.answered) == progress.totals[0]
    by = {(r.task, r.system): r for r in report.results}
    assert set(by) == {
        *((t, s) for t in ("topics", "holdout") for s in systems),
        ("holdout", ITEM_KNN),
    }
    for result in report.results:
        for values in result.scores.values():
            assert len(values) == len(next(t for t in tasks if t.name == result.task).queries)
            assert all(0.0 <= v <= 1.0 for v in values)
    # Words in the context find their topic; popularity cannot.
    assert by["topics", BASELINE].interval("P@5").mean == 1.0
    assert by["topics", "most-popular"].interval("P@5").mean < 0.5
    # Each camper's held-out tent is near the tents they rated: the preference finds it.
    assert by["holdout", BASELINE].interval("HR@10").mean == 1.0
    difference = report.difference(by["topics", "most-popular"], "P@5")
    assert difference is not None
    assert difference.high < 0
    # Each camper's held-out tent was rated by the other campers along with their own tents.
    assert by["holdout", ITEM_KNN].interval("HR@10").mean == 1.0
    assert by["holdout", "collaborative only"].interval("HR@10").mean == 1.0
    versus_knn = report.difference(by["holdout", "most-popular"], "HR@10", ITEM_KNN)
    assert versus_knn is not None
    assert versus_knn.mean == pytest.approx(
        by["holdout", "most-popular"].interval("HR@10").mean - 1
    )
    assert report.difference(by["topics", "most-popular"], "P@5", ITEM_KNN) is None
    exported = report.to_json()
    rows = {(r["task"], r["system"]): r for r in exported["results"]}  # type: ignore[index,union-attr]
    assert set(rows["topics", "most-popular"]["metrics"]["P@5"]["minus"]) == {BASELINE}
    assert set(rows["holdout", "most-popular"]["metrics"]["HR@10"]["minus"]) == {
        BASELINE,
        ITEM_KNN,
    }
    assert set(rows["holdout", ITEM_KNN]["metrics"]["HR@10"]["minus"]) == {BASELINE}
    assert "minus" not in rows["topics", BASELINE]["metrics"]["P@5"]
    # The learned fusion is compared pairwise with plain RRF too, metric by metric.
    assert set(rows["topics", FUSED_LEARNED]["metrics"]["P@5"]["minus"]) == {BASELINE, FUSED}
    table = report.to_markdown().splitlines()
    assert table[0] == "| task | system | NDCG@10 | P@5 | R@10 | HR@10 | ms/query p50 / p95 |"
    assert table[2].startswith("| topics | most-popular | ")
    assert len(table) == 2 + 2 * len(systems) + 1
    markdown = report.differences_to_markdown().splitlines()
    differences = markdown[: markdown.index("")]
    assert differences[0] == "| task | system | metric | minus vector-only | minus item-kNN |"
    knn_row = next(line for line in differences if line.startswith("| holdout | most-popular |"))
    assert knn_row.count("[") == 2
    # A row per system and task, but for vector-only on the task where it is the only reference.
    assert len(differences) == 2 + len(report.results) - 1
    assert not any(line.startswith(f"| topics | {BASELINE} |") for line in differences)
    paired = markdown[markdown.index("") + 1 :]
    assert paired[0].startswith("| task | system | minus | metric |")
    assert len(paired) == 2 + 3 + 2
    assert paired[2].startswith(f"| topics | {FUSED_LEARNED} | {FUSED} | NDCG@10 | ")


@pytest.mark.anyio
async def test_more_like_the_items_a_user_liked_last(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "items.jsonl")
    train, holdout = time_split(history())
    tasks = [
        more_like_this_task(Task("holdout", holdout, ()), train),
        basket_task(Task("holdout", holdout, ()), train),
    ]
    assert [len(t.queries[0].like) for t in tasks] == [1, BASKET_SIZE]
    # About an item the catalog lacks, the request cannot be made: the query is left out.
    lacking = [
        Query("like-gone", "camper-0", "", {"tent-1": 1.0}, like=("gone-item",)),
        Query("basket-gone", "camper-0", "", {"tent-1": 1.0}, like=("tent-2", "gone-item")),
    ]
    progress = Recorder()
    settings = make_settings(tmp_path / "data", embedder={"kind": "hashing"})

    report = await run(
        settings,
        catalog,
        train,
        [replace(task, queries=[*task.queries, *lacking]) for task in tasks],
        progress=progress,
    )

    systems = ("most-popular", ITEM_KNN, BASELINE, *SOURCES_ALONE, FUSED, FUSED_LEARNED)
    assert progress.totals == [len(tasks) * len(systems) * len(holdout)]
    by = {(r.task, r.system): r for r in report.results}
    assert set(by) == {(t, s) for t in (MORE_LIKE_THIS, BASKET) for s in systems}
    assert all(len(r.scores["HR@10"]) == len(holdout) for r in report.results)
    # More like the tent a camper rated last, or the three before the held-out one: the tents
    # rated with them (the held-out one among them), and the tents near them, which the named
    # source searches.
    for task in (MORE_LIKE_THIS, BASKET):
        for system in (ITEM_KNN, "collaborative only", "named only", FUSED_LEARNED):
            assert by[task, system].interval("HR@10").mean == 1.0, (task, system)


@pytest.mark.anyio
async def test_rerankers_are_compared_on_the_worded_tasks(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "items.jsonl")
    train, holdout = time_split(history())
    topical = [
        Query(f"q-{t}", f"asker-{t}", words, {f"{t}-{n}": 1.0 for n in range(10)})
        for t, words in TOPICS.items()
    ]
    tasks = [Task("topics", topical, (("NDCG", 10),)), Task("holdout", holdout, (("HR", 10),))]
    settings = make_settings(
        tmp_path / "data", embedder={"kind": "hashing"}, reranker={"budget_ms": 60_000}
    )
    progress = Recorder()

    report = await run(settings, catalog, train, tasks, rerankers=("llamacpp",), progress=progress)

    reranked = f"{FUSED_LEARNED} + llamacpp"
    by = {(r.task, r.system): r for r in report.results}
    plain = ("most-popular", BASELINE, *SOURCES_ALONE, FUSED, FUSED_LEARNED)
    # A re-ranker needs words to judge against: it is left out of the hold-out task.
    assert set(by) == {
        *((t, s) for t in ("topics", "holdout") for s in plain),
        ("topics", reranked),
    }
    assert progress.totals == [(len(plain) + 1) * len(topical) + len(plain) * len(holdout)]
    assert by["topics", reranked].rerank_outcomes == {"ran": len(topical)}
    assert by["topics", FUSED].rerank_outcomes == {}
    assert report.difference(by["topics", reranked], "NDCG@10") is not None


def test_time_split_holds_out_the_last_positive_and_drops_what_followed() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    log = [
        Interaction("a", "x", 5.0, t),
        Interaction("a", "y", 4.5, t + timedelta(days=2)),
        Interaction("a", "z", 1.0, t + timedelta(days=3)),  # after the target: dropped
        Interaction("b", "x", 2.0, t),  # no positive at all: history only
        Interaction("c", "y", 5.0, t),  # a positive but no earlier history: history only
    ]
    train, queries = time_split(log)
    assert [(q.user_id, dict(q.relevant)) for q in queries] == [("a", {"y": 1.0})]
    assert sorted((i.user_id, i.item_id) for i in train) == [("a", "x"), ("b", "x"), ("c", "y")]


def test_read_interactions_takes_epoch_and_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\nu,i,4,1700000000\nu,j,2.5,2025-03-01T10:00:00+01:00\n"
    )
    first, second = read_interactions(path)
    assert first.timestamp == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert second.timestamp == datetime(2025, 3, 1, 9, tzinfo=UTC)
    path.write_text("user_id,item_id,rating,timestamp\nu,i,high,1700000000\n")
    with pytest.raises(ValueError, match="line 2"):
        list(read_interactions(path))


def test_eval_command_on_an_operators_own_data(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "items.jsonl")
    log = tmp_path / "feedback.csv"
    log.write_text(
        "user_id,item_id,rating,timestamp\n"
        + "".join(
            f"{i.user_id},{i.item_id},{i.rating},{int(i.timestamp.timestamp())}\n"
            for i in history()
        )
    )
    out = tmp_path / "report.json"
    result = subprocess.run(  # noqa: S603 - our own command line
        [
            sys.executable,
            "-m",
            "appliance",
            "eval",
            "--catalog",
            str(catalog),
            "--feedback",
            str(log),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "APPLIANCE_EMBEDDER__KIND": "hashing"},
    )
    assert result.returncode == 0, result.stderr
    assert "holdout" in result.stdout
    report = json.loads(out.read_text())
    assert {r["task"] for r in report["results"]} == {"holdout", MORE_LIKE_THIS, BASKET}
    assert report["references"] == [BASELINE, ITEM_KNN]
    assert out.with_suffix(".md").read_text().startswith("| task | system | HR@10 | NDCG@10 |")


def test_usage_visits_cut_each_users_newest_ratings() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    long = [Interaction("long", f"i{n}", 4.0, start + timedelta(days=n)) for n in range(20)]
    other = [Interaction("other", f"i{n}", 2.0, start + timedelta(hours=n)) for n in range(10)]
    short = [Interaction("short", f"i{n}", 5.0, start) for n in range(USAGE_MIN_HISTORY - 1)]
    shuffled = [*reversed(long), *short, *other]

    past, visits = usage_visits(shuffled, visits=2)

    # A fifth of each long enough history, its newest, answers two visits, round by round; each
    # user's second visit names an item.
    assert [([(i.user_id, i.item_id) for i in v.answers], v.naming) for v in visits] == [
        ([("long", "i16"), ("long", "i17")], False),
        ([("other", "i8")], False),
        ([("long", "i18"), ("long", "i19")], True),
        ([("other", "i9")], True),
    ]
    answers = [i for v in visits for i in v.answers]
    assert sorted(past + answers, key=id) == sorted(shuffled, key=id)
    assert {i.item_id for i in past if i.user_id == "long"} == {f"i{n}" for n in range(16)}
    everything, none = usage_visits(shuffled, visits=0)
    assert none == []
    assert sorted(everything, key=id) == sorted(shuffled, key=id)


@pytest.mark.anyio
async def test_the_fusion_learns_from_simulated_usage_before_the_queries(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "items.jsonl"
    # Each item repeats its topic's first word a different number of times: items of equal
    # text would tie in the index, which orders ties differently from one process to the
    # next, and the visits (so what is learned) would differ from run to run.
    catalog.write_text(
        "".join(
            json.dumps(
                {
                    "item_id": f"{topic}-{n}",
                    # A made-up name of its own, so that a visit that names it is understood.
                    "title": made_up_name(topic, n),
                    "text": words + f" {words.split()[0]}" * n,
                }
            )
            + "\n"
            for topic, words in TOPICS.items()
            for n in range(40)
        )
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # Twelve campers rate ten tents each, then the six kettles everybody buys, in turn: what
    # they rate next is what is popular, not what is like their tents. Each one's last kettle
    # is held out.
    campers = [
        *(
            Interaction(f"camper-{u}", f"tent-{u + n}", 5.0, start + timedelta(days=n))
            for u in range(12)
            for n in range(10)
        ),
        *(
            Interaction(f"camper-{u}", f"kettle-{(u + n) % 6}", 5.0, start + timedelta(days=10 + n))
            for u in range(12)
            for n in range(6)
        ),
    ]
    train, holdout = time_split(campers)
    tasks = [Task("holdout", holdout, (("HR", 10), ("NDCG", 10)))]
    # A schedule that would fire many times during the run: the harness turns it off. Twelve
    # campers give few pairs of candidates shown alike: a little evidence has to do, and a
    # weaker pull towards plain RRF than the default lets it show.
    settings = make_settings(
        tmp_path / "data",
        embedder={"kind": "hashing"},
        recommend={"popularity_refresh_seconds": 0},
        fusion={
            "train_interval_seconds": 0.01,
            "min_labelled_impressions": 4,
            "prior_strength": 2.0,
        },
    )

    report = await run(settings, catalog, train, tasks, visits=4)

    usage = report.usage
    assert usage is not None
    _, visits = usage_visits(train, visits=4)
    assert usage.visits == 4 * 12 == len(visits)
    assert usage.answers == sum(len(v.answers) for v in visits) == 12 * 4
    assert usage.fusion.trainings == 1
    # Every second visit asked for something like the camper's latest kettle, by its name,
    # and was understood: those taught the weights of requests that name items; the others
    # had no words and taught those of wordless requests. Nothing taught other worded ones
    # weights of their own.
    assert usage.named == 2 * 12
    assert usage.fusion.kinds[RequestKind.NAMED].fit is not None
    wordless = usage.fusion.kinds[RequestKind.NO_CONTEXT]
    assert wordless.status == "trained", wordless.detail
    assert wordless.weights is not None
    assert wordless.weights["popularity"] > 1.0 > wordless.weights["vector"]
    assert usage.fusion.kinds[RequestKind.CONTEXT].fit is None
    assert wordless.fit is not None
    checked, plain = wordless.fit.validation_learned, wordless.fit.validation_rrf
    assert checked is not None
    assert plain is not None
    assert checked > plain
    # The held-out kettle is the most popular one a camper has not bought, and no tent like
    # theirs: weighing popularity more can only move it up, and does for some campers.
    by = {r.system: r for r in report.results}
    assert by[FUSED_LEARNED].interval("HR@10").mean >= by[FUSED].interval("HR@10").mean
    assert all(
        learned >= plain
        for learned, plain in zip(
            by[FUSED_LEARNED].scores["NDCG@10"], by[FUSED].scores["NDCG@10"], strict=True
        )
    )
    difference = report.difference(by[FUSED_LEARNED], "NDCG@10", FUSED)
    assert difference is not None
    assert difference.mean > 0
    assert any("no-context requests: trained" in line for line in report.notes())
    assert report.to_json()["usage"]["visits"] == usage.visits  # type: ignore[index]


@pytest.mark.anyio
async def test_likes_told_before_asking_are_dated_with_the_history(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "items.jsonl")
    newest = max(i.timestamp for i in history())
    async with open_runtime(make_settings(tmp_path / "data", embedder={"kind": "hashing"})) as rt:
        await rt.catalog.load_file(catalog)
        asking = [Query("q", "seeker", "a tent", {}, liked=("tent-1", "tent-2", "no-such-item"))]

        assert await replay_liked(rt, asking, newest) == 2

        events = rt.store.user_events("seeker")
        assert {e.item_id for e in events} == {"tent-1", "tent-2"}
        # Dated years after the history, they would be all the recent feedback there is.
        assert {e.timestamp for e in events} == {newest}
