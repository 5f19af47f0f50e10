"""AutoGen handoffs asked in parallel (several handoff calls in one model turn) under
governance: of a handoff asked twice, or of two handoffs, a refused call never becomes the
transfer. The ``HandoffMessage`` carries the allowed handoff's own result and a context without
the refusal, which stays in the turn's tool results (the model context, the events) as the
failed call it is. Each call is asked once.

AutoGen 0.7.5 takes a transfer's message from the result of the *last* call of the handoff's
name: without care, a refused second call to the handoff performed would be that message.

Every run is bounded by ``within``: a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import (
    HandoffMessage,
    ToolCallExecutionEvent,
    ToolCallSummaryMessage,
)
from autogen_agentchat.teams import Swarm
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    UserMessage,
)

from sightline import Decision
from sightline.testing import Capture
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

DENY = Decision(False, "quota used")


def refused(target: str) -> str:
    return f"handoff to {target} denied: quota used"


def in_turn(*answers: Any) -> Callable[[str, dict[str, Any]], Any]:
    """A policy answering the handoffs it is asked about with ``answers``, in the order asked
    (AutoGen starts a turn's calls in the model's order, and each is asked before it runs);
    other tools: no opinion."""
    pending = list(answers)

    def answer(tool: str, _arguments: dict[str, Any]) -> Any:
        return pending.pop(0) if tool.startswith("transfer_to_") else None

    return answer


def len_of_children(node: tuple[str, str, list[Any]]) -> int:
    return len(node[2])


def result_of(call_id: str, target: str, allowed: bool) -> FunctionExecutionResult:
    """The result AutoGen records for the call ``call_id`` to ``transfer_to_<target>``."""
    return FunctionExecutionResult(
        content=transferred(target) if allowed else refused(target),
        call_id=call_id,
        is_error=not allowed,
        name=f"transfer_to_{target}",
    )


def tool_call(cap: Capture, call_id: str) -> Any:
    [found] = [e for e in cap.find(type="tool_call") if e.metadata.get("call_id") == call_id]
    return found


def assert_allowed(cap: Capture, call_id: str, target: str) -> None:
    call = tool_call(cap, call_id)
    assert (call.name, call.status.value, call.error, call.input, call.output) == (
        f"transfer_to_{target}",
        "ok",
        None,
        {},
        transferred(target),
    )
    assert [e for e in cap.find(type="decision") if e.parent_span_id == call.span_id] == []


def assert_denied(cap: Capture, call_id: str, target: str) -> None:
    """The call ``call_id`` to ``transfer_to_<target>`` failed (kind guardrail) and holds the
    deny, as for any tool."""
    call = tool_call(cap, call_id)
    [decision] = [e for e in cap.find(type="decision") if e.parent_span_id == call.span_id]
    assert_handoff_denied(
        call,
        decision,
        target=target,
        reason="quota used",
        agent="alice",
        call_id=call_id,
        arguments={},
    )


async def run_recording_warnings(agent: AssistantAgent) -> tuple[TaskResult, list[str]]:
    """``agent.run(task="go")`` within the hang guard, and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await within(agent.run(task="go"))
    return result, [str(w.message) for w in caught]


# -- one handoff asked twice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "allowed",
    [(True, False), (False, True)],
    ids=["allowed-then-denied", "denied-then-allowed"],
)
async def test_a_handoff_asked_twice_transfers_with_the_allowed_calls_result(
    recorded, policy, allowed
):
    plugin = policy(in_turn(*(True if ok else DENY for ok in allowed)))
    agent = alice(calls(("h1", "transfer_to_bob", "{}"), ("h2", "transfer_to_bob", "{}")))

    result, warned = await run_recording_warnings(agent)

    assert chat(result) == [("user", "TextMessage"), ("alice", "HandoffMessage")]
    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.source, handoff.target, handoff.content, handoff.context) == (
        "alice",
        "bob",
        transferred("bob"),
        [],
    )
    # One handoff performed: AutoGen's warning about several is not given.
    assert not [w for w in warned if "Multiple handoffs" in w]
    # The refusal stays among the turn's tool results, which the model reads.
    results = [result_of("h1", "bob", allowed[0]), result_of("h2", "bob", allowed[1])]
    [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert execution.content == results
    context = await agent.model_context.get_messages()
    assert context[-1] == FunctionExecutionResultMessage(content=results)

    assert plugin.asked == [("transfer_to_bob", {}), ("transfer_to_bob", {})]
    # Both calls start at the request: their order in the tree is not the model's.
    [(kind, name, steps)] = shape(recorded)
    assert (kind, name, steps[0]) == ("agent", "alice", ("llm_invoke", "chat_completion", []))
    assert sorted(steps[1:], key=len_of_children) == [
        ("tool_call", "transfer_to_bob", []),
        ("tool_call", "transfer_to_bob", [("decision", "authorize:transfer_to_bob", [])]),
    ]
    ok_id, denied_id = ("h1", "h2") if allowed[0] else ("h2", "h1")
    assert_allowed(recorded, ok_id, "bob")
    assert_denied(recorded, denied_id, "bob")
    turn = recorded.one(type="agent")
    assert (turn.status.value, turn.output) == (
        "ok",
        {"source": "alice", "type": "HandoffMessage", "content": transferred("bob")},
    )


async def test_a_handoff_refused_both_times_is_summarized_twice_and_transfers_to_no_one(
    recorded, policy
):
    plugin = policy(in_turn(DENY, DENY))
    agent = alice(calls(("h1", "transfer_to_bob", "{}"), ("h2", "transfer_to_bob", "{}")))

    result = await within(agent.run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "ToolCallSummaryMessage")]
    summary = result.messages[-1]
    assert isinstance(summary, ToolCallSummaryMessage)
    assert summary.content == refused("bob") + "\n" + refused("bob")
    assert summary.results == [result_of("h1", "bob", False), result_of("h2", "bob", False)]
    assert plugin.asked == [("transfer_to_bob", {}), ("transfer_to_bob", {})]
    assert_denied(recorded, "h1", "bob")
    assert_denied(recorded, "h2", "bob")


