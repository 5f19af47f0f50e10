"""Sightline spans started inside an AutoGen tool nest under its ``tool_call`` (the adapter makes
the tool call the ambient span while the tool runs, sync tools on their thread too): a
``@monitor`` function, a ``trace()``, a ``sightline.guard`` deny."""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent

import sightline
from sightline.testing import Capture
from tests.autogen.conftest import calls, replay
from tests.support.nesting import DenyWipe, db_lookup, wiper


def lookup(x: int) -> int:
    """Look a number up."""
    return db_lookup(x)


async def alookup(x: int) -> int:
    """Look a number up, asynchronously."""
    return db_lookup(x)


async def run_agent_with(tool: Any) -> None:
    name = tool.__name__
    agent = AssistantAgent(
        "a", model_client=replay(calls(("c1", name, '{"x": 3}')), "done"), tools=[tool]
    )
    await agent.run(task="go")


@pytest.mark.parametrize("tool", [lookup, alookup], ids=["sync-tool", "async-tool"])
async def test_a_monitored_function_called_by_a_tool_nests_under_its_tool_call(
    recorded: Capture, tool: Any
) -> None:
    await run_agent_with(tool)
    turn, call = recorded.one(type="agent"), recorded.one(name=tool.__name__)
    monitored, query = recorded.one(name="db_lookup"), recorded.one(name="query")
    assert (call.trace_id, call.parent_span_id) == (turn.trace_id, turn.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)
    assert (query.trace_id, query.parent_span_id) == (call.trace_id, monitored.span_id)
    assert (monitored.input, monitored.output) == ({"x": 3}, 6)


async def test_inside_an_outer_trace_the_tool_call_is_still_the_nearest_parent(
    recorded: Capture,
) -> None:
    with sightline.trace("request", agent="support-bot", session_id="s-9") as request:
        await run_agent_with(lookup)
    turn, call = recorded.one(type="agent"), recorded.one(name="lookup")
    monitored = recorded.one(name="db_lookup")
    assert (turn.trace_id, turn.parent_span_id) == (request.trace_id, request.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (request.trace_id, call.span_id)
    recorded.clear()
    with sightline.trace("after"):  # no tool running any more: the ambient span is the parent
        db_lookup(1)
    assert recorded.one(name="db_lookup").parent_span_id == recorded.one(name="after").span_id


async def test_a_guard_deny_inside_a_tool_is_a_decision_under_its_tool_call(
    recorded: Capture,
) -> None:
    plugins = recorded.client.plugins
    plugins.register(DenyWipe(), "deny-wipe")
    try:
        await run_agent_with(wiper)
    finally:
        plugins.unregister("deny-wipe")
    call, decision = recorded.one(name="wiper"), recorded.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    assert (decision.name, decision.error.kind) == ("authorize:wipe", "guardrail")
    assert call.output == "tool 'wipe' denied: not today"
