"""The pipeline (ARCHITECTURE.md §5): a bounded queue that never blocks the caller, a background
worker running processors, batching by size and by interval, exporters isolated from each other,
flush / close, atexit, fork, and exact counts in ``client.stats()``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence

import pytest

import sightline
from sightline import Client, ExportResult
from sightline.event import Event
from sightline.exporters.jsonl import JsonlExporter
from sightline.store import SqliteStore


class RecordingExporter:
    """Remembers every batch it was given, and the thread that gave it."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.batches: list[list[Event]] = []
        self.threads: set[int] = set()
        self.shutdowns = 0

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.threads.add(threading.get_ident())
        self.batches.append(list(events))
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shutdowns += 1

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]


class StuckExporter(RecordingExporter):
    """Blocks inside export until ``release()``."""

    def __init__(self, name: str = "stuck") -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.entered.set()
        self.gate.wait(30)
        return super().export(events)

    def release(self) -> None:
        self.gate.set()


class BrokenExporter(RecordingExporter):
    def export(self, events: Sequence[Event]) -> ExportResult:
        raise ConnectionError("backend down")


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def event(name: str = "e", **fields) -> Event:
    return Event("custom", name, **fields).finish()


# -- the caller's side -----------------------------------------------------------------------------


def test_a_full_queue_drops_new_events_and_counts_them():
    exporter = RecordingExporter()
    client = Client(exporters=[exporter], queue_size=5, batch_size=100, flush_interval=60)
    try:
        accepted = [client.track(event(f"e{i}")) for i in range(12)]
        assert accepted == [True] * 5 + [False] * 7
        stats = client.stats()
        assert (stats["queued"], stats["dropped"], stats["processed"]) == (5, 7, 0)
        assert client.flush(5) is True
        assert [e.name for e in exporter.events] == ["e0", "e1", "e2", "e3", "e4"]
    finally:
        client.close()


def test_track_never_blocks_while_an_exporter_is_stuck():
    exporter = StuckExporter()
    client = Client(exporters=[exporter], queue_size=10, batch_size=5, flush_interval=0.05)
    try:
        slowest = 0.0
        started = time.perf_counter()
        for i in range(1000):
            before = time.perf_counter()
            client.track(event(f"e{i}"))
            slowest = max(slowest, time.perf_counter() - before)
        assert time.perf_counter() - started < 1.0
        assert slowest < 0.1
        assert exporter.entered.wait(5)
        stats = client.stats()
        assert stats["dropped"] + stats["exporter_dropped"] > 0
    finally:
        exporter.release()
    assert client.flush(5) is True
    stats = client.stats()
    assert stats["exported"] + stats["dropped"] + stats["exporter_dropped"] == 1000
    assert stats["exported"] == len(exporter.events) <= 10 + 5 + 5
    client.close()


def test_track_does_not_serialize_on_the_callers_thread():
    seen_on: list[int] = []

    class Probe:
        def __repr__(self) -> str:
            seen_on.append(threading.get_ident())
            return "<probe>"

    exporter = RecordingExporter()
    with Client(exporters=[exporter], flush_interval=60) as client:
        client.log_event("tool_call", "t", input={"probe": Probe()})
        assert seen_on == []
        assert client.flush(5) is True
    assert seen_on and threading.get_ident() not in seen_on
    assert exporter.events[0].input == {"probe": "<probe>"}


# -- batching ------------------------------------------------------------------------------------


def test_events_reach_the_exporter_in_batches_of_at_most_batch_size():
    exporter = RecordingExporter()
    with Client(exporters=[exporter], batch_size=10, flush_interval=60) as client:
        for i in range(35):
            client.track(event(f"e{i}"))
        assert client.flush(5) is True
        sizes = [len(b) for b in exporter.batches]
    assert sum(sizes) == 35
    assert max(sizes) <= 10
    assert len(sizes) >= 4
    assert [e.name for e in exporter.events] == [f"e{i}" for i in range(35)]


def test_a_partial_batch_is_delivered_after_the_flush_interval_without_flush():
    exporter = RecordingExporter()
    with Client(exporters=[exporter], batch_size=1000, flush_interval=0.5) as client:
        started = time.monotonic()
        for i in range(3):
            client.track(event(f"e{i}"))
        assert exporter.batches == []
        assert wait_for(lambda: exporter.batches, timeout=5)
        waited = time.monotonic() - started
        assert [len(b) for b in exporter.batches] == [3]
        assert 0.3 <= waited < 3


