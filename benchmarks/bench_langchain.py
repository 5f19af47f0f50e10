"""Added time per invoke of a LangChain chain under Sightline and under peer SDKs, side by side.

The chain is ``prompt | fake chat model | parser`` (8 callbacks per invoke: 4 runs, each with a
start and an end). Each configuration runs the same chain in the same process, interleaved
round by round so that drift in the machine affects them all alike:

- ``none``             no callbacks (the baseline);
- ``do-nothing``       a handler whose callbacks return at once: LangChain's own cost of callbacks;
- ``sightline``        ``SightlineCallbackHandler`` passed in ``config``, to an in-memory
  exporter that counts events (keeping them all would only measure the garbage collector);
- ``sightline-global`` the same through ``sightline_langchain.instrument()``, no handler passed;
- ``langfuse``         Langfuse's ``CallbackHandler``, exporting over HTTP to a loopback sink
  (a separate process, so that its CPU is not counted);
- ``openinference``    OpenInference's ``LangChainInstrumentor``, spans to a counting in-memory
  exporter behind the default ``BatchSpanProcessor``.

Peers come from the ``bench`` dependency group; a missing one is reported as "not installed".

Per configuration it prints the median over the rounds of:

- ``wall``: wall-clock µs per invoke of the timed loop, and ``+wall`` the time added over
  ``none``;
- ``cpu``: CPU µs per invoke of the whole process (every thread) for the loop *and* the drain
  that follows it, so that work an SDK defers to a background thread is counted; ``+cpu`` is
  the CPU added over ``none`` and ``x floor`` that figure divided by the do-nothing handler's.
  On a shared machine CPU time is the steadier figure;
- ``+app``: CPU µs per invoke added on the application's own (invoking) thread during the
  loop, the share of ``+cpu`` that the application waits for; the rest runs on background
  threads (for a real model, while the application waits for the network);
- ``drain``: wall µs per invoke spent after the loop until everything was delivered;
- ``gc/1k``: Python garbage collections (all generations) per 1,000 invokes, loop and drain.
  LangChain alone frees what it allocates within an invoke and triggers next to none; what an
  SDK keeps alive for later (a queue, spans waiting for export) makes them happen;
- ``delivered``: records that reached the exporter out of those expected (Sightline: 4 events
  per invoke; OpenInference: 4 spans per invoke).

    python benchmarks/bench_langchain.py [--invokes 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import itertools
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EVENTS_PER_INVOKE = 4


def build_chain() -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in one short sentence."), ("human", "{question}")]
    )
    reply = AIMessage(
        content="Refunds take five business days.",
        usage_metadata={"input_tokens": 21, "output_tokens": 7, "total_tokens": 28},
    )
    model = GenericFakeChatModel(messages=itertools.repeat(reply))
    return prompt | model | StrOutputParser()


@dataclass
class Config:
    """One way of running the chain: how to set it up, per-invoke config, how to tear down."""

    name: str
    setup: Callable[[], Any] | None = None  # returns the RunnableConfig to invoke with
    teardown: Callable[[], None] | None = None
    drain: Callable[[], None] | None = None  # wait until the background work is delivered
    delivered: Callable[[], tuple[int, int]] | None = None  # (records arrived, dropped)
    note: str = ""
    per_invoke_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    app_us: list[float] = field(default_factory=list)
    drain_us: list[float] = field(default_factory=list)
    collections: int = 0
    invokes: int = 0
    error: str | None = None


# -- configurations ---------------------------------------------------------------------------


def none_config() -> Config:
    return Config("none", setup=lambda: None)


def noop_config() -> Config:
    from langchain_core.callbacks import BaseCallbackHandler

    class DoNothingHandler(BaseCallbackHandler):
        run_inline = True

        def on_chain_start(self, *args: Any, **kwargs: Any) -> None: ...
        def on_chain_end(self, *args: Any, **kwargs: Any) -> None: ...
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None: ...
        def on_llm_end(self, *args: Any, **kwargs: Any) -> None: ...

    handler = DoNothingHandler()
    return Config("do-nothing", setup=lambda: {"callbacks": [handler]})


class CountingExporter:
    """An in-memory Sightline exporter that counts what it receives and keeps nothing.

    Keeping every event (as ``InMemoryExporter`` does) would make the garbage collector walk
    them all: a cost of the benchmark, not of an exporter that writes events out.
    """

    name = "counting"

    def __init__(self) -> None:
        self.count = 0

    def export(self, events: Any) -> Any:
        from sightline.pipeline import ExportResult

        self.count += len(events)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _sightline_client() -> tuple[Any, Callable[[], None], Callable[[], tuple[int, int]]]:
    import sightline

    client = sightline.Client(exporters=[CountingExporter()])

    def drain() -> None:
        client.flush(60.0)

    def delivered() -> tuple[int, int]:
        stats = client.stats()
        return stats["exported"], stats["dropped"] + stats["exporter_dropped"]

    return client, drain, delivered


def sightline_configs() -> list[Config]:
    from sightline_langchain import SightlineCallbackHandler, instrument, uninstrument

    client, drain, delivered = _sightline_client()
    handler = SightlineCallbackHandler(client)
    explicit = Config(
        "sightline",
        setup=lambda: {"callbacks": [handler]},
        drain=drain,
        delivered=delivered,
        note="handler in config, counting in-memory exporter",
    )
    global_client, global_drain, global_delivered = _sightline_client()
    shared = Config(
        "sightline-global",
        setup=lambda: instrument(global_client) and None,
        teardown=uninstrument,
        drain=global_drain,
        delivered=global_delivered,
        note="instrument(), no handler passed",
    )
    return [explicit, shared]


_SINK = """
import http.server, sys

