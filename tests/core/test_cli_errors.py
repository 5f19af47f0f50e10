"""The ``sightline`` command on stores it cannot read (ARCHITECTURE.md §7): one line on stderr,
``sightline: error: ...``, exit status 1 (2 for a malformed argument), never a traceback, and
the file left as it was: reading opens the store read-only."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from sightline.event import Event
from sightline.store import SCHEMA_VERSION, SqliteStore
from sightline.store.sqlite import MIGRATIONS, _statements

READ_COMMANDS = ["runs", "show latest", "tail --timeout 0.1", "stats"]


def sightline_cli(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env["NO_COLOR"] = "1"
    env["HOME"] = str(cwd)
    return subprocess.run(
        [sys.executable, "-m", "sightline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def a_store(path, *, journal_mode: str | None = None) -> None:
    store = SqliteStore(str(path))
    store.insert_events([Event("run", "nightly", trace_id="ab" * 16, start_ns=1, end_ns=2)])
    store.close()
    if journal_mode is not None:
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.close()


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_a_file_that_is_not_sqlite_is_one_clear_error(tmp_path, command):
    path = tmp_path / "notes.db"
    path.write_text("not a database at all, just text\n")
    result = sightline_cli(*command.split(), "--db", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"sightline: error: {path} is not a Sightline store: file is not a database\n"
    )
    assert path.read_text() == "not a database at all, just text\n"


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_a_store_from_a_newer_sightline_names_both_versions(tmp_path, command):
    path = tmp_path / "future.db"
    a_store(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.close()
    result = sightline_cli(*command.split(), "--db", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"sightline: error: {path} has schema version {SCHEMA_VERSION + 7}, newer than this "
        f"Sightline ({SCHEMA_VERSION}); upgrade sightline\n"
    )


def test_a_sqlite_file_of_something_else_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    result = sightline_cli("runs", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"sightline: error: {path} is not a Sightline store (a SQLite file of something else)\n"
    )
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert tables == ["users"]


def test_a_directory_as_db_is_one_clear_error(tmp_path):
    result = sightline_cli("runs", "--db", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"sightline: error: {tmp_path} is a directory; pass the store's file with --db PATH\n"
    )


@pytest.mark.parametrize("cursor", ["garbage", "x:0123", "99999999999999999999999:ab"])
def test_a_malformed_cursor_is_a_usage_error(tmp_path, cursor):
    path = tmp_path / "store.db"
    a_store(path)
    result = sightline_cli("runs", "--db", str(path), "--cursor", cursor, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"sightline runs: error: argument --cursor: invalid cursor {cursor!r}: pass the cursor "
        "a previous 'sightline runs' printed"
    )
    assert "Traceback" not in result.stderr


def test_an_unknown_trace_is_reported_like_every_other_error(tmp_path):
    path = tmp_path / "store.db"
    a_store(path)
    result = sightline_cli("show", "deadbeef", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"sightline: error: no trace 'deadbeef' in {path}\n"


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_reading_a_store_does_not_write_to_it(tmp_path, command):
    path = tmp_path / "store.db"
    a_store(path, journal_mode="DELETE")
    before = path.read_bytes()
    result = sightline_cli(*command.split(), "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before  # not switched to WAL, nothing written


def test_a_store_of_an_older_schema_is_upgraded_then_read(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    result = sightline_cli("runs", "--json", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('{\n  "traces": []')
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
