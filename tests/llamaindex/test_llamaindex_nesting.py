"""Sightline spans started inside a LlamaIndex run nest under it: a ``@monitor`` function called
by a tool is a child of its ``tool_call``, a ``trace()`` in a workflow step a child of the step,
and a ``sightline.guard`` deny a ``decision`` under the tool call (the innermost of the
LlamaIndex span and the ambient Sightline span wins)."""

from __future__ import annotations

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import sightline
from sightline.testing import Capture
from tests.llamaindex.scripted import ScriptedLLM, answer, tool_call, turn_script
from tests.support.nesting import DenyWipe, db_lookup, wiper


def lookup(x: int) -> int:
    """Look a number up."""
    return db_lookup(x)


async def alookup(x: int) -> int:
    """Look a number up, asynchronously."""
    return db_lookup(x)


def agent_calling(tool: FunctionTool) -> FunctionAgent:
    """An agent whose model asks for ``tool`` with ``x=3``, then answers."""
    llm = ScriptedLLM(
        response_generator=turn_script(tool_call("call-1", tool.metadata.name, x=3), answer("6"))
    )
    return FunctionAgent(name="support", description="Looks numbers up.", tools=[tool], llm=llm)


TOOLS = [
    pytest.param(lambda: FunctionTool.from_defaults(lookup, name="lookup"), id="sync-tool"),
    pytest.param(
        lambda: FunctionTool.from_defaults(async_fn=alookup, name="lookup"), id="async-tool"
    ),
]


@pytest.mark.parametrize("make_tool", TOOLS)
async def test_a_monitored_function_called_by_a_tool_nests_under_its_tool_call(
    traced: Capture, make_tool
) -> None:
    await agent_calling(make_tool()).run(user_msg="go")
    run, call = traced.one(type="agent"), traced.one(type="tool_call", name="lookup")
    monitored, query = traced.one(name="db_lookup"), traced.one(name="query")
    assert (call.trace_id, call.parent_span_id) == (run.trace_id, run.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)
    assert (query.trace_id, query.parent_span_id) == (call.trace_id, monitored.span_id)
    assert (monitored.input, monitored.output) == ({"x": 3}, 6)


async def test_inside_an_outer_trace_the_tool_call_is_still_the_nearest_parent(
    traced: Capture,
) -> None:
    with sightline.trace("request", agent="support-bot", session_id="s-9") as request:
        await agent_calling(FunctionTool.from_defaults(lookup, name="lookup")).run(user_msg="go")
    run, call = traced.one(type="agent"), traced.one(type="tool_call", name="lookup")
    monitored = traced.one(name="db_lookup")
    assert (run.trace_id, run.parent_span_id) == (request.trace_id, request.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (request.trace_id, call.span_id)
    assert (monitored.agent, monitored.session_id) == ("support-bot", "s-9")  # the ambient's
    traced.clear()
    with sightline.trace("after"):  # no LlamaIndex span any more: the ambient span is the parent
        db_lookup(1)
    assert traced.one(name="db_lookup").parent_span_id == traced.one(name="after").span_id


class Lookup(Workflow):
    @step
    async def work(self, ev: StartEvent) -> StopEvent:
        with sightline.trace("in-step"):
            return StopEvent(result=db_lookup(2))


async def test_a_trace_opened_in_a_workflow_step_nests_under_the_step(traced: Capture) -> None:
    assert await Lookup(timeout=5).run() == 4
    work, in_step = traced.one(name="work"), traced.one(name="in-step")
    monitored = traced.one(name="db_lookup")
    assert (in_step.trace_id, in_step.parent_span_id) == (work.trace_id, work.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (work.trace_id, in_step.span_id)


async def test_a_guard_deny_inside_a_tool_is_a_decision_under_its_tool_call(
    traced: Capture,
) -> None:
    plugins = traced.client.plugins
    plugins.register(DenyWipe(), "deny-wipe")
    try:
        await agent_calling(FunctionTool.from_defaults(wiper, name="wiper")).run(user_msg="go")
    finally:
        plugins.unregister("deny-wipe")
    call, decision = traced.one(type="tool_call", name="wiper"), traced.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    assert (decision.name, decision.error.kind) == ("authorize:wipe", "guardrail")
    assert call.output == "tool 'wipe' denied: not today"
