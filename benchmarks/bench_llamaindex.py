"""Added time per LlamaIndex agent run under Sightline, against no instrumentation.

The agent is a ``FunctionAgent`` on ``MockFunctionCallingLLM`` (streaming, as by default) with one
retrieval tool over a small ``VectorStoreIndex`` (``MockEmbedding``): each run is one LLM call
that asks for the tool, the tool (a retrieval, with its query embedding), and a second LLM call
that answers -- 19 LlamaIndex spans, 14 Sightline events. Every configuration runs the same agent
in the same process, interleaved batch by batch so that drift in the machine affects them all
alike:

- ``none``              no Sightline handler on the dispatcher (the baseline);
- ``do-nothing``        a span handler and an event handler that return at once: LlamaIndex's own
                        cost of calling a handler, the floor for any instrumentation;
- ``sightline``         ``sightline_llamaindex.instrument()``, events to a discarding exporter;
- ``sightline-sqlite``  the same, events to the embedded SQLite store (the default of ``init()``).

Each timed batch ends with a flush, so the background worker's time (processing, serialising,
writing) is inside the figures. Two scenarios: the model answers at once (pure framework time,
the worst case for any instrumentation: nothing to overlap the worker with), and the model takes
10 ms per call (a fast model; real ones take hundreds). It prints the median time per run over
the batches, wall-clock and process CPU (every thread), and the time added over ``none``; the
target is under 5 % added per agent run.

    python benchmarks/bench_llamaindex.py [--runs 20] [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import sightline
from sightline import Event, ExportResult


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


def build_agent(latency: float = 0.0) -> Any:
    """The benchmark's agent; ``latency``: seconds the model takes to answer each call."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.tools import FunctionTool

    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents(
        [
            Document(text="Refunds are paid within 5 business days."),
            Document(text="Shipping is free above 50 euros."),
            Document(text="Support is open 9 to 17 on weekdays."),
        ]
    )
    retriever = index.as_retriever(similarity_top_k=2)

    def search_docs(query: str) -> str:
        """Search the help-centre articles."""
        return "\n".join(node.get_content() for node in retriever.retrieve(query))

    def script(messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        if messages[-1].role == MessageRole.TOOL:
            message = ChatMessage(role="assistant", content="Refunds take 5 business days.")
        else:
            message = ChatMessage(
                role="assistant",
                blocks=[ToolCallBlock(tool_call_id="c1", tool_name="search_docs",
                                      tool_kwargs={"query": "refund delay"})],
            )  # fmt: skip
        if not latency:
            return message

        async def answer_later() -> AsyncIterator[ChatMessage]:  # the model thinking
            await asyncio.sleep(latency)
            yield message

        return answer_later()

    return FunctionAgent(
        name="support",
        tools=[FunctionTool.from_defaults(search_docs)],
        llm=MockFunctionCallingLLM(response_generator=script),
    )


def do_nothing_handlers() -> tuple[Any, Any]:
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span import SimpleSpan
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    class NothingSpanHandler(BaseSpanHandler[SimpleSpan]):
        def span_enter(self, *args: Any, **kwargs: Any) -> None:
            return None

        def span_exit(self, *args: Any, **kwargs: Any) -> None:
            return None

        def span_drop(self, *args: Any, **kwargs: Any) -> None:
            return None

        def new_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
            return None

        def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
            return None

    class NothingEventHandler(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            return None

    return NothingSpanHandler(), NothingEventHandler()


class Configuration:
    """Switches one way of instrumenting on and off around a timed batch."""

    def __init__(self, name: str, on: Callable[[], None], off: Callable[[], None],
                 flush: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.name = name
        self.on = on
        self.off = off
        self.flush = flush
        self.wall: list[float] = []
        self.cpu: list[float] = []


def configurations(tmp: str) -> tuple[list[Configuration], list[sightline.Client]]:
    """The configurations to compare, and the Sightline clients to close afterwards."""
    from llama_index.core.instrumentation import get_dispatcher

    import sightline_llamaindex

    root = get_dispatcher()
    span_nothing, event_nothing = do_nothing_handlers()

    def nothing_on() -> None:
        root.span_handlers = [*root.span_handlers, span_nothing]
        root.event_handlers = [*root.event_handlers, event_nothing]

    def nothing_off() -> None:
        root.span_handlers = [h for h in root.span_handlers if h is not span_nothing]
        root.event_handlers = [h for h in root.event_handlers if h is not event_nothing]

    discard = sightline.Client(exporters=[DiscardExporter()])
    store = sightline.Client(db=os.path.join(tmp, f"bench-{id(root)}-{time.time_ns()}.db"),
                             exporters=["sqlite"])  # fmt: skip

    def sightline_on(client: sightline.Client) -> Callable[[], None]:
        return lambda: sightline_llamaindex.instrument(client)

    return [
        Configuration("none", lambda: None, lambda: None),
        Configuration("do-nothing", nothing_on, nothing_off),
        Configuration(
            "sightline",
            sightline_on(discard),
            sightline_llamaindex.uninstrument,
            lambda: discard.flush(30),
        ),
        Configuration(
            "sightline-sqlite",
            sightline_on(store),
            sightline_llamaindex.uninstrument,
            lambda: store.flush(30),
        ),
    ], [discard, store]


async def timed_batch(agent: Any, config: Configuration, runs: int) -> tuple[float, float]:
    """Wall-clock and process CPU milliseconds per run (CPU counts every thread, the
    Sightline worker included, and is steadier than wall-clock on a busy machine)."""
    config.on()
    try:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(runs):
            await agent.run(user_msg="How long do refunds take?")
        config.flush()
        return (
            (time.perf_counter() - wall) / runs * 1000,
            (time.process_time() - cpu) / runs * 1000,
        )
    finally:
        config.off()


async def scenario(latency_ms: float, runs: int, batches: int, tmp: str) -> None:
    """Time every configuration on one agent, interleaved batch by batch; print a table."""
    agent = build_agent(latency_ms / 1000)
    configs, clients = configurations(tmp)
    try:
        for config in configs:  # warm up every path once
            await timed_batch(agent, config, max(5, runs // 4))
        order = list(configs)
        for _ in range(batches):
            random.shuffle(order)
            for config in order:
                wall, cpu = await timed_batch(agent, config, runs)
                config.wall.append(wall)
                config.cpu.append(cpu)
    finally:
        for client in clients:
            client.close()
    wall_base = statistics.median(configs[0].wall)
    cpu_base = statistics.median(configs[0].cpu)
    print(f"\nmodel latency {latency_ms:g} ms per LLM call: {runs} runs x {batches} batches")
    print(f"{'configuration':<18} {'wall ms/run':>11} {'added ms':>9} {'added':>7}"
          f" {'cpu ms/run':>11} {'added':>7}")  # fmt: skip
    for config in configs:
        wall = statistics.median(config.wall)
        cpu = statistics.median(config.cpu)
        print(
            f"{config.name:<18} {wall:>11.3f} {wall - wall_base:>9.3f}"
            f" {(wall - wall_base) / wall_base * 100:>6.1f}%"
            f" {cpu:>11.3f} {(cpu - cpu_base) / cpu_base * 100:>6.1f}%"
        )


async def main(runs: int, batches: int) -> None:
    print(
        "LlamaIndex FunctionAgent run (retrieval tool, 2 streamed LLM calls, 14 events), "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # No model latency: pure framework time, the worst case for any instrumentation.
        await scenario(0, runs, batches, tmp)
        # A fast model (10 ms per call): the Sightline worker's work overlaps the waiting.
        await scenario(10, max(1, runs // 2), max(1, batches // 2), tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="agent runs per timed batch")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per configuration")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.batches))
