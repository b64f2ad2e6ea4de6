"""Helpers for tests that look at the database underneath the store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.backends.stores.migrations import MIGRATIONS


def written_users(store: DuckDBStore) -> dict[str, int]:
    """The users table as written (not as the store answers), user id to feedback count."""
    reader = store.connection()
    try:
        return dict(reader.execute("SELECT user_id, feedback_count FROM users").fetchall())
    finally:
        reader.close()


def database_at(path: Path, version: int, applied_at: datetime) -> duckdb.DuckDBPyConnection:
    """Open a new database file as the appliance left it at schema ``version``."""
    db = duckdb.connect(str(path))
    db.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
    )
    for migration in MIGRATIONS[:version]:
        db.execute(migration.sql)
        db.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            [migration.version, migration.name, applied_at],
        )
    return db
