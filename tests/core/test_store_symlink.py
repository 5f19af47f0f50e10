"""A store path that is a symlink: SQLite follows the link, and keeps the store's ``-wal`` and
``-shm`` beside the file it leads to, in that file's folder. So do Sightline's checks: whether
this user may record there (the target's folder, not the link's), and whether a program records
there now (its ``-wal`` and ``-shm`` beside the target), which decides between reading it live
and reading it as a snapshot.

Commands run as real subprocesses of the users of ``test_store_readonly`` (a user stopped by a
folder's permissions: this user, or under root ``nobody`` / root without ``CAP_DAC_*``) and
``test_store_other_user`` (a store's owner and another user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sightline.store import SqliteStore, StoreError
from tests.core import test_store_other_user as other_user
from tests.core import test_store_readonly as readonly
from tests.core.test_cli import span
from tests.core.test_store_other_user import _HOLD, _RECORD, Users, _start
from tests.core.test_store_readonly import FIRST, Layout, Reader

# The fixtures of test_store_readonly and test_store_other_user, requested by name here.
reader = readonly.reader
layout = readonly.layout
users = other_user.users

_POINT = (
    "Point SIGHTLINE_DB (or init(db=...)) at a place this user can write; the sightline "
    "command can still read this one"
)


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def _names(folder: Path) -> set[str]:
    return {child.name for child in folder.iterdir()}


@dataclass
class Linked:
    """``<base>/app/traces.db``, a link to ``<base>/data/traces.db``."""

    base: Path  # 0755: every user reaches it
    app: Path  # the link's folder
    data: Path  # the target's folder
    link: Path
    target: Path


@pytest.fixture
def linked() -> Iterator[Linked]:
    # Not under tmp_path: the nobody user could not reach it (pytest's folders are 0700).
    base = Path(tempfile.mkdtemp(prefix="sightline-symlink-"))
    base.chmod(0o755)
    app, data = base / "app", base / "data"
    app.mkdir()
    data.mkdir()
    link, target = app / "traces.db", data / "traces.db"
    link.symlink_to(target)
    try:
        yield Linked(base, app, data, link, target)
    finally:
        for folder in (app, data):
            folder.chmod(stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def links(layout: Layout) -> Iterator[Path]:
    """``<base>/links/sightline.db``, a link to the store of ``layout``, in a folder nobody but
    its owner may write (the reader may not)."""
    folder = layout.base / "links"
    folder.mkdir()
    link = folder / "sightline.db"
    link.symlink_to(layout.db)
    folder.chmod(0o555)
    try:
        yield link
    finally:
        folder.chmod(stat.S_IRWXU)


# -- one user -------------------------------------------------------------------------------


def test_a_store_recorded_and_read_through_a_link_keeps_its_log_beside_the_target(tmp_path):
    data, app = tmp_path / "data", tmp_path / "app"
    data.mkdir()
    app.mkdir()
    target = data / "store.sqlite"
    link = app / "traces.db"  # another folder, another name
    link.symlink_to(target)
    now = time.time_ns()

    writer = SqliteStore(str(link))
    try:
        assert (writer.path, writer.real_path) == (str(link), str(target))
        assert writer.insert_events([span(FIRST, "first-run", "run", start=now, duration_ms=2)])
        # SQLite's own files are beside the target, named after it.
        assert _names(data) == {"store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}
        assert _names(app) == {"traces.db"}
        live = SqliteStore(str(link), readonly=True)
        try:
            assert (live.snapshot, live.real_path) == (False, str(target))
            assert [e["name"] for e in live.events_after(0)[0]] == ["first-run"]
        finally:
            live.close()
    finally:
        writer.close()
    assert _names(data) == {"store.sqlite"}
    assert _names(app) == {"traces.db"}

    result = Reader("this user", None).cli("runs", "--json", "--db", str(link), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert '"name": "first-run"' in result.stdout
    # Reading as a user who may write the store leaves SQLite's files: beside the target.
    assert _names(data) <= {"store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}
    assert _names(app) == {"traces.db"}


def test_recording_through_a_link_to_a_folder_that_is_not_there_says_so(tmp_path):
    target = tmp_path / "volume" / "traces.db"  # a data volume that is not mounted
    link = tmp_path / "traces.db"
    link.symlink_to(target)
    with pytest.raises(StoreError) as raised:
        SqliteStore(str(link))
    assert str(raised.value) == (
        f"cannot record into the store {link} (a link to {target}): its folder "
        f"{target.parent}, where SQLite keeps traces.db and its -wal and -shm, does not exist. "
        + _POINT
    )
    assert _names(tmp_path) == {"traces.db"}  # nothing created, the folder neither


# -- a user stopped by a folder's permissions -------------------------------------------------


def test_recording_through_a_link_in_a_folder_this_user_cannot_write_records_beside_the_target(
    reader, linked
):
    # A read-only folder (an application's image) links to a data volume this user writes.
    linked.data.chmod(0o777)
    linked.app.chmod(0o555)
    result = reader.run("-c", _RECORD, str(linked.link), "through-the-link", cwd=linked.base)
    assert result.returncode == 0, (reader.how, result.stderr)
    assert result.stdout.splitlines() == ["failed 0", "recorded through-the-link"], result.stderr
    # SQLite's files are beside the target (the reading at the end of _RECORD leaves them).
    assert _names(linked.data) <= {"traces.db", "traces.db-wal", "traces.db-shm"}
    assert _names(linked.app) == {"traces.db"}
    # and `sightline doctor` agrees: the store is writable through the link
    doctor = reader.cli("doctor", "--db", str(linked.link), cwd=linked.base)
    [store_line] = [line for line in doctor.stdout.splitlines() if line[2:].startswith("store ")]
    assert store_line.split(None, 2)[2] == (
        f"{linked.link} is a Sightline store this user can write"
    ), doctor.stdout


def test_recording_through_a_link_into_a_folder_this_user_cannot_write_names_that_folder(
    reader, linked
):
    SqliteStore(str(linked.target)).close()
    linked.target.chmod(0o666)  # the file this user may write, its folder not
    linked.data.chmod(0o555)
    linked.app.chmod(0o777)
    before = {p.name: p.read_bytes() for p in linked.data.iterdir()}
    script = textwrap.dedent(
        """
        import sys, time
        from sightline.store import SqliteStore, StoreError

        started = time.monotonic()
        try:
            SqliteStore(sys.argv[1])
        except StoreError as exc:
            print(f"{time.monotonic() - started:.1f}", exc)
        """
    )
    result = reader.run("-c", script, str(linked.link), cwd=linked.base)
    assert result.returncode == 0, (reader.how, result.stderr)
    seconds, message = result.stdout.rstrip("\n").split(" ", 1)
    assert float(seconds) < 5
    assert message == (
        f"cannot record into the store {linked.link} (a link to {linked.target}): this user "
        f"cannot write its folder {linked.data}, where SQLite keeps traces.db-wal and "
        f"traces.db-shm beside it (owned by {_owner(linked.data)}, mode 0555). " + _POINT
    )
    assert {p.name: p.read_bytes() for p in linked.data.iterdir()} == before
    assert _names(linked.app) == {"traces.db"}


def test_a_live_store_read_through_a_link_is_read_through_the_log_beside_its_target(
    reader, layout, links
):
    writer = SqliteStore(str(layout.db))
    try:
        writer.insert_events(
            [span("f3" * 16, "third-run", "run", start=time.time_ns(), duration_ms=1)]
        )
        assert _names(layout.folder) == {"sightline.db", "sightline.db-wal", "sightline.db-shm"}
        layout.lock()
        live = reader.cli("runs", "--json", "--db", str(links), cwd=layout.base)
        assert live.returncode == 0, (reader.how, live.stderr)
        assert live.stderr == ""  # the owner's -wal and -shm beside the target are read
        assert '"name": "third-run"' in live.stdout  # still only in the -wal
    finally:
        layout.folder.chmod(0o755)  # the owner's program may remove its -wal and -shm at close
        writer.close()
    layout.lock()
    closed = reader.cli("runs", "--json", "--db", str(links), cwd=layout.base)
    assert closed.returncode == 0, (reader.how, closed.stderr)
    assert '"name": "third-run"' in closed.stdout
    assert closed.stderr == (
        f"sightline: note: {links} is read as a snapshot (this user can neither open nor create "
        f"sightline.db-shm, SQLite's index of the store's log, in {layout.folder}): events "
        "recorded while this runs are not seen\n"
    )
    assert _names(links.parent) == {"sightline.db"}


_CRASH = """
import os, sys
from sightline.store import SqliteStore

