"""AutoGen handoffs made by a ``Handoff`` subclass with its own ``handoff_tool``: asked exactly
once, by the handoff path (never again in ``run_json``, whatever the tool's class), so a policy
that answers differently the second time (a quota) cannot raise inside AutoGen's tool-call task,
which would hang the agent (0.7.5).

Every run is bounded by ``within``: a hang fails the test instead of blocking the suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Handoff
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import HandoffMessage, ToolCallSummaryMessage
from autogen_agentchat.teams import Swarm
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool

from sightline import Decision
from tests.autogen.conftest import calls, replay
from tests.autogen.handoff_support import (
    assert_handoff_denied,
    assistant,
    chat,
    shape,
    transferred,
    within,
)

NOTED = transferred("bob") + " Note: vip"


class NoteHandoff(Handoff):
    """A handoff whose tool takes a note for the target: its own ``handoff_tool``, so its
    function is not AutoGen's ``Handoff.handoff_tool.<locals>`` one."""

    @property
    def handoff_tool(self) -> FunctionTool:
        def transfer(note: str = "") -> str:
            return f"{self.message} Note: {note}"

        return FunctionTool(transfer, name=self.name, description=self.description)


class AuditedHandoff(Handoff):
    """A handoff whose tool first runs another tool (an audit record) itself."""

    @property
    def handoff_tool(self) -> FunctionTool:
        def record(entry: str) -> str:
            return entry

        audit = FunctionTool(record, name="audit", description="Record an audit entry.")

        async def transfer() -> str:
            await audit.run_json({"entry": f"to {self.target}"}, CancellationToken())
            return self.message

        return FunctionTool(transfer, name=self.name, description=self.description)


def quota(transfers: int) -> Callable[[str, dict[str, Any]], Any]:
    """A policy granting ``transfers`` handoffs, then refusing them (other tools: no opinion)."""
    granted: list[str] = []

    def answer(tool: str, _arguments: dict[str, Any]) -> Any:
        if not tool.startswith("transfer_to_"):
            return None
        granted.append(tool)
        return True if len(granted) <= transfers else Decision(False, "quota used")

    return answer


def agent(name: str, handoff: Handoff, *responses: Any) -> AssistantAgent:
    """``name``, who may hand off with ``handoff``, answering ``responses`` (wrapped model)."""
    return assistant(name, replay(*responses), handoffs=[handoff])


def hand_off(target: str, call_id: str = "h1", arguments: str = '{"note": "vip"}') -> Any:
    return calls((call_id, f"transfer_to_{target}", arguments))


async def test_an_allowed_subclass_handoff_is_asked_once_and_transfers(recorded, policy):
    plugin = policy(True)

    result = await within(agent("alice", NoteHandoff(target="bob"), hand_off("bob")).run(task="go"))

    assert chat(result) == [("user", "TextMessage"), ("alice", "HandoffMessage")]
    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.content) == ("bob", NOTED)
    assert plugin.asked == [("transfer_to_bob", {"note": "vip"})]
    assert shape(recorded) == [
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "transfer_to_bob", []),
        ]),
    ]  # fmt: skip
    call = recorded.one(type="tool_call")
    assert (call.status.value, call.error, call.input, call.output) == (
        "ok",
        None,
        {"note": "vip"},
        NOTED,
    )


async def test_a_subclass_handoff_within_its_quota_is_asked_once_and_transfers(recorded, policy):
    # Asked a second time in run_json, this policy would deny: raised there, the agent hangs.
    plugin = policy(quota(1))

    result = await within(agent("alice", NoteHandoff(target="bob"), hand_off("bob")).run(task="go"))

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert (handoff.target, handoff.content) == ("bob", NOTED)
    assert plugin.asked == [("transfer_to_bob", {"note": "vip"})]
    assert recorded.find(type="decision") == []
    call = recorded.one(type="tool_call")
    assert (call.status.value, call.error, call.output) == ("ok", None, NOTED)


async def test_a_subclass_handoff_over_its_quota_is_denied_without_hanging_or_transferring(
    recorded, policy
):
    plugin = policy(quota(1))
    alice = agent(
        "alice", NoteHandoff(target="bob"), hand_off("bob"), hand_off("bob", call_id="h2")
    )

    first = await within(alice.run(task="go"))
    second = await within(alice.run(task="go on"))

    assert isinstance(first.messages[-1], HandoffMessage)
    assert chat(second) == [("user", "TextMessage"), ("alice", "ToolCallSummaryMessage")]
    summary = second.messages[-1]
    assert isinstance(summary, ToolCallSummaryMessage)
    assert summary.content == "handoff to bob denied: quota used"
    # One question per handoff.
    assert plugin.asked == [("transfer_to_bob", {"note": "vip"})] * 2
    assert shape(recorded) == [
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "transfer_to_bob", []),
        ]),
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            ("tool_call", "transfer_to_bob", [("decision", "authorize:transfer_to_bob", [])]),
        ]),
    ]  # fmt: skip
    allowed, denied = recorded.find(type="tool_call")
    assert (allowed.status.value, allowed.error, allowed.output) == ("ok", None, NOTED)
    assert (denied.agent, denied.metadata) == ("alice", {"call_id": "h2"})
    assert_handoff_denied(
        denied,
        recorded.one(type="decision"),
        target="bob",
        reason="quota used",
        agent="alice",
        call_id="h2",
        arguments={"note": "vip"},
    )
    assert recorded.find(type="agent")[1].status.value == "ok"


