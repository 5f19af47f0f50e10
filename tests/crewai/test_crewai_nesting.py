"""Sightline spans started inside a CrewAI tool nest under its ``tool_call``: a ``@monitor``
function the tool calls, a ``trace()`` it opens, a ``sightline.guard`` deny (the innermost of
the CrewAI span and the ambient Sightline span wins). CrewAI records on its handler pool, so the
tool may run before its start is recorded: the span id is known from CrewAI's event id anyway."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from crewai.tools import tool

import sightline
from sightline_crewai.instrumentation import active_listener
from sightline_crewai.tree import SpanTree
from tests.crewai.crewai_support import CREWAI_WARNINGS, DrainingCapture, calculator_crew
from tests.support.nesting import DenyWipe, db_lookup, wiper
from tests.support.openai_server import Reply

pytestmark = CREWAI_WARNINGS


@tool("lookup")
def lookup(x: int) -> int:
    """Look a number up."""
    return db_lookup(x)


def run_lookup(server: Any, llm: Any) -> None:
    server.add(Reply.tool_call("lookup", {"x": 3}), Reply.text("6"))
    calculator_crew(llm(), tools=[lookup]).kickoff()


def test_a_monitored_function_called_by_a_tool_nests_under_its_tool_call(
    instrumented: DrainingCapture, server: Any, llm: Any
) -> None:
    run_lookup(server, llm)
    agent, call = instrumented.one(type="agent"), instrumented.one(name="lookup")
    monitored, query = instrumented.one(name="db_lookup"), instrumented.one(name="query")
    assert (call.trace_id, call.parent_span_id) == (agent.trace_id, agent.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)
    assert (query.trace_id, query.parent_span_id) == (call.trace_id, monitored.span_id)
    assert (monitored.input, monitored.output) == ({"x": 3}, 6)


def test_inside_an_outer_trace_the_tool_call_is_still_the_nearest_parent(
    instrumented: DrainingCapture, server: Any, llm: Any
) -> None:
    with sightline.trace("request", agent="support-bot", session_id="s-9") as request:
        run_lookup(server, llm)
    crew, call = instrumented.one(type="run", name="crew"), instrumented.one(name="lookup")
    monitored = instrumented.one(name="db_lookup")
    assert (crew.trace_id, crew.parent_span_id) == (request.trace_id, request.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (request.trace_id, call.span_id)
    assert (monitored.agent, monitored.session_id) == ("support-bot", "s-9")  # the ambient's
    instrumented.clear()
    with sightline.trace("after"):  # no CrewAI scope any more: the ambient span is the parent
        db_lookup(1)
    after = instrumented.one(name="after")
    assert instrumented.one(name="db_lookup").parent_span_id == after.span_id


def test_a_tool_running_before_its_start_is_recorded_still_is_the_parent(
    instrumented: DrainingCapture, server: Any, llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold the handler of the tool's start until the tool has run: its span does not exist yet
    # when the monitored function starts.
    tool_ran = threading.Event()
    receive = SpanTree.receive

    def late_tool_start(self: SpanTree, kind: str, *args: Any, **kwargs: Any) -> None:
        if kind == "ToolUsageStartedEvent":
            tool_ran.wait(5.0)
        receive(self, kind, *args, **kwargs)

    recorded_then: list[str] = []

    @tool("lookup")
    def signalling_lookup(x: int) -> int:
        """Look a number up."""
        listener = active_listener()
        assert listener is not None
        recorded_then.extend(node.kind for node in list(listener.tree._nodes.values()))
        try:
            return db_lookup(x)
        finally:
            tool_ran.set()

    monkeypatch.setattr(SpanTree, "receive", late_tool_start)
    server.add(Reply.tool_call("lookup", {"x": 3}), Reply.text("6"))
    calculator_crew(llm(), tools=[signalling_lookup]).kickoff()
    assert "ToolUsageStartedEvent" not in recorded_then
    assert "AgentExecutionStartedEvent" in recorded_then
    call, monitored = instrumented.one(name="lookup"), instrumented.one(name="db_lookup")
    assert call.status.value == "ok"
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)


wiper_tool = tool("wiper")(wiper)


def test_a_guard_deny_inside_a_tool_is_a_decision_under_its_tool_call(
    instrumented: DrainingCapture, server: Any, llm: Any
) -> None:
    plugins = instrumented.client.plugins
    plugins.register(DenyWipe(), "deny-wipe")
    try:
        server.add(Reply.tool_call("wiper", {"x": 3}), Reply.text("no"))
        calculator_crew(llm(), tools=[wiper_tool]).kickoff()
    finally:
        plugins.unregister("deny-wipe")
    call, decision = instrumented.one(name="wiper"), instrumented.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    assert (decision.name, decision.error.kind) == ("authorize:wipe", "guardrail")


def test_without_the_integration_a_monitored_function_in_a_tool_starts_its_own_trace(
    cap: DrainingCapture, server: Any, llm: Any
) -> None:
    run_lookup(server, llm)  # CrewAI not instrumented: nothing to nest under
    monitored = cap.one(name="db_lookup")
    assert monitored.parent_span_id is None
    assert [e.name for e in cap.events] == ["query", "db_lookup"]
