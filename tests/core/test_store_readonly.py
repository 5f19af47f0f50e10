"""A store in a folder the reading user cannot write (an operator reading another user's
``.sightline/``): ``runs``, ``show``, ``stats`` and ``tail`` still read it, while recording there
fails with an error that says why.

SQLite reads a WAL file through its index, the ``-shm`` file beside it. While the owner's
program runs, that file exists and is read as it is; once it ended, nobody can create it in a
folder they cannot write, and the store is read as a snapshot (``immutable=1``) with a note.

Each command runs as a real subprocess of a user for whom the permissions hold: this user, or,
under root (whom ``chmod`` does not stop), the ``nobody`` user, else root without the
capabilities that bypass file permissions (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sightline.store import SqliteStore
from tests.core.test_cli import span

MS = 1_000_000
FIRST = "f1" * 16
SECOND = "f2" * 16
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


@dataclass
class Reader:
    """Runs commands as a user the folder's permissions apply to."""

    how: str
    preexec: Callable[[], None] | None

    def run(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
        env.update(NO_COLOR="1", HOME=str(cwd), PYTHONDONTWRITEBYTECODE="1")
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self.preexec,
        )

    def cli(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "sightline.cli", *args, cwd=cwd, timeout=timeout)


def _as_nobody() -> Callable[[], None] | None:
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return None

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return become_nobody


