"""The evaluation dataset readers, on the real development files in ../shared/datasets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.evaluation.datasets import (
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
