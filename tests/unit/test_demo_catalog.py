"""The shipped MovieLens demo catalog is complete, well-formed and reproducible from source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.demo import MOVIELENS_CATALOG

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_demo_catalog.py"
SOURCE = Path(__file__).resolve().parents[3] / "shared/datasets/movielens-small"
MOVIE_COUNT = 9742


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    lines = MOVIELENS_CATALOG.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_catalog_has_one_line_per_movie(records: list[dict[str, Any]]) -> None:
    assert len(records) == MOVIE_COUNT
    ids = [record["item_id"] for record in records]
    assert len(set(ids)) == MOVIE_COUNT


def test_every_item_has_a_title_and_text(records: list[dict[str, Any]]) -> None:
    for record in records:
        assert record["title"].strip(), record
        assert record["text"].strip(), record


def test_the_matrix_is_listed_with_its_year_and_genres(records: list[dict[str, Any]]) -> None:
    matrix = [record for record in records if record["title"] == "The Matrix"]
    assert len(matrix) == 1
    assert matrix[0]["metadata"]["year"] == 1999
    assert "Sci-Fi" in matrix[0]["metadata"]["genres"]


def test_rebuilding_from_source_gives_identical_bytes(tmp_path: Path) -> None:
    out = tmp_path / "movielens.jsonl"
    # The script is a fixed file in this repository, run by the current interpreter.
    subprocess.run(  # noqa: S603
        [sys.executable, str(BUILD_SCRIPT), "--source", str(SOURCE), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == MOVIELENS_CATALOG.read_bytes()
