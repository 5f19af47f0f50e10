"""close(), flush() and exit under pressure: a logging handler that raises, a second close, a close
interrupted by Ctrl-C or by SIGTERM, a close from an exporter's own thread, and spans still open
when the program ends. Exit and signal cases run in a child process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import sightline
from sightline import Event, ExportResult, Status
from sightline.testing import InMemoryExporter


class _RaisingHandler(logging.Handler):
    """An application's logging handler that fails on every record (a log shipper down)."""

    def emit(self, record: logging.LogRecord) -> None:
        raise ConnectionError("log shipper down")


@pytest.fixture
def raising_log_handler() -> Iterator[None]:
    handler = _RaisingHandler()
    logger = logging.getLogger("sightline")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Recorder:
    """Keeps what it exports; ``gate`` (set by default) holds export() back while cleared."""

    name = "recorder"

    def __init__(self) -> None:
        self.names: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[str] = []

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.entered.set()
        assert self.gate.wait(30)
        self.names += [event.name for event in events]
        self.calls.append("export")
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def _client(exporter: Any, **options: Any) -> sightline.Client:
    return sightline.Client(exporters=[exporter], handle_signals=False, **options)


# -- Sightline's own logging never raises -------------------------------------------------------


@pytest.mark.usefixtures("raising_log_handler")
def test_a_raising_log_handler_does_not_reach_track_when_the_queue_is_full() -> None:
    client = _client(InMemoryExporter(), queue_size=1, flush_interval=60)
    accepted = [client.track(Event(name=f"e{n}")) for n in range(3)]
    assert accepted == [True, False, False]
    assert client.stats()["dropped"] == 2
    client.close()


@pytest.mark.usefixtures("raising_log_handler")
def test_a_raising_log_handler_does_not_reach_a_span_ended_after_close() -> None:
    client = _client(InMemoryExporter())
    span = client.trace("late")
    client.close()
    span.end()
    assert client.stats()["dropped_after_close"] == 1


@pytest.mark.usefixtures("raising_log_handler")
def test_a_raising_log_handler_does_not_stop_the_exporter_thread() -> None:
    class FailsOnce(_Recorder):
        def export(self, events: Sequence[Event]) -> ExportResult:
            if not self.calls:
                self.calls.append("raised")
                raise TimeoutError("backend blip")
            return super().export(events)

    exporter = FailsOnce()
    client = _client(exporter)
    client.log_event("custom", "first")
    client.flush(5)
    for n in range(5):
        client.log_event("custom", f"later{n}")
    assert client.flush(10) is True
    assert exporter.names == [f"later{n}" for n in range(5)]
    stats = client.stats()
    assert (stats["exported"], stats["failed"]) == (5, 1)
    client.close()


@pytest.mark.usefixtures("raising_log_handler")
def test_a_raising_log_handler_does_not_stop_the_pipeline_worker() -> None:
    class BuggyProcessor:
        @sightline.hookimpl
        def sightline_process_event(self, event: Event) -> bool | None:
            raise KeyError("oops")

    exporter = InMemoryExporter()
    client = _client(exporter)
    client.plugins.register(BuggyProcessor(), "buggy")
    client.log_event("custom", "first")
    client.flush(5)
    for n in range(5):
        client.log_event("custom", f"later{n}")
    assert client.flush(10) is True
    assert [event.name for event in exporter.events] == ["first"] + [f"later{n}" for n in range(5)]
    client.close()


def test_the_exporter_thread_counts_a_failed_pass_and_goes_on() -> None:
    exporter = _Recorder()
    client = _client(exporter)
    assert client._pipeline is not None
    worker = client._pipeline.exporters[0]
    export = worker._export

    def fails_once(batch: list[Event]) -> None:
        worker._export = export  # type: ignore[method-assign]
        raise RuntimeError("unexpected")

    worker._export = fails_once  # type: ignore[method-assign]
    client.log_event("custom", "lost")
    client.flush(5)
    client.log_event("custom", "delivered")
    assert client.flush(10) is True
    assert exporter.names == ["delivered"]
    stats = client.stats()
    assert (stats["exported"], stats["failed"]) == (1, 1)
    client.close()


