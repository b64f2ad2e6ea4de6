"""The evaluation harness: the real pipeline, run in-process over queries with ground truth.

The history in the dataset is replayed through the appliance's own feedback path first (an
appliance in use has its users' history), then every query of every task is answered by every
system, and each metric is summarised with a bootstrap interval over queries. Systems are
compared with the vector-only pipeline, and on the tasks whose users have a history with
item-kNN, by paired bootstrap intervals of the difference.

The learned fusion learns from the appliance's own use, so the appliance is used before it is
measured, on the training history only (``simulate_usage``):

1. Each user with enough history keeps its older ratings as history, and its newest ones (a
   fifth, ``USAGE_SHARE``) are cut into ``visits`` consecutive parts. Everything but those parts
   is replayed first, and the collaborative model learns it.
2. Each visit is a real recommendation request of that user that names every source, as the
   fused systems below do, answered as the API answers (``Runtime.cached_recommender``) with
   plain RRF (nothing is learned yet), which logs its impression like any response. The
   training data has no words: a user's odd visits (first, third, ...) have no context, and
   the even ones ask for something like the item the user liked last so far, by its title
   (``NAMING_CONTEXT``), the way people ask for more of what they liked ("something like Billy
   Madison"); the appliance recognises the title as it would in anyone's words.
   The user's next part of ratings is then recorded as feedback naming that response's
   request_id, ratings below the neutral point as negative answers. Visits go round by round,
   every user's first visit before anyone's second, so the newest impressions, which the
   learner holds out to check itself, come last. The collaborative model and the popularity
   ranking are rebuilt from the feedback recorded so far at the start of each round, and at no
   other time: a run's figures do not depend on how fast the machine got through the visits.
3. The fusion is trained once from those impressions, as the scheduled learning would.
   Scheduled learning is off for the whole run: nothing is learned from the evaluation's own
   queries, whose impressions have no answers anyway. After step 2 every training rating has
   been replayed, so every system is measured on the same appliance state as without usage.

The evaluation queries and their targets are never seen by the learner: ratings_train holds no
evaluation target (each user's target and everything after it are removed), the ReDial requests
come from other users, and the tag queries' tags are absent from the item text.
``fused (rrf)`` and ``fused (learned)`` then answer every query, and the learned row carries
the paired bootstrap difference from the RRF one. Only impressions where two or more sources
proposed candidates can teach the fusion anything, and the learner keeps one set of weights
per kind of request: the wordless visits teach requests without words (leave-last-out), the
naming ones teach requests that name items (most ReDial requests, and every "more like this"
request, which names its item). Nothing teaches requests whose words name no item (the tag
queries, and ReDial requests naming no movie) weights of their own: they borrow the weights
learned from all the visits together, as an appliance does for any kind of request its users
have not yet answered enough of.

Besides the dataset's tasks, "more like this" asks, for each user of the hold-out task, for
more like the item they liked last in the history (``GET /items/{item_id}/similar`` for that
user), and counts a hit when the held-out item is among the first 10; item-kNN answers it with
that item's cosine neighbours. "basket" asks the same for the three items each user liked last,
named by id (``like_items`` of ``POST /recommendations``, as a shop's basket or a visit's pages
would be); item-kNN answers it with their summed neighbours.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import anyio.to_thread
import msgspec
import numpy as np
import scipy.sparse

from appliance.backends.registry import build_reranker
from appliance.domain import InteractionType
from appliance.evaluation.datasets import (
    Interaction,
    Query,
    like_latest,
    read_leave_last_out,
    read_redial_queries,
    read_tag_queries,
)
from appliance.evaluation.metrics import (
    Interval,
    bootstrap_interval,
    hit_rate_at_k,
    ndcg_at_k,
    paired_difference,
    precision_at_k,
    recall_at_k,
)
from appliance.services.collaborative import ItemSimilarity, cooccurrence
from appliance.services.feedback import FeedbackInput
from appliance.services.learning import FusionMode, FusionState
from appliance.services.recommend import RecommendationQuery, RecommendationService
from appliance.services.reranking import RerankStage
from appliance.services.runtime import Runtime, open_runtime
from appliance.settings import Settings

#: The system every other one is compared with: vector search over the embedded context alone.
BASELINE = "vector-only"
#: The classic collaborative-filtering baseline, the second reference of the comparisons.
ITEM_KNN = "item-kNN"
#: Systems every other one is compared with, by paired differences, where they ran.
REFERENCES = (BASELINE, ITEM_KNN)
VECTOR = "vector"
#: Every candidate source, each asked by name, fused by plain reciprocal rank.
FUSED = "fused (rrf)"
#: Every candidate source, each asked by name, fused with the weights learned from the
#: simulated usage.
FUSED_LEARNED = "fused (learned)"
#: Share of each user's newest training ratings that answer their simulated visits.
USAGE_SHARE = 0.2
#: Users with fewer training ratings make no simulated visits.
USAGE_MIN_HISTORY = 10
#: Items shown per simulated visit.
USAGE_TOP_K = 10
#: What a simulated visit that names an item asks for.
NAMING_CONTEXT = "Something like {title}"
TAG_METRICS = (("NDCG", 10), ("P", 5), ("R", 10))
#: One held-back item per user: did it make the top 10, and how high.
HOLDOUT_METRICS = (("HR", 10), ("NDCG", 10))
LEAVE_LAST_OUT = "leave-last-out"
#: More like the item a user liked last (``GET /items/{item_id}/similar``), judged by the item
#: they went on to like.
MORE_LIKE_THIS = "more like this"
#: What goes with the items a user liked last (``like_items``), judged by the item they went on
#: to like: a basket, or the pages of a visit.
BASKET = "basket"
#: How many of their latest liked items a basket query names.
BASKET_SIZE = 3
_METRICS: dict[str, Callable[..., float]] = {
    "NDCG": ndcg_at_k,
    "P": precision_at_k,
    "R": recall_at_k,
    "HR": hit_rate_at_k,
}


@dataclass(frozen=True, slots=True)
class Task:
    """A set of queries and the metrics they are scored with."""

    name: str
    queries: list[Query]
    metrics: tuple[tuple[str, int], ...]
    """(metric, k) pairs, e.g. ("NDCG", 10)."""
    personal: bool = False
    """Whether the queries come from users with a history (what they rated or said they liked)."""

    @property
    def depth(self) -> int:
        """How many results each query needs."""
        return max(k for _, k in self.metrics)

    @property
    def has_context(self) -> bool:
        """Whether the queries carry a request in words (leave-last-out ones do not)."""
        return any(q.context for q in self.queries)


class Progress(Protocol):
    """Follows an evaluation."""

    def total(self, queries: int) -> None:
        """Hear how many queries will be answered in all."""
        ...

    def advance(self, queries: int) -> None:
        """Hear that this many more queries were answered."""
        ...


class System(Protocol):
    """Something that ranks items for a query."""

    name: str
    needs_context: bool
    """Whether it only makes sense for queries with words (it then skips the others)."""
    needs_history: bool
    """Whether it only makes sense for users with a history (it then skips other tasks)."""

    async def rank(self, query: Query, k: int) -> list[str]:
        """Return up to ``k`` item ids, best first."""
        ...


class Pipeline:
    """The appliance's own pipeline: some or all of its sources, fused, re-ranked or not."""

    def __init__(
        self,
        recommender: RecommendationService,
        name: str,
        *,
        sources: frozenset[str] | None = None,
        fusion: FusionMode | None = None,
        rerank: bool = False,
    ) -> None:
        self.name = name
        self._recommender = recommender
        self.sources = sources
        self.fusion = fusion
        self._rerank = rerank
        # A re-ranker judges items against the request; without one it has nothing to add.
        self.needs_context = rerank
        self.needs_history = False
        self.rerank_outcomes: Counter[str] = Counter()
        """What became of the re-rank stage on each query of the current task."""

    async def rank(self, query: Query, k: int) -> list[str]:
        """Ask the recommendation service, leaving out what the user has already seen."""
        result = await self._recommender.recommend(
            RecommendationQuery(
                user_id=query.user_id,
                context=query.context,
                top_k=k,
                rerank=self._rerank,
                sources=self.sources,
                fusion=self.fusion,
                like_items=query.like,
            )
        )
        self.rerank_outcomes[result.rerank_status] += 1
        return [r.item.item_id for r in result.recommendations]


