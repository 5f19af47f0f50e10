"""A long run: 1,000 agent runs, ten at a time, leave nothing behind in the handlers."""

from __future__ import annotations

import asyncio
import gc
import weakref

from llama_index.core.agent.workflow import FunctionAgent

from sightline_llamaindex import handlers, mapping
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.scripted import (
    ScriptedLLM,
    answer,
    support_tools,
    tool_call,
    turn_script,
)

RUNS = 1_000
AT_ONCE = 10


async def test_thousand_agent_runs_leave_the_handler_maps_empty(traced, index):
    tools = support_tools(index, use_async=True)
    searching = FunctionAgent(
        name="searching", tools=tools, streaming=True,
        llm=ScriptedLLM(response_generator=turn_script(
            tool_call("c1", "search_docs", query="refunds"), answer())),
    )  # fmt: skip
    failing = FunctionAgent(
        name="failing", tools=tools, streaming=False,
        llm=ScriptedLLM(response_generator=turn_script(
            tool_call("c2", "lookup_order", order_id="A-1"), answer())),
    )  # fmt: skip

    open_after_batches = []
    caches = None
    for batch in range(RUNS // AT_ONCE):
        agents = [searching if i % 2 else failing for i in range(AT_ONCE)]
        answers = await asyncio.gather(*(agent.run(user_msg=f"q{batch}") for agent in agents))
        assert all(str(a) == answer().content for a in answers)
        open_after_batches.append(
            len(OPEN_SPANS.records) + len(OPEN_SPANS.streams) + len(OPEN_SPANS.streaming)
        )
        if batch == 0:
            caches = (len(mapping._METHODS_BY_TYPE), len(handlers._ROUTES))

    assert OPEN_SPANS.records == {}
    assert OPEN_SPANS.streams == {}
    assert OPEN_SPANS.streaming == {}
    assert set(open_after_batches) == {0}
    # Every stream's safety-net finalizer went with its stream.
    gc.collect()
    registry = getattr(weakref.finalize, "_registry", {})
    assert [f for f in list(registry.values()) if f.func == OPEN_SPANS.stream_abandoned] == []
    # The per-class lookup caches stop growing once every class has been seen.
    assert (len(mapping._METHODS_BY_TYPE), len(handlers._ROUTES)) == caches

    events = traced.events
    runs = [e for e in events if e.type.value == "agent"]
    assert len(runs) == RUNS
    assert len({run.trace_id for run in runs}) == RUNS
    per_trace: dict[str, int] = {}
    for event in events:
        per_trace[event.trace_id] = per_trace.get(event.trace_id, 0) + 1
    # searching: agent, init, 2 turns x 4, tool, retrieval, embedding, aggregate = 14
    # failing: agent, init, 2 turns x 4, tool, aggregate = 12
    assert sorted(set(per_trace.values())) == [12, 14]
    assert sum(per_trace.values()) == len(events) == RUNS // 2 * (12 + 14)
    failed_tools = [e for e in events if e.type.value == "tool_call" and e.status.value == "error"]
    assert len(failed_tools) == RUNS // 2
