"""Tool governance: a policy plugin decides, before each tool of an agent runs, whether it may.

The policy below lets refunds up to 100 EUR through, caps those up to 500 EUR at 100 (the tool
runs with the replaced amount), and denies the rest. It is a plain Sightline plugin (a
``sightline_authorize_tool`` hook); with ``sightline-langchain`` installed, ``sightline.init()``
makes every LangChain tool ask it, with nothing to wrap in the agent's code. A deny raises
``sightline.ToolDenied`` in the agent (the refused call is a failed ``tool_call``, kind
``guardrail``); each decision that is not a plain "allow" is recorded as a ``decision`` event
under the tool call it refused or changed::

    python examples/governance_example.py
    sightline show latest

The agent is the one of ``examples/langchain_agent.py`` (a scripted model, offline).
It needs ``langchain`` (for ``create_agent``) beside ``sightline[langchain]``, as that example
does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_agent import ScriptedChatModel, issue_refund, lookup_order, step
from langchain_core.messages import AIMessage

import sightline


class RefundLimits:
    """Refunds up to 100 EUR: allowed; up to 500: capped at 100; above: denied."""

    @sightline.hookimpl
    def sightline_authorize_tool(
        self, tool_name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> sightline.Decision | None:
        if tool_name != "issue_refund":
            return None  # not this policy's business
        amount = float(arguments.get("amount", 0))
        if amount <= 100:
            return None
        if amount <= 500:
            return sightline.Decision(True, "capped at 100 EUR", {**arguments, "amount": 100.0})
        return sightline.Decision(False, f"refunds above 500 EUR need a supervisor ({amount:.2f})")


def refund_script(order_id: str, amount: float) -> Iterator[AIMessage]:
    yield step(tool="lookup_order", args={"order_id": order_id}, usage=(180, 14))
    yield step(tool="issue_refund", args={"order_id": order_id, "amount": amount}, usage=(240, 20))
    yield step(f"Done: the refund for {order_id} is issued.", usage=(290, 12))


def ask(order_id: str, amount: float) -> None:
    agent = create_agent(
        ScriptedChatModel(messages=refund_script(order_id, amount)),
        tools=[lookup_order, issue_refund],
        name="refund-bot",
    )
    request = f"Please refund {amount:.2f} EUR for order {order_id}."
    with sightline.trace(f"refund {amount:.0f} EUR", input=request) as ticket:
        try:
            result = agent.invoke({"messages": [("user", request)]})
        except sightline.ToolDenied as denied:
            ticket.set_output(f"escalated: {denied.reason}")
            print(f"  {amount:8.2f} EUR → denied, escalated to a supervisor ({denied.reason})")
            return
        tool_replies = [m.content for m in result["messages"] if m.type == "tool"]
        ticket.set_output(tool_replies[-1])
        print(f"  {amount:8.2f} EUR → {tool_replies[-1]}")


def main() -> None:
    sightline.register_plugin(RefundLimits(), "refund-limits")
    sightline.init(agent="refund-bot")
    for amount in (42.50, 250.00, 900.00):
        ask("A-1001", amount)
    sightline.shutdown()


if __name__ == "__main__":
    main()