def pipelines(recommender: RecommendationService) -> list[Pipeline]:
    """Vector search alone (the baseline), every other source alone, and all of them fused.

    Every pipeline names its sources. All of them are fused by plain RRF and by the learned
    weights (last).
    """
    names = recommender.source_names
    alone = [
        Pipeline(
            recommender,
            BASELINE if name == VECTOR else f"{name} only",
            sources=frozenset({name}),
        )
        for name in names
    ]
    if len(names) == 1:
        return alone
    return [
        *alone,
        Pipeline(recommender, FUSED, sources=frozenset(names), fusion=FusionMode.RRF),
        Pipeline(recommender, FUSED_LEARNED, sources=frozenset(names), fusion=FusionMode.LEARNED),
    ]


class MostPopular:
    """Items with the most interactions in the replayed history, minus what the user saw."""

    name = "most-popular"
    needs_context = False
    needs_history = False

    def __init__(self, runtime: Runtime, history: Iterable[Interaction]) -> None:
        self._runtime = runtime
        counts = Counter(i.item_id for i in history)
        self._ranking = [item for item, _ in counts.most_common()]

    async def rank(self, query: Query, k: int) -> list[str]:
        """Return the most popular items the user has not interacted with."""
        seen = await anyio.to_thread.run_sync(self._runtime.store.seen_item_ids, query.user_id)
        return [i for i in self._ranking if i not in seen][:k]