def test_the_pipeline_worker_counts_a_failed_pass_and_goes_on() -> None:
    exporter = InMemoryExporter()
    client = _client(exporter)
    pipeline = client._pipeline
    assert pipeline is not None
    drain = pipeline._drain

    def fails_once(queue: Any) -> None:
        pipeline._drain = drain  # type: ignore[method-assign]
        raise RuntimeError("unexpected")

    pipeline._drain = fails_once  # type: ignore[method-assign]
    client.log_event("custom", "a")
    assert client.flush(10) is True
    client.log_event("custom", "b")
    assert client.flush(10) is True
    assert [event.name for event in exporter.events] == ["a", "b"]
    assert client.stats()["processor_errors"] == 1
    client.close()


# -- a second close waits for the first --------------------------------------------------------


def test_a_second_close_waits_for_the_close_in_progress_and_returns_its_outcome() -> None:
    exporter = _Recorder()
    exporter.gate.clear()
    client = _client(exporter, flush_interval=60)
    for n in range(10):
        client.log_event("custom", f"e{n}")
    outcomes: dict[str, tuple[bool, int]] = {}

    def close(key: str) -> None:
        result = client.close(timeout=30)
        outcomes[key] = (result, len(exporter.names))

    first = threading.Thread(target=close, args=("first",))
    first.start()
    assert exporter.entered.wait(10)  # the first close is flushing, held in export()
    second = threading.Thread(target=close, args=("second",))
    second.start()
    second.join(0.2)
    exporter.gate.set()
    first.join(30)
    second.join(30)
    assert outcomes == {"first": (True, 10), "second": (True, 10)}


def test_a_second_close_that_runs_out_of_time_waiting_returns_false() -> None:
    exporter = _Recorder()
    exporter.gate.clear()
    client = _client(exporter, flush_interval=60)
    client.log_event("custom", "e")
    first = threading.Thread(target=client.close, kwargs={"timeout": 30})
    first.start()
    assert exporter.entered.wait(10)
    try:
        assert client.close(timeout=0.2) is False
    finally:
        exporter.gate.set()
        first.join(30)
    assert exporter.names == ["e"]
    assert client.close() is True


# -- close from an exporter's own thread -------------------------------------------------------


def test_close_from_an_exporters_own_thread_does_not_wait_for_itself() -> None:
    class ClosesOnFatal(_Recorder):
        client: sightline.Client
        closed: bool | None = None

        def __init__(self) -> None:
            super().__init__()
            self.shut_down = threading.Event()

        def export(self, events: Sequence[Event]) -> ExportResult:
            result = super().export(events)
            self.closed = self.client.close()
            self.calls.append("closed")
            return result

        def shutdown(self) -> None:
            super().shutdown()
            self.shut_down.set()

    exporter = ClosesOnFatal()
    client = _client(exporter)
    exporter.client = client
    client.log_event("custom", "a")
    assert client.flush(30) is True
    assert exporter.closed is True
    stats = client.stats()
    assert (stats["processed"], stats["exported"], stats["failed"]) == (1, 1, 0)
    # The exporter is shut down on its own thread once export() returned, not inside it.
    assert exporter.shut_down.wait(10)
    assert exporter.calls == ["export", "closed", "shutdown"]


def test_flush_from_an_exporters_own_thread_does_not_wait_for_itself() -> None:
    class Flushes(_Recorder):
        client: sightline.Client
        flushed: bool | None = None

        def export(self, events: Sequence[Event]) -> ExportResult:
            self.flushed = self.client.flush(timeout=2)
            return super().export(events)

    exporter = Flushes()
    client = _client(exporter)
    exporter.client = client
    client.log_event("custom", "a")
    assert client.flush(30) is True
    assert exporter.flushed is True
    client.close()


# -- an interrupted close is completed later ---------------------------------------------------


