"""SQLite implementation of the store."""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sightline.errors import SightlineError
from sightline.event import SCHEMA_VERSION as WIRE_SCHEMA_VERSION
from sightline.event import Event, finalize_error, format_time, parse_time
from sightline.jsonwire import dumps as _dumps
from sightline.jsonwire import loads as _loads
from sightline.logs import log_safely

__all__ = [
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SqliteStore",
    "StoreError",
    "TraceFilter",
    "decode_cursor",
    "open_store",
    "write_obstacle",
]

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    # 0 -> 1: events, trace summaries, agents.
    """
    CREATE TABLE events (
        id TEXT NOT NULL UNIQUE,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        agent TEXT,
        session_id TEXT,
        framework TEXT,
        model TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens INTEGER,
        cost_usd REAL,
        error_kind TEXT,
        body TEXT NOT NULL
    );
    -- (trace_id, type) serves both reading a trace and "runs containing a type".
    CREATE INDEX events_trace ON events (trace_id, type);
    CREATE INDEX events_model ON events (model) WHERE model IS NOT NULL;

    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        agent TEXT,
        session_id TEXT,
        root_span_id TEXT,
        root_status TEXT,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        event_count INTEGER NOT NULL DEFAULT 0,
        error_count INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        status TEXT GENERATED ALWAYS AS (
            COALESCE(root_status, CASE WHEN error_count > 0 THEN 'error' ELSE 'ok' END)
        ) VIRTUAL
    );
    CREATE INDEX traces_start ON traces (start_ns);
    CREATE INDEX traces_agent ON traces (agent, start_ns);
    CREATE INDEX traces_status ON traces (status, start_ns);

    CREATE TABLE agents (
        name TEXT PRIMARY KEY,
        framework TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        registered_ns INTEGER NOT NULL
    );
    """,
    # 1 -> 2: one index on events, keyed (trace_id, id), instead of UNIQUE (id) plus
    # (trace_id, type). Trace ids begin with their creation time, so this index grows at its
    # right edge however large the file gets, where the random span ids as a key slowed every
    # insert down once the index outgrew the page cache. The body keeps only what has no column
    # (input, output, usage, error, metadata, tags); reads put the wire form back together.
    """
    CREATE TABLE events_v2 (
        id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        agent TEXT,
        session_id TEXT,
        framework TEXT,
        model TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens INTEGER,
        cost_usd REAL,
        error_kind TEXT,
        body TEXT NOT NULL
    );
    INSERT INTO events_v2
    SELECT id, trace_id, span_id, parent_span_id, type, name, status, start_ns, end_ns,
           duration_ms, agent, session_id, framework, model, input_tokens, output_tokens,
           total_tokens, cost_usd, error_kind,
           json_remove(body, '$.schema_version', '$.id', '$.trace_id', '$.span_id',
                       '$.parent_span_id', '$.type', '$.name', '$.status', '$.start_time',
                       '$.end_time', '$.duration_ms', '$.agent', '$.session_id', '$.framework',
                       '$.model', '$.cost_usd')
    FROM events ORDER BY rowid;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    -- The idempotency key; it also serves reading a trace and "runs containing a type".
    CREATE UNIQUE INDEX events_trace ON events (trace_id, id);
    CREATE INDEX events_model ON events (model) WHERE model IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT = """
INSERT OR IGNORE INTO events (
    id, trace_id, span_id, parent_span_id, type, name, status, start_ns, end_ns, duration_ms,
    agent, session_id, framework, model, input_tokens, output_tokens, total_tokens, cost_usd,
    error_kind, body
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# One row per trace touched by a batch: the batch's aggregate is folded into the summary.
# The root event (no parent) names the trace and decides its status.
_UPSERT_TRACE = """
INSERT INTO traces (
    trace_id, name, agent, session_id, root_span_id, root_status, start_ns, end_ns,
    event_count, error_count, input_tokens, output_tokens, total_tokens, cost_usd
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET
    name = CASE WHEN excluded.root_span_id IS NOT NULL THEN excluded.name ELSE traces.name END,
    agent = CASE WHEN excluded.root_span_id IS NOT NULL AND excluded.agent IS NOT NULL
                 THEN excluded.agent ELSE COALESCE(traces.agent, excluded.agent) END,
    session_id = COALESCE(traces.session_id, excluded.session_id),
    root_span_id = COALESCE(excluded.root_span_id, traces.root_span_id),
    root_status = COALESCE(excluded.root_status, traces.root_status),
    start_ns = MIN(traces.start_ns, excluded.start_ns),
    end_ns = MAX(traces.end_ns, excluded.end_ns),
    event_count = traces.event_count + excluded.event_count,
    error_count = traces.error_count + excluded.error_count,
    input_tokens = traces.input_tokens + excluded.input_tokens,
    output_tokens = traces.output_tokens + excluded.output_tokens,
    total_tokens = traces.total_tokens + excluded.total_tokens,
    cost_usd = traces.cost_usd + excluded.cost_usd
"""
# Types whose usage and cost aggregate their children's: not summed again into the trace.
_AGGREGATE_TYPES = frozenset({"run", "agent", "chain"})

_EVENT_COLUMNS = (
    "id, trace_id, span_id, parent_span_id, type, name, status, start_ns, end_ns, duration_ms, "
    "agent, session_id, framework, model, cost_usd, body"
)
_TRACE_COLUMNS = (
    "trace_id, name, agent, session_id, status, start_ns, end_ns, event_count, error_count, "
    "input_tokens, output_tokens, total_tokens, cost_usd"
)


class StoreError(SightlineError):
    """A file cannot serve as a Sightline store: not SQLite, not ours, a directory...

    The message names the file and says why.
    """


class SchemaVersionError(StoreError, RuntimeError):
    """The file's schema is not the one this Sightline reads: ``found`` and ``supported``.

    A newer file needs a newer Sightline; an older one (``found < supported``) is upgraded by
    opening it for writing.
    """

    def __init__(self, path: str, found: int) -> None:
        self.path = path
        self.found = found
        self.supported = SCHEMA_VERSION
        if found > SCHEMA_VERSION:
            message = (
                f"{path} has schema version {found}, newer than this Sightline "
                f"({SCHEMA_VERSION}); upgrade sightline"
            )
        else:
            message = (
                f"{path} has schema version {found}, older than this Sightline "
                f"({SCHEMA_VERSION}); open it for writing once to upgrade it"
            )
        super().__init__(message)


# Errors that one row causes when it is bound (an int beyond 64 bits, a type SQLite does not
# take, a lone surrogate) or built (an int too long to print): that row is rejected, not the
# batch. A locked or broken database raises sqlite3.OperationalError/DatabaseError instead.
_ROW_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
)
_INT64_MAX = 2**63 - 1
# Primary result codes (the low byte of an extended one): SQLITE_READONLY_DIRECTORY,
# SQLITE_READONLY_CANTINIT... are READONLY; a file that cannot be opened is CANTOPEN.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF
    text = str(exc)
    if "readonly database" in text:
        return _SQLITE_READONLY
    if "unable to open database file" in text:
        return _SQLITE_CANTOPEN
    if "locked" in text:
        return _SQLITE_LOCKED
    return None


