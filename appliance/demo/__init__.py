"""The demo catalog that ships with the appliance: 9,742 MovieLens movies as JSONL.

Each line is ``{"item_id", "title", "text", "metadata"}``, ready to ingest; ``text`` is a short
sentence meant for embedding. The data is derived from MovieLens ml-latest-small and may be used
for research and non-commercial purposes only; see ``NOTICE.md`` next to this file. Rebuild it
with ``scripts/build_demo_catalog.py``.
"""

from __future__ import annotations

from pathlib import Path

MOVIELENS_CATALOG: Path = Path(__file__).with_name("movielens.jsonl")
"""Path of the MovieLens demo catalog (JSON Lines, one movie per line, sorted by MovieLens id)."""

__all__ = ["MOVIELENS_CATALOG"]