class ItemKNN:
    """Item-based collaborative filtering, the classic baseline.

    Cosine similarity of who interacted with what, each item's ``neighbours`` most similar
    items kept; a user's score for an item is the sum of its similarities to the items of
    their history (or, asked about items, the sum of its similarities to those), minus what
    they have seen.
    """

    name = ITEM_KNN
    needs_context = False
    needs_history = True

    def __init__(
        self, runtime: Runtime, history: Iterable[Interaction], *, neighbours: int = 100
    ) -> None:
        self._runtime = runtime
        self._model = cosine_neighbours({(i.user_id, i.item_id) for i in history}, neighbours)

    async def rank(self, query: Query, k: int) -> list[str]:
        """Return the items most similar to the user's history, or to the items asked about."""
        seen = await anyio.to_thread.run_sync(self._runtime.store.seen_item_ids, query.user_id)
        if not query.like:
            # In order: a set's order changes from process to process, and with it how the
            # similarities are summed, which decides near ties.
            return [i for i, _ in self._model.neighbours(dict.fromkeys(sorted(seen), 1.0), k)]
        ranked = self._model.neighbours(dict.fromkeys(query.like, 1.0), k + len(seen))
        return [i for i, _ in ranked if i not in seen][:k]


def cosine_neighbours(pairs: Iterable[tuple[str, str]], neighbours: int) -> ItemSimilarity:
    """Item-to-item cosine similarity of binary (user, item) interactions, top ``neighbours``."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    rows, cols = [], []
    # In order: which of two equally similar items is kept among the ``neighbours`` follows
    # their positions, and a set's order changes from process to process.
    for user, item in sorted(pairs):
        rows.append(users.setdefault(user, len(users)))
        cols.append(items.setdefault(item, len(items)))
    x = scipy.sparse.csc_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    return ItemSimilarity(
        list(items),
        cooccurrence(x, neighbours),
        pairs=len(rows),
        users=len(users),
        build_seconds=0.0,
    )


@dataclass(slots=True)
class Result:
    """One system on one task."""

    task: str
    system: str
    scores: dict[str, list[float]]
    """Metric label ("NDCG@10") -> one value per query, in query order."""
    latencies_ms: list[float] = field(default_factory=list)
    rerank_outcomes: dict[str, int] = field(default_factory=dict)
    """For re-ranking systems: how often the stage ran, timed out or failed."""

    def interval(self, label: str) -> Interval:
        """Return the bootstrap interval of a metric's mean over queries."""
        return bootstrap_interval(self.scores[label])

    @property
    def latency_p50_ms(self) -> float:
        """Median time to answer one query."""
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def latency_p95_ms(self) -> float:
        """95th percentile of the time to answer one query."""
        if len(self.latencies_ms) < 2:  # noqa: PLR2004 - quantiles needs two points
            return self.latency_p50_ms
        return statistics.quantiles(self.latencies_ms, n=20)[-1]


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What the simulated usage before the evaluation did and taught (``simulate_usage``)."""

    visits: int
    """Recommendation requests made, each logged as an impression."""
    answers: int
    """Feedback events recorded as answers to them."""
    fusion: FusionState = field(default_factory=FusionState)
    """The learned fusion after training on those impressions."""
    named: int = 0
    """Requests in which the appliance recognised the item a naming visit asked about."""

    def to_json(self) -> dict[str, object]:
        """Return the summary as plain values."""
        return {
            "visits": self.visits,
            "answers": self.answers,
            "named": self.named,
            "fusion": {
                kind: {
                    "status": state.status.value,
                    "detail": state.detail,
                    "weights": state.weights,
                    "learned_weights": None if state.fit is None else state.fit.weights,
                }
                for kind, state in self.fusion.kinds.items()
            },
        }


@dataclass(slots=True)
class Report:
    """Every system on every task."""

    results: list[Result]
    references: dict[str, str] = field(default_factory=dict)
    """System -> another system it is compared with besides ``REFERENCES``, pairwise, metric
    by metric (the learned fusion with plain RRF)."""
    usage: UsageSummary | None = None

    def difference(self, result: Result, label: str, reference: str = BASELINE) -> Interval | None:
        """Paired interval of ``result`` minus ``reference`` on the same task and metric.

        ``None`` for the reference itself, or when the reference did not run on that task.
        """
        if result.system == reference:
            return None
        base = next(
            (r for r in self.results if r.task == result.task and r.system == reference), None
        )
        return None if base is None else paired_difference(result.scores[label], base.scores[label])

    def comparisons(self) -> list[tuple[Result, str, str, Interval]]:
        """Each result that has a reference: (result, reference, metric, paired difference)."""
        found = []
        for result in self.results:
            reference = self.references.get(result.system)
            if reference is None:
                continue
            for label in result.scores:
                diff = self.difference(result, label, reference)
                if diff is not None:
                    found.append((result, reference, label, diff))
        return found

    def notes(self) -> list[str]:
        """Return the paired differences from the references, and what the usage taught."""
        lines = [
            f"{r.task} / {r.system} minus {reference}, {label}: {_signed(diff)}"
            for r, reference, label, diff in self.comparisons()
        ]
        if self.usage is not None:
            lines.append(
                f"learned fusion, after {self.usage.visits} simulated visits ({self.usage.named} "
                f"of them naming an item) answered by {self.usage.answers} ratings:"
            )
            lines += [
                f"  {kind} requests: {state.status} ({state.detail})"
                for kind, state in self.usage.fusion.kinds.items()
            ]
        return lines

    def to_markdown(self) -> str:
        """Return one table row per task and system, each metric as mean [95% interval]."""
        labels = list(dict.fromkeys(label for r in self.results for label in r.scores))
        lines = [
            "| task | system | " + " | ".join(labels) + " | ms/query p50 / p95 |",
            "| --- | --- | " + " | ".join("---" for _ in labels) + " | --- |",
        ]
        for r in self.results:
            cells = [str(r.interval(label)) if label in r.scores else "" for label in labels]
            latency = f"{r.latency_p50_ms:.0f} / {r.latency_p95_ms:.0f}"
            lines.append(f"| {r.task} | {r.system} | " + " | ".join(cells) + f" | {latency} |")
        return "\n".join(lines) + "\n"

    def differences_to_markdown(self) -> str:
        """Return each system's paired difference from every reference on each task.

        One row per system and task, on the task's first metric (the one its queries are
        chiefly judged by), each difference as mean [95% interval]; then, after a blank line,
        the systems compared with a reference of their own (``references``), metric by metric.
        """
        lines = [
            "| task | system | metric | " + " | ".join(f"minus {r}" for r in REFERENCES) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in REFERENCES) + " |",
        ]
        for r in self.results:
            label = next(iter(r.scores))
            diffs = [self.difference(r, label, reference) for reference in REFERENCES]
            if all(d is None for d in diffs):
                continue
            cells = ["" if d is None else _signed(d) for d in diffs]
            lines.append(f"| {r.task} | {r.system} | {label} | " + " | ".join(cells) + " |")
        paired = self.comparisons()
        if paired:
            lines += [
                "",
                "| task | system | minus | metric | paired difference [95% interval] |",
                "| --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {r.task} | {r.system} | {reference} | {label} | {_signed(diff)} |"
                for r, reference, label, diff in paired
            ]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        """Return the report as plain values."""
        rows = []
        for r in self.results:
            metrics = {}
            for label in r.scores:
                interval = r.interval(label)
                own = self.references.get(r.system)
                minus = {
                    reference: {"mean": diff.mean, "ci95": [diff.low, diff.high]}
                    for reference in (*REFERENCES, *(() if own is None else (own,)))
                    if (diff := self.difference(r, label, reference)) is not None
                }
                metrics[label] = {
                    "mean": interval.mean,
                    "ci95": [interval.low, interval.high],
                    "n": interval.n,
                    **({"minus": minus} if minus else {}),
                }
            rows.append(
                {
                    "task": r.task,
                    "system": r.system,
                    "latency_p50_ms": r.latency_p50_ms,
                    "latency_p95_ms": r.latency_p95_ms,
                    "rerank_outcomes": r.rerank_outcomes,
                    "metrics": metrics,
                }
            )
        return {
            "references": list(REFERENCES),
            "results": rows,
            **({} if self.usage is None else {"usage": self.usage.to_json()}),
        }


@dataclass(frozen=True, slots=True)
class Visit:
    """One simulated recommendation request, and the ratings that answer it."""

    answers: Sequence[Interaction]
    """One user's ratings, in time order."""
    naming: bool
    """Whether the request names the item the user liked last (``NAMING_CONTEXT``)."""


