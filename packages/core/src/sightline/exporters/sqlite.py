"""The embedded default exporter: events into the SQLite store."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sightline.event import Event
from sightline.logs import log_safely
from sightline.pipeline import ExportResult

__all__ = ["SqliteExporter"]


_T = TypeVar("_T")

# SQLite's own wait for another connection's write lock, per attempt. Short, so that the store's
# lock is never held long and shutdown() is heard between attempts (see _retrying).
_ATTEMPT_TIMEOUT = 0.25
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


class SqliteExporter:
    """Writes each batch in one transaction into :class:`~sightline.store.SqliteStore`.

    The connection is opened on the exporter's own thread at the first batch, and again in a
    forked child (a SQLite connection must not cross ``fork``; a fork waits for the batch being
    written to be committed, so that the child's connection finds no lock of it: see
    ``sightline.store.sqlite``). While another process holds the file's write lock, a batch is
    retried for up to ``busy_timeout`` seconds, in attempts of at most 0.25 s that let go of
    the store in between (a fork never waits longer than one attempt), and no longer once
    ``shutdown()`` is called: the batch then fails and is counted. An event the store cannot
    hold (say, an int beyond 64 bits) is dropped alone, counted as ``rejected`` in ``stats()``.
    A forked child counts its own events only.
    """

    name = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._store: Any = None
        self._pid = os.getpid()
        self._stopped = threading.Event()
        self.inserted = 0
        self.duplicates = 0
        self.rejected = 0
        self._logged_rejection = False

    @property
    def store(self) -> Any:
        if self._store is None or self._pid != os.getpid():
            from sightline.store import SqliteStore

            if self._stopped.is_set():
                raise RuntimeError("the sqlite exporter is shut down")
            store = SqliteStore(self.path, timeout=_ATTEMPT_TIMEOUT)
            self._store = store
            self._pid = os.getpid()
            if self._stopped.is_set():  # shutdown() ran while this opened: it may not see it
                store.close()
                raise RuntimeError("the sqlite exporter is shut down")
        return self._store

    def export(self, events: Sequence[Event]) -> ExportResult:
        rejected: list[BaseException] = []

        def insert() -> int:
            rejected.clear()  # a locked attempt rolled back: start its count afresh
            return int(self.store.insert_events(events, rejected=rejected))

        new = self._retrying(insert)
        self.inserted += new
        self.duplicates += len(events) - new - len(rejected)
        if rejected:
            self._reject(rejected)
        return ExportResult.SUCCESS

    def _reject(self, rejected: list[BaseException]) -> None:
        self.rejected += len(rejected)
        if self._logged_rejection:
            return
        self._logged_rejection = True
        error = rejected[0]
        log_safely(
            logging.ERROR,
            "sightline: the sqlite store at %s cannot hold %d event(s) of a batch (%s: %s); "
            "they were dropped, the rest of the batch was stored (further ones are counted as "
            "'rejected' in client.stats()['exporters']['sqlite'])",
            self.path,
            len(rejected),
            type(error).__name__,
            str(error)[:200],
        )

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, again while another connection holds the write lock, with backoff,
        until ``busy_timeout`` passes or ``shutdown()`` is called."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or self._stopped.is_set() or time.monotonic() >= deadline:
                    raise
            self._stopped.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.5)

    def register_agent(self, record: dict[str, Any]) -> None:
        self._retrying(
            lambda: self.store.register_agent(
                record["name"], record.get("framework"), record.get("metadata")
            )
        )

    def after_fork(self) -> None:
        # The parent's store is the parent's: the child opens its own, and counts afresh.
        self._store = None
        self.inserted = 0
        self.duplicates = 0
        self.rejected = 0
        self._logged_rejection = False

    def stats(self) -> dict[str, Any]:
        # Rejected events were in batches export() took: the pipeline adds them to its failed.
        return {
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "failed": self.rejected,
            "path": self.path,
        }

    def shutdown(self) -> None:
        # Heard by a batch waiting for another process's lock: it fails at its next attempt
        # (within _ATTEMPT_TIMEOUT) instead of holding close() up; store.close() does not wait.
        self._stopped.set()
        store = self._store
        if store is not None and self._pid == os.getpid():
            store.close()
        self._store = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc)