class Sink(http.server.BaseHTTPRequestHandler):
    def _ok(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    do_POST = do_GET = do_PUT = _ok
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def start_sink() -> str:
    """An HTTP server on loopback, in its own process, that accepts anything with 200."""
    process = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    atexit.register(process.kill)
    assert process.stdout is not None
    return f"http://127.0.0.1:{process.stdout.readline().strip()}"


def langfuse_config() -> Config:
    try:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler
    except ImportError:
        return Config("langfuse", error="not installed")
    try:
        host = start_sink()
        langfuse = Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench", host=host)
        handler = CallbackHandler()
    except Exception as exc:
        return Config("langfuse", error=f"setup failed: {type(exc).__name__}: {exc}")
    return Config(
        "langfuse",
        setup=lambda: {"callbacks": [handler]},
        drain=langfuse.flush,
        note="OTLP to a loopback sink",
    )


def openinference_config() -> Config:
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return Config("openinference", error="not installed")

    class CountingSpanExporter(SpanExporter):
        """In memory: counts the spans it receives and keeps none (like CountingExporter)."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Any) -> Any:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    try:
        exporter = CountingSpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))  # the default queue and batch
        instrumentor = LangChainInstrumentor()
    except Exception as exc:
        return Config("openinference", error=f"setup failed: {type(exc).__name__}: {exc}")
    return Config(
        "openinference",
        setup=lambda: instrumentor.instrument(tracer_provider=provider),
        teardown=instrumentor.uninstrument,
        drain=lambda: provider.force_flush(60_000),
        delivered=lambda: (exporter.count, -1),
        note="counting in-memory span exporter, default BatchSpanProcessor",
    )


# -- measuring --------------------------------------------------------------------------------


def run_round(chain: Any, config: Config, invokes: int) -> None:
    try:
        run_config = config.setup() if config.setup is not None else None
    except Exception as exc:
        config.error = f"setup failed: {type(exc).__name__}: {exc}"
        return
    invoke = chain.invoke
    question = {"question": "How long do refunds take?"}
    try:
        gc.collect()
        collections_start = _collections()
        cpu_start = time.process_time_ns()
        app_start = time.thread_time_ns()
        start = time.perf_counter_ns()
        if run_config is None:
            for _ in range(invokes):
                invoke(question)
        else:
            for _ in range(invokes):
                invoke(question, config=run_config)
        elapsed = time.perf_counter_ns() - start
        app = time.thread_time_ns() - app_start
        if config.drain is not None:
            config.drain()
        drained = time.perf_counter_ns() - start - elapsed
        cpu = time.process_time_ns() - cpu_start
        config.collections += _collections() - collections_start
    except Exception as exc:
        config.error = f"failed: {type(exc).__name__}: {exc}"
        return
    finally:
        if config.teardown is not None:
            try:
                config.teardown()
            except Exception:
                pass
    config.per_invoke_us.append(elapsed / invokes / 1000)
    config.cpu_us.append(cpu / invokes / 1000)
    config.app_us.append(app / invokes / 1000)
    config.drain_us.append(drained / invokes / 1000)
    config.invokes += invokes


def _collections() -> int:
    return sum(generation["collections"] for generation in gc.get_stats())


def main(argv: list[str] | None = None) -> int:
    # Peers warn about LangChain deprecations on every invoke: keep the table readable.
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=2000, help="invokes per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per configuration")
    parser.add_argument("--warmup", type=int, default=300, help="untimed invokes per configuration")
    args = parser.parse_args(argv)
    os.environ.setdefault("LANGSMITH_TRACING", "false")

    chain = build_chain()
    configs = [
        none_config(),
        noop_config(),
        *sightline_configs(),
        langfuse_config(),
        openinference_config(),
    ]
    # langchain-core turns its deprecation warnings back on when imported: silence them again.
    warnings.filterwarnings("ignore")
    runnable = [c for c in configs if c.error is None]
    for config in runnable:  # warm up, then forget the warm-up
        run_round(chain, config, args.warmup)
        config.per_invoke_us.clear()
        config.cpu_us.clear()
        config.app_us.clear()
        config.drain_us.clear()
        config.collections = 0
        config.invokes = 0
    baseline_counts = {c.name: c.delivered() for c in runnable if c.delivered is not None}

    for _ in range(args.rounds):
        for config in runnable:
            if config.error is None:
                run_round(chain, config, args.invokes)

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    base_wall, base_cpu = median(configs[0].per_invoke_us), median(configs[0].cpu_us)
    base_app = median(configs[0].app_us)
    floor = median(configs[1].cpu_us) - base_cpu
    print(
        f"prompt | fake chat model | parser; {args.rounds} rounds x {args.invokes} invokes "
        f"(medians); Python {sys.version.split()[0]}; {os.cpu_count()} CPUs"
    )
    header = (
        f"{'configuration':<18}{'wall':>8}{'+wall':>8}{'cpu':>8}{'+cpu':>8}{'x floor':>9}"
        f"{'+app':>7}{'drain':>8}{'gc/1k':>7}  delivered"
    )
    print(header)
    print("-" * (len(header) + 14))
    for config in configs:
        if config.error is not None or not config.per_invoke_us:
            print(f"{config.name:<18}{config.error or 'no result'}")
            continue
        wall, cpu = median(config.per_invoke_us), median(config.cpu_us)
        baseline = config is configs[0]
        added_wall = "-" if baseline else f"{wall - base_wall:.1f}"
        added_cpu = "-" if baseline else f"{cpu - base_cpu:.1f}"
        ratio = "-" if baseline or floor <= 0 else f"{(cpu - base_cpu) / floor:.1f}"
        added_app = "-" if baseline else f"{median(config.app_us) - base_app:.1f}"
        print(
            f"{config.name:<18}{wall:>8.1f}{added_wall:>8}{cpu:>8.1f}{added_cpu:>8}{ratio:>9}"
            f"{added_app:>7}{median(config.drain_us):>8.1f}"
            f"{config.collections * 1000 / max(config.invokes, 1):>7.1f}"
            f"  {delivery(config, baseline_counts)}" + (f"  [{config.note}]" if config.note else "")
        )
    print(
        "µs per invoke; x floor: CPU added over the do-nothing handler's (LangChain's own cost); "
        "+app: CPU added on the invoking thread alone."
    )
    return 0


def delivery(config: Config, baseline_counts: dict[str, tuple[int, int]]) -> str:
    if config.delivered is None:
        return "-"
    got, lost = config.delivered()
    before = baseline_counts.get(config.name, (0, 0))
    got -= before[0]
    if lost >= 0:
        lost -= before[1]
    expected = config.invokes * EVENTS_PER_INVOKE
    text = f"{got}/{expected}"
    if lost > 0:
        text += f" ({lost} dropped)"
    elif got < expected:
        text += f" ({expected - got} missing)"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