# What the files SQLite keeps beside a store are, for messages.
_COMPANIONS = {
    ("-wal",): "SQLite's log of the store",
    ("-shm",): "SQLite's index of the store's log",
    ("-wal", "-shm"): "SQLite's log of the store and its index",
}


def _may(path: str, mode: int) -> bool:
    """Whether this process (its effective ids, where the platform tells) may access ``path``."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _owner_and_mode(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "not found"
    try:
        import pwd

        owner = pwd.getpwuid(info.st_uid).pw_name
    except (ImportError, KeyError):
        owner = f"uid {info.st_uid}"
    return f"owned by {owner}, mode {stat.S_IMODE(info.st_mode):04o}"


def _resolved(path: str) -> tuple[str, str]:
    """``path`` made absolute, and the file SQLite opens for it: beside that file, in its
    folder, SQLite keeps the ``-wal`` and ``-shm``.

    SQLite's unix VFS follows symlinks (each one on the way): a store path that is a link has
    its ``-wal``, ``-shm`` and folder where the link leads, not beside the link. The two are the
    same unless a link leads to another folder or name: a path through a linked folder keeps
    its spelling. SQLite on Windows does not follow links (``GetFullPathNameW``).
    """
    shown = os.path.abspath(path)
    if os.name == "nt":
        return shown, shown
    real = os.path.realpath(shown)
    folder, name = os.path.split(real)
    if os.path.basename(shown) == name and os.path.realpath(os.path.dirname(shown)) == folder:
        return shown, shown
    return shown, real


def write_obstacle(path: str) -> str | None:
    """Why this user cannot record into the store at ``path`` (a phrase naming the file or
    folder, its owner and mode), or ``None`` when nothing stands in the way.

    SQLite writes the file and keeps ``-wal`` and ``-shm`` files beside it: each must be
    writable where it exists, and the folder too where one of them is still to be created.
    For a ``path`` that is a symlink, that is the file it leads to, and its folder: the phrase
    names those.
    """
    _, path = _resolved(path)
    folder, name = os.path.split(path)
    if os.path.exists(path) and not _may(path, os.W_OK):
        return f"this user cannot write {path} ({_owner_and_mode(path)})"
    for end in ("-wal", "-shm"):
        companion = path + end
        if os.path.exists(companion) and not _may(companion, os.W_OK):
            return (
                f"this user cannot write {companion}, which SQLite keeps beside it "
                f"({_owner_and_mode(companion)})"
            )
    complete = all(os.path.exists(path + end) for end in ("", "-wal", "-shm"))
    if not complete and not os.path.isdir(folder):  # a link leading to a folder not there
        return (
            f"its folder {folder}, where SQLite keeps {name} and its -wal and -shm, does not exist"
        )
    if not complete and not _may(folder, os.W_OK | os.X_OK):
        return (
            f"this user cannot write its folder {folder}, where SQLite keeps {name}-wal and "
            f"{name}-shm beside it ({_owner_and_mode(folder)})"
        )
    return None


def _uncreatable(folder: str, exc: OSError) -> str:
    """Why the store's ``folder`` could not be created: the phrase names the nearest folder
    above it that exists, with its owner and mode, when that is what stood in the way."""
    above = os.path.dirname(folder)
    while above and not os.path.isdir(above) and above != os.path.dirname(above):
        above = os.path.dirname(above)
    if isinstance(exc, PermissionError) and os.path.isdir(above):
        return f"this user cannot create its folder {folder} in {above} ({_owner_and_mode(above)})"
    return f"its folder {folder} cannot be created ({exc.strerror or exc})"


@dataclass(frozen=True)
class TraceFilter:
    """Filters of a trace listing. Times are nanoseconds since the epoch."""

    agent: str | None = None
    status: str | None = None
    type: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    q: str | None = None
    limit: int = 50
    cursor: str | None = None


class SqliteStore:
    """Events and trace summaries in a SQLite file; safe to share between threads.

    ``readonly=True`` opens the file as it is (SQLite ``mode=ro``): nothing is created or
    migrated, and a file that is not a store of this schema version raises :class:`StoreError`.
    Reading a WAL file needs its index, the ``-shm`` file beside it, and SQLite creates that
    (and the ``-wal``) when they are not there. A user who cannot write the store must not
    create them: files of theirs there would keep the store's owner from recording. So when this
    user cannot write the file and its ``-wal`` or ``-shm`` is missing (no program records
    there now), or when SQLite can neither open nor create the ``-shm`` (a folder this user
    cannot write, such as another user's ``.sightline/``, or a read-only filesystem), the file is
    read as an immutable snapshot instead (SQLite ``immutable=1``): :attr:`snapshot` is true,
    :attr:`snapshot_reason` says why, and changes made after opening, and any still in the
    ``-wal`` file (:attr:`unseen_wal_bytes`), are not seen. While the owner's program runs, its
    ``-wal`` and ``-shm`` are read as they are.

    Opened for writing (the default), a file or folder this user cannot write (or a ``-wal`` or
    ``-shm`` beside the file) raises :class:`StoreError` saying so, before SQLite creates
    anything. ``timeout`` is how long one statement waits for another connection's write lock
    before ``sqlite3.OperationalError: database is locked``.

    A ``path`` that is a symlink stands for the file it leads to (:attr:`real_path`), as it
    does for SQLite: that file's ``-wal``, ``-shm`` and folder are the ones looked at.
    :attr:`path` stays the path given; messages name the file it links to as well.

    ``os.fork()`` waits until no thread of the process is using a store (opening it, or inside
    a transaction or a read), for at most ``_FORK_WAIT`` seconds: see :func:`_before_fork`.
    A forked child opens stores of its own; the ones it inherited are the parent's.
    """

    def __init__(self, path: str, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = path
        # The file SQLite opens: ``path`` itself, or where it leads when it is a symlink.
        # Its -wal and -shm are beside that file, and messages name both when they differ.
        self.real_path = path if path in ("", ":memory:") else _resolved(path)[1]
        self.readonly = readonly
        self.timeout = timeout
        self.snapshot = False
        self.snapshot_reason = ""
        self.unseen_wal_bytes = 0
        # Held around every use of the connection, and by a fork (see _before_fork).
        self._lock = threading.RLock()
        self._closed = False
        self._closed_why = ""  # what _locked() says once closed, when not the usual
        self._copied_in_use = False  # a fork's copy of a connection in use: never touched
        self._pid = os.getpid()
        _STORES.add(self)  # before SQLite opens anything: a fork waits for the opening too
        with self._lock:
            if readonly:
                self._open_readonly(timeout)
            else:
                self._open_for_writing(timeout)

    def _open_for_writing(self, timeout: float) -> None:
        path = self.path
        if self.real_path in _UNWRITABLE_AFTER_FORK:
            raise StoreError(
                f"cannot record into the store {self._shown_path()} from this process: it was "
                "forked while a thread of its parent was writing there (for longer than "
                f"{_FORK_WAIT:g} s), and the copy of that thread's SQLite lock the fork left "
                "here keeps this process from ever writing there. Fork while the store is not "
                "in use, or start processes with the 'spawn' method"
            )
        if path not in ("", ":memory:"):
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise self._cannot_record(_uncreatable(directory, exc)) from None
            # Before SQLite opens anything: it would open a file it cannot write read-only,
            # create the -wal and -shm as this user's files, and fail only at the first write.
            why = write_obstacle(path)
            if why is not None:
                raise self._cannot_record(why)
        try:
            self._conn = sqlite3.connect(self.real_path, check_same_thread=False, timeout=timeout)
        except sqlite3.OperationalError as exc:
            raise self._unwritable(exc) from None
        try:
            self._conn.row_factory = sqlite3.Row
            self._use_wal(timeout)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: index pages stay hot
            self.migrate()
        except sqlite3.OperationalError as exc:
            self._conn.close()
            raise self._unwritable(exc) from None
        except BaseException:
            self._conn.close()
            raise

    def _unwritable(self, exc: sqlite3.OperationalError) -> Exception:
        """What to raise for ``exc`` met while opening for writing: a :class:`StoreError`
        naming what this user cannot write, when SQLite says it cannot (``exc`` itself else)."""
        if (
            _primary_code(exc) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN)
            or self.path == ":memory:"
        ):
            return exc
        why = write_obstacle(self.path) or "SQLite cannot write it"
        return self._cannot_record(f"{why} ({exc})")

    def _cannot_record(self, why: str) -> StoreError:
        return StoreError(
            f"cannot record into the store {self._shown_path()}: {why}. Point "
            "SIGHTLINE_DB (or init(db=...)) at a place this user can write; the sightline "
            "command can still read this one"
        )

    def _shown_path(self) -> str:
        """The store's path, made absolute, and the file it leads to when it is a symlink."""
        shown = os.path.abspath(self.path)
        if self.real_path in (shown, "", ":memory:"):
            return shown
        return f"{shown} (a link to {self.real_path})"

    def _open_readonly(self, timeout: float) -> None:
        path = self.path
        real = self.real_path  # SQLite keeps the -wal and -shm beside it, in its folder
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no Sightline store at {path}; run an instrumented program first or pass --db PATH"
            )
        if os.path.isdir(path):
            raise StoreError(f"{path} is a directory; pass the store's file with --db PATH")
        folder, name = os.path.split(os.path.abspath(real))
        cannot_create = (
            f"this user can neither open nor create {name}-shm, SQLite's index of the store's "
            f"log, in {folder}"
        )
        missing = tuple(end for end in ("-wal", "-shm") if not os.path.exists(real + end))
        if missing and not _may(real, os.W_OK):
            # No program records there now. SQLite would create the missing files as this
            # user's, which the owner's next program could not write: every write of it would
            # fail ("attempt to write a readonly database").
            if not _may(folder, os.W_OK | os.X_OK):
                self._open_snapshot(timeout, cannot_create, "this user cannot create that")
                return
            files = " and ".join(name + end for end in missing)
            reason = (
                f"this user cannot write it, and creating {files}, {_COMPANIONS[missing]}, in "
                f"{folder} would keep its owner from recording there"
            )
            self._open_snapshot(
                timeout, reason, "creating that would keep the store's owner from recording there"
            )
            return
        # Read through the -wal and -shm as they are: this user may write the store, or its
        # owner's program is running. (Should that program end in the moment between this look
        # and SQLite's, taking its files with it, SQLite creates them as this user's.)
        self._conn = self._connect_readonly(real, timeout, "mode=ro", path)
        try:
            # The first read opens the WAL index (-shm): it fails when that can neither be
            # opened nor created by this user.
            self._conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError as exc:
            self._conn.close()
            if _primary_code(exc) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise StoreError(f"cannot read {path}: {exc}") from None
            self._open_snapshot(
                timeout, cannot_create, f"this user can neither open nor create that ({exc})"
            )
            return
        except sqlite3.DatabaseError:
            pass  # "file is not a database": said by _check_readable
        except BaseException:
            self._conn.close()
            raise
        try:
            self._check_readable()
        except BaseException:
            self._conn.close()
            raise

    def _open_snapshot(self, timeout: float, reason: str, without_shm: str) -> None:
        """Read the file as it is on disk, without the WAL index: SQLite ``immutable=1``.
        ``reason`` is why (:attr:`snapshot_reason`); ``without_shm`` ends the error raised when
        the store's tables are still in the ``-wal``, which cannot be read without the index."""
        self._conn = self._connect_readonly(
            self.real_path, timeout, "mode=ro&immutable=1", self.path
        )
        self.snapshot = True
        self.snapshot_reason = reason
        try:
            self.unseen_wal_bytes = os.path.getsize(self.real_path + "-wal")
        except OSError:
            self.unseen_wal_bytes = 0
        try:
            self._check_readable()
        except SchemaVersionError:
            self._conn.close()
            raise
        except StoreError:
            # With the tables still in the -wal, the file alone looks like no store at all.
            self._conn.close()
            if not self.unseen_wal_bytes:
                raise
            name = os.path.basename(self.real_path)
            if os.path.abspath(self.real_path) != os.path.abspath(self.path):
                name = self.real_path  # the -wal and -shm are beside the file it links to
            raise StoreError(
                f"cannot read {self.path}: its changes are in {name}-wal, which SQLite reads "
                f"through {name}-shm, and {without_shm}"
            ) from None
        except BaseException:
            self._conn.close()
            raise

    @staticmethod
    def _connect_readonly(
        path: str, timeout: float, query: str, shown: str | None = None
    ) -> sqlite3.Connection:
        """Open ``path`` with the URI parameters ``query``; errors name ``shown`` (``path``
        when not given)."""
        shown = path if shown is None else shown
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?" + query
        try:
            connection = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=timeout)
        except sqlite3.Error as exc:
            if not os.access(path, os.R_OK):
                raise StoreError(
                    f"cannot open {shown}: this user may not read it ({exc})"
                ) from None
            raise StoreError(f"cannot open {shown}: {exc}") from None
        connection.row_factory = sqlite3.Row
        return connection

    def _check_readable(self) -> None:
        """A read-only store must already hold this schema version: it cannot be migrated."""
        try:
            version = self.schema_version
            tables = self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise StoreError(f"{self.path} is not a Sightline store: {exc}") from None
        if version == 0:
            what = "an empty SQLite file" if not tables else "a SQLite file of something else"
            raise StoreError(f"{self.path} is not a Sightline store ({what})")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(self.path, version)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, to this thread alone. A ``close()`` that could not wait for it (a
        write waiting on another process's lock) is carried out here, when the lock is let go."""
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError(
                    self._closed_why or f"the store at {self.path} is closed"
                )
            try:
                yield self._conn
            finally:
                if self._closed:
                    self._close_connection()

    # -- schema -------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> int:
        """Apply every migration newer than the file's version; returns the new version.

        Safe when several connections (threads or processes) open a new file at once: each step
        runs in one write transaction that first checks the version is still the one it moves
        from, so a step is applied exactly once.
        """
        with self._locked():
            while True:
                current = self.schema_version
                if current > SCHEMA_VERSION:
                    raise SchemaVersionError(self.path, current)
                if current == SCHEMA_VERSION:
                    return current
                self._apply_migration(current)

    def _apply_migration(self, version: int) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self.schema_version == version:  # else another connection applied it meanwhile
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _use_wal(self, timeout: float = 30.0) -> None:
        """Switch the file to WAL. Switching needs the file to itself; while another connection
        is busy with it (creating or migrating the same new file) SQLite answers "locked"
        without waiting, so wait here. A file already in WAL needs nothing."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                # Only "locked" / "busy" pass; a file this user cannot write never will.
                if _primary_code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED, None):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # -- writing ------------------------------------------------------------------------------

    def insert_events(
        self,
        events: Iterable[Event | dict[str, Any]],
        *,
        rejected: list[BaseException] | None = None,
    ) -> int:
        """Store events (objects or wire dicts); returns how many were new (not duplicates).

        An event is known by ``(trace_id, id)``. Duplicates (stored before, or twice in the
        batch) are skipped, so a trace's summary never counts an event twice.

        An event the store cannot hold (an int beyond SQLite's 64 bits, one too long to write
        as JSON, a malformed wire dict) is skipped and the rest of the batch is still stored;
        the error of each skipped event is appended to ``rejected`` when it is given.
        """
        if not isinstance(events, (list, tuple)):
            events = list(events)
        try:
            rows = [_row(e) if type(e) is Event else _any_row(e) for e in events]
        except Exception:
            rows = _rows_one_by_one(events, rejected)
        if not rows:
            return 0
        with self._locked() as conn:
            # IMMEDIATE: the inserts and the summaries they feed are atomic across processes.
            conn.execute("BEGIN IMMEDIATE")
            try:
                fresh = rows
                try:
                    all_new = conn.executemany(_INSERT, rows).rowcount == len(rows)
                except _ROW_ERRORS:
                    all_new = False
                if not all_new:
                    # Some were stored before (a re-sent batch), repeat within it, or cannot be
                    # bound: redo the batch row by row to learn which are new and which are
                    # rejected. Rare, so the common case pays nothing for the check.
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    fresh = _insert_one_by_one(conn, rows, rejected)
                if fresh:
                    conn.executemany(_UPSERT_TRACE, _summaries(fresh))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return len(fresh)

    def register_agent(
        self, name: str, framework: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        with self._locked() as conn:
            # BEGIN IMMEDIATE, as every write here: in_transaction is then true only once the
            # write lock is held (a deferred BEGIN sets it while still waiting for the lock,
            # which a fork would take for a write under way: see _after_fork_in_child).
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO agents (name, framework, metadata, registered_ns) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "framework = excluded.framework, metadata = excluded.metadata",
                    (name, framework, _dumps(metadata or {}), time.time_ns()),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- reading ------------------------------------------------------------------------------

    def list_traces(
        self, filters: TraceFilter | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Traces, newest first, and the cursor of the next page (``None`` at the end)."""
        f = filters or TraceFilter()
        where: list[str] = []
        params: list[Any] = []
        if f.agent:
            where.append("agent = ?")
            params.append(f.agent)
        if f.status:
            where.append("status = ?")
            params.append(f.status)
        if f.since_ns is not None:
            where.append("start_ns >= ?")
            params.append(f.since_ns)
        if f.until_ns is not None:
            where.append("start_ns < ?")
            params.append(f.until_ns)
        if f.type:
            where.append(
                "EXISTS (SELECT 1 FROM events e WHERE e.type = ? AND e.trace_id = traces.trace_id)"
            )
            params.append(f.type)
        if f.q:
            where.append(
                "(name LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM events e WHERE "
                "e.trace_id = traces.trace_id AND e.name LIKE ? ESCAPE '\\'))"
            )
            pattern = "%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params.extend([pattern, pattern])
        if f.cursor:
            start_ns, trace_id = decode_cursor(f.cursor)
            where.append("(start_ns < ? OR (start_ns = ? AND trace_id < ?))")
            params.extend([start_ns, start_ns, trace_id])
        limit = max(1, min(int(f.limit), 1000))
        sql = f"SELECT {_TRACE_COLUMNS} FROM traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ns DESC, trace_id DESC LIMIT ?"
        params.append(limit + 1)
        with self._locked():
            rows = self._conn.execute(sql, params).fetchall()
        traces = [_trace_row(r) for r in rows[:limit]]
        cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            cursor = f"{last['start_ns']}:{last['trace_id']}"
        return traces, cursor

    def matching_traces(self, prefix: str, limit: int = 6) -> list[dict[str, Any]]:
        """Summaries of the traces whose id begins with ``prefix`` (any case), at most
        ``limit``: what a prefix that is not unique stands for."""
        prefix = prefix.strip().lower()
        if not prefix:
            return []
        with self._locked():
            rows = self._conn.execute(
                f"SELECT {_TRACE_COLUMNS} FROM traces WHERE trace_id >= ? AND trace_id < ? "
                "ORDER BY trace_id LIMIT ?",
                (prefix, prefix + "g", limit),
            ).fetchall()
        return [_trace_row(row) for row in rows]

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """The summary and every event of one trace (a unique id prefix is accepted, in any
        case)."""
        trace_id = trace_id.strip().lower()
        with self._locked():
            row = self._conn.execute(
                f"SELECT {_TRACE_COLUMNS} FROM traces WHERE trace_id = ?", (trace_id,)
            ).fetchone()
            if row is None and 4 <= len(trace_id) < 32:
                matches = self._conn.execute(
                    f"SELECT {_TRACE_COLUMNS} FROM traces WHERE trace_id >= ? AND trace_id < ? "
                    "LIMIT 2",
                    (trace_id, trace_id + "g"),
                ).fetchall()
                row = matches[0] if len(matches) == 1 else None
            if row is None:
                return None
            events = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE trace_id = ? ORDER BY start_ns, rowid",
                (row["trace_id"],),
            ).fetchall()
        summary = _trace_row(row)
        summary["events"] = [_wire(e) for e in events]
        return summary

    def events_after(self, position: int, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Events stored after ``position`` (a row number) and the new position; for ``tail``."""
        with self._locked():
            rows = self._conn.execute(
                f"SELECT rowid, {_EVENT_COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid "
                "LIMIT ?",
                (position, limit),
            ).fetchall()
        if not rows:
            return [], position
        return [_wire(r) for r in rows], int(rows[-1]["rowid"])

    def last_position(self) -> int:
        with self._locked():
            row = self._conn.execute("SELECT MAX(rowid) FROM events").fetchone()
        return int(row[0] or 0)

    def count_events(self) -> int:
        with self._locked():
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def agents(self) -> list[dict[str, Any]]:
        with self._locked():
            rows = self._conn.execute(
                "SELECT name, framework, metadata FROM agents ORDER BY name"
            ).fetchall()
        return [
            {"name": r["name"], "framework": r["framework"], "metadata": json.loads(r["metadata"])}
            for r in rows
        ]

    def stats(self, since_ns: int | None = None, agent: str | None = None) -> dict[str, Any]:
        """Counts, error rate, p50/p95 trace latency, tokens and cost by agent and by model."""
        trace_where, trace_params = _where(since_ns, agent, "start_ns")
        event_where, event_params = _where(since_ns, agent, "start_ns")
        with self._locked():
            totals = self._conn.execute(
                "SELECT COUNT(*) AS traces, COALESCE(SUM(status = 'error'), 0) AS failed, "
                "COALESCE(SUM(event_count), 0) AS events, "
                "COALESCE(SUM(error_count), 0) AS error_events, "
                "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
                "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
                "COALESCE(SUM(total_tokens), 0) AS total_tokens, "
                f"COALESCE(SUM(cost_usd), 0) AS cost_usd FROM traces{trace_where}",
                trace_params,
            ).fetchone()
            durations = [
                (r[0] - r[1]) / 1e6
                for r in self._conn.execute(
                    f"SELECT end_ns, start_ns FROM traces{trace_where}", trace_params
                )
            ]
            by_agent = self._conn.execute(
                "SELECT COALESCE(agent, '-') AS agent, COUNT(*) AS traces, "
                "SUM(status = 'error') AS failed, SUM(total_tokens) AS total_tokens, "
                "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, "
                f"SUM(cost_usd) AS cost_usd FROM traces{trace_where} "
                "GROUP BY agent ORDER BY traces DESC",
                trace_params,
            ).fetchall()
            model_where = (
                event_where
                + (" AND " if event_where else " WHERE ")
                + ("model IS NOT NULL AND type NOT IN ('run', 'agent', 'chain')")
            )
            by_model = self._conn.execute(
                "SELECT model, COUNT(*) AS calls, SUM(status = 'error') AS failed, "
                "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
                "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
                "COALESCE(SUM(total_tokens), 0) AS total_tokens, "
                "COALESCE(SUM(cost_usd), 0) AS cost_usd, "
                f"AVG(duration_ms) AS avg_ms FROM events{model_where} "
                "GROUP BY model ORDER BY calls DESC",
                event_params,
            ).fetchall()
        traces = int(totals["traces"])
        return {
            "traces": traces,
            "events": int(totals["events"]),
            "failed_traces": int(totals["failed"]),
            "error_events": int(totals["error_events"]),
            "error_rate": (int(totals["failed"]) / traces) if traces else 0.0,
            "latency_ms": {
                "p50": _percentile(durations, 50),
                "p95": _percentile(durations, 95),
            },
            "input_tokens": int(totals["input_tokens"]),
            "output_tokens": int(totals["output_tokens"]),
            "total_tokens": int(totals["total_tokens"]),
            "cost_usd": round(float(totals["cost_usd"]), 6),
            "by_agent": [
                {
                    "agent": r["agent"],
                    "traces": r["traces"],
                    "failed": r["failed"] or 0,
                    "input_tokens": r["input_tokens"] or 0,
                    "output_tokens": r["output_tokens"] or 0,
                    "total_tokens": r["total_tokens"] or 0,
                    "cost_usd": round(float(r["cost_usd"] or 0), 6),
                }
                for r in by_agent
            ],
            "by_model": [
                {
                    "model": r["model"],
                    "calls": r["calls"],
                    "failed": r["failed"] or 0,
                    "input_tokens": r["input_tokens"],
                    "output_tokens": r["output_tokens"],
                    "total_tokens": r["total_tokens"],
                    "cost_usd": round(float(r["cost_usd"] or 0), 6),
                    "avg_ms": round(float(r["avg_ms"] or 0), 3),
                }
                for r in by_model
            ],
        }

    def close(self, wait: float = 0.5) -> None:
        """Close the connection. Never waits more than ``wait`` seconds: a thread writing
        (perhaps waiting for another process's lock) closes it itself when it is done."""
        self._closed = True
        if self._lock.acquire(timeout=wait):
            try:
                self._close_connection()
            finally:
                self._lock.release()

    def _close_connection(self) -> None:
        if self._copied_in_use:  # SQLite's lock on it may be held by a thread the fork left out
            return
        try:
            self._conn.close()
        except sqlite3.Error:
            pass


def _row(event: Event) -> tuple[Any, ...]:
    """The row of an event, read straight from its attributes (the exporter's hot path)."""
    start = event.start_ns
    end = event.end_ns if event.end_ns is not None else start
    usage = event.usage
    error = event.error
    body: dict[str, Any] = {}
    if event.input is not None:
        body["input"] = event.input
    if event.output is not None:
        body["output"] = event.output
    if usage is not None:
        body["usage"] = usage.to_dict()
    if error is not None:
        if error.stack is None and getattr(error, "_exc", None) is not None:
            finalize_error(error)
        body["error"] = error.to_dict()
    if event.metadata:
        body["metadata"] = event.metadata
    if event.tags:
        body["tags"] = event.tags
    return (
        event.id or event.span_id,
        event.trace_id,
        event.span_id,
        event.parent_span_id,
        event.type.value,
        event.name,
        event.status.value,
        start,
        end,
        round(max(0, end - start) / 1_000_000, 3),
        event.agent,
        event.session_id,
        event.framework,
        event.model,
        usage.input_tokens if usage is not None else None,
        usage.output_tokens if usage is not None else None,
        usage.total_tokens if usage is not None else None,
        event.cost_usd,
        error.kind if error is not None else None,
        _dumps(body),
    )


# The fields without a column of their own, kept in the body only when they are not empty.
_BODY_KEYS = ("input", "output", "usage", "error", "metadata", "tags")


def _any_row(event: Event | dict[str, Any]) -> tuple[Any, ...]:
    """The row of an Event subclass or of a wire dict."""
    if isinstance(event, Event):
        return _row(event)
    data = event
    start_ns = parse_time(data["start_time"])
    end_ns = parse_time(data["end_time"])
    usage = data.get("usage") or {}
    error = data.get("error") or {}
    return (
        data["id"],
        data["trace_id"],
        data["span_id"],
        data.get("parent_span_id"),
        data["type"],
        data["name"],
        data["status"],
        start_ns,
        end_ns,
        data.get("duration_ms", round(max(0, end_ns - start_ns) / 1_000_000, 3)),
        data.get("agent"),
        data.get("session_id"),
        data.get("framework"),
        data.get("model"),
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        usage.get("total_tokens"),
        data.get("cost_usd"),
        error.get("kind"),
        _dumps({key: data[key] for key in _BODY_KEYS if data.get(key) not in (None, {}, [])}),
    )


def _wire(row: sqlite3.Row) -> dict[str, Any]:
    """The wire form (§3) of a stored row: its columns and its body put back together."""
    body = _loads(row["body"])
    return {
        "schema_version": WIRE_SCHEMA_VERSION,
        "id": row["id"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "type": row["type"],
        "name": row["name"],
        "status": row["status"],
        "start_time": format_time(row["start_ns"]),
        "end_time": format_time(row["end_ns"]),
        "duration_ms": row["duration_ms"],
        "agent": row["agent"],
        "session_id": row["session_id"],
        "framework": row["framework"],
        "input": body.get("input"),
        "output": body.get("output"),
        "model": row["model"],
        "usage": body.get("usage"),
        "cost_usd": row["cost_usd"],
        "error": body.get("error"),
        "metadata": body.get("metadata", {}),
        "tags": body.get("tags", []),
    }


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration script, one by one (``executescript`` would commit)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:60]!r}")
    return statements


def _rows_one_by_one(
    events: Sequence[Event | dict[str, Any]], rejected: list[BaseException] | None
) -> list[tuple[Any, ...]]:
    """The rows of the events that make one; the others' errors go to ``rejected``."""
    rows = []
    for event in events:
        try:
            rows.append(_any_row(event))
        except Exception as exc:
            if rejected is not None:
                rejected.append(exc)
    return rows


def _insert_one_by_one(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]], rejected: list[BaseException] | None
) -> list[tuple[Any, ...]]:
    """Insert row by row; returns the rows that were new. A row SQLite cannot take goes to
    ``rejected`` (binding fails before the statement runs: the transaction goes on)."""
    fresh = []
    for row in rows:
        try:
            if conn.execute(_INSERT, row).rowcount:
                fresh.append(row)
        except _ROW_ERRORS as exc:
            if rejected is not None:
                rejected.append(exc)
    return fresh


