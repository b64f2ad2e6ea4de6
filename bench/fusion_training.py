"""Cost of one training of the learned fusion, at the most impressions it looks at.

A training reads the labelled impressions among the newest ``fusion.max_training_impressions``
from the database, then fits one set of weights per kind of request and one from all of them,
each checked on the newest fifth first. This times ``FusionLearner.train`` (which does both in
worker threads, as the scheduled learning does) on a DuckDB file holding synthetic impressions
of the shape a busy appliance logs: ``--candidates`` candidates each, proposed by one to all of
``--sources`` sources at ranks up to 20, the first ten shown, the three kinds of request mixed,
and feedback naming the response liking one candidate in twenty and disliking one in a hundred.
They are drawn with a fixed seed, so runs compare.

Meanwhile a task on the event loop wakes every millisecond, as the server's requests would want
to: the longest it waited between two wake-ups is how long the training kept the server from
answering (it holds Python's interpreter lock for parts of its work).

    python bench/fusion_training.py --impressions 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.backends.stores.impressions import (
    Impression,
    ImpressionStore,
    LoggedCandidate,
    SourceRank,
)
from appliance.domain import FeedbackEvent, InteractionType, PreferenceState
from appliance.services.impressions import ImpressionLog
from appliance.services.learning import FusionLearner
from appliance.settings import FusionSettings

SHOWN = 10
DEEPEST_RANK = 20
USERS = 1_000
ITEMS = 50_000
LIKED = 0.05
DISLIKED = 0.01
WRITE_BATCH = 1_000


def synthetic(
    impressions: int, candidates: int, sources: int, seed: int = 0
) -> tuple[list[Impression], list[FeedbackEvent]]:
    """Impressions a second apart, ending now, and the feedback that answers them."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    names = [f"source-{n}" for n in range(sources)]
    start = datetime.now(UTC) - timedelta(seconds=impressions + 60)
    logged, feedback = [], []
    for n in range(impressions):
        at, user = start + timedelta(seconds=n), f"user-{n % USERS}"
        worded, naming = n % 3 > 0, n % 3 == 2  # noqa: PLR2004 - the three kinds in turn
        rows = []
        for position in range(1, candidates + 1):
            item = f"item-{(n * 7919 + position) % ITEMS}"
            proposing = [s for s in names if rng.random() < 1.5 / sources] or [rng.choice(names)]
            ranks = tuple(SourceRank(s, rng.randint(1, DEEPEST_RANK), 0.5) for s in proposing)
            rows.append(LoggedCandidate(item, position, position <= SHOWN, 0.01, ranks))
            draw = rng.random()
            if draw < LIKED + DISLIKED:
                weight = 1.0 if draw < LIKED else -1.0
                interaction = InteractionType.LIKE if weight > 0 else InteractionType.DISLIKE
                answered = at + timedelta(milliseconds=500)
                feedback.append(
                    FeedbackEvent(user, item, interaction, None, weight, answered, f"r{n}")
                )
        logged.append(
            Impression(
                f"r{n}", user, at, "context", worded, "rrf", SHOWN, tuple(rows), None, naming
            )
        )
    return logged, feedback


async def _ticks(gaps: list[float], done: asyncio.Event) -> None:
    last = time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _time(learner: FusionLearner, repeats: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"seconds": [], "cpu_seconds": [], "longest_stall_ms": []}
    for _ in range(repeats):
        gaps: list[float] = []
        done = asyncio.Event()
        ticking = asyncio.create_task(_ticks(gaps, done))
        started, started_cpu = time.perf_counter(), time.process_time()
        state = await learner.train()
        runs["seconds"].append(time.perf_counter() - started)
        runs["cpu_seconds"].append(time.process_time() - started_cpu)
        done.set()
        await ticking
        runs["longest_stall_ms"].append(1000 * max(gaps, default=0.0))
        if state.error:
            raise SystemExit(f"training failed: {state.error}")
    return runs


def main() -> None:
    """Write the impressions, time the training and print each run and the medians as JSON."""
    settings = FusionSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, default=settings.max_training_impressions)
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logged, feedback = synthetic(args.impressions, args.candidates, args.sources)
    with tempfile.TemporaryDirectory(prefix="fusion-training-") as folder:
        store = DuckDBStore(Path(folder) / "appliance.duckdb")
        impressions = ImpressionStore(store.connection())
        try:
            for start in range(0, len(logged), WRITE_BATCH):
                impressions.append(logged[start : start + WRITE_BATCH])
            users = sorted({e.user_id for e in feedback})
            store.record_feedback_batch(feedback, [PreferenceState(u, None) for u in users])
            learner = FusionLearner(ImpressionLog(impressions, settings), settings)
            runs = asyncio.run(_time(learner, args.repeats))
        finally:
            impressions.close()
            store.close()
    report: dict[str, object] = {
        "impressions": args.impressions,
        "candidates": args.candidates,
        "sources": args.sources,
        "feedback_events": len(feedback),
    }
    for name, values in runs.items():
        report[f"{name}_median"] = round(statistics.median(values), 2)
        report[name] = [round(v, 2) for v in values]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