def test_exporters_run_off_the_callers_thread():
    exporter = RecordingExporter()
    with Client(exporters=[exporter]) as client:
        client.track(event())
        client.flush(5)
    assert exporter.threads and threading.get_ident() not in exporter.threads


# -- processors ----------------------------------------------------------------------------------


class Enricher:
    def __init__(self) -> None:
        self.threads: set[int] = set()

    @sightline.hookimpl
    def sightline_process_event(self, event):
        self.threads.add(threading.get_ident())
        event.metadata["region"] = "eu-west"
        event.tags.append("enriched")
        event.output = {"wrapped": event.output}


class DropHealthchecks:
    @sightline.hookimpl
    def sightline_process_event(self, event):
        if event.name == "healthcheck":
            return False
        return None


def test_a_processor_plugin_changes_events_before_export_off_the_callers_thread():
    exporter = RecordingExporter()
    client = Client(exporters=[exporter])
    enricher = Enricher()
    client.plugins.register(enricher, "test-enricher")
    try:
        client.log_event("tool_call", "search", output=[1, 2])
        assert client.flush(5) is True
    finally:
        client.plugins.unregister("test-enricher")
        client.close()
    [exported] = exporter.events
    assert exported.metadata == {"region": "eu-west"}
    assert exported.tags == ["enriched"]
    assert exported.output == {"wrapped": [1, 2]}
    assert enricher.threads and threading.get_ident() not in enricher.threads


def test_clean_values_are_exported_uncopied_while_only_built_in_processors_run():
    exporter = RecordingExporter()
    question = {"q": "refund?", "history": [{"role": "user", "content": "hi"}], "n": 2}
    needs_masking = {"api_key": "sk-live-1", "items": [1, 2]}
    with Client(exporters=[exporter]) as client:
        client.log_event("tool_call", "clean", input=question, output=["a", None, 1.5])
        client.log_event("tool_call", "secret", input=needs_masking)
        client.flush(5)
    clean, secret = exporter.events
    assert clean.input is question  # nothing to change: no copy made
    assert secret.input == {"api_key": "[REDACTED]", "items": [1, 2]}
    assert secret.input is not needs_masking
    assert needs_masking["api_key"] == "sk-live-1"  # the application's object is untouched


def test_a_processor_plugin_edits_private_copies_never_the_applications_values():
    exporter = RecordingExporter()
    question = {"q": "refund?"}
    metadata = {"plan": "pro"}
    client = Client(exporters=[exporter])
    client.plugins.register(Enricher(), "test-enricher")
    try:
        client.log_event("tool_call", "search", input=question, metadata=metadata)
        assert client.flush(5) is True
    finally:
        client.plugins.unregister("test-enricher")
    try:
        client.log_event("tool_call", "after", input=question)
        assert client.flush(5) is True
    finally:
        client.close()
    first, after = exporter.events
    assert first.metadata == {"plan": "pro", "region": "eu-west"}
    assert metadata == {"plan": "pro"}  # the enricher edited a copy
    assert first.input == question and first.input is not question
    # Once only built-in processors are left, clean values are shared again.
    assert after.input is question


def test_a_processor_returning_false_drops_the_event_and_counts_it_as_filtered():
    exporter = RecordingExporter()
    client = Client(exporters=[exporter])
    client.plugins.register(DropHealthchecks(), "test-drop-healthchecks")
    try:
        client.log_event("api_call", "healthcheck")
        client.log_event("api_call", "GET /orders")
        client.log_event("api_call", "healthcheck")
        assert client.flush(5) is True
        stats = client.stats()
    finally:
        client.plugins.unregister("test-drop-healthchecks")
        client.close()
    assert [e.name for e in exporter.events] == ["GET /orders"]
    assert (stats["processed"], stats["filtered"], stats["exported"]) == (3, 2, 1)


def test_an_unregistered_processor_no_longer_runs():
    exporter = RecordingExporter()
    with Client(exporters=[exporter]) as client:
        client.plugins.register(DropHealthchecks(), "test-drop-healthchecks")
        client.plugins.unregister("test-drop-healthchecks")
        client.log_event("api_call", "healthcheck")
        client.flush(5)
    assert [e.name for e in exporter.events] == ["healthcheck"]


