"""A store in a folder another user can write, but in a file they cannot (a shared project
folder, ``/tmp``): what that user does must not break the owner's recording.

SQLite creates a store's ``-wal`` and ``-shm`` files when they are not there, as the user who
opens it; files of another user there keep the owner's program from writing ("attempt to write a
readonly database"). So that user reads such a store as a snapshot while no program records
there, reads it through the owner's files while one does, and cannot open it for writing at all.

Commands run as real subprocesses of two users (see ``test_store_readonly``): under root, the
owner is a system user (``daemon``) and the other user the reader of those tests (``nobody``);
as one user, that user plays both, the store file made read-only while they are the other.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.core import test_store_readonly as readonly
from tests.core.test_store_readonly import FIRST, SECOND, Layout, Reader, _permissions_hold

# The fixtures of test_store_readonly, requested by name here: the reading user, and a store of
# two runs in <base>/.sightline/.
reader = readonly.reader
layout = readonly.layout


_RECORD = """
import sys
import sightline
from sightline.store import SqliteStore

db, name = sys.argv[1:]
client = sightline.init(db=db, instrument=False, handle_signals=False)
client.log_event("custom", name)
client.flush(5)
print("failed", client.stats()["exporters"]["sqlite"]["failed"])
sightline.shutdown()
store = SqliteStore(db, readonly=True)
print("recorded", *[e["name"] for e in store.events_after(0)[0] if e["type"] == "custom"])
"""


@dataclass
class SwitchedUser(Reader):
    """A user that commands reach through setpriv(1), which keeps its capabilities until it
    runs the program: the user runs this interpreter even when it lies in a folder they cannot
    search (root's home), where a ``preexec_fn`` switching user fails to run it at all."""

    uid: int = -1
    gid: int = -1

    def argv(self, *args: str) -> list[str]:
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return ["setpriv", *ids, sys.executable, *args]

    def run(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=cwd,
            env=_env(cwd),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env.update(NO_COLOR="1", HOME=str(cwd), PYTHONDONTWRITEBYTECODE="1")
    return env


def _start(user: Reader, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """A command of ``user`` left running, its stdin and stdout piped."""
    argv = user.argv(*args) if isinstance(user, SwitchedUser) else [sys.executable, *args]
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=_env(cwd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=user.preexec,
    )


@dataclass
class Users:
    """The store's owner, and another user who may write its folder but not its file."""

    owner: Reader
    other: Reader
    owner_ids: tuple[int, int] | None  # the owner's (uid, gid) to give the store; None: as is
    other_uid: int
    shared: bool  # one user plays both: the store file is read-only but while the owner writes

    @property
    def owner_name(self) -> str:
        uid = self.owner_ids[0] if self.owner_ids else os.geteuid()
        return pwd.getpwuid(uid).pw_name

    def share(self, layout: Layout) -> None:
        """Give the store to the owner, in a folder both may write (no -wal, no -shm yet)."""
        assert {p.name for p in layout.folder.iterdir()} == {"sightline.db"}
        if self.owner_ids is not None:
            for path in (layout.folder, layout.db):
                os.chown(path, *self.owner_ids)
        layout.folder.chmod(0o777)
        layout.db.chmod(0o444 if self.shared else 0o644)

    @contextmanager
    def owner_writing(self, layout: Layout) -> Iterator[None]:
        if self.shared:
            layout.db.chmod(0o644)
        try:
            yield
        finally:
            if self.shared:
                layout.db.chmod(0o444)

    def record(self, layout: Layout, name: str) -> list[str]:
        """Record one event as the owner; the names of every custom event then stored."""
        with self.owner_writing(layout):
            result = self.owner.run("-c", _RECORD, str(layout.db), name, cwd=layout.base)
        assert result.returncode == 0, (self.owner.how, result.stderr)
        failed, recorded = result.stdout.splitlines()
        assert failed == "failed 0", result.stderr
        return recorded.split()[1:]


def _become(user: pwd.struct_passwd) -> Callable[[], None]:
    def become() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return become


def _as_user(user: pwd.struct_passwd, base: Path) -> Reader | None:
    """``user`` as a reader, if they can run Sightline here (and permissions stop them)."""
    ways = [Reader(user.pw_name, _become(user))]
    if shutil.which("setpriv"):
        ways.append(SwitchedUser(f"{user.pw_name} (setpriv)", None, user.pw_uid, user.pw_gid))
    return next((way for way in ways if _permissions_hold(way, base)), None)


def _two_users(reader: Reader) -> Users | None:
    """Under root: the owner, a system user (``daemon`` first); the other user, ``nobody``, or
    else ``reader`` (root without the capabilities that bypass file permissions)."""
    base = Path(tempfile.mkdtemp(prefix="sightline-probe-"))
    base.chmod(0o755)
    try:
        other, other_uid = reader, 0  # root without CAP_DAC_*, unless nobody can be had
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pass
        else:
            if reader.how == "nobody":
                other_uid = nobody.pw_uid
            elif (found := _as_user(nobody, base)) is not None:
                other, other_uid = found, nobody.pw_uid
        candidates = sorted(
            (u for u in pwd.getpwall() if 0 < u.pw_uid < 1000 and u.pw_uid != other_uid),
            key=lambda u: (u.pw_name != "daemon", u.pw_uid),
        )
        for user in candidates[:3]:
            if (owner := _as_user(user, base)) is not None:
                return Users(owner, other, (user.pw_uid, user.pw_gid), other_uid, shared=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return None


@pytest.fixture(scope="module")
def users(reader: Reader) -> Users:
    if os.geteuid() != 0:
        return Users(reader, reader, None, os.geteuid(), shared=True)
    found = _two_users(reader)
    if found is None:
        pytest.skip(
            "running as root, and no system user but nobody (or root without CAP_DAC_*) could "
            "run this interpreter and be stopped by a read-only folder, to own the store"
        )
    return found


@pytest.fixture
def shared(users: Users, layout: Layout) -> Layout:
    """The store of ``layout`` (two runs), owned by the owner, in a folder both may write."""
    users.share(layout)
    return layout


def files(layout: Layout) -> set[str]:
    return {path.name for path in layout.folder.iterdir()}


def snapshot_note(layout: Layout, ending: str) -> str:
    return (
        f"sightline: note: {layout.db} is read as a snapshot (this user cannot write it, and "
        f"creating sightline.db-wal and sightline.db-shm, SQLite's log of the store and its "
        f"index, in {layout.folder} would keep its owner from recording there): {ending}\n"
    )


@pytest.mark.parametrize(
    ("command", "expected", "ending"),
    [
        (
            "runs --json",
            ['"name": "second-run"', '"name": "first-run"'],
            "events recorded while this runs are not seen",
        ),
        (
            f"show {FIRST}",
            ["run first-run  20ms", "└─ tool_call lookup  5.0ms"],
            "events recorded while this runs are not seen",
        ),
        (
            "tail --timeout 0",
            [],
            "new events cannot be followed, so tail stops without printing any; pass --last N "
            "to print the last N events",
        ),
    ],
)
def test_another_user_reading_creates_no_files_and_the_owner_still_records(
    users, shared, command, expected, ending
):
    before = shared.listing()
    result = users.other.cli(*command.split(), "--db", str(shared.db), cwd=shared.base)
    assert result.returncode == 0, (users.other.how, result.stderr)
    assert files(shared) == {"sightline.db"}  # no -wal, no -shm of theirs
    assert shared.listing() == before
    assert users.record(shared, "after-the-read") == ["after-the-read"]
    for text in expected:
        assert text in result.stdout
    if not expected:
        assert result.stdout == ""
    assert result.stderr == snapshot_note(shared, ending)


def test_tail_of_another_users_store_prints_the_last_events_asked_for(users, shared):
    before = shared.listing()
    result = users.other.cli(
        "tail", "--last", "2", "--timeout", "0", "--db", str(shared.db), cwd=shared.base
    )
    assert result.returncode == 0, (users.other.how, result.stderr)
    assert files(shared) == {"sightline.db"}
    assert shared.listing() == before
    assert [line.split()[2] for line in result.stdout.splitlines()] == [FIRST[:16], SECOND[:16]]
    assert result.stderr == snapshot_note(
        shared, "new events cannot be followed, so tail prints what is there and stops"
    )


_HOLD = """
import sys
from sightline.store import SqliteStore

store = SqliteStore(sys.argv[1])
store.insert_events([{
    "id": "e3", "trace_id": "f3" * 16, "span_id": "s3", "type": "run", "name": "live-run",
    "status": "ok", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:01Z",
}])
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def test_another_user_reads_live_while_the_owner_records_and_a_snapshot_once_it_stopped(
    users, shared
):
    with users.owner_writing(shared):
        owner = _start(users.owner, "-c", _HOLD, str(shared.db), cwd=shared.base)
        ready = owner.stdout.readline()  # type: ignore[union-attr]
    try:
        assert ready == "ready\n", owner.stderr.read()  # type: ignore[union-attr]
        assert files(shared) == {"sightline.db", "sightline.db-wal", "sightline.db-shm"}
        live = users.other.cli("runs", "--json", "--db", str(shared.db), cwd=shared.base)
        assert live.returncode == 0, (users.other.how, live.stderr)
        assert live.stderr == ""  # read through the owner's -wal and -shm: nothing to note
        assert '"name": "live-run"' in live.stdout  # still only in the -wal
        assert files(shared) == {"sightline.db", "sightline.db-wal", "sightline.db-shm"}
    finally:
        with users.owner_writing(shared):
            owner.communicate("\n", timeout=30)
    assert owner.returncode == 0, owner.stderr
    assert files(shared) == {"sightline.db"}  # the owner's, gone
    closed = users.other.cli("runs", "--json", "--db", str(shared.db), cwd=shared.base)
    assert closed.returncode == 0, (users.other.how, closed.stderr)
    assert '"name": "live-run"' in closed.stdout
    assert closed.stderr == snapshot_note(shared, "events recorded while this runs are not seen")
    assert files(shared) == {"sightline.db"}
    assert users.record(shared, "after-the-read") == ["after-the-read"]


def test_recording_as_a_user_who_cannot_write_the_store_fails_at_once_naming_it(users, shared):
    before = shared.listing()
    mode = "0444" if users.shared else "0644"
    script = textwrap.dedent(
        f"""
        import logging, time
        import sightline
        from sightline.store import SqliteStore, StoreError

        started = time.monotonic()
        try:
            SqliteStore({str(shared.db)!r})
        except StoreError as exc:
            print(f"{{time.monotonic() - started:.1f}}", exc)
        logging.basicConfig(format="%(name)s %(message)s")
        client = sightline.init(db={str(shared.db)!r}, instrument=False, handle_signals=False)
        client.log_event("custom", "step")
        client.flush(5)
        print("failed", client.stats()["exporters"]["sqlite"]["failed"])
        sightline.shutdown()
        """
    )
    result = users.other.run("-c", script, cwd=shared.base)
    assert result.returncode == 0, (users.other.how, result.stderr)
    opened, counted = result.stdout.splitlines()
    seconds, message = opened.split(" ", 1)
    assert float(seconds) < 5
    assert message == (
        f"cannot record into the store {shared.db}: this user cannot write {shared.db} (owned by "
        f"{users.owner_name}, mode {mode}). Point SIGHTLINE_DB (or init(db=...)) at a place this "
        "user can write; the sightline command can still read this one"
    )
    assert counted == "failed 1"
    assert f"exporter 'sqlite' raised StoreError: {message}" in result.stderr
    assert files(shared) == {"sightline.db"}  # nothing created
    assert shared.listing() == before
    assert users.record(shared, "after-the-attempt") == ["after-the-attempt"]


@pytest.fixture
def foreign_log(users: Users, shared: Layout) -> Layout:
    """``-wal`` and ``-shm`` files of the other user beside the owner's store, as reading it
    with SQLite (an older Sightline) leaves them."""
    if users.shared:
        pytest.skip("needs two users: files of this user's own are no obstacle to it")
    if users.other_uid == 0:
        pytest.skip("SQLite gives the files root creates to the store's owner: no obstacle")
    leave = (
        "import sqlite3, sys\n"
        "sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True).execute('SELECT 1 FROM "
        "sqlite_master').fetchall()\n"
    )
    result = users.other.run("-c", leave, str(shared.db), cwd=shared.base)
    assert result.returncode == 0, result.stderr
    for end in ("-wal", "-shm"):
        assert Path(f"{shared.db}{end}").stat().st_uid != users.owner_ids[0]  # type: ignore[index]
    return shared


def test_the_owner_is_told_at_once_of_another_users_log_files_beside_the_store(users, foreign_log):
    wal = f"{foreign_log.db}-wal"
    script = (
        "import sys\n"
        "from sightline.store import SqliteStore, StoreError\n"
        "try:\n"
        "    SqliteStore(sys.argv[1])\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    result = users.owner.run("-c", script, str(foreign_log.db), cwd=foreign_log.base)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"cannot record into the store {foreign_log.db}: this user cannot write {wal}, which "
        f"SQLite keeps beside it (owned by {pwd.getpwuid(os.stat(wal).st_uid).pw_name}, mode 0"
    )


def test_doctor_tells_the_owner_of_another_users_log_files_beside_the_store(users, foreign_log):
    result = users.owner.cli("doctor", "--db", str(foreign_log.db), cwd=foreign_log.base)
    [line] = [line for line in result.stdout.splitlines() if line[2:].startswith("store ")]
    assert line.split(None, 2)[2].startswith(
        f"{foreign_log.db} is readable but this user cannot write {foreign_log.db}-wal, "
    )
    assert result.returncode == 1
