"""AutoGen adapter benchmark: the time Sightline adds to one team run.

A two-agent ``RoundRobinGroupChat`` (a support agent with a tool, and a writer) runs many times
in each configuration, in blocks of runs shuffled in every round so that drift in the machine
affects them alike (the first runs after switching the instrumentation are not counted):

- ``none``: no instrumentation (the reference);
- ``global``: ``sightline_autogen.instrument()`` — event-log handler, agent and team spans;
- ``wrapper``: ``instrument_model_client`` only;
- ``global+wrapper``: both.

Two scenarios:

- ``replay``: ``ReplayChatCompletionClient`` answers instantly (5 model calls, 1 tool call per
  run), so a run is AutoGen's own work only: the worst case for any instrumentation;
- ``openai``: ``OpenAIChatCompletionClient`` against the scripted OpenAI-compatible server on
  127.0.0.1 (3 model calls, 1 tool call per run): real HTTP, but still a model that answers at
  once — a real model's latency would make every ratio smaller still.

The figure is the CPU time of the whole process per run (the Sightline worker thread included,
other processes on the machine excluded), median over the runs; wall time is shown too. Events
go to an exporter that counts and discards them: the SDK's cost, not a backend's. Run with
``make bench`` or ``python benchmarks/bench_autogen.py [--runs N]``. Target: under 5% per run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

import sightline
import sightline_autogen
from sightline import Event, ExportResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.openai_server import Reply, ScriptedOpenAIServer

MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "gpt-4o",
    "structured_output": False,
}
TASK = "Where is my order A-1?"

CONFIGS: dict[str, tuple[bool, bool]] = {  # name -> (global, wrapper)
    "none": (False, False),
    "global": (True, False),
    "wrapper": (False, True),
    "global+wrapper": (True, True),
}


class DiscardExporter:
    """Counts events and keeps none."""

    name = "discard"

    def __init__(self) -> None:
        self.count = 0

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.count += len(events)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: delivered"


def build_team(
    support_client: Any, writer_client: Any, wrap: bool, turns: int
) -> RoundRobinGroupChat:
    if wrap:
        support_client = sightline_autogen.instrument_model_client(support_client)
        writer_client = sightline_autogen.instrument_model_client(writer_client)
    support = AssistantAgent(
        "support", model_client=support_client, tools=[lookup_order], reflect_on_tool_use=True
    )
    writer = AssistantAgent("writer", model_client=writer_client)
    return RoundRobinGroupChat(
        [support, writer], termination_condition=MaxMessageTermination(turns)
    )


def replay_team(wrap: bool) -> RoundRobinGroupChat:
    support = ReplayChatCompletionClient(
        [
            CreateResult(
                finish_reason="function_calls",
                content=[
                    FunctionCall(id="call_1", name="lookup_order", arguments='{"order_id": "A-1"}')
                ],
                usage=RequestUsage(prompt_tokens=40, completion_tokens=12),
                cached=False,
            ),
            "Order A-1 was delivered yesterday.",
            "Anything else I can help with?",
        ],
        model_info=MODEL_INFO,
    )
    writer = ReplayChatCompletionClient(
        ["Dear customer, your order A-1 arrived.", "Kind regards."], model_info=MODEL_INFO
    )
    return build_team(support, writer, wrap, turns=5)


def openai_team_factory(server: ScriptedOpenAIServer) -> Callable[[bool], RoundRobinGroupChat]:
    def make(wrap: bool) -> RoundRobinGroupChat:
        server.add(
            Reply.tool_call("lookup_order", {"order_id": "A-1"}, call_id="call_1"),
            Reply.text("Order A-1 was delivered yesterday."),
            Reply.text("Dear customer, your order A-1 arrived."),
        )
        model: ChatCompletionClient = OpenAIChatCompletionClient(
            model="gpt-4o-mini", base_url=server.base_url, api_key="sk-bench"
        )
        return build_team(model, model, wrap, turns=3)

    return make


async def one_run(
    make_team: Callable[[bool], RoundRobinGroupChat], wrap: bool
) -> tuple[float, float]:
    """(process CPU ms, wall ms) of one team run; building the team is not timed."""
    team = make_team(wrap)
    gc.collect()
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    await team.run(task=TASK)
    return (time.process_time_ns() - cpu) / 1e6, (time.perf_counter_ns() - wall) / 1e6


async def measure(
    client: sightline.Client,
    exporter: DiscardExporter,
    make_team: Callable[[bool], RoundRobinGroupChat],
    runs: int,
    block: int = 12,
    settle: int = 2,
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, int]]:
    """Runs per configuration in shuffled blocks of ``block`` runs.

    Switching the instrumentation on or off rewrites a few AutoGen methods and logger levels,
    which makes the interpreter re-warm its caches: the first ``settle`` runs of a block are
    not counted, so the figures are those of an application that stays instrumented.
    """
    for _ in range(max(10, runs // 10)):
        await one_run(make_team, wrap=False)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    events = dict.fromkeys(CONFIGS, 0)
    order = list(CONFIGS)
    for _ in range(max(1, runs // (block - settle))):
        random.shuffle(order)
        for name in order:
            global_on, wrap = CONFIGS[name]
            if global_on:
                sightline_autogen.instrument(client)
            try:
                for index in range(block):
                    before = exporter.count
                    sample = await one_run(make_team, wrap)
                    client.flush(10)  # processed before the next run starts
                    if index >= settle:
                        samples[name].append(sample)
                        events[name] += exporter.count - before
            finally:
                if global_on:
                    sightline_autogen.uninstrument()
    return samples, events


def report(
    title: str, samples: dict[str, list[tuple[float, float]]], events: dict[str, int], runs: int
) -> float:
    base_cpu = statistics.median(cpu for cpu, _ in samples["none"])
    base_wall = statistics.median(wall for _, wall in samples["none"])
    print(title)
    print(
        f"{'configuration':<16} {'events':>7} {'cpu ms':>8} {'added':>8} {'ratio':>7} {'wall ms':>8} {'ratio':>7}"
    )
    worst = 0.0
    for name in CONFIGS:
        cpu = statistics.median(c for c, _ in samples[name])
        wall = statistics.median(w for _, w in samples[name])
        if name != "none":
            worst = max(worst, cpu / base_cpu)
        print(
            f"{name:<16} {events[name] / runs:>7.0f} {cpu:>8.3f} {cpu - base_cpu:>+8.3f} "
            f"{cpu / base_cpu:>7.3f} {wall:>8.3f} {wall / base_wall:>7.3f}"
        )
    print()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per configuration (replay)")
    args = parser.parse_args()
    logging.getLogger().addHandler(logging.NullHandler())  # AutoGen's own warnings stay quiet
    exporter = DiscardExporter()
    client = sightline.Client(exporters=[exporter], queue_size=1_000_000, batch_size=1024)
    sightline.set_client(client)

    async def both() -> list[tuple[str, Any]]:
        results = []
        runs = args.runs
        results.append(("replay", (await measure(client, exporter, replay_team, runs), runs)))
        with ScriptedOpenAIServer(model="gpt-4o-mini-2024-07-18") as server:
            runs = max(20, args.runs // 2)
            make: Callable[[bool], RoundRobinGroupChat] = openai_team_factory(server)
            results.append(("openai", (await measure(client, exporter, make, runs), runs)))
        return results

    results = asyncio.run(both())
    client.close()
    sightline.set_client(None)

    print("AutoGen team run: RoundRobinGroupChat, a support agent with a tool and a writer")
    print(f"python {sys.version.split()[0]}; medians; configurations in shuffled blocks")
    print()
    verdicts = []
    for scenario, ((samples, events), runs) in results:
        title = {
            "replay": f"replay: ReplayChatCompletionClient, 5 model calls + 1 tool call, {runs} runs each",
            "openai": f"openai: OpenAIChatCompletionClient -> scripted server on 127.0.0.1, 3 model calls + 1 tool call, {runs} runs each",
        }[scenario]
        worst = report(title, samples, events, len(samples["none"]))
        verdicts.append(
            f"{scenario}: worst {worst:.3f} ({'within' if worst < 1.05 else 'above'} 5%)"
        )
    print("; ".join(verdicts))


if __name__ == "__main__":
    main()
