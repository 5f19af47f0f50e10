"""A fork while the SQLite store is in use, spans still open when a client closes, the exit's
time limit, and what ``stats()`` counts: deferred records apart from events, and a forked
child's own counts only."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sightline import Client, ExportResult, Status
from sightline.event import Event
from sightline.exporters.memory import InMemoryExporter
from sightline.exporters.sqlite import SqliteExporter
from sightline.store import SqliteStore, StoreError

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(body: Callable[[], int], timeout: float = 30.0) -> int | None:
    """Fork; the child runs ``body()`` and exits with what it returns (never returning into
    pytest). The child's exit code, or ``None`` when it had to be killed after ``timeout``."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _names(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return sorted(name for (name,) in connection.execute("SELECT name FROM events"))
    finally:
        connection.close()


def _hold_commit(store: SqliteStore) -> tuple[threading.Event, threading.Event]:
    """Make the store's next COMMIT wait, inside its write transaction, until ``release`` is
    set: ``inside`` is set once it waits there. SQLite's own trace hook, on the real file."""
    inside, release = threading.Event(), threading.Event()

    def trace(statement: str) -> None:
        if statement == "COMMIT" and not release.is_set():
            inside.set()
            release.wait(20)

    store._conn.set_trace_callback(trace)
    return inside, release


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[tuple[Client, SqliteExporter, Path]]:
    db = tmp_path / "store.db"
    exporter = SqliteExporter(str(db), busy_timeout=3.0)
    client = Client(exporters=[exporter], flush_interval=60, handle_signals=False)
    client.log_event("custom", "opens-the-store")
    assert client.flush(10) is True
    try:
        yield client, exporter, db
    finally:
        client.close(10)


# -- 1. fork while the store is in use ----------------------------------------------------------


@needs_fork
def test_a_child_forked_while_the_sqlite_exporter_is_inside_a_transaction_records(
    sqlite_client: tuple[Client, SqliteExporter, Path],
) -> None:
    client, exporter, db = sqlite_client
    inside, release = _hold_commit(exporter._store)
    client.log_event("custom", "parent")
    client.flush(0)  # wakes the worker: the batch goes into the transaction and waits there
    assert inside.wait(10)
    threading.Timer(0.3, release.set).start()

    def child() -> int:
        client.log_event("custom", "child")
        return 0 if client.flush(10) else 3

    assert _in_child(child) == 0
    assert client.flush(10) is True
    assert _names(db) == ["child", "opens-the-store", "parent"]


@needs_fork
def test_a_fork_does_not_wait_for_the_exporter_waiting_on_another_process_lock(
    sqlite_client: tuple[Client, SqliteExporter, Path],
) -> None:
    client, exporter, db = sqlite_client
    exporter.busy_timeout = 60.0
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        client.log_event("custom", "parent")
        client.flush(0)
        time.sleep(0.6)  # the exporter retries, attempt after attempt

        def child() -> int:
            client.log_event("custom", "child")
            return 0 if client.flush(20) else 3

        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = child()
            finally:
                os._exit(code)
        forked_in = time.monotonic() - started
    finally:
        locker.kill()
        locker.wait()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert forked_in < 1.5
    assert client.flush(20) is True
    assert _names(db) == ["child", "opens-the-store", "parent"]


@needs_fork
def test_a_fork_from_inside_an_exporter_does_not_deadlock(tmp_path: Path) -> None:
    class ForkingExporter:
        name = "forking"

        def __init__(self) -> None:
            self.child_codes: list[int | None] = []

        def export(self, events: Sequence[Event]) -> ExportResult:
            if not self.child_codes:
                self.child_codes.append(_in_child(lambda: 0, timeout=20))
            return ExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    forking = ForkingExporter()
    db = tmp_path / "store.db"
    client = Client(exporters=["sqlite", forking], db=str(db), handle_signals=False)
    try:
        for n in range(2000):
            client.log_event("custom", f"e{n % 3}")
        assert client.flush(30) is True
    finally:
        client.close(10)
    assert forking.child_codes == [0]
    assert len(_names(db)) == 2000


@needs_fork
def test_a_fork_waits_a_bounded_time_and_the_child_is_told_it_cannot_write_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sightline.store.sqlite as store_module

    monkeypatch.setattr(store_module, "_FORK_WAIT", 0.3)
    db = tmp_path / "store.db"
    store = SqliteStore(str(db))
    inside, release = _hold_commit(store)
    writer = threading.Thread(target=store.register_agent, args=("bot",))
    writer.start()
    try:
        assert inside.wait(10)

        def child() -> int:
            try:
                SqliteStore(str(db))
            except StoreError as exc:
                if "fork" not in str(exc):
                    return 4
            else:
                return 3
            try:
                store.count_events()  # the copy of the store in use: refused, not a hang
            except sqlite3.ProgrammingError:
                return 0
            return 5

        started = time.monotonic()
        code = _in_child(child, timeout=20)
        assert time.monotonic() - started < 5
        assert code == 0
    finally:
        release.set()
        writer.join(10)
    assert store.agents()[0]["name"] == "bot"
    store.close()


