"""HTTP delivery benchmark (issue: lossless delivery).

1. Throughput: events/s from ``track`` to a receiver process over loopback (the test suite's
   receiver, ``tests/support/receiver.py``), next to two references measured in the same run:
   the same events through the pipeline to an exporter that discards them (the SDK without the
   network), and the receiver's own ceiling (pre-encoded batches posted in a loop).
2. Memory with the receiver down: 1,000,000 events tracked while nothing listens; the process's
   peak RSS growth must stay bounded by the configured queue (events in memory) and spool
   (bytes on disk) limits, whatever the number of events. Each configuration runs in its own
   process so that RSS figures are clean.

Run with ``python benchmarks/bench_http.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sightline
from sightline import Event, ExportResult
from sightline.exporters.http import HttpExporter
from tests.support.receiver import Receiver, free_port

KEY = "sl_" + "b" * 40
METADATA = {"user": "u-1", "plan": "pro", "region": "eu", "attempt": 1, "cached": False}
PROMPT = {"messages": [{"role": "user", "content": "Where is my refund? " * 12}]}
ANSWER = "Your refund was issued on Monday and should arrive within 3-5 business days. " * 2


def record(client: sightline.Client, n: int) -> None:
    """One realistic LLM event, as an integration would record it."""
    client.log_event(
        "llm_invoke", "chat", input=PROMPT, output=ANSWER, metadata=METADATA, model="gpt-4o",
        usage={"input_tokens": 812, "output_tokens": 64}, cost_usd=0.0042, duration_ms=350.0,
    )  # fmt: skip


class DiscardExporter:
    """Counts events and keeps none: the pipeline's ceiling without a network."""

    name = "discard"

    def __init__(self) -> None:
        self.count = 0

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.count += len(events)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class KeepExporter(DiscardExporter):
    """Keeps the processed events, to feed the http exporter directly."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.events.extend(events)
        return ExportResult.SUCCESS


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _control_ids(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url + "/_control", timeout=5) as response:
        return int(json.load(response)["ids"])


# -- throughput --------------------------------------------------------------------------------


def bench_throughput(count: int) -> dict[str, float]:
    results: dict[str, float] = {}
    # Reference 1: the pipeline to a discarding exporter.
    sink = DiscardExporter()
    client = sightline.Client(exporters=[sink], handle_signals=False, queue_size=count + 10)
    started = time.perf_counter()
    for n in range(count):
        record(client, n)
    client.flush(600)
    results["discard"] = count / (time.perf_counter() - started)
    client.close()

    with tempfile.TemporaryDirectory() as tmp, Receiver(Path(tmp) / "rec.jsonl") as receiver:
        # Reference 2: the receiver's ceiling, pre-encoded gzip batches of 512 events.
        import httpx

        client = sightline.Client(exporters=[DiscardExporter()], handle_signals=False)
        sample = client.log_event("llm_invoke", "x", input=PROMPT, output=ANSWER, metadata=METADATA)
        client.close()
        assert sample is not None
        template = sample.to_dict()
        batches = []
        for b in range(count // 512):
            events = [{**template, "id": f"ref-{b}-{i}"} for i in range(512)]
            batches.append(gzip.compress(json.dumps({"events": events}).encode(), 3))
        with httpx.Client() as http:
            started = time.perf_counter()
            for body in batches:
                http.post(
                    receiver.url + "/api/v1/events",
                    content=body,
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                )
            results["receiver"] = len(batches) * 512 / (time.perf_counter() - started)
        # The exporter alone: export() of processed events, on this thread, nothing competing.
        keep = KeepExporter()
        client = sightline.Client(exporters=[keep], handle_signals=False, queue_size=count + 10)
        for n in range(count):
            record(client, n)
        client.close(600)
        exporter = HttpExporter(receiver.url, KEY, spool_dir=str(Path(tmp) / "alone"))
        started = time.perf_counter()
        for start in range(0, count, 512):
            exporter.export(keep.events[start : start + 512])
        results["exporter"] = count / (time.perf_counter() - started)
        exporter.shutdown()
        baseline = _control_ids(receiver.url)

        # The measurement: track → pipeline → http exporter → receiver.
        client = sightline.Client(
            endpoint=receiver.url, api_key=KEY, spool_dir=str(Path(tmp) / "spool"),
            handle_signals=False, queue_size=count + 10,
        )  # fmt: skip
        started = time.perf_counter()
        for n in range(count):
            record(client, n)
        tracked = time.perf_counter() - started
        while _control_ids(receiver.url) < baseline + count:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        stats = client.stats()
        client.close()
        results["http"] = count / elapsed
        results["track_us"] = tracked / count * 1e6
        results["spooled"] = stats["spooled"]
        results["requests"] = stats["exporters"]["http"]["requests"]
    return results


# -- memory with the receiver down -------------------------------------------------------------


def memory_child(count: int, queue_size: int, spool_max: int) -> None:
    """Runs in its own process: track ``count`` events with nothing listening; print JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = f"http://127.0.0.1:{free_port()}"
        client = sightline.Client(
            endpoint=endpoint, api_key=KEY, spool_dir=tmp, handle_signals=False,
            queue_size=queue_size, spool_max_bytes=spool_max,
        )  # fmt: skip
        record(client, 0)
        client.flush(5)
        before = rss_mib()
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        for n in range(count):
            record(client, n)
        tracked = time.perf_counter() - started
        client.flush(120)
        done.set()
        sampler.join()
        peak = max(peak, rss_mib())
        stats = client.stats()
        http = stats["exporters"]["http"]
        usage = {"bytes": http["spool_bytes"], "events": http["spool_events"]}
        client.close(timeout=2)
        print(
            json.dumps(
                {
                    "count": count,
                    "queue_size": queue_size,
                    "spool_max": spool_max,
                    "rss_before": before,
                    "rss_peak": peak,
                    "track_s": tracked,
                    "dropped": stats["dropped"] + stats["exporter_dropped"],
                    "spooled": stats["spooled"],
                    "evicted": stats["evicted"],
                    "spool_bytes": usage["bytes"],
                    "spool_events": usage["events"],
                }
            )
        )


