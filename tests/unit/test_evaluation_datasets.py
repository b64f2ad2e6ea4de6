"""The evaluation dataset readers, on the real development files in ../shared/datasets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.evaluation.datasets import (
    Interaction,
    Query,
    like_latest,
    read_leave_last_out,
    read_ratings,
    read_redial_queries,
    read_tag_queries,
)

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
EVAL = DATASETS / "eval"


def test_tag_queries() -> None:
    queries = read_tag_queries(EVAL / "ml_tag_queries_dev.jsonl")
    assert len(queries) == 64
    first = queries[0]
    assert first.context == "adolescence"
    assert first.relevant["movie_562"] == 1.0
    assert len(first.relevant) == 11
    assert first.liked == ()
    assert len({q.user_id for q in queries}) == 64
    sentences = read_tag_queries(EVAL / "ml_tag_queries_dev.jsonl", sentence=True)
    assert sentences[0].context == "Recommend movies for: adolescence"


def test_redial_queries_keep_missing_movies_as_misses() -> None:
    queries = read_redial_queries(EVAL / "redial_queries_dev.jsonl")
    assert len(queries) == 442
    horror = queries[0]
    assert horror.context.startswith("Hello, I am looking for some movie recommendations.")
    assert horror.relevant == {"movie_103688": 1.0}
    psychological = next(q for q in queries if q.query_id == "redial_20277")
    # The liked movie is not in MovieLens, so there is no history to replay.
    assert psychological.liked == ()
    assert psychological.relevant == {"movie_114713": 1.0, "movie_1347": 1.0}
    placeholders = [i for q in queries for i in q.relevant if i.startswith("redial-only-")]
    assert placeholders, "some recommended movies are not in MovieLens and must count as misses"


def test_leave_last_out_targets() -> None:
    queries = read_leave_last_out(EVAL / "ml_loo_dev_targets.csv")
    assert len(queries) == 259
    assert queries[0].user_id == "ml-1"
    assert queries[0].relevant == {"movie_2492": 1.0}
    assert all(q.context == "" for q in queries)


def test_the_latest_liked_items_of_each_leave_last_out_user() -> None:
    holdout = read_leave_last_out(EVAL / "ml_loo_dev_targets.csv")
    history = list(read_ratings(DATASETS / "movielens-small" / "ratings_train.csv"))

    queries = like_latest(holdout, history)
    baskets = like_latest(holdout, history, count=3)

    # Every one of them liked a movie before their held-back one; all but two liked three.
    assert len(queries) == len(holdout)
    assert len(baskets) == len(holdout) - 2
    held_back = {q.user_id: q for q in holdout}
    for query in (*queries, *baskets):
        assert (query.relevant, query.context) == (held_back[query.user_id].relevant, "")
        assert not set(query.like) & set(query.relevant)
    latest: dict[str, list[Interaction]] = {user_id: [] for user_id in held_back}
    for i in sorted(history, key=lambda i: (i.timestamp, i.item_id)):
        if i.user_id in latest and i.rating >= 4.0:
            latest[i.user_id].append(i)
    for asked in queries:
        assert asked.like == (latest[asked.user_id][-1].item_id,)
    for basket in baskets:
        assert basket.like == tuple(i.item_id for i in latest[basket.user_id][-3:])
    assert {q.user_id for q in holdout} - {q.user_id for q in baskets} == {
        user_id for user_id, liked in latest.items() if len(liked) < 3
    }


def test_users_who_liked_too_few_items_are_left_out() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    history = [
        Interaction("a", "x", 4.0, t),
        Interaction("a", "z", 4.5, t.replace(year=2026)),
        Interaction("a", "y", 5.0, t.replace(year=2026)),  # the same moment as z: ids decide
        Interaction("a", "w", 3.5, t.replace(year=2027)),  # newest, but not liked
        Interaction("b", "x", 3.0, t),
    ]
    holdout = [Query(f"q-{u}", u, "", {"v": 1.0}) for u in ("a", "b")]

    (only,) = like_latest(holdout, history)
    (basket,) = like_latest(holdout, history, count=3)

    assert (only.query_id, only.user_id, only.like) == ("like-q-a", "a", ("z",))
    # Oldest first; b liked nothing, so has no basket either.
    assert (basket.user_id, basket.like) == ("a", ("x", "y", "z"))
    assert like_latest(holdout, history, count=4) == []


def test_an_item_liked_twice_counts_once_in_a_basket() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    history = [
        Interaction("a", "x", 4.0, t),
        Interaction("a", "y", 4.0, t.replace(year=2026)),
        Interaction("a", "x", 5.0, t.replace(year=2027)),
    ]
    holdout = [Query("q-a", "a", "", {"v": 1.0})]

    (basket,) = like_latest(holdout, history, count=2)

    assert basket.like == ("y", "x")
    assert like_latest(holdout, history, count=3) == []


def test_ratings_stream() -> None:
    ratings = read_ratings(DATASETS / "movielens-small" / "ratings_train.csv")
    first = next(ratings)
    assert first.user_id.startswith("ml-")
    assert first.item_id.startswith("movie_")
    assert 0.5 <= first.rating <= 5.0
    assert first.timestamp.tzinfo is UTC
    assert first.timestamp > datetime(1995, 1, 1, tzinfo=UTC)
    assert sum(1 for _ in ratings) + 1 == 98_471


def test_a_malformed_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tags.jsonl"
    path.write_text(
        '{"query_id": "a", "query": "x", "query_nl": "y", "relevant": {}}\n{"query_id": 1}\n'
    )
    with pytest.raises(ValueError, match="line 2"):
        read_tag_queries(path)