def test_a_raising_processor_is_disabled_and_the_event_still_exported(caplog):
    class Raising:
        calls = 0

        @sightline.hookimpl
        def sightline_process_event(self, event):
            Raising.calls += 1
            raise RuntimeError("processor bug")

    exporter = RecordingExporter()
    client = Client(exporters=[exporter])
    client.plugins.register(Raising(), "test-raising")
    try:
        with caplog.at_level(logging.ERROR, logger="sightline"):
            client.log_event("custom", "a")
            client.log_event("custom", "b")
            assert client.flush(5) is True
        statuses = {i.name: i.status for i in client.plugins.list()}
    finally:
        client.plugins.unregister("test-raising")
        client.close()
    assert [e.name for e in exporter.events] == ["a", "b"]
    assert Raising.calls == 1
    assert statuses["test-raising"] == "failed"
    assert sum("test-raising" in r.getMessage() for r in caplog.records) == 1


# -- exporters -----------------------------------------------------------------------------------


def test_a_stuck_and_a_raising_exporter_do_not_hold_back_a_healthy_one(caplog):
    stuck, broken, healthy = (
        StuckExporter("stuck"),
        BrokenExporter("broken"),
        RecordingExporter("healthy"),
    )
    client = Client(exporters=[stuck, broken, healthy], batch_size=10, flush_interval=0.05)
    try:
        with caplog.at_level(logging.ERROR, logger="sightline"):
            for i in range(30):
                client.track(event(f"e{i}"))
            assert wait_for(lambda: len(healthy.events) == 30)
            assert wait_for(lambda: client.stats()["exporters"]["broken"]["failed"] == 30)
        per_exporter = client.stats()["exporters"]
        assert (per_exporter["healthy"]["exported"], per_exporter["healthy"]["failed"]) == (30, 0)
        assert (per_exporter["broken"]["exported"], per_exporter["broken"]["failed"]) == (0, 30)
        assert per_exporter["stuck"]["exported"] == 0
        assert [r.getMessage() for r in caplog.records].count(
            "sightline: exporter 'broken' raised ConnectionError: backend down (further "
            "failures are counted in client.stats())"
        ) == 1
    finally:
        stuck.release()
    assert client.flush(5) is True
    stats = client.stats()
    assert stats["exporters"]["stuck"]["exported"] == 30
    assert (stats["exported"], stats["failed"]) == (60, 30)
    client.close()


def test_an_exporter_returning_failure_is_counted_as_failed():
    class Refusing(RecordingExporter):
        def export(self, events):
            return ExportResult.FAILURE

    with Client(exporters=[Refusing("refusing")]) as client:
        for _ in range(4):
            client.track(event())
        client.flush(5)
        assert client.stats()["exporters"]["refusing"]["failed"] == 4
        assert client.stats()["exported"] == 0


def test_flush_returns_true_once_everything_is_delivered():
    exporter = RecordingExporter()
    with Client(exporters=[exporter], flush_interval=60) as client:
        for i in range(20):
            client.track(event(f"e{i}"))
        assert client.flush(5) is True
        assert len(exporter.events) == 20
        assert client.stats()["queued"] == 0


def test_flush_returns_false_after_its_timeout_when_an_exporter_is_stuck():
    exporter = StuckExporter()
    client = Client(exporters=[exporter])
    try:
        client.track(event())
        started = time.monotonic()
        assert client.flush(0.3) is False
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        exporter.release()
    assert client.flush(5) is True
    client.close()


def test_close_is_idempotent_and_shuts_each_exporter_down_once():
    exporter = RecordingExporter()
    client = Client(exporters=[exporter], flush_interval=60)
    client.track(event("last"))
    assert client.close() is True
    assert client.close() is True
    assert exporter.shutdowns == 1
    assert [e.name for e in exporter.events] == ["last"]
    assert client.track(event("after-close")) is False
    assert client.stats()["exported"] == 1


def test_close_gives_up_after_its_timeout_when_an_exporter_is_stuck():
    exporter = StuckExporter()
    client = Client(exporters=[exporter])
    try:
        client.track(event())
        started = time.monotonic()
        assert client.close(timeout=0.3) is False
        assert time.monotonic() - started < 2.0
    finally:
        exporter.release()


def test_unknown_exporter_name_raises_config_error_listing_the_available_ones():
    with pytest.raises(sightline.ConfigError, match=r"unknown exporter 'kafka'.*jsonl.*sqlite"):
        Client(exporters=["kafka"])


