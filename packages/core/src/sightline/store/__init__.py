"""The embedded store: events and traces in one SQLite file (stdlib ``sqlite3``, WAL).

Used by the ``sqlite`` exporter (the default when no endpoint is configured) and by the CLI.
The schema is versioned (``PRAGMA user_version``) with forward migrations. Writing the same
event id twice stores it once, and a trace's summary (name, status, counts, tokens, cost) is
folded from each batch of new events, so a duplicate never counts twice.
"""

from __future__ import annotations

from sightline.store.sqlite import (
    SCHEMA_VERSION,
    SchemaVersionError,
    SqliteStore,
    StoreError,
    TraceFilter,
    decode_cursor,
    open_store,
)

__all__ = [
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SqliteStore",
    "StoreError",
    "TraceFilter",
    "decode_cursor",
    "open_store",
]
