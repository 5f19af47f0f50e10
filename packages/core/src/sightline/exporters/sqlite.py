"""The embedded default exporter: events into the SQLite store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sightline.event import Event
from sightline.pipeline import ExportResult

__all__ = ["SqliteExporter"]


class SqliteExporter:
    """Writes each batch in one transaction into :class:`~sightline.store.SqliteStore`.

    The connection is opened on the exporter's own thread at the first batch, and again in a
    forked child (a SQLite connection must not cross ``fork``).
    """

    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._store: Any = None
        self._pid = os.getpid()
        self.inserted = 0
        self.duplicates = 0

    @property
    def store(self) -> Any:
        if self._store is None or self._pid != os.getpid():
            from sightline.store import SqliteStore

            self._store = SqliteStore(self.path)
            self._pid = os.getpid()
        return self._store

    def export(self, events: Sequence[Event]) -> ExportResult:
        new = self.store.insert_events(events)
        self.inserted += new
        self.duplicates += len(events) - new
        return ExportResult.SUCCESS

    def register_agent(self, record: dict[str, Any]) -> None:
        self.store.register_agent(record["name"], record.get("framework"), record.get("metadata"))

    def after_fork(self) -> None:
        self._store = None

    def stats(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "duplicates": self.duplicates, "path": self.path}

    def shutdown(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None