def test_jsonl_exporter_writes_one_strict_json_line_per_event(tmp_path):
    with Client(exporters=["jsonl"], db=str(tmp_path / "store" / "s.db")) as client:
        client.log_event("tool_call", "a", input={"x": float("nan")})
        client.log_event("tool_call", "b")
    lines = (tmp_path / "store" / "events.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0])["input"] == {"x": "nan"}


def test_console_exporter_prints_one_line_per_event(capsys):
    with Client(exporters=["console"]) as client:
        client.log_event("tool_call", "search_kb", status="error", error="kb offline")
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("[sightline]")]
    assert "tool_call" in line and "search_kb" in line and "error=tool:Error: kb offline" in line


# -- stats ---------------------------------------------------------------------------------------


def test_stats_report_exact_counts():
    exporter = RecordingExporter("memory-test")
    client = Client(exporters=[exporter])
    client.plugins.register(DropHealthchecks(), "test-drop-healthchecks")
    try:
        for i in range(10):
            client.log_event("api_call", "healthcheck" if i % 3 == 0 else f"call-{i}")
        assert client.flush(5) is True
        stats = client.stats()
    finally:
        client.plugins.unregister("test-drop-healthchecks")
        client.close()
    assert {
        k: stats[k] for k in ("queued", "processed", "exported", "dropped", "filtered", "failed")
    } == {
        "queued": 0,
        "processed": 10,
        "exported": 6,
        "dropped": 0,
        "filtered": 4,
        "failed": 0,
    }
    assert stats["exporters"]["memory-test"]["exported"] == 6
    assert stats["exporters"]["memory-test"]["failed"] == 0


def test_stats_remain_readable_after_close():
    exporter = RecordingExporter("memory-test")
    client = Client(exporters=[exporter])
    client.track(event())
    client.close()
    assert client.stats()["exported"] == 1
    assert client.stats()["exporters"]["memory-test"]["exported"] == 1


# -- process lifecycle ---------------------------------------------------------------------------