# -- 2. spans still open when a client closes ---------------------------------------------------


def test_spans_open_on_another_thread_at_close_are_delivered_as_incomplete() -> None:
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], handle_signals=False)
    started, stop = threading.Event(), threading.Event()

    def agent_loop() -> None:
        with client.trace("agent-loop") as run, run.step("tool", "waiting-tool"):
            started.set()
            stop.wait(20)

    thread = threading.Thread(target=agent_loop, daemon=True)
    thread.start()
    assert started.wait(10)
    with client.trace("finished-run"):
        pass
    assert client.close(10) is True
    stop.set()
    thread.join(10)
    events = {event.name: event for event in exporter.events}
    assert set(events) == {"agent-loop", "waiting-tool", "finished-run"}
    for name in ("agent-loop", "waiting-tool"):
        event = events[name]
        assert event.status == Status.ERROR
        assert event.error is not None
        assert (event.error.type, event.error.message) == (
            "Incomplete",
            "still open when the client was closed",
        )
        assert event.metadata == {"incomplete": True}
    assert events["waiting-tool"].parent_span_id == events["agent-loop"].span_id
    assert events["finished-run"].status == Status.OK
    assert client.stats()["dropped_after_close"] == 0


def test_the_span_around_close_is_left_to_end_and_is_counted() -> None:
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], handle_signals=False)
    with client.trace("job"):
        client.close(10)
    assert exporter.events == []
    assert client.stats()["dropped_after_close"] == 1


def _run(script: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
    )