store = SqliteStore(sys.argv[1])
store.insert_events([{
    "id": "e4", "trace_id": "f4" * 16, "span_id": "s4", "type": "run", "name": "crashed-run",
    "status": "ok", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:01Z",
}])
os._exit(0)  # as a program killed while it records: its -wal and -shm stay
"""


def test_the_log_left_beside_a_links_target_is_counted_as_unseen_in_a_snapshot(
    reader, layout, links
):
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH, str(layout.db)],
        cwd=layout.base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 0, crashed.stderr
    wal = Path(f"{layout.db}-wal")
    Path(f"{layout.db}-shm").unlink()  # the index alone is gone: nobody can read the log now
    layout.lock()
    result = reader.cli("runs", "--json", "--db", str(links), cwd=layout.base)
    assert result.returncode == 0, (reader.how, result.stderr)
    assert '"name": "second-run"' in result.stdout
    assert '"name": "crashed-run"' not in result.stdout
    assert result.stderr == (
        f"sightline: note: {links} is read as a snapshot (this user can neither open nor create "
        f"sightline.db-shm, SQLite's index of the store's log, in {layout.folder}): events "
        "recorded while this runs are not seen (nor are the changes still in sightline.db-wal, "
        f"{wal.stat().st_size} bytes)\n"
    )
    assert wal.stat().st_size > 0
    assert _names(layout.folder) == {"sightline.db", "sightline.db-wal"}
    assert _names(links.parent) == {"sightline.db"}


# -- another user's store -------------------------------------------------------------------


def test_another_users_new_store_is_read_live_through_a_link_while_it_records(
    users: Users, linked: Linked
):
    """The owner's program has just created the store: its tables are still in the -wal."""
    if users.owner_ids is not None:
        os.chown(linked.data, *users.owner_ids)
    linked.data.chmod(0o755)
    linked.app.chmod(0o555)
    owner = _start(users.owner, "-c", _HOLD, str(linked.target), cwd=linked.base)
    try:
        ready = owner.stdout.readline()  # type: ignore[union-attr]
        assert ready == "ready\n", owner.stderr.read()  # type: ignore[union-attr]
        assert _names(linked.data) == {"traces.db", "traces.db-wal", "traces.db-shm"}
        if users.shared:
            linked.target.chmod(0o444)  # one user plays both: the other may not write the store
        result = users.other.cli("runs", "--json", "--db", str(linked.link), cwd=linked.base)
        assert result.returncode == 0, (users.other.how, result.stderr)
        assert result.stderr == ""  # read through the owner's -wal and -shm: nothing to note
        assert '"name": "live-run"' in result.stdout
        assert _names(linked.data) == {"traces.db", "traces.db-wal", "traces.db-shm"}
        assert _names(linked.app) == {"traces.db"}
    finally:
        if users.shared:
            linked.target.chmod(0o644)
        owner.communicate("\n", timeout=30)
    assert owner.returncode == 0, owner.stderr