def run_script(script: str, env_extra: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_still_queued_at_exit_are_flushed_by_atexit(tmp_path):
    db = tmp_path / "atexit.db"
    script = """
        import sightline
        sightline.init(instrument=False, flush_interval=60, batch_size=1000)
        with sightline.trace("exit-run") as run:
            with run.step("tool", "last-step"):
                pass
        explicit = sightline.Client(exporters=["sqlite"], flush_interval=60, batch_size=1000)
        explicit.log_event("custom", "explicit-client")
        print("left without close")
    """
    result = run_script(script, {"SIGHTLINE_DB": str(db)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "left without close"
    store = SqliteStore(str(db))
    try:
        traces, _ = store.list_traces()
        names = sorted(e["name"] for t in traces for e in store.get_trace(t["trace_id"])["events"])
    finally:
        store.close()
    assert names == ["exit-run", "explicit-client", "last-step"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fresh_worker_and_not_the_parents_queue(tmp_path):
    jsonl = tmp_path / "fork.jsonl"
    db = tmp_path / "fork.db"
    client = Client(
        exporters=["sqlite", JsonlExporter(str(jsonl))],
        db=str(db),
        batch_size=1000,
        flush_interval=60,
    )
    try:
        for i in range(3):
            client.log_event("custom", f"parent-{i}", metadata={"pid": os.getpid()})
        assert client.stats()["queued"] == 3
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                queued_in_child = client.stats()["queued"]
                for i in range(2):
                    client.log_event("custom", f"child-{i}", metadata={"pid": os.getpid()})
                delivered = client.flush(10)
                code = 0 if (queued_in_child, delivered) == (0, True) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.stats()["queued"] == 3
        assert client.flush(10) is True
    finally:
        client.close()
    records = [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]
    names = sorted(r["name"] for r in records)
    assert names == ["child-0", "child-1", "parent-0", "parent-1", "parent-2"]
    assert {r["metadata"]["pid"] for r in records if r["name"].startswith("child")} == {pid}
    store = SqliteStore(str(db))
    try:
        assert store.count_events() == 5
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs the fork start method")
def test_events_of_a_multiprocessing_child_are_flushed_when_it_ends(tmp_path):
    import multiprocessing

    db = tmp_path / "mp.db"
    client = Client(exporters=["sqlite"], db=str(db), batch_size=1000, flush_interval=60)

    def work(index: int) -> None:
        # multiprocessing ends the child with os._exit, past atexit: nothing here flushes.
        client.log_event("custom", f"child-{index}")

    try:
        client.log_event("custom", "parent")
        process = multiprocessing.get_context("fork").Process(target=work, args=(1,))
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert client.flush(10) is True
    finally:
        client.close()
    store = SqliteStore(str(db))
    try:
        names = sorted(e["name"] for e in store.events_after(0)[0])
    finally:
        store.close()
    assert names == ["child-1", "parent"]


# -- deferred records (Client.defer) ---------------------------------------------------------


def test_deferred_records_run_on_the_worker_in_order_and_their_events_are_delivered():
    exporter = RecordingExporter()
    calls: list[tuple[str, int]] = []

    def record_step(record: tuple) -> None:
        _, name, at = record
        calls.append((name, threading.get_ident()))
        span = client.start_span(name, parent=None, start_ns=at)
        span.end(at + 1000)

    with Client(exporters=[exporter], flush_interval=60) as client:
        client.track(event("before"))
        assert client.defer((record_step, "deferred-1", 1_000_000)) is True
        assert client.defer((record_step, "deferred-2", 2_000_000)) is True
        client.track(event("after"))
        assert calls == []  # nothing ran on the caller's thread
        assert client.flush(5) is True
        names = [e.name for e in exporter.events]
        assert sorted(names) == ["after", "before", "deferred-1", "deferred-2"]
        assert names.index("deferred-1") < names.index("deferred-2")
        assert [name for name, _ in calls] == ["deferred-1", "deferred-2"]
        assert {thread for _, thread in calls} != {threading.get_ident()}
        deferred = [e for e in exporter.events if e.name.startswith("deferred")]
        assert [(e.start_ns, e.end_ns) for e in deferred] == [
            (1_000_000, 1_001_000),
            (2_000_000, 2_001_000),
        ]
        stats = client.stats()
        assert (stats["processed"], stats["exported"], stats["dropped"]) == (4, 4, 0)


def test_a_failing_deferred_record_is_counted_and_the_others_still_run(caplog):
    exporter = RecordingExporter()

    def broken(record: tuple) -> None:
        raise RuntimeError("cannot replay")

    with Client(exporters=[exporter], flush_interval=60) as client:
        with caplog.at_level(logging.ERROR, logger="sightline"):
            assert client.defer((broken,)) is True
            client.track(event("kept"))
            assert client.flush(5) is True
        assert [e.name for e in exporter.events] == ["kept"]
        assert client.stats()["processor_errors"] == 1
        assert "deferred record failed" in caplog.text


def test_defer_on_a_disabled_client_is_refused():
    assert Client(enabled=False).defer((print, "never")) is False


def test_an_event_whose_processing_raises_is_dropped_and_counted_never_exported_raw(caplog):
    from sightline.pipeline import Pipeline

    exporter = RecordingExporter()

    def process(e: Event) -> bool:
        if e.name == "bad":
            raise ValueError("secret sk-live-123 in the message")
        return True

    pipeline = Pipeline([("mem", exporter)], process, flush_interval=60)
    with caplog.at_level(logging.ERROR, logger="sightline"):
        for name in ("ok-1", "bad", "ok-2"):
            pipeline.submit(event(name))
        assert pipeline.flush(5) is True
    pipeline.close(5)
    assert [e.name for e in exporter.events] == ["ok-1", "ok-2"]
    assert pipeline.processor_errors.value == 1
    assert "ValueError" in caplog.text and "sk-live-123" not in caplog.text


def test_an_event_whose_processing_raises_after_the_close_deadline_is_dropped_too():
    from sightline.pipeline import Pipeline

    class Spooling(RecordingExporter):
        def __init__(self) -> None:
            super().__init__()
            self.persisted: list[Event] = []

        def persist(self, events: Sequence[Event]) -> None:
            self.persisted.extend(events)

    release = threading.Event()

    def process(e: Event) -> bool:
        if e.name == "slow":
            release.wait(5)  # the worker is busy past the close deadline
        if e.name == "bad":
            raise ValueError("redaction failed")
        return True

    exporter = Spooling()
    pipeline = Pipeline([("spooling", exporter)], process, flush_interval=60)
    pipeline.submit(event("slow"))
    pipeline.flush(0.05)  # the worker takes "slow" and waits
    pipeline.submit(event("bad", input={"api_key": "sk-live-never"}))
    pipeline.submit(event("good"))
    pipeline.close(0.2)  # the deadline passes: the leftovers are processed here
    release.set()
    time.sleep(0.2)
    names = [e.name for e in exporter.events + exporter.persisted]
    assert "bad" not in names and "good" in names
    assert pipeline.processor_errors.value == 1