# -- two handoffs, one refused --------------------------------------------------------------------


@pytest.mark.parametrize("order", [("bob", "carol"), ("carol", "bob")], ids=lambda o: "-".join(o))
async def test_of_two_handoffs_the_allowed_one_transfers_with_its_own_result(
    recorded, policy, order
):
    def refuse_bob(tool: str, _arguments: dict[str, Any]) -> Any:
        return DENY if tool == "transfer_to_bob" else True

    plugin = policy(refuse_bob)
    agent = alice(
        calls(*[(f"h{i}", f"transfer_to_{target}", "{}") for i, target in enumerate(order, 1)]),
        handoffs=["bob", "carol"],
    )

    result, warned = await run_recording_warnings(agent)

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.source, handoff.target, handoff.content, handoff.context) == (
        "alice",
        "carol",
        transferred("carol"),
        [],
    )
    assert not [w for w in warned if "Multiple handoffs" in w]
    results = [result_of(f"h{i}", target, target == "carol") for i, target in enumerate(order, 1)]
    [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    assert execution.content == results
    assert (await agent.model_context.get_messages())[-1] == FunctionExecutionResultMessage(
        content=results
    )
    assert plugin.asked == [(f"transfer_to_{target}", {}) for target in order]
    bob_id, carol_id = ("h1", "h2") if order[0] == "bob" else ("h2", "h1")
    assert_allowed(recorded, carol_id, "carol")
    assert_denied(recorded, bob_id, "bob")


# -- the handoff's context ------------------------------------------------------------------------


async def test_the_transfer_carries_the_turns_tools_but_not_the_refusal(recorded, policy):
    def lookup(q: str) -> str:
        """Look something up."""
        return "found " + q

    plugin = policy(in_turn(True, DENY))
    agent = alice(
        calls(
            ("c1", "lookup", '{"q": "x"}'),
            ("h1", "transfer_to_bob", "{}"),
            ("h2", "transfer_to_bob", "{}"),
        ),
        tools=[lookup],
    )

    result = await within(agent.run(task="go"))

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.content) == ("bob", transferred("bob"))
    assert handoff.context == [
        AssistantMessage(
            content=[FunctionCall(id="c1", name="lookup", arguments='{"q": "x"}')],
            source="alice",
        ),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(
                    content="found x", call_id="c1", is_error=False, name="lookup"
                )
            ]
        ),
    ]
    assert (await agent.model_context.get_messages())[-1] == FunctionExecutionResultMessage(
        content=[
            FunctionExecutionResult(content="found x", call_id="c1", is_error=False, name="lookup"),
            result_of("h1", "bob", True),
            result_of("h2", "bob", False),
        ]
    )
    assert sorted(plugin.asked) == [
        ("lookup", {"q": "x"}),
        ("transfer_to_bob", {}),
        ("transfer_to_bob", {}),
    ]
    assert tool_call(recorded, "c1").status.value == "ok"
    assert_allowed(recorded, "h1", "bob")
    assert_denied(recorded, "h2", "bob")


# -- a team ---------------------------------------------------------------------------------------


async def test_in_a_swarm_the_target_reads_the_allowed_handoffs_message(recorded, policy):
    plugin = policy(in_turn(True, DENY))
    bob_model = replay("bob here")
    bob = assistant("bob", bob_model)
    team = Swarm(
        [alice(calls(("h1", "transfer_to_bob", "{}"), ("h2", "transfer_to_bob", "{}"))), bob],
        termination_condition=MaxMessageTermination(3),
    )

    result = await within(team.run(task="go"))

    assert chat(result) == [
        ("user", "TextMessage"),
        ("alice", "HandoffMessage"),
        ("bob", "TextMessage"),
    ]
    [bob_call] = bob_model.create_calls
    assert bob_call["messages"][1:] == [
        UserMessage(content="go", source="user"),
        UserMessage(content=transferred("bob"), source="alice"),
    ]
    assert plugin.asked == [("transfer_to_bob", {}), ("transfer_to_bob", {})]
    [(kind, name, [alice_turn, bob_turn])] = shape(recorded)
    assert (kind, name) == ("run", "Swarm")
    assert bob_turn == ("agent", "bob", [("llm_invoke", "chat_completion", [])])
    assert alice_turn[:2] == ("agent", "alice")
    assert alice_turn[2][0] == ("llm_invoke", "chat_completion", [])
    assert sorted(alice_turn[2][1:], key=len_of_children) == [
        ("tool_call", "transfer_to_bob", []),
        ("tool_call", "transfer_to_bob", [("decision", "authorize:transfer_to_bob", [])]),
    ]
    assert_allowed(recorded, "h1", "bob")
    assert_denied(recorded, "h2", "bob")
    assert recorded.find(type="agent", name="alice")[0].output == {
        "source": "alice",
        "type": "HandoffMessage",
        "content": transferred("bob"),
    }