def _without_dac_capabilities() -> None:
    # Dropped from the bounding set, they are not in the permitted set of the program exec'd next.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _permissions_hold(reader: Reader, base: Path) -> bool:
    """Whether ``reader`` can run Sightline and is stopped by a folder's permissions."""
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        probe = reader.run(
            "-c",
            "import sightline.cli, sys\n"
            "try:\n"
            f"    open({str(locked / 'x')!r}, 'w')\n"
            "except PermissionError:\n"
            "    sys.exit(0)\n"
            "sys.exit(3)\n",
            cwd=base,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked, ignore_errors=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def reader() -> Reader:
    if os.geteuid() != 0:
        return Reader("this user", None)
    base = Path(tempfile.mkdtemp(prefix="sightline-probe-"))
    base.chmod(0o755)
    try:
        nobody = _as_nobody()
        if nobody is not None and _permissions_hold(candidate := Reader("nobody", nobody), base):
            return candidate
        candidate = Reader("root without CAP_DAC_*", _without_dac_capabilities)
        if _permissions_hold(candidate, base):
            return candidate
    finally:
        shutil.rmtree(base, ignore_errors=True)
    pytest.skip(
        "running as root, whom chmod does not stop, and neither the nobody user nor root "
        "without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH could run this interpreter and be "
        "stopped by a read-only folder"
    )


@dataclass
class Layout:
    base: Path  # readable by the reader: the working directory of its commands
    folder: Path  # the .sightline folder the store is in
    db: Path

    def lock(self) -> None:
        """Make the folder and every file in it read-only."""
        for child in self.folder.iterdir():
            child.chmod(0o444)
        self.folder.chmod(0o555)

    def listing(self) -> dict[str, bytes]:
        return {child.name: child.read_bytes() for child in sorted(self.folder.iterdir())}


@pytest.fixture
def layout() -> Iterator[Layout]:
    """A store of two runs in ``<base>/.sightline/``, written and closed (no -wal, no -shm)."""
    # Not under tmp_path: the nobody user could not reach it (pytest's folders are 0700).
    base = Path(tempfile.mkdtemp(prefix="sightline-readonly-"))
    base.chmod(0o755)
    folder = base / ".sightline"
    folder.mkdir()
    db = folder / "sightline.db"
    now = time.time_ns()
    store = SqliteStore(str(db))
    first = span(FIRST, "first-run", "run", start=now - 60_000 * MS, duration_ms=20)
    store.insert_events(
        [
            span(
                FIRST, "lookup", "tool_call", parent=first, start=now - 60_000 * MS, duration_ms=5
            ),
            first,
        ]
    )
    store.insert_events([span(SECOND, "second-run", "run", start=now - 1_000 * MS, duration_ms=3)])
    store.close()
    try:
        yield Layout(base, folder, db)
    finally:
        for path in (folder, *folder.iterdir()):
            path.chmod(stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


def snapshot_note(layout: Layout, ending: str) -> str:
    return (
        f"sightline: note: {layout.db} is read as a snapshot (this user can neither open nor "
        f"create sightline.db-shm, SQLite's index of the store's log, in {layout.folder}): "
        f"{ending}\n"
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("runs --json", ['"name": "second-run"', '"name": "first-run"']),
        ("show latest", ["run second-run  3.0ms"]),
        (f"show {FIRST}", ["run first-run  20ms", "└─ tool_call lookup  5.0ms"]),
        ("stats", ["2 runs · 3 events"]),
    ],
)
def test_a_store_in_a_folder_this_user_cannot_write_is_read_as_a_snapshot_with_a_note(
    reader, layout, command, expected
):
    before = layout.listing()
    layout.lock()
    result = reader.cli(*command.split(), "--db", str(layout.db), cwd=layout.base)
    assert result.returncode == 0, (reader.how, result.stderr)
    for text in expected:
        assert text in result.stdout
    assert result.stderr == snapshot_note(layout, "events recorded while this runs are not seen")
    assert layout.listing() == before  # nothing written, no -wal or -shm created


def test_tail_prints_what_is_there_and_stops_instead_of_following_a_snapshot(reader, layout):
    layout.lock()
    result = reader.cli("tail", "--last", "2", "--db", str(layout.db), cwd=layout.base, timeout=30)
    assert result.returncode == 0, (reader.how, result.stderr)
    lines = result.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [FIRST[:16], SECOND[:16]]
    assert result.stderr == snapshot_note(
        layout, "new events cannot be followed, so tail prints what is there and stops"
    )


def test_a_live_store_is_read_through_its_log_and_once_closed_as_a_snapshot(reader, layout):
    writer = SqliteStore(str(layout.db))
    try:
        writer.insert_events(
            [span("f3" * 16, "third-run", "run", start=time.time_ns(), duration_ms=1)]
        )
        assert {p.name for p in layout.folder.iterdir()} >= {"sightline.db-wal", "sightline.db-shm"}
        layout.lock()
        live = reader.cli("runs", "--json", "--db", str(layout.db), cwd=layout.base)
        assert live.returncode == 0, (reader.how, live.stderr)
        assert live.stderr == ""  # the owner's -shm is read: nothing to note
        assert '"name": "third-run"' in live.stdout  # still only in the -wal
    finally:
        layout.folder.chmod(0o755)  # the owner's program may remove its -wal and -shm at close
        writer.close()
    layout.lock()
    closed = reader.cli("runs", "--json", "--db", str(layout.db), cwd=layout.base)
    assert closed.returncode == 0, (reader.how, closed.stderr)
    assert '"name": "third-run"' in closed.stdout
    assert closed.stderr == snapshot_note(layout, "events recorded while this runs are not seen")


def test_recording_into_a_store_this_user_cannot_write_fails_at_once_saying_why(reader, layout):
    layout.lock()
    script = textwrap.dedent(
        f"""
        import logging, time
        import sightline
        from sightline.store import SqliteStore, StoreError

        for path in (
            {str(layout.db)!r},
            {str(layout.folder / "new.db")!r},
            {str(layout.folder / "sub" / "deeper" / "new.db")!r},
        ):
            started = time.monotonic()
            try:
                SqliteStore(path)
            except StoreError as exc:
                print(f"{{time.monotonic() - started:.1f}}", exc)
        logging.basicConfig(format="%(name)s %(message)s")
        client = sightline.init(db={str(layout.db)!r}, instrument=False, handle_signals=False)
        client.log_event("custom", "step")
        client.flush(5)
        print("failed", client.stats()["exporters"]["sqlite"]["failed"])
        sightline.shutdown()
        """
    )
    result = reader.run("-c", script, cwd=layout.base)
    assert result.returncode == 0, (reader.how, result.stderr)
    existing, new, in_new_folder, counted = result.stdout.splitlines()
    seconds, message = existing.split(" ", 1)
    assert float(seconds) < 5  # not retried as if the file were locked
    assert message.startswith(
        f"cannot record into the store {layout.db}: this user cannot write {layout.db} ("
    )
    assert message.endswith(
        "Point SIGHTLINE_DB (or init(db=...)) at a place this user can write; the sightline "
        "command can still read this one"
    )
    assert new.split(" ", 1)[1].startswith(
        f"cannot record into the store {layout.folder / 'new.db'}: this user cannot write its "
        f"folder {layout.folder}, where SQLite keeps new.db-wal and new.db-shm beside it ("
    )
    assert in_new_folder.split(" ", 1)[1].startswith(
        f"cannot record into the store {layout.folder / 'sub' / 'deeper' / 'new.db'}: this user "
        f"cannot create its folder {layout.folder / 'sub' / 'deeper'} in {layout.folder} ("
    )
    assert not (layout.folder / "sub").exists()
    assert counted == "failed 1"
    assert (
        f"sightline sightline: exporter 'sqlite' raised StoreError: cannot record into the store "
        f"{layout.db}: this user cannot write {layout.db}"
    ) in result.stderr


def test_a_store_this_user_cannot_read_at_all_is_one_clear_error(reader, layout):
    layout.lock()
    layout.db.chmod(0)
    result = reader.cli("runs", "--db", str(layout.db), cwd=layout.base)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"sightline: error: cannot open {layout.db}: this user may not read it "
        "(unable to open database file)\n"
    )


def test_doctor_says_the_store_is_readable_but_not_writable_by_this_user(reader, layout):
    layout.lock()
    result = reader.cli("doctor", "--db", str(layout.db), cwd=layout.base)
    assert result.returncode == 1
    [store_line] = [line for line in result.stdout.splitlines() if line[2:].startswith("store ")]
    # names what stands in the way, as recording would (write_obstacle)
    assert store_line.split(None, 2)[2].startswith(
        f"{layout.db} is readable but this user cannot write {layout.db} (owned by "
    )
    assert store_line.endswith(", mode 0444)")
