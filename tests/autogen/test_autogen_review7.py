"""AutoGen adapter, review 7: agents and teams used as tools nest under their tool call, a
wrapped stream's time to first chunk is the real first chunk, and tool governance before a
tool runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.tools import AgentTool, TeamTool
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient

import sightline
from sightline import Decision, ToolDenied
from sightline.testing import Capture
from sightline_autogen import instrument_model_client
from tests.autogen.conftest import calls, replay, wire
from tests.support.governance import Policy, count_enforced
from tests.support.openai_server import Reply, ScriptedOpenAIServer


def shape(cap: Capture) -> list[Any]:
    """The captured trees as nested ``(type, name, [children])``, children by start."""

    def nodes(level: list[dict[str, Any]]) -> list[Any]:
        return [(n["type"], n["name"], nodes(n["children"])) for n in level]

    return nodes(cap.tree())


def lookup(q: str) -> str:
    """Look something up."""
    return "found " + q


def helper_agent() -> AssistantAgent:
    model = replay(calls(("h1", "lookup", '{"q": "x"}'), prompt_tokens=2), "helper done")
    return AssistantAgent(
        "helper",
        description="Finds things.",
        model_client=instrument_model_client(model),
        tools=[lookup],
    )


# -- 4. an agent or a team used as a tool ---------------------------------------------------------


async def test_an_agent_used_as_a_tool_runs_under_its_tool_call(recorded):
    boss_model = replay(calls(("b1", "helper", '{"task": "find x"}'), prompt_tokens=4), "done")
    boss = AssistantAgent(
        "boss",
        model_client=instrument_model_client(boss_model),
        tools=[AgentTool(helper_agent())],
    )

    result = await boss.run(task="go")

    assert result.messages[-1].content == "helper: found x"
    assert shape(recorded) == [
        ("agent", "boss", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "helper", [
                ("agent", "helper", [
                    ("llm_invoke", "chat_completion", []),
                    ("tool_call", "lookup", []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    call = recorded.one(type="tool_call", name="helper")
    inner = recorded.one(type="agent", name="helper")
    assert (inner.trace_id, inner.parent_span_id) == (call.trace_id, call.span_id)
    assert wire(call) == {
        "type": "tool_call", "name": "helper", "status": "ok", "agent": "boss",
        "session_id": None, "framework": "autogen", "input": {"task": "find x"},
        "output": "helper: found x", "model": None, "usage": None, "cost_usd": None,
        "error": None, "metadata": {"call_id": "b1"}, "tags": [],
    }  # fmt: skip
    assert (inner.status.value, inner.agent, inner.input) == ("ok", "helper", "find x")
    inner_call = recorded.one(type="llm_invoke", agent="helper")
    assert inner_call.usage.to_dict() == {"input_tokens": 2, "output_tokens": 5, "total_tokens": 7}
    assert recorded.one(type="tool_call", name="lookup").parent_span_id == inner.span_id


async def test_a_team_used_as_a_tool_runs_under_its_tool_call(recorded):
    worker = AssistantAgent("w", model_client=instrument_model_client(replay("w done")))
    team = RoundRobinGroupChat(
        [worker], termination_condition=MaxMessageTermination(2), name="crew"
    )
    boss_model = replay(calls(("b1", "crew", '{"task": "do it"}')), "boss done")
    boss = AssistantAgent(
        "boss",
        model_client=instrument_model_client(boss_model),
        tools=[TeamTool(team, name="crew", description="A team.")],
    )

    await boss.run(task="go")

    assert shape(recorded) == [
        ("agent", "boss", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "crew", [
                ("run", "crew", [("agent", "w", [("llm_invoke", "chat_completion", [])])]),
            ]),
        ]),
    ]  # fmt: skip
    call, run = recorded.one(type="tool_call"), recorded.one(type="run")
    assert (run.parent_span_id, run.status.value, run.input) == (call.span_id, "ok", "do it")
    assert call.status.value == "ok"


# -- 5. time to first chunk of a wrapped stream ---------------------------------------------------


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class StreamStarts(logging.Handler):
    """When the model client logged ``LLMStreamStartEvent`` (its first chunk arrived)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if type(record.msg).__name__ == "LLMStreamStartEvent":
            self.times.append(time.time_ns())


@pytest.fixture
def stream_starts() -> Iterator[StreamStarts]:
    handler = StreamStarts()
    events = logging.getLogger("autogen_core.events")
    level = events.level
    events.addHandler(handler)
    events.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        events.removeHandler(handler)
        events.setLevel(level)