def test_shutdown_records_an_agent_loop_left_open_on_a_daemon_thread(tmp_path: Path) -> None:
    db = tmp_path / "tour.db"
    done = _run(
        f"""
        import threading, time
        import sightline
        sightline.init(db={str(db)!r})
        started = threading.Event()
        def agent_loop():
            with sightline.trace("agent-loop") as run:
                with run.step("tool", "waiting-tool"):
                    started.set(); time.sleep(3600)
        threading.Thread(target=agent_loop, daemon=True).start()
        started.wait()
        with sightline.trace("finished-run"):
            pass
        print(sightline.shutdown())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT name, status, json_extract(body, '$.error.type') FROM events ORDER BY name"
        ).fetchall()
    finally:
        connection.close()
    assert rows == [
        ("agent-loop", "error", "Incomplete"),
        ("finished-run", "ok", None),
        ("waiting-tool", "error", "Incomplete"),
    ]


def test_a_span_of_a_closed_client_still_open_at_exit_is_counted_and_told(
    tmp_path: Path,
) -> None:
    done = _run(
        """
        import atexit
        import sightline
        # Registered first, so run last: after Sightline's own exit handler.
        atexit.register(lambda: print("dropped_after_close", client.stats()["dropped_after_close"]))
        client = sightline.Client(exporters=["memory"], handle_signals=False)
        span = client.start_span("never-ended")
        client.close()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dropped_after_close 1"
    assert "dropped_after_close" in done.stderr


# -- 3. deferred records are not events ----------------------------------------------------------


def test_deferred_records_refused_by_a_full_queue_are_counted_apart_from_events() -> None:
    replayed: list[tuple[object, ...]] = []
    client = Client(
        exporters=[InMemoryExporter()], queue_size=2, flush_interval=60, handle_signals=False
    )
    accepted = [client.defer((replayed.append, n)) for n in range(5)]
    assert accepted == [True, True, False, False, False]
    assert client.track(Event(name="one-too-many")) is False
    stats = client.stats()
    assert (stats["dropped"], stats["dropped_records"]) == (1, 3)
    assert client.close(10) is True
    assert [record[1] for record in replayed] == [0, 1]
    assert client.defer((replayed.append, 9)) is False
    stats = client.stats()
    assert (stats["dropped_records"], stats["dropped_after_close"], stats["dropped"]) == (4, 0, 1)


# -- 4. the exit's time limit -------------------------------------------------------------------


def test_exit_with_an_exporter_that_never_returns_takes_about_the_five_seconds(
    tmp_path: Path,
) -> None:
    done = _run(
        """
        import threading, time
        import sightline
        from sightline import ExportResult

        class Blocked:
            name = "blocked"
            def export(self, events):
                threading.Event().wait()
                return ExportResult.SUCCESS
            def shutdown(self):
                pass

        sightline.init(exporters=[Blocked()], handle_signals=False)
        for n in range(100):
            with sightline.trace("x"):
                pass
        print(time.monotonic())  # the program's end: the exit begins (one clock for all processes)
        """,
        tmp_path,
    )
    exit_took = time.monotonic() - float(done.stdout)
    assert done.returncode == 0, done.stderr
    assert 4.5 < exit_took < 7.0


# -- 5. a forked child counts its own events ----------------------------------------------------


@needs_fork
def test_a_forked_child_counts_only_its_own_events(
    sqlite_client: tuple[Client, SqliteExporter, Path],
) -> None:
    client, _, db = sqlite_client
    client.track(Event(name="queued-at-fork"))
    assert client.stats()["exported"] == 1  # the parent's counts, before the fork

    def child() -> int:
        stats = client.stats()
        fresh = (stats["processed"], stats["exported"], stats["exporters"]["sqlite"]["inserted"])
        if fresh != (0, 0, 0):
            return 3
        client.log_event("custom", "child")
        if not client.flush(10):
            return 4
        stats = client.stats()
        mine = (stats["processed"], stats["exported"], stats["exporters"]["sqlite"]["inserted"])
        return 0 if mine == (1, 1, 1) else 5

    assert _in_child(child) == 0
    assert client.flush(10) is True
    stats = client.stats()
    assert (stats["processed"], stats["exported"]) == (2, 2)
    assert _names(db) == ["child", "opens-the-store", "queued-at-fork"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_client_first_made_in_a_multiprocessing_child_delivers_without_shutdown(
    tmp_path: Path, method: str
) -> None:
    # fork and forkserver children end with os._exit, which skips atexit: a client the child
    # made itself (none inherited) must still be flushed, by multiprocessing's exit hook.
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    db = tmp_path / f"{method}.db"
    script = textwrap.dedent(
        f"""
        import multiprocessing

        def record(db):
            import sightline

            sightline.init(db=db, instrument=False, handle_signals=False)
            for k in range(10):
                sightline.get_client().log_event("custom", f"child-{{k}}")

        if __name__ == "__main__":
            process = multiprocessing.get_context({method!r}).Process(
                target=record, args=({str(db)!r},)
            )
            process.start()
            process.join(60)
            print(process.exitcode)
        """
    )
    path = tmp_path / "main.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.stdout.strip() == "0", result.stderr
    with sqlite3.connect(db) as connection:
        names = sorted(row[0] for row in connection.execute("select name from events"))
    assert names == sorted(f"child-{k}" for k in range(10))


@needs_fork
def test_a_child_forked_while_a_write_only_waits_for_another_process_lock_may_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent's thread waits for the write lock another process holds: it holds nothing,
    # so the child may open the file for writing (it was barred for its whole life).
    import sightline.store.sqlite as store_module

    monkeypatch.setattr(store_module, "_FORK_WAIT", 0.3)
    db = tmp_path / "store.db"
    store = SqliteStore(str(db), timeout=30)
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sqlite3, sys, time\nc = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdin is not None
    assert locker.stdout.readline().strip() == "locked"
    writer = threading.Thread(target=store.register_agent, args=("bot",))
    writer.start()
    try:
        time.sleep(0.3)  # the writer is now waiting on the other process's lock

        def child() -> int:
            try:
                SqliteStore(str(db), timeout=0.1).close()
            except StoreError:
                return 3  # barred, though no write of the parent's was under way
            except sqlite3.OperationalError:
                pass  # the other process still holds the file: not this test's concern
            return 0

        assert _in_child(child, timeout=20) == 0
    finally:
        locker.stdin.write("\n")
        locker.stdin.flush()
        locker.wait(10)
        writer.join(30)
    assert store.agents()[0]["name"] == "bot"
    store.close()


@needs_fork
def test_a_forked_child_starts_its_http_and_closed_client_counts_at_zero(tmp_path: Path) -> None:
    from tests.core.test_endpoint_userinfo import KEY, Seen, _Collector
    from tests.support.loopback import serving

    seen: list[Seen] = []
    closed = Client(exporters=[InMemoryExporter()], queue_size=1, handle_signals=False)
    closed.close()
    closed.defer((lambda record: None,))  # refused after close: the parent's count
    assert closed.stats()["dropped_records"] == 1
    with serving(type("Handler", (_Collector,), {"seen": seen})) as port:
        with Client(
            endpoint=f"http://127.0.0.1:{port}",
            api_key=KEY,
            spool_dir=str(tmp_path / "spool"),
            handle_signals=False,
        ) as client:
            for index in range(20):
                client.log_event("custom", f"parent-{index}")
            assert client.flush(10) is True
            assert client.stats()["exporters"]["http"]["sent"] == 20

            def child() -> int:
                http = client.stats()["exporters"]["http"]
                if (http["sent"], http["requests"], http["spooled"]) != (0, 0, 0):
                    return 3
                if closed.stats()["dropped_records"] != 0:
                    return 4
                client.log_event("custom", "child")
                if not client.flush(10):
                    return 5
                return 0 if client.stats()["exporters"]["http"]["sent"] == 1 else 6

            assert _in_child(child) == 0