def bench_memory(count: int, queue_size: int, spool_max: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(count), str(queue_size), str(spool_max)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    quick = "--quick" in sys.argv
    throughput_events = 10_000 if quick else 50_000
    memory_events = 100_000 if quick else 1_000_000
    print(
        f"sightline {sightline.__version__} · Python {sys.version.split()[0]} · {os.cpu_count()} CPUs"
    )
    print(f"\nThroughput, {throughput_events:,} LLM events (track → receiver over loopback)")
    t = bench_throughput(throughput_events)
    print(f"  {'path':<44}{'events/s':>12}")
    print(f"  {'track → pipeline → discard (no network)':<44}{t['discard']:>12,.0f}")
    print(f"  {'receiver ceiling (pre-encoded gzip batches)':<44}{t['receiver']:>12,.0f}")
    print(f"  {'http exporter alone (export() of 512-batches)':<44}{t['exporter']:>12,.0f}")
    print(f"  {'track → http exporter → receiver':<44}{t['http']:>12,.0f}")
    print(
        f"  http / discard = {t['http'] / t['discard']:.2f}; track() on the caller: "
        f"{t['track_us']:.1f} µs/event; {t['requests']:.0f} requests; {t['spooled']:.0f} spooled"
    )
    print(f"\nMemory with the receiver down, {memory_events:,} events tracked as fast as possible")
    header = (
        f"  {'queue':>8}{'spool limit':>13}{'RSS growth':>12}{'dropped':>10}{'spooled':>10}"
        f"{'evicted':>10}{'on disk':>11}"
    )
    print(header)
    for queue_size, spool_max in [(100_000, 64 * 1024 * 1024), (10_000, 4 * 1024 * 1024)]:
        m = bench_memory(memory_events, queue_size, spool_max)
        print(
            f"  {queue_size:>8,}{spool_max / 2**20:>10.0f} MiB"
            f"{m['rss_peak'] - m['rss_before']:>8.0f} MiB{m['dropped']:>10,.0f}"
            f"{m['spooled']:>10,.0f}{m['evicted']:>10,.0f}{m['spool_bytes'] / 2**20:>7.1f} MiB"
        )
    print(
        "\n  RSS growth follows the queue limit, not the number of events; bytes on disk stay "
        "under the spool limit\n  (oldest batches evicted and counted); a full queue drops and "
        "counts (the caller never blocks)."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
