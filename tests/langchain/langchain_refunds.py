"""The refund the LangChain governance tests govern: the tool, the limit a policy puts on it, an
agent that asks for a refund over that limit, and what the refusal of that refund records."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool

from sightline import Decision
from sightline.event import Event
from sightline.testing import Capture
from tests.langchain.langchain_scripted import chat_model, reply

# What the governance tests' tools ran, in order; a test clears it first.
RAN: list[Any] = []


@tool
def refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    RAN.append(("refund", order_id, amount))
    return f"refunded {amount} on {order_id}"


def refund_limit(tool_name: str, arguments: dict[str, Any]) -> Any:
    """A policy answer: refunds over 100 are denied, anything else has no objection."""
    if tool_name == "refund" and arguments.get("amount", 0) > 100:
        return Decision(False, "over the refund limit")
    return None


def refund_agent() -> Any:
    """The agent ``support``, whose model asks for a refund of 500 on A-1 (``call-1``), then
    says "done"."""
    return create_agent(
        chat_model(
            reply(tool_calls=[("refund", {"order_id": "A-1", "amount": 500}, "call-1")]),
            reply("done"),
        ),
        tools=[refund],
        name="support",
    )


def assert_refund_agent_refused(cap: Capture, context: dict[str, Any]) -> Event:
    """``refund_agent``'s refund was refused over the limit: ``context`` (what the policy was
    told) names the agent and the refused ``tool_call`` (failed, kind guardrail, although it
    never ran), which holds the deny ``decision`` and is under the agent's ``tools`` node, failed
    with it. Returns that tool call."""
    assert (context["framework"], context["agent"]) == ("langchain", "support")
    [decision] = cap.find(type="decision")
    assert (decision.name, decision.status, decision.error.kind) == (
        "authorize:refund",
        "error",
        "guardrail",
    )
    assert decision.output == {"decision": "deny", "reason": "over the refund limit"}
    assert (decision.framework, decision.agent) == ("langchain", "support")
    by_span = {event.span_id: event for event in cap.events}
    [call] = cap.find(type="tool_call")
    assert by_span[decision.parent_span_id] is call
    assert (call.name, call.status, call.error.kind, call.error.type) == (
        "refund",
        "error",
        "guardrail",
        "ToolDenied",
    )
    assert (call.input, call.metadata["tool_call_id"]) == (
        {"order_id": "A-1", "amount": 500},
        "call-1",
    )
    assert (context["trace_id"], context["span_id"]) == (call.trace_id, call.span_id)
    tools_node = by_span[call.parent_span_id]
    assert (tools_node.type, tools_node.name, tools_node.status) == ("agent", "tools", "error")
    assert (tools_node.error.kind, tools_node.error.type) == ("guardrail", "ToolDenied")
    return call