def usage_visits(
    history: Iterable[Interaction], visits: int
) -> tuple[list[Interaction], list[Visit]]:
    """Cut the history into what is replayed first and the simulated visits.

    Each user with at least ``USAGE_MIN_HISTORY`` ratings keeps the older ones as history; the
    newest ``USAGE_SHARE`` of them (at least one per visit) are cut into ``visits`` consecutive
    parts, one per visit. A user's second, fourth, ... visits name an item.

    Returns:
        The history to replay first, and the visits: every user's first, then every user's
        second, and so on.

    """
    by_user: dict[str, list[Interaction]] = {}
    for interaction in history:
        by_user.setdefault(interaction.user_id, []).append(interaction)
    past: list[Interaction] = []
    rounds: list[list[Visit]] = [[] for _ in range(visits)]
    for user_id in sorted(by_user):
        events = sorted(by_user[user_id], key=lambda i: (i.timestamp, i.item_id))
        if visits < 1 or len(events) < USAGE_MIN_HISTORY:
            past.extend(events)
            continue
        answered = max(visits, round(len(events) * USAGE_SHARE))
        past.extend(events[:-answered])
        tail = events[-answered:]
        for n in range(visits):
            part = tail[n * answered // visits : (n + 1) * answered // visits]
            rounds[n].append(Visit(part, naming=n % 2 == 1))
    return past, [visit for visits_of_round in rounds for visit in visits_of_round]


async def simulate_usage(runtime: Runtime, visits: Sequence[Visit]) -> UsageSummary:
    """Make each visit's request, then record its answers as feedback naming the response.

    See the module docstring for the protocol. A naming visit of a user who has liked nothing
    yet asks without words. Answers about items missing from the catalog are skipped. The
    runtime's collaborative refresher should be held off (``run`` does): the visits rebuild the
    model themselves, at the start of each round.

    Returns:
        What was asked and recorded; the fusion is not trained yet.

    """
    catalog = set((await anyio.to_thread.run_sync(runtime.store.content_hashes)).keys())
    every = frozenset(runtime.recommender.source_names)
    recorded = named = 0
    round_users: set[str] = set()
    for visit in visits:
        user_id = visit.answers[0].user_id
        if not round_users or user_id in round_users:
            # A new round of visits: popularity and the collaborative model as of the feedback
            # recorded so far.
            await runtime.collaborative.rebuild()
            runtime.popularity.forget()
            round_users.clear()
        round_users.add(user_id)
        context = await _naming_context(runtime, user_id) if visit.naming else ""
        shown = await runtime.cached_recommender.recommend(
            RecommendationQuery(user_id=user_id, context=context, top_k=USAGE_TOP_K, sources=every)
        )
        named += shown.names_items
        events = [
            FeedbackInput(
                i.user_id,
                i.item_id,
                InteractionType.RATING,
                i.rating,
                i.timestamp,
                request_id=shown.request_id,
            )
            for i in visit.answers
            if i.item_id in catalog
        ]
        recorded += await runtime.feedback.import_events(events)
    return UsageSummary(len(visits), recorded, named=named)


async def _naming_context(runtime: Runtime, user_id: str) -> str:
    """Ask for something like the item the user liked last; nothing when they liked none."""
    history = await anyio.to_thread.run_sync(runtime.store.user_history, user_id)
    liked = [h for h in history if h.weight > 0]
    if not liked:
        return ""
    last = max(liked, key=lambda h: (h.timestamp, h.item_id)).item_id
    items = await anyio.to_thread.run_sync(runtime.store.get_items, [last])
    return NAMING_CONTEXT.format(title=items[last].item.title) if last in items else ""


async def replay(
    runtime: Runtime, history: Iterable[Interaction], *, batch_size: int = 50_000
) -> int:
    """Replay historical ratings as feedback, with their own timestamps.

    Ratings of items that are not in the catalog are skipped (and counted as not replayed).

    Returns:
        How many events were stored.

    """
    catalog = set((await anyio.to_thread.run_sync(runtime.store.content_hashes)).keys())
    events = [
        FeedbackInput(i.user_id, i.item_id, InteractionType.RATING, i.rating, i.timestamp)
        for i in history
        if i.item_id in catalog
    ]
    stored = 0
    for start in range(0, len(events), batch_size):
        stored += await runtime.feedback.import_events(events[start : start + batch_size])
    return stored


async def replay_liked(
    runtime: Runtime, queries: Sequence[Query], at: datetime | None = None
) -> int:
    """Record what each query's user said they liked, as likes, before they ask.

    Args:
        runtime: The appliance.
        queries: The queries whose users' likes are recorded.
        at: When the likes happened (default now). The harness passes the history's newest
            time: likes dated years after the replayed history would be all the recent
            feedback there is, and the popularity source's recency would rank by them alone.

    Returns:
        How many likes were stored.

    """
    catalog = set((await anyio.to_thread.run_sync(runtime.store.content_hashes)).keys())
    events = [
        FeedbackInput(q.user_id, item, InteractionType.LIKE, timestamp=at)
        for q in queries
        for item in q.liked
        if item in catalog
    ]
    return await runtime.feedback.import_events(events)


async def evaluate(
    tasks: Sequence[Task],
    systems: Sequence[System],
    progress: Progress | None = None,
) -> Report:
    """Answer every query of every task with every system and score the answers.

    Args:
        tasks: The tasks; their users' histories must already be replayed.
        systems: What to compare.
        progress: Told how many queries there are, then of each answered one.

    Returns:
        One result per task and system.

    """
    if progress is not None:
        progress.total(query_count(tasks, systems))
    results = []
    for task in tasks:
        for system in systems:
            if not _applies(system, task):
                continue
            result = Result(task.name, system.name, {f"{m}@{k}": [] for m, k in task.metrics})
            if isinstance(system, Pipeline):
                system.rerank_outcomes.clear()
            for query in task.queries:
                started = time.perf_counter()
                ranked = await system.rank(query, task.depth)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                for metric, k in task.metrics:
                    result.scores[f"{metric}@{k}"].append(
                        _METRICS[metric](ranked, query.relevant, k)
                    )
                if progress is not None:
                    progress.advance(1)
            if isinstance(system, Pipeline) and system.needs_context:
                result.rerank_outcomes = dict(system.rerank_outcomes)
            results.append(result)
    return Report(results)


async def run(
    settings: Settings,
    catalog: Path,
    history: Sequence[Interaction],
    tasks: Sequence[Task],
    *,
    rerankers: Sequence[str] = (),
    progress: Progress | None = None,
    visits: int = 4,
) -> Report:
    """Build an appliance from a catalog file and a history, use it, then evaluate it.

    Args:
        settings: The configuration to evaluate; its data directory should be empty or
            disposable, since the history is replayed into it.
        catalog: Items in the wire format (JSON Lines).
        history: Interactions replayed as feedback before any query.
        tasks: What to measure.
        rerankers: Re-ranker kinds to compare (``llamacpp``, ``openai``), each on the pipeline's
            candidates, on the tasks whose queries have words; built and limited by
            ``settings.reranker``.
        progress: Told how many queries there are, then of each answered one.
        visits: Simulated visits per user before the evaluation, from which the fusion
            learns (see the module docstring); 0 replays the history alone.

    Returns:
        Most-popular, each candidate source alone, all of them fused by RRF and by the learned
        weights, and the latter + each re-ranker.

    """
    # Learning happens once, after the simulated usage: never from the evaluation's queries.
    # The popularity ranking and the collaborative model are refreshed at set points (each
    # round of visits, and before the queries) rather than by the clock: by the clock, the
    # feedback they had seen depended on how fast the machine ran, and with it every figure
    # they touch (popularity alone on the tag queries: NDCG@10 0.007 in one run, 0.036 in the
    # next of the same code).
    settings = msgspec.structs.replace(
        settings,
        fusion=msgspec.structs.replace(settings.fusion, train_interval_seconds=0.0),
        recommend=msgspec.structs.replace(settings.recommend, popularity_refresh_seconds=math.inf),
        collaborative=msgspec.structs.replace(settings.collaborative, refresh_seconds=math.inf),
    )
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(open_runtime(settings))
        stages = []
        for kind in rerankers:
            config = msgspec.structs.replace(settings.reranker, kind=kind)
            reranker = await anyio.to_thread.run_sync(
                build_reranker, msgspec.structs.replace(settings, reranker=config)
            )
            stack.push_async_callback(reranker.close)
            stages.append(RerankStage(reranker, config))
        await runtime.catalog.load_file(catalog)
        items = await anyio.to_thread.run_sync(runtime.store.content_hashes)
        tasks = [_askable(task, items) for task in tasks]
        past, simulated = usage_visits(history, visits)
        await replay(runtime, past)
        usage = await simulate_usage(runtime, simulated)
        usage = replace(usage, fusion=await runtime.fusion.train())
        newest = max((i.timestamp for i in history), default=None)
        for task in tasks:
            await replay_liked(runtime, task.queries, newest)
        # Models learnt from feedback must have seen the whole replay before the first query.
        await runtime.collaborative.rebuild()
        runtime.popularity.forget()
        default = pipelines(runtime.recommender)[-1]
        systems: list[System] = [
            MostPopular(runtime, history),
            ItemKNN(runtime, history),
            *pipelines(runtime.recommender),
            *(
                Pipeline(
                    runtime.recommender.with_rerank(stage),
                    f"{default.name} + {stage.backend}",
                    sources=default.sources,
                    fusion=default.fusion,
                    rerank=True,
                )
                for stage in stages
            ),
        ]
        report = await evaluate(tasks, systems, progress)
        report.references = {FUSED_LEARNED: FUSED}
        report.usage = usage
        return report


def query_count(tasks: Sequence[Task], systems: Sequence[System]) -> int:
    """How many queries ``evaluate`` answers: every task's by every system that applies."""
    return sum(len(t.queries) for t in tasks for s in systems if _applies(s, t))


def _askable(task: Task, catalog: Collection[str]) -> Task:
    """Leave out the queries asking about items the catalog lacks: none can ask it."""
    kept = [q for q in task.queries if all(i in catalog for i in q.like)]
    return task if len(kept) == len(task.queries) else replace(task, queries=kept)


def _applies(system: System, task: Task) -> bool:
    return (task.has_context or not system.needs_context) and (
        task.personal or not system.needs_history
    )


def _signed(interval: Interval) -> str:
    return f"{interval.mean:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def dataset_tasks(dataset: Path, split: str = "dev") -> list[Task]:
    """Return the tasks of the bundled dataset folder (``eval/`` and ``movielens-small/``)."""
    folder = dataset / "eval"
    return [
        Task(
            "tags",
            read_tag_queries(folder / f"ml_tag_queries_{split}.jsonl"),
            TAG_METRICS,
        ),
        Task(
            "tags (sentence)",
            read_tag_queries(folder / f"ml_tag_queries_{split}.jsonl", sentence=True),
            TAG_METRICS,
        ),
        Task(
            "redial",
            read_redial_queries(folder / f"redial_queries_{split}.jsonl"),
            (("R", 10), ("R", 50), ("NDCG", 10)),
            personal=True,
        ),
        Task(
            LEAVE_LAST_OUT,
            read_leave_last_out(folder / f"ml_loo_{split}_targets.csv"),
            HOLDOUT_METRICS,
            personal=True,
        ),
    ]


def holdout_task(queries: list[Query]) -> Task:
    """Return the task of an operator's own time-split feedback log."""
    return Task("holdout", queries, HOLDOUT_METRICS, personal=True)


def more_like_this_task(holdout: Task, history: Iterable[Interaction]) -> Task:
    """Return "more like this" on a hold-out task's users (see ``like_latest``)."""
    return Task(
        MORE_LIKE_THIS, like_latest(holdout.queries, history), HOLDOUT_METRICS, personal=True
    )


def basket_task(holdout: Task, history: Iterable[Interaction]) -> Task:
    """Return what goes with a hold-out task's users' latest likes (see ``like_latest``)."""
    return Task(
        BASKET,
        like_latest(holdout.queries, history, count=BASKET_SIZE),
        HOLDOUT_METRICS,
        personal=True,
    )
