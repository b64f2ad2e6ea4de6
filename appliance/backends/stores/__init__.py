"""The system of record: items, feedback events and users, in DuckDB."""
