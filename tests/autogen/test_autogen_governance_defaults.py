"""Tool governance sees the arguments an AutoGen tool will run with, its defaults included (from
the tool's ``args_type()``): a limit on ``amount`` holds when the model leaves ``amount`` at its
default, for an agent's tools, a tool run directly and a handoff's tool. A policy that allows
without replacing leaves the call as it was; one that replaces the arguments runs the tool with
what it returned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from autogen_agentchat.base import Handoff
from autogen_agentchat.messages import HandoffMessage, ToolCallExecutionEvent
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool

from sightline import Decision, ToolDenied
from sightline.testing import Capture
from tests.autogen.conftest import calls, replay
from tests.autogen.handoff_support import assistant, within
from tests.support.governance import Policy, refund_limit

refunded: list[tuple[str, int]] = []


def refund(order: str, amount: int = 500) -> str:
    """Refund an order."""
    refunded.append((order, amount))
    return f"refunded {amount} on {order}"


@pytest.fixture
def policy(policy: Callable[[Any], Policy]) -> Callable[[Any], Policy]:
    """The package's ``policy``, with no refund made yet."""
    refunded.clear()
    return policy


async def test_a_limit_on_a_defaulted_argument_denies_the_agents_call(
    recorded: Capture, policy: Any
) -> None:
    plugin = policy(refund_limit)
    model = replay(calls(("c1", "refund", '{"order": "A1"}')), "ok")

    result = await assistant("clerk", model, tools=[refund]).run(task="refund A1")

    assert refunded == []
    assert plugin.asked == [("refund", {"order": "A1", "amount": 500})]
    [execution] = [m for m in result.messages if isinstance(m, ToolCallExecutionEvent)]
    [outcome] = execution.content
    assert (outcome.is_error, outcome.content) == (
        True,
        "tool 'refund' denied: over the refund limit",
    )
    decision = recorded.one(type="decision")
    assert decision.input == {"tool": "refund", "arguments": {"order": "A1", "amount": 500}}


async def test_a_tool_run_directly_shows_the_defaults_and_runs_as_called(
    recorded: Capture, policy: Any
) -> None:
    plugin = policy(None)
    tool = FunctionTool(refund, description="Refund an order.")

    assert await tool.run_json({"order": "A2"}, CancellationToken()) == "refunded 500 on A2"

    assert refunded == [("A2", 500)]
    assert plugin.asked == [("refund", {"order": "A2", "amount": 500})]
    assert recorded.find(type="decision") == []

    plugin.answer = refund_limit
    with pytest.raises(ToolDenied, match="over the refund limit"):
        await tool.run_json({"order": "A3"}, CancellationToken())
    assert refunded == [("A2", 500)]


async def test_a_policy_capping_a_defaulted_argument_runs_the_tool_with_the_cap(
    recorded: Capture, policy: Any
) -> None:
    policy(lambda _tool, arguments: Decision(True, "capped", {**arguments, "amount": 100}))
    model = replay(calls(("c1", "refund", '{"order": "A4"}')), "ok")

    await assistant("clerk", model, tools=[refund]).run(task="refund A4")

    assert refunded == [("A4", 100)]
    assert recorded.one(type="tool_call").input == {"order": "A4", "amount": 100}


class PriorityHandoff(Handoff):
    """A handoff whose tool takes a priority, ``normal`` by default."""

    @property
    def handoff_tool(self) -> FunctionTool:
        def transfer(priority: str = "normal") -> str:
            return f"{self.message} Priority: {priority}"

        return FunctionTool(transfer, name=self.name, description=self.description)


async def test_a_handoffs_policy_sees_its_tools_defaults(recorded: Capture, policy: Any) -> None:
    def urgent_only(tool_name: str, arguments: dict[str, Any]) -> Any:
        if arguments.get("priority") != "urgent":
            return Decision(False, "bob takes urgent cases only")
        return None

    plugin = policy(urgent_only)
    model = replay(calls(("h1", "transfer_to_bob", "{}")), "ok")
    alice = assistant("alice", model, handoffs=[PriorityHandoff(target="bob")])

    result = await within(alice.run(task="go"))

    assert plugin.asked == [("transfer_to_bob", {"priority": "normal"})]
    assert not [m for m in result.messages if isinstance(m, HandoffMessage)]  # no transfer