def _summaries(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Fold a batch of event rows into one summary row per trace (see ``_UPSERT_TRACE``)."""
    by_trace: dict[str, list[Any]] = {}
    for (_id, trace_id, span_id, parent, type_, name, status, start_ns, end_ns, _dur, agent,
         session_id, _fw, _model, tokens_in, tokens_out, tokens_total, cost, _kind, _body) in rows:  # fmt: skip
        summary = by_trace.get(trace_id)
        if summary is None:
            summary = [trace_id, name, agent, session_id, None, None, start_ns, end_ns,
                       0, 0, 0, 0, 0, 0.0]  # fmt: skip
            by_trace[trace_id] = summary
        if parent is None:
            summary[1], summary[4], summary[5] = name, span_id, status
            if agent is not None:
                summary[2] = agent
        elif summary[2] is None:
            summary[2] = agent
        if summary[3] is None:
            summary[3] = session_id
        summary[6] = min(summary[6], start_ns)
        summary[7] = max(summary[7], end_ns)
        summary[8] += 1
        summary[9] += status == "error"
        if type_ not in _AGGREGATE_TYPES:
            summary[10] += tokens_in or 0
            summary[11] += tokens_out or 0
            summary[12] += tokens_total or 0
            summary[13] += cost or 0.0
    for summary in by_trace.values():
        # Token counts that fit one by one may not once summed: the sum stops at SQLite's limit.
        if summary[12] > _INT64_MAX or summary[10] > _INT64_MAX or summary[11] > _INT64_MAX:
            summary[10:13] = [min(n, _INT64_MAX) for n in summary[10:13]]
    return [tuple(s) for s in by_trace.values()]


def _where(since_ns: int | None, agent: str | None, column: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since_ns is not None:
        clauses.append(f"{column} >= ?")
        params.append(since_ns)
    if agent:
        clauses.append("agent = ?")
        params.append(agent)
    return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params


def _percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    # Nearest rank (PostgreSQL's percentile_disc): the smallest value with at least pct% of
    # the values at or below it.
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct * len(ordered) / 100)))
    return round(ordered[rank - 1], 3)


def _trace_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "trace_id": row["trace_id"],
        "name": row["name"],
        "agent": row["agent"],
        "session_id": row["session_id"],
        "status": row["status"],
        "start_time": format_time(row["start_ns"]),
        "end_time": format_time(row["end_ns"]),
        "duration_ms": round((row["end_ns"] - row["start_ns"]) / 1e6, 3),
        "event_count": row["event_count"],
        "error_count": row["error_count"],
        "usage": {
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "total_tokens": row["total_tokens"],
        },
        "cost_usd": round(float(row["cost_usd"]), 6),
    }


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a listing's ``next_cursor`` names; ``ValueError`` if it names none."""
    try:
        start, trace_id = cursor.split(":", 1)
        start_ns = int(start)
    except ValueError:
        raise ValueError(f"invalid cursor {cursor!r}") from None
    if not 0 <= start_ns <= _INT64_MAX:
        raise ValueError(f"invalid cursor {cursor!r}")
    return start_ns, trace_id


def open_store(
    path: str | None = None, *, readonly: bool = False, timeout: float = 30.0
) -> SqliteStore:
    """Open the store at ``path`` (default: ``SIGHTLINE_DB`` or ``./.sightline/sightline.db``)."""
    if path is None:
        path = os.environ.get("SIGHTLINE_DB") or os.path.join(".sightline", "sightline.db")
    return SqliteStore(path, readonly=readonly, timeout=timeout)


# -- fork ---------------------------------------------------------------------------------------
#
# SQLite keeps, per process, a record of the locks its connections hold on each file. A fork
# copies that record with the connection a thread of the parent is using: made inside a write
# transaction, it leaves the child a write lock that no thread of the child holds and nothing
# there ever lets go, so every connection the child opens to the file waits on it until
# "database is locked" (a read leaves a lock that keeps the child's checkpoints from completing).
# The copied connection itself may be inside SQLite, under a mutex no thread of the child will
# release. So a fork waits until no store of this process is in use: each store's lock is held
# around every use of its connection (the opening, a transaction, a read) and the fork takes
# them all. The wait is bounded by _FORK_WAIT: a store's use is short (the sqlite exporter waits
# at most 0.25 s per attempt for another process's write lock, letting go of the store between
# attempts), but a store opened with a long ``timeout`` may wait on another process for that
# long, and a fork must not hang on it. A store still in use then is left alone: in the child,
# that copy refuses every call and is never closed (its SQLite mutex may be held), and if it was
# writing (or opening), a store opened there for writing on the same file raises a StoreError
# that says why. A fork made on a thread that is itself using a store (a callback inside
# SQLite) takes its lock at once: that child inherits the store in use, which SQLite does not
# support.

# The longest a fork waits for the stores in use (seconds).
_FORK_WAIT = 5.0
# Every store not garbage-collected yet: those a fork waits for.
_STORES: weakref.WeakSet[SqliteStore] = weakref.WeakSet()
# In a child: the files a store of its parent was writing at the fork (see _open_for_writing).
_UNWRITABLE_AFTER_FORK: set[str] = set()
# In a child: the connections a fork copied while in use, kept from the garbage collector (whose
# close would wait on the SQLite mutex a thread of the parent held).
_COPIED_IN_USE: list[Any] = []
# The stores each forking thread took (held) and could not take in time (busy), by thread id:
# two threads may fork at once. Holding them keeps them alive until _after_fork_in_child has
# run: another after-fork hook (an exporter's) may drop its own reference to one first.
_FORKS: dict[int, tuple[list[SqliteStore], list[SqliteStore]]] = {}


def _before_fork() -> None:
    """Take the lock of every store, waiting at most ``_FORK_WAIT`` seconds in all."""
    held: list[SqliteStore] = []
    busy: list[SqliteStore] = []
    _FORKS[threading.get_ident()] = (held, busy)
    deadline = time.monotonic() + _FORK_WAIT
    for store in _live_stores():
        try:
            if store._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                held.append(store)
            else:
                busy.append(store)
        except Exception:  # at fork, never raise
            pass


def _live_stores() -> list[SqliteStore]:
    for _ in range(10):
        try:
            return list(_STORES)
        except RuntimeError:  # a store opened on another thread meanwhile: look again
            continue
    return []


def _after_fork_in_parent() -> None:
    held, busy = _FORKS.pop(threading.get_ident(), ([], []))
    for store in held:
        store._lock.release()
    if busy:
        log_safely(
            logging.WARNING,
            "sightline: a process was forked while a thread had been using the store %s for "
            "more than %g s; the child cannot use its copy of that store (nor write the file, "
            "if a write was under way)",
            busy[0]._shown_path(),
            _FORK_WAIT,
        )


def _after_fork_in_child() -> None:
    held, busy = _FORKS.pop(threading.get_ident(), ([], []))
    _FORKS.clear()  # other threads' forks in progress in the parent: not in this process
    for store in held:
        store._lock.release()
    for store in busy:
        connection = store.__dict__.get("_conn")
        _COPIED_IN_USE.append(connection)
        try:
            # Still opening it, or inside a write transaction: the write lock may be held.
            # (in_transaction reads a flag; it does not wait on the connection's mutex.)
            writing = connection is None or connection.in_transaction
        except Exception:
            writing = True
        if writing and not store.readonly and store.real_path not in ("", ":memory:"):
            _UNWRITABLE_AFTER_FORK.add(store.real_path)
        store._copied_in_use = True
        store._closed = True
        store._closed_why = (
            f"the store at {store.path} was in use by a thread of the parent process when it "
            "forked: this process cannot use it; open the store again"
        )
        store._lock = threading.RLock()  # the parent's is held by a thread not in this process


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
