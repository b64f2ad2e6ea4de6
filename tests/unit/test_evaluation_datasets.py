"""The evaluation dataset readers, on the real development files in ../shared/datasets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.evaluation.datasets import (
    Interaction,
    Query,
    more_like_latest,
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


def test_more_like_the_latest_liked_item_of_each_leave_last_out_user() -> None:
    holdout = read_leave_last_out(EVAL / "ml_loo_dev_targets.csv")
    history = list(read_ratings(DATASETS / "movielens-small" / "ratings_train.csv"))

    queries = more_like_latest(holdout, history)

    # Every one of them liked something before their held-back movie.
    assert len(queries) == len(holdout)
    for asked, held_back in zip(queries, holdout, strict=True):
        assert (asked.user_id, asked.relevant, asked.context) == (
            held_back.user_id,
            held_back.relevant,
            "",
        )
        liked = [i for i in history if i.user_id == asked.user_id and i.rating >= 4.0]
        latest = max(liked, key=lambda i: (i.timestamp, i.item_id))
        assert asked.like == latest.item_id
        assert asked.like not in asked.relevant


def test_more_like_leaves_out_users_who_liked_nothing() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    history = [
        Interaction("a", "x", 4.0, t),
        Interaction("a", "z", 4.5, t.replace(year=2026)),
        Interaction("a", "y", 5.0, t.replace(year=2026)),  # the same moment as z: ids decide
        Interaction("a", "w", 3.5, t.replace(year=2027)),  # newest, but not liked
        Interaction("b", "x", 3.0, t),
    ]
    holdout = [Query(f"q-{u}", u, "", {"v": 1.0}) for u in ("a", "b")]

    (only,) = more_like_latest(holdout, history)

    assert (only.query_id, only.user_id, only.like) == ("like-q-a", "a", "z")


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