def slow_stream_server() -> ScriptedOpenAIServer:
    return ScriptedOpenAIServer(
        [
            Reply.tool_call("get_weather", {"city": "Paris"}, call_id="c1", chunk_delay_s=0.05),
            Reply.text("Sunny in Paris.", chunk_delay_s=0.05),
        ]
    )


def streaming_agent(srv: ScriptedOpenAIServer) -> AssistantAgent:
    client = OpenAIChatCompletionClient(
        model="gpt-4o-mini",
        base_url=srv.base_url,
        api_key="sk-test",
        stream_options={"include_usage": True},
    )
    return AssistantAgent(
        "weather",
        model_client=instrument_model_client(client),
        tools=[get_weather],
        reflect_on_tool_use=True,
        model_client_stream=True,
    )


async def test_a_wrapped_stream_answering_a_tool_call_times_its_real_first_chunk(
    recorded, stream_starts
):
    with slow_stream_server() as srv:
        await streaming_agent(srv).run(task="Weather?")

    calls_made = sorted(recorded.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert [e.metadata["finish_reason"] for e in calls_made] == ["function_calls", "stop"]
    assert calls_made[0].metadata["chunks"] == 0  # no text: only tool-call deltas
    assert calls_made[1].metadata["chunks"] >= 1
    assert len(stream_starts.times) == 2
    for event, first_chunk_ns in zip(calls_made, stream_starts.times, strict=True):
        recorded_ms = event.metadata["time_to_first_chunk_ms"]
        real_ms = (first_chunk_ns - event.start_ns) / 1e6
        assert recorded_ms == pytest.approx(real_ms, abs=5.0)
        # The stream's later chunks come 50 ms apart: its first is well before its end.
        assert recorded_ms < event.duration_ms - 40


async def test_a_wrapped_stream_of_only_a_tool_call_has_no_first_chunk_time_when_unknown(
    captured,
):
    # Without the global instrumentation the client's log is not read, and a tool-call answer
    # yields no text chunk: no time is known, none is made up.
    with slow_stream_server() as srv:
        await streaming_agent(srv).run(task="Weather?")

    first, second = sorted(captured.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert "time_to_first_chunk_ms" not in first.metadata
    assert first.metadata["chunks"] == 0
    assert 0 < second.metadata["time_to_first_chunk_ms"] < second.duration_ms - 40
    assert second.metadata["chunks"] >= 1


# -- 6. governance --------------------------------------------------------------------------------

refunded: list[str] = []


def refund(order: str) -> str:
    """Refund an order."""
    refunded.append(order)
    return f"refunded {order}"


@pytest.fixture
def policy(policy: Callable[[Any], Policy]) -> Callable[[Any], Policy]:
    """The package's ``policy``, with no refund made yet."""
    refunded.clear()
    return policy


def refund_agent() -> AssistantAgent:
    model = replay(calls(("c1", "refund", '{"order": "A1"}')), "ok")
    return AssistantAgent("clerk", model_client=instrument_model_client(model), tools=[refund])


DENIED = "tool 'refund' denied: no refunds"


async def test_a_denied_tool_does_not_run_and_autogen_reports_it_failed(recorded, policy):
    plugin = policy(Decision(False, "no refunds"))

    result = await refund_agent().run(task="refund A1")

    assert refunded == []
    [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    [outcome] = execution.content
    assert (outcome.call_id, outcome.is_error, outcome.content) == ("c1", True, DENIED)
    agent, call = recorded.one(type="agent"), recorded.one(type="tool_call")
    decision = recorded.one(type="decision")
    [(_, arguments)], [context] = plugin.asked, plugin.contexts
    assert arguments == {"order": "A1"}
    assert context == {
        "trace_id": call.trace_id, "span_id": call.span_id, "agent": "clerk",
        "framework": "autogen",
    }  # fmt: skip
    call_wire = wire(call)
    error = call_wire.pop("error")
    assert (error["type"], error["message"], error["kind"]) == ("ToolDenied", DENIED, "guardrail")
    assert call_wire == {
        "type": "tool_call", "name": "refund", "status": "error", "agent": "clerk",
        "session_id": None, "framework": "autogen", "input": {"order": "A1"},
        "output": DENIED, "model": None, "usage": None, "cost_usd": None,
        "metadata": {"call_id": "c1"}, "tags": [],
    }  # fmt: skip
    assert call.parent_span_id == agent.span_id
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    assert (decision.name, decision.status.value, decision.agent) == (
        "authorize:refund",
        "error",
        "clerk",
    )
    assert (decision.error.kind, decision.error.message) == ("guardrail", DENIED)
    assert decision.input == {"tool": "refund", "arguments": {"order": "A1"}}
    assert decision.output == {"decision": "deny", "reason": "no refunds"}
    assert agent.status.value == "ok"


async def test_a_policy_replacing_the_arguments_runs_the_tool_with_them(recorded, policy):
    policy(lambda _tool, arguments: Decision(True, "orders are masked", {"order": "XX"}))

    result = await refund_agent().run(task="refund A1")

    assert refunded == ["XX"]
    assert result.messages[-1].content == "refunded XX"
    call, decision = recorded.one(type="tool_call"), recorded.one(type="decision")
    assert (call.status.value, call.input, call.output) == ("ok", {"order": "XX"}, "refunded XX")
    assert decision.parent_span_id == call.span_id
    assert (decision.status.value, decision.input, decision.output) == (
        "ok",
        {"tool": "refund", "arguments": {"order": "XX"}},
        {"decision": "allow_redacted", "reason": "orders are masked"},
    )


async def test_without_a_policy_a_tool_runs_unchanged_after_one_enforced_check(
    recorded, monkeypatch
):
    from sightline_autogen import structure

    checks = count_enforced(monkeypatch, structure)
    monkeypatch.setattr(structure, "authorize", lambda *a, **k: pytest.fail("asked"))
    refunded.clear()

    await refund_agent().run(task="refund A1")

    assert refunded == ["A1"]
    assert checks == [recorded.client]
    assert recorded.find(type="decision") == []
    call = recorded.one(type="tool_call")
    assert (call.status.value, call.input, call.output) == ("ok", {"order": "A1"}, "refunded A1")


async def test_a_denied_agent_tool_never_runs_its_agent(recorded, policy):
    policy(lambda _tool, arguments: Decision(False, "no delegation"))
    boss_model = replay(calls(("b1", "helper", '{"task": "find x"}')), "done")
    boss = AssistantAgent(
        "boss",
        model_client=instrument_model_client(boss_model),
        tools=[AgentTool(helper_agent())],
    )

    await boss.run(task="go")

    assert shape(recorded) == [
        ("agent", "boss", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "helper", [("decision", "authorize:helper", [])]),
        ]),
    ]  # fmt: skip
    call = recorded.one(type="tool_call")
    assert (call.status.value, call.error.kind, call.error.type) == (
        "error",
        "guardrail",
        "ToolDenied",
    )
    assert call.output == "tool 'helper' denied: no delegation"


async def test_a_tool_run_directly_and_denied_raises_tool_denied_to_its_caller(recorded, policy):
    policy(Decision(False, "no refunds"))
    tool = FunctionTool(refund, description="Refund an order.")

    with sightline.trace("script") as script, pytest.raises(ToolDenied, match="no refunds"):
        await tool.run_json({"order": "A1"}, CancellationToken())

    assert refunded == []
    decision = recorded.one(type="decision")
    assert (decision.name, decision.parent_span_id) == ("authorize:refund", script.span_id)
    assert recorded.find(type="tool_call") == []


async def test_a_handoff_is_submitted_as_a_tool_named_after_it(recorded, policy):
    # A handoff is asked once, before AutoGen runs it (see test_autogen_handoff_governance).
    plugin = policy(lambda tool, _args: Decision(False, "no refunds") if tool == "refund" else None)
    model = replay(
        calls(("c1", "refund", '{"order": "A1"}')), calls(("c2", "transfer_to_manager", "{}"))
    )
    clerk = AssistantAgent(
        "clerk",
        model_client=instrument_model_client(model),
        tools=[refund],
        handoffs=["manager"],
        max_tool_iterations=2,
    )

    result = await clerk.run(task="refund A1")

    assert refunded == []
    assert [name for name, _ in plugin.asked] == ["refund", "transfer_to_manager"]
    assert type(result.messages[-1]).__name__ == "HandoffMessage"
    assert result.messages[-1].target == "manager"
    handoff = recorded.one(type="tool_call", name="transfer_to_manager")
    assert (handoff.status.value, handoff.error) == ("ok", None)
    assert recorded.one(type="tool_call", name="refund").error.kind == "guardrail"
    assert [d.name for d in recorded.find(type="decision")] == ["authorize:refund"]
