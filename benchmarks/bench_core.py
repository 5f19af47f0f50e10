"""Core benchmarks (issue: foundation): span cost vs OpenTelemetry, track(), import time, and
SQLite exporter throughput. Run with ``make bench`` or ``python benchmarks/bench_core.py``.

Every figure is a median over many samples, measured in the same run as its reference.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import sightline
from sightline import Event, EventType, ExportResult

SAMPLES = 200
PER_SAMPLE = 500
METADATA = {"user": "u-1", "plan": "pro", "region": "eu", "attempt": 1, "cached": False}


class DiscardExporter:
    """Counts events and keeps none: measures the SDK, not a backend."""

    name = "discard"

    def __init__(self) -> None:
        self.count = 0

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.count += len(events)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def per_op_median(
    operation: Callable[[], None], samples: int = SAMPLES, n: int = PER_SAMPLE
) -> tuple[float, float]:
    """Medians over ``samples`` of the mean cost of ``n`` calls, in microseconds: wall-clock
    time, and CPU time of the calling thread alone (what the caller pays; the background
    worker's share of a loaded machine is excluded)."""
    wall, cpu = [], []
    for _ in range(samples):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(n):
            operation()
        cpu.append((time.thread_time_ns() - start_cpu) / n / 1000)
        wall.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(wall), statistics.median(cpu)


Cost = tuple[float, float]  # (wall µs, caller-thread CPU µs)


def bench_span() -> tuple[Cost, Cost, Cost | None]:
    """A root ``trace`` and a child ``step``, each with 5 metadata keys, against an
    OpenTelemetry SDK span with 5 attributes under a BatchSpanProcessor."""
    client = sightline.Client(exporters=[DiscardExporter()], queue_size=10_000_000, batch_size=4096)
    sightline.set_client(client)

    def sightline_span() -> None:
        with sightline.trace("request") as run:
            run.set_metadata(METADATA)

    def sightline_step() -> None:
        with run.step("tool", "search") as step:
            step.set_metadata(METADATA)

    root = per_op_median(sightline_span)
    with sightline.trace("outer") as run:
        step = per_op_median(sightline_step)
    client.close(timeout=60)
    sightline.set_client(None)

    otel: Cost | None = None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class OtelDiscard(SpanExporter):
            def export(self, spans):  # type: ignore[no-untyped-def]
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OtelDiscard(), max_queue_size=10_000_000))
        tracer = provider.get_tracer("bench")

        def otel_span() -> None:
            with tracer.start_as_current_span("request") as span:
                span.set_attributes(METADATA)

        otel = per_op_median(otel_span)
        provider.shutdown()
    except ImportError:
        pass
    return root, step, otel


def bench_track() -> Cost:
    client = sightline.Client(exporters=[DiscardExporter()], queue_size=10_000_000, batch_size=4096)
    event = Event(EventType.TOOL_CALL, "search", input={"q": "x"}).finish()
    result = per_op_median(lambda: client.track(event))
    client.close(timeout=60)
    return result


def bench_import() -> tuple[float, float]:
    def run(code: str) -> float:
        times = []
        for _ in range(15):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    bare = run("pass")
    ours = run("import sightline")
    return bare, ours


def bench_sqlite() -> tuple[float, int, int]:
    total = 200_000
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        client = sightline.Client(
            db=db, exporters=["sqlite"], queue_size=total + 1, batch_size=2048
        )
        start = time.perf_counter()
        # Realistic traces: a run of 10 events (one root, nine steps under it).
        for index in range(0, total, 10):
            with client.trace("request", metadata=METADATA) as run:
                for step in range(9):
                    with run.step("tool", "search") as child:
                        child.set_input({"q": index + step})
        client.flush(timeout=300)
        elapsed = time.perf_counter() - start
        stored = client.exporters[0].store.count_events()  # type: ignore[attr-defined]
        client.close()

        # Steady 10,000 events/s for 3 s: zero drops expected with the default queue.
        steady = sightline.Client(db=os.path.join(tmp, "steady.db"), exporters=["sqlite"])
        rate, seconds = 10_000, 3
        start = time.perf_counter()
        for index in range(rate * seconds):
            target = start + index / rate
            while time.perf_counter() < target:
                pass
            steady.log_event("tool_call", "steady", input={"i": index})
        steady.flush(timeout=60)
        dropped = steady.stats()["dropped"]
        steady_stored = steady.exporters[0].store.count_events()  # type: ignore[attr-defined]
        steady.close()
    assert stored == total, (stored, total)
    assert steady_stored == rate * seconds
    return total / elapsed, dropped, steady_stored


def bench_store_growth(total: int = 600_000, window: int = 100_000) -> tuple[float, float]:
    """Insert rate (events/s) into the store for the first and the last ``window`` events of a
    file that grows to ``total``: a random-keyed index would slow the last down."""
    from sightline.store import SqliteStore

    def batch(first: int, count: int) -> list[Event]:
        events = []
        for index in range(first, first + count, 10):
            root = Event(EventType.RUN, "request", metadata=METADATA).finish()
            events.append(root)
            for step in range(9):
                events.append(
                    Event(
                        EventType.TOOL_CALL,
                        "search",
                        trace_id=root.trace_id,
                        parent_span_id=root.span_id,
                        input={"q": index + step},
                    ).finish()
                )
        for event in events:
            event.id = f"{event.start_ns:016x}{event.span_id}"  # as the pipeline assigns it
        return events

    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(os.path.join(tmp, "growth.db"))
        elapsed = 0.0
        for first in range(0, total, 2000):
            events = batch(first, 2000)
            start = time.perf_counter()
            store.insert_events(events)
            elapsed += time.perf_counter() - start
            if (first + 2000) % window == 0:
                rates.append(window / elapsed)
                elapsed = 0.0
        assert store.count_events() == total
        store.close()
    return rates[0], rates[-1]


def main() -> None:
    print("Sightline core benchmarks (medians; wall-clock and caller-thread CPU)")
    root, step, otel = bench_span()
    print(
        f"span start+end, 5 metadata keys: root trace {root[0]:.2f} µs wall / {root[1]:.2f} µs "
        f"CPU; child step {step[0]:.2f} µs wall / {step[1]:.2f} µs CPU (goal < 3 µs)"
    )
    if otel is not None:
        print(
            f"  OpenTelemetry span, 5 attributes, BatchSpanProcessor: {otel[0]:.2f} µs wall / "
            f"{otel[1]:.2f} µs CPU → Sightline step is {otel[0] / step[0]:.1f}x cheaper wall, "
            f"{otel[1] / step[1]:.1f}x CPU (goal ≥ 3.5x)"
        )
    else:
        print("  opentelemetry-sdk not installed: `make bench` installs it")
    track = bench_track()
    print(f"client.track() of a prepared event: {track[0]:.3f} µs wall (goal < 1 µs)")
    bare, imported = bench_import()
    print(
        f"python -c 'import sightline': {imported:.1f} ms vs bare {bare:.1f} ms → "
        f"+{imported - bare:.1f} ms (goal < 20 ms)"
    )
    throughput, dropped, steady = bench_sqlite()
    print(
        f"sqlite exporter: {throughput:,.0f} events/s track → indexed rows (goal ≥ 50,000); "
        f"steady 10,000/s for 3 s: {steady:,} stored, {dropped} dropped (goal 0)"
    )
    first, last = bench_store_growth()
    print(
        f"store inserts as the file grows to 600,000 events: {first:,.0f} events/s for the "
        f"first 100,000, {last:,.0f} events/s for the last 100,000 ({last / first:.2f}x)"
    )


if __name__ == "__main__":
    main()