class _InterruptsOnce:
    """An integration whose uninstrument is hit by Ctrl-C: close() is cut short there."""

    def __init__(self) -> None:
        self.interrupted = False

    @sightline.hookimpl
    def sightline_instrument(self, client: sightline.Client) -> None:
        pass

    @sightline.hookimpl
    def sightline_uninstrument(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt


def test_a_close_interrupted_by_ctrl_c_is_completed_by_the_next_close() -> None:
    exporter = _Recorder()
    client = _client(exporter, flush_interval=60)
    client.plugins.register(_InterruptsOnce(), "interrupts")
    client.instrument()
    for n in range(10):
        client.log_event("custom", f"e{n}")
    with pytest.raises(KeyboardInterrupt):
        client.close(timeout=10)
    assert client.close(timeout=10) is True
    assert exporter.names == [f"e{n}" for n in range(10)]
    assert exporter.calls[-1] == "shutdown"
    assert client.stats()["exported"] == 10


# -- close window ------------------------------------------------------------------------------


def test_an_event_recorded_while_close_shuts_exporters_down_counts_as_after_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class SlowShutdown(_Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.shutting_down = threading.Event()
            self.release = threading.Event()

        def shutdown(self) -> None:
            self.shutting_down.set()
            self.release.wait(30)
            super().shutdown()

    exporter = SlowShutdown()
    client = _client(exporter)
    client.log_event("custom", "before")
    closer = threading.Thread(target=client.close, kwargs={"timeout": 30})
    with caplog.at_level(logging.WARNING, logger="sightline"):
        closer.start()
        assert exporter.shutting_down.wait(10)
        try:
            client.log_event("custom", "during-close")
        finally:
            exporter.release.set()
            closer.join(30)
    stats = client.stats()
    assert (stats["dropped"], stats["dropped_after_close"]) == (0, 1)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("queue full" in message for message in messages)
    assert any("recorded after the client was closed" in message for message in messages)


# -- spans still open at the end ---------------------------------------------------------------


def test_spans_still_open_are_ended_as_incomplete() -> None:
    from sightline.client import end_open_spans

    exporter = InMemoryExporter()
    client = _client(exporter)
    run = client.trace("agent-loop")
    step = run.step("tool", "search")
    with client.track_event("done"):
        pass
    closed = _client(InMemoryExporter())
    open_on_closed_client = closed.trace("left-open")
    closed.close()

    assert end_open_spans("still open in this test") >= 2
    assert client.flush(10) is True
    events = {event.name: event for event in exporter.events}
    assert set(events) == {"agent-loop", "search", "done"}
    for name in ("agent-loop", "search"):
        event = events[name]
        assert event.status == Status.ERROR
        assert event.error is not None
        assert (event.error.kind, event.error.type, event.error.message) == (
            "unknown",
            "Incomplete",
            "still open in this test",
        )
        assert event.metadata == {"incomplete": True}
    assert events["done"].status == Status.OK
    assert run.ended and step.ended
    assert not open_on_closed_client.ended
    assert closed.stats()["dropped_after_close"] == 0
    client.close()


PREAMBLE = """
import atexit, json, os, signal, sys, threading, time
import sightline
from sightline import ExportResult

class FileExporter:
    name = "file"
    def __init__(self, path, delay=0.0):
        self.path, self.delay = path, delay
    def export(self, events):
        time.sleep(self.delay)
        with open(self.path, "a") as out:
            for e in events:
                out.write(json.dumps({
                    "name": e.name, "span_id": e.span_id, "parent": e.parent_span_id,
                    "status": e.status.value, "metadata": e.metadata,
                    "error": e.error.type if e.error else None,
                }) + "\\n")
        return ExportResult.SUCCESS
    def shutdown(self):
        pass
"""


def _run_child(
    body: str, out: Path
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    code = PREAMBLE + f"OUT = {str(out)!r}\n" + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    lines = out.read_text().splitlines() if out.exists() else []
    return result, [json.loads(line) for line in lines]


def test_spans_open_at_exit_are_recorded_as_incomplete(tmp_path: Path) -> None:
    result, events = _run_child(
        """
        client = sightline.Client(exporters=[FileExporter(OUT)], handle_signals=False)
        sightline.set_client(client)
        started = threading.Event()
        def agent_loop():
            with sightline.trace("agent-loop"):
                for i in range(10_000):
                    client.log_event("tool_call", f"step{i}")
                    started.set()
                    time.sleep(0.01)
        threading.Thread(target=agent_loop, daemon=True).start()
        @sightline.monitor
        def stream():
            yield 1
            yield 2
        generator = stream()
        next(generator)
        started.wait(10)
        time.sleep(0.1)
        """,
        tmp_path / "events.jsonl",
    )
    assert result.returncode == 0, result.stderr
    by_name = {event["name"]: event for event in events}
    for name in ("agent-loop", "stream"):
        assert by_name[name]["status"] == "error"
        assert by_name[name]["error"] == "Incomplete"
        assert by_name[name]["metadata"] == {"incomplete": True}
    stored = {event["span_id"] for event in events}
    assert {event["parent"] for event in events if event["parent"]} <= stored


def test_a_close_interrupted_by_ctrl_c_is_completed_at_exit(tmp_path: Path) -> None:
    result, events = _run_child(
        """
        class InterruptsOnce:
            @sightline.hookimpl
            def sightline_instrument(self, client):
                pass
            @sightline.hookimpl
            def sightline_uninstrument(self):
                raise KeyboardInterrupt
        client = sightline.Client(
            exporters=[FileExporter(OUT)], handle_signals=False, flush_interval=60
        )
        client.plugins.register(InterruptsOnce(), "interrupts")
        client.instrument()
        for i in range(100):
            client.log_event("custom", f"e{i}")
        try:
            client.close()
        except KeyboardInterrupt:
            client.plugins.unregister("interrupts")
            print("interrupted")
        """,
        tmp_path / "events.jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "interrupted"
    assert sorted(event["name"] for event in events) == sorted(f"e{i}" for i in range(100))


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_sigterm_during_the_applications_close_delivers_everything(tmp_path: Path) -> None:
    result, events = _run_child(
        """
        client = sightline.Client(
            exporters=[FileExporter(OUT, delay=0.2)], handle_signals=True, batch_size=10
        )
        for i in range(50):
            client.log_event("custom", f"e{i}")
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        client.close(timeout=30)
        print("close returned")
        """,
        tmp_path / "events.jsonl",
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout == ""
    assert len(events) == 50


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_spans_open_on_sigterm_are_recorded_as_incomplete(tmp_path: Path) -> None:
    result, events = _run_child(
        """
        client = sightline.Client(exporters=[FileExporter(OUT)], handle_signals=True)
        run = client.trace("agent-loop")
        run.step("tool", "step").end()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """,
        tmp_path / "events.jsonl",
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    by_name = {event["name"]: event for event in events}
    assert by_name["agent-loop"]["error"] == "Incomplete"
    assert by_name["step"]["parent"] == by_name["agent-loop"]["span_id"]


def test_a_raising_log_handler_never_breaks_an_import_an_adapter_watches(
    raising_log_handler, tmp_path, monkeypatch
):
    import sys

    from sightline.imports import when_imported

    (tmp_path / "watched_framework.py").write_text("OK = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def broken_adapter(name: str, module: Any) -> None:
        raise RuntimeError("adapter bug")

    watch = when_imported(["watched_framework"], broken_adapter)
    try:
        import watched_framework  # type: ignore[import-not-found]

        assert watched_framework.OK is True
    finally:
        watch.cancel()
        sys.modules.pop("watched_framework", None)


def test_a_raising_log_handler_never_turns_a_written_batch_into_a_failure(
    raising_log_handler, tmp_path
):
    from sightline.exporters.jsonl import JsonlExporter

    path = tmp_path / "events.jsonl"
    exporter = JsonlExporter(str(path))
    bad = Event("custom", "unencodable", metadata={"n": 10**5000})  # bypassed redaction
    try:
        result = exporter.export([Event("custom", "kept"), bad])  # the rejection is logged
    finally:
        exporter.shutdown()
    assert result is ExportResult.SUCCESS
    assert ['"kept"' in line for line in path.read_text().splitlines()] == [True]
    assert exporter.stats()["rejected"] == 1
