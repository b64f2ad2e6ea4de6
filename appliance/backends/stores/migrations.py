"""Numbered schema migrations, applied in order at start-up and recorded in the database.

Append a new ``Migration`` to ``MIGRATIONS`` for every schema change; never edit one that has
shipped, because databases in the field have already applied it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change."""

    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "m001_initial",
        """
        CREATE TABLE items (
            item_id VARCHAR PRIMARY KEY,
            title VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            metadata JSON NOT NULL,
            content_hash VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE SEQUENCE feedback_event_id;
        CREATE TABLE feedback (
            event_id BIGINT PRIMARY KEY DEFAULT nextval('feedback_event_id'),
            user_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            interaction_type VARCHAR NOT NULL,
            rating DOUBLE,
            weight DOUBLE NOT NULL,
            event_time TIMESTAMP NOT NULL,
            request_id VARCHAR,
            received_at TIMESTAMP NOT NULL
        );
        CREATE TABLE users (
            user_id VARCHAR PRIMARY KEY,
            preference DOUBLE[],
            weight_sum DOUBLE NOT NULL,
            anchor DOUBLE,
            feedback_count BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL,
            vector_updated_at TIMESTAMP
        );
        """,
    ),
    Migration(
        2,
        "m002_impressions",
        """
        CREATE TABLE impressions (
            request_id VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            strategy VARCHAR NOT NULL,
            has_context BOOLEAN NOT NULL,
            fusion VARCHAR NOT NULL,
            top_k INTEGER NOT NULL
        );
        CREATE TABLE impression_candidates (
            request_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            shown BOOLEAN NOT NULL,
            fused_score DOUBLE NOT NULL,
            sources STRUCT(source VARCHAR, rank INTEGER, score DOUBLE)[] NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "m003_shared_impression_candidates",
        # An answer reused from the result cache repeats the candidates of the answer it reuses:
        # its impression names that one instead of storing the same rows again.
        """
        ALTER TABLE impressions ADD COLUMN candidates_of VARCHAR;
        """,
    ),
    Migration(
        4,
        "m004_impressions_names_items",
        # Requests that name catalog items are fused with weights of their own. Impressions
        # logged before this column existed read as naming none.
        """
        ALTER TABLE impressions ADD COLUMN names_items BOOLEAN DEFAULT false;
        """,
    ),
    Migration(
        5,
        "m005_preferences_folded",
        # Users' preference states are written in bulk every so often, not with each event: the
        # stored states hold the events up to this id, the later ones are folded in again after
        # a crash. Until now every state was written with its event, so all are folded in.
        """
        CREATE TABLE preferences_folded (through_event_id BIGINT NOT NULL);
        INSERT INTO preferences_folded SELECT coalesce(max(event_id), 0) FROM feedback;
        """,
    ),
)
