"""AutoGen handoffs under governance: a policy is asked before an ``AssistantAgent`` hands off
(``transfer_to_<agent>``); a deny fails the handoff's call instead of raising (which would hang
AutoGen 0.7.5), so the turn transfers to no one; an allow transfers exactly as before.

Every run is bounded by ``within``: a hang fails the test instead of blocking the suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import HandoffTermination, MaxMessageTermination
from autogen_agentchat.messages import (
    HandoffMessage,
    ToolCallExecutionEvent,
    ToolCallSummaryMessage,
)
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core.models import FunctionExecutionResult, FunctionExecutionResultMessage

from sightline import Decision
from sightline_autogen import instrument_model_client
from tests.autogen.conftest import calls, replay
from tests.autogen.handoff_support import (
    alice,
    assert_handoff_denied,
    assistant,
    chat,
    shape,
    transferred,
    within,
)
from tests.support.governance import count_enforced

TRANSFERRED = transferred("bob")
DENIED = "handoff to bob denied: bob is busy"


async def run(runner: Any, style: str, task: str = "go") -> TaskResult:
    """``runner.run(task)``, or the TaskResult ending ``runner.run_stream(task)``."""
    if style == "run":
        return await runner.run(task=task)
    stream: AsyncIterator[Any] = runner.run_stream(task=task)
    items = [item async for item in stream]
    assert isinstance(items[-1], TaskResult)
    return items[-1]


def refuse_transfers(tool: str, _arguments: dict[str, Any]) -> Any:
    return Decision(False, "bob is busy") if tool == "transfer_to_bob" else None


def hand_to_bob(call_id: str = "h1", arguments: str = "{}") -> Any:
    return calls((call_id, "transfer_to_bob", arguments))


# -- one agent ------------------------------------------------------------------------------------


async def test_a_denied_handoff_fails_its_call_and_the_agent_does_not_transfer(recorded, policy):
    plugin = policy(Decision(False, "bob is busy"))
    agent = alice(hand_to_bob())

    result = await within(agent.run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "ToolCallSummaryMessage")]
    [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert execution.content == [
        FunctionExecutionResult(content=DENIED, call_id="h1", is_error=True, name="transfer_to_bob")
    ]
    summary = result.messages[-1]
    assert isinstance(summary, ToolCallSummaryMessage)
    assert summary.content == DENIED
    # The model reads the refusal at its next call.
    context = await agent.model_context.get_messages()
    assert isinstance(context[-1], FunctionExecutionResultMessage)
    assert context[-1].content == execution.content

    assert plugin.asked == [("transfer_to_bob", {})]
    assert shape(recorded) == [
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "transfer_to_bob", [("decision", "authorize:transfer_to_bob", [])]),
        ]),
    ]  # fmt: skip
    turn, call = recorded.one(type="agent"), recorded.one(type="tool_call")
    decision = recorded.one(type="decision")
    assert plugin.contexts == [
        {"trace_id": call.trace_id, "span_id": call.span_id, "agent": "alice",
         "framework": "autogen"},
    ]  # fmt: skip
    assert (call.parent_span_id, decision.parent_span_id) == (turn.span_id, call.span_id)
    assert_handoff_denied(
        call,
        decision,
        target="bob",
        reason="bob is busy",
        agent="alice",
        call_id="h1",
        arguments={},
    )
    assert (turn.status.value, turn.error) == ("ok", None)
    assert turn.output == {"source": "alice", "type": "ToolCallSummaryMessage", "content": DENIED}


async def test_an_allowed_handoff_transfers_as_before_after_one_question(recorded, policy):
    plugin = policy(True)

    result = await within(alice(hand_to_bob()).run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "HandoffMessage")]
    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.content, handoff.context) == ("bob", TRANSFERRED, [])
    assert plugin.asked == [("transfer_to_bob", {})]
    assert shape(recorded) == [
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "transfer_to_bob", []),
        ]),
    ]  # fmt: skip
    call = recorded.one(type="tool_call")
    assert (call.status.value, call.error, call.input, call.output) == ("ok", None, {}, TRANSFERRED)


async def test_a_refused_handoff_is_read_by_the_model_which_goes_on_itself(recorded, policy):
    plugin = policy(Decision(False, "bob is busy"))
    model = replay(hand_to_bob(), "I will answer myself.")
    agent = assistant("alice", model, handoffs=["bob"], max_tool_iterations=2)

    result = await within(agent.run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "TextMessage")]
    assert result.messages[-1].content == "I will answer myself."
    [_, second] = model.create_calls
    assert second["messages"][-1] == FunctionExecutionResultMessage(
        content=[
            FunctionExecutionResult(
                content=DENIED, call_id="h1", is_error=True, name="transfer_to_bob"
            )
        ]
    )
    assert len(plugin.asked) == 1
    assert [(e.type.value, e.name) for e in recorded.children(recorded.one(type="agent"))] == [
        ("llm_invoke", "chat_completion"),
        ("tool_call", "transfer_to_bob"),
        ("llm_invoke", "chat_completion"),
    ]


async def test_of_two_handoffs_asked_at_once_the_allowed_one_is_performed(recorded, policy):
    plugin = policy(refuse_transfers)
    agent = alice(
        calls(("h1", "transfer_to_bob", "{}"), ("h2", "transfer_to_carol", "{}")),
        handoffs=["bob", "carol"],
    )

    result = await within(agent.run(task="go"))

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.source) == ("carol", "alice")
    assert plugin.asked == [("transfer_to_bob", {}), ("transfer_to_carol", {})]
    bob_call = recorded.one(type="tool_call", name="transfer_to_bob")
    carol_call = recorded.one(type="tool_call", name="transfer_to_carol")
    assert (bob_call.status.value, bob_call.error.kind) == ("error", "guardrail")
    assert (carol_call.status.value, carol_call.output) == (
        "ok",
        transferred("carol"),
    )
    [decision] = recorded.find(type="decision")
    assert (decision.name, decision.parent_span_id) == (
        "authorize:transfer_to_bob",
        bob_call.span_id,
    )


async def test_a_denied_handoff_beside_a_tool_is_summarized_with_the_tools_result(recorded, policy):
    def lookup(q: str) -> str:
        """Look something up."""
        return "found " + q

    plugin = policy(refuse_transfers)
    agent = alice(
        calls(("c1", "lookup", '{"q": "x"}'), ("h1", "transfer_to_bob", "{}")), tools=[lookup]
    )

    result = await within(agent.run(task="go"))

    summary = result.messages[-1]
    assert isinstance(summary, ToolCallSummaryMessage)
    assert summary.content == "found x\n" + DENIED
    assert [
        (call.name, res.is_error)
        for call, res in zip(summary.tool_calls, summary.results, strict=True)
    ] == [
        ("lookup", False),
        ("transfer_to_bob", True),
    ]
    # The calls run concurrently: asked in either order, once each.
    assert sorted(plugin.asked) == [("lookup", {"q": "x"}), ("transfer_to_bob", {})]
    assert recorded.one(type="tool_call", name="lookup").status.value == "ok"
    assert recorded.one(type="tool_call", name="transfer_to_bob").error.kind == "guardrail"


async def test_a_handoff_whose_arguments_do_not_decode_is_still_asked(recorded, policy):
    # AutoGen transfers even then: the policy must see it.
    plugin = policy(Decision(False, "bob is busy"))

    result = await within(alice(hand_to_bob(arguments="not json")).run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "ToolCallSummaryMessage")]
    assert result.messages[-1].content == DENIED
    assert plugin.asked == [("transfer_to_bob", {})]


async def test_replaced_arguments_let_the_handoff_transfer_with_them(recorded, policy):
    plugin = policy(Decision(True, "notes are private", {}))

    result = await within(alice(hand_to_bob(arguments='{"note": "secret"}')).run(task="go"))

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.content) == ("bob", TRANSFERRED)
    assert plugin.asked == [("transfer_to_bob", {"note": "secret"})]
    call, decision = recorded.one(type="tool_call"), recorded.one(type="decision")
    assert (call.status.value, call.input, call.output) == ("ok", {}, TRANSFERRED)
    assert decision.parent_span_id == call.span_id
    assert (decision.status.value, decision.error, decision.input, decision.output) == (
        "ok",
        None,
        {"tool": "transfer_to_bob", "arguments": {}},
        {"decision": "allow_redacted", "reason": "notes are private"},
    )
    assert len(recorded.find(type="tool_call")) == 1


async def test_without_a_policy_a_handoff_transfers_after_one_enforced_check(recorded, monkeypatch):
    from sightline_autogen import handoffs, structure

    handoff_checks = count_enforced(monkeypatch, handoffs)
    tool_checks = count_enforced(monkeypatch, structure)
    monkeypatch.setattr(handoffs, "authorize", lambda *a, **k: pytest.fail("asked"))

    result = await within(alice(hand_to_bob()).run(task="go"))

    assert isinstance(result.messages[-1], HandoffMessage)
    assert (handoff_checks, tool_checks) == ([recorded.client], [])
    assert recorded.find(type="decision") == []


# -- teams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["run", "run_stream"])
async def test_a_denied_handoff_in_a_swarm_keeps_the_turn_with_its_agent(recorded, policy, style):
    plugin = policy(refuse_transfers)
    bob_model = replay("bob here")
    bob = assistant("bob", bob_model)
    team = Swarm(
        [alice(hand_to_bob(), "alice again"), bob],
        termination_condition=MaxMessageTermination(3),
    )

    result = await within(run(team, style))

    assert chat(result) == [
        ("user", "TextMessage"),
        ("alice", "ToolCallSummaryMessage"),
        ("alice", "TextMessage"),
    ]
    assert not any(isinstance(m, HandoffMessage) for m in result.messages)
    assert bob_model.create_calls == []  # bob never spoke
    assert plugin.asked == [("transfer_to_bob", {})]
    assert shape(recorded) == [
        ("run", "Swarm", [
            ("agent", "alice", [
                ("llm_invoke", "chat_completion", []),
                ("tool_call", "transfer_to_bob", [("decision", "authorize:transfer_to_bob", [])]),
            ]),
            ("agent", "alice", [("llm_invoke", "chat_completion", [])]),
        ]),
    ]  # fmt: skip
    first_turn = recorded.find(type="agent", name="alice")[0]
    assert first_turn.output == {
        "source": "alice",
        "type": "ToolCallSummaryMessage",
        "content": DENIED,
    }
    call, decision = recorded.one(type="tool_call"), recorded.one(type="decision")
    assert call.parent_span_id == first_turn.span_id
    assert (call.status.value, call.error.kind, call.error.type) == (
        "error",
        "guardrail",
        "ToolDenied",
    )
    assert (decision.parent_span_id, decision.agent, decision.status.value) == (
        call.span_id,
        "alice",
        "error",
    )
    assert decision.error.kind == "guardrail"
    assert recorded.one(type="run").status.value == "ok"


@pytest.mark.parametrize("style", ["run", "run_stream"])
async def test_an_allowed_handoff_in_a_swarm_transfers_to_its_target(recorded, policy, style):
    plugin = policy(True)
    bob = assistant("bob", replay("bob here"))
    team = Swarm([alice(hand_to_bob()), bob], termination_condition=MaxMessageTermination(3))

    result = await within(run(team, style))

    assert chat(result) == [
        ("user", "TextMessage"),
        ("alice", "HandoffMessage"),
        ("bob", "TextMessage"),
    ]
    assert plugin.asked == [("transfer_to_bob", {})]
    assert shape(recorded) == [
        ("run", "Swarm", [
            ("agent", "alice", [
                ("llm_invoke", "chat_completion", []),
                ("tool_call", "transfer_to_bob", []),
            ]),
            ("agent", "bob", [("llm_invoke", "chat_completion", [])]),
        ]),
    ]  # fmt: skip
    assert recorded.one(type="tool_call").status.value == "ok"


@pytest.mark.parametrize("allowed", [False, True])
async def test_a_round_robin_team_stops_on_a_handoff_only_when_it_is_allowed(
    recorded, policy, allowed
):
    plugin = policy(True if allowed else Decision(False, "bob is busy"))
    team = RoundRobinGroupChat(
        [alice(hand_to_bob()), assistant("carol", replay("carol here"))],
        termination_condition=HandoffTermination("bob") | MaxMessageTermination(3),
    )

    result = await within(run(team, "run_stream"))

    assert plugin.asked == [("transfer_to_bob", {})]
    turns = [e.name for e in recorded.find(type="agent")]
    call = recorded.one(type="tool_call")
    if allowed:
        assert chat(result) == [("user", "TextMessage"), ("alice", "HandoffMessage")]
        assert result.stop_reason == "Handoff to bob from alice detected."
        assert turns == ["alice"]
        assert (call.status.value, recorded.find(type="decision")) == ("ok", [])
    else:
        assert chat(result) == [
            ("user", "TextMessage"),
            ("alice", "ToolCallSummaryMessage"),
            ("carol", "TextMessage"),
        ]
        assert (
            result.stop_reason == "Maximum number of messages 3 reached, current message count: 3"
        )
        assert turns == ["alice", "carol"]
        assert (call.status.value, call.error.kind) == ("error", "guardrail")
        assert recorded.one(type="decision").parent_span_id == call.span_id


async def test_a_selector_team_goes_on_without_the_refused_transfer(recorded, policy):
    plugin = policy(Decision(False, "bob is busy"))
    bob = assistant("bob", replay("bob here"))
    team = SelectorGroupChat(
        [alice(hand_to_bob()), bob],
        model_client=instrument_model_client(replay("alice")),
        termination_condition=HandoffTermination("bob") | MaxMessageTermination(3),
    )

    result = await within(team.run(task="go"))

    assert chat(result) == [
        ("user", "TextMessage"),
        ("alice", "ToolCallSummaryMessage"),
        ("bob", "TextMessage"),
    ]
    assert not any(isinstance(m, HandoffMessage) for m in result.messages)
    assert result.stop_reason == "Maximum number of messages 3 reached, current message count: 3"
    assert plugin.asked == [("transfer_to_bob", {})]
    run_span = recorded.one(type="run")
    assert [(e.type.value, e.name) for e in recorded.children(run_span)] == [
        ("decision", "select_speaker"),
        ("agent", "alice"),
        ("decision", "select_speaker"),
        ("agent", "bob"),
    ]
    alice_turn = recorded.one(type="agent", name="alice")
    call = recorded.one(type="tool_call")
    assert (call.parent_span_id, call.error.kind) == (alice_turn.span_id, "guardrail")
    assert recorded.one(type="decision", name="authorize:transfer_to_bob").parent_span_id == (
        call.span_id
    )