async def test_a_subclass_handoff_over_its_quota_keeps_the_swarm_turn_with_its_agent(
    recorded, policy
):
    plugin = policy(quota(1))
    alice = agent("alice", NoteHandoff(target="bob"), hand_off("bob"))
    bob = agent(
        "bob",
        NoteHandoff(target="alice"),
        hand_off("alice", call_id="h2", arguments='{"note": "back"}'),
        "bob again",
    )
    team = Swarm([alice, bob], termination_condition=MaxMessageTermination(4))

    result = await within(team.run(task="go"))

    assert chat(result) == [
        ("user", "TextMessage"),
        ("alice", "HandoffMessage"),
        ("bob", "ToolCallSummaryMessage"),
        ("bob", "TextMessage"),
    ]
    assert plugin.asked == [
        ("transfer_to_bob", {"note": "vip"}),
        ("transfer_to_alice", {"note": "back"}),
    ]
    assert shape(recorded) == [
        ("run", "Swarm", [
            ("agent", "alice", [
                ("llm_invoke", "chat_completion", []),
                ("tool_call", "transfer_to_bob", []),
            ]),
            ("agent", "bob", [
                ("llm_invoke", "chat_completion", []),
                ("tool_call", "transfer_to_alice",
                 [("decision", "authorize:transfer_to_alice", [])]),
            ]),
            ("agent", "bob", [("llm_invoke", "chat_completion", [])]),
        ]),
    ]  # fmt: skip
    denied = recorded.one(type="tool_call", name="transfer_to_alice")
    assert (denied.agent, denied.metadata) == ("bob", {"call_id": "h2"})
    assert_handoff_denied(
        denied,
        recorded.one(type="decision"),
        target="alice",
        reason="quota used",
        agent="bob",
        call_id="h2",
        arguments={"note": "back"},
    )
    assert recorded.one(type="tool_call", name="transfer_to_bob").status.value == "ok"
    assert recorded.one(type="run").status.value == "ok"


async def test_a_subclass_handoff_runs_with_the_policys_arguments_after_one_question(
    recorded, policy
):
    plugin = policy(Decision(True, "notes are private", {"note": ""}))

    result = await within(agent("alice", NoteHandoff(target="bob"), hand_off("bob")).run(task="go"))

    handoff = result.messages[-1]
    assert isinstance(handoff, HandoffMessage)
    assert handoff.content == "Transferred to bob, adopting the role of bob immediately. Note: "
    assert plugin.asked == [("transfer_to_bob", {"note": "vip"})]
    call, decision = recorded.one(type="tool_call"), recorded.one(type="decision")
    assert (call.status.value, call.input, decision.parent_span_id) == (
        "ok",
        {"note": ""},
        call.span_id,
    )
    assert decision.output == {"decision": "allow_redacted", "reason": "notes are private"}


async def test_a_tool_refused_inside_a_handoff_refuses_the_handoff_without_hanging(
    recorded, policy
):
    def refuse_audit(tool: str, _arguments: dict[str, Any]) -> Any:
        return Decision(False, "quota used") if tool == "audit" else True

    plugin = policy(refuse_audit)

    result = await within(
        agent("alice", AuditedHandoff(target="bob"), hand_off("bob", arguments="{}")).run(task="go")
    )

    assert chat(result) == [("user", "TextMessage"), ("alice", "ToolCallSummaryMessage")]
    assert result.messages[-1].content == "handoff to bob denied: quota used"
    assert plugin.asked == [("transfer_to_bob", {}), ("audit", {"entry": "to bob"})]
    assert shape(recorded) == [
        ("agent", "alice", [
            ("llm_invoke", "chat_completion", []),
            # A tool run directly and denied has no tool_call, only its decision.
            ("tool_call", "transfer_to_bob", [("decision", "authorize:audit", [])]),
        ]),
    ]  # fmt: skip
    call, decision = recorded.one(type="tool_call"), recorded.one(type="decision")
    assert (call.status.value, call.error.kind, call.error.message, call.output) == (
        "error",
        "guardrail",
        "tool 'audit' denied: quota used",
        "handoff to bob denied: quota used",
    )
    assert (decision.parent_span_id, decision.error.kind) == (call.span_id, "guardrail")
