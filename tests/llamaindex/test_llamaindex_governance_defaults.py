"""Tool governance sees the arguments a LlamaIndex tool will run with, its defaults included: a
limit on ``amount`` holds when the model leaves ``amount`` at its default. The workflow
``Context`` and a ``FunctionTool``'s ``partial_params`` (the application's) stay out; a policy
that allows without replacing leaves the call as it was."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool
from llama_index.core.workflow import Context
from pydantic import Field

from sightline import Decision, ToolDenied
from sightline.testing import Capture
from tests.llamaindex.scripted import shop
from tests.support.governance import refund_limit

RAN: list[tuple[str, int]] = []


def refund(order_id: str, amount: int = 500) -> str:
    """Refund an order."""
    RAN.append((order_id, amount))
    return f"refunded {amount} on {order_id}"


async def test_a_limit_on_a_defaulted_argument_denies_the_agents_call(
    traced: Capture, policy: Any
) -> None:
    RAN.clear()
    rules = policy(refund_limit)
    agent = shop(FunctionTool.from_defaults(refund), "c1", order_id="A-1")

    assert str(await agent.run(user_msg="refund A-1")) == "ok"

    assert RAN == []
    assert rules.asked == [("refund", {"order_id": "A-1", "amount": 500})]
    [decision] = traced.find(type="decision")
    assert decision.output == {"decision": "deny", "reason": "over the refund limit"}


async def test_positional_and_async_calls_show_the_defaults_too(
    traced: Capture, policy: Any
) -> None:
    RAN.clear()
    rules = policy(refund_limit)
    tool = FunctionTool.from_defaults(refund)

    with pytest.raises(ToolDenied):
        tool.call("A-2")
    with pytest.raises(ToolDenied):
        await tool.acall(order_id="A-3")

    assert RAN == []
    assert rules.asked == [
        ("refund", {"order_id": "A-2", "amount": 500}),
        ("refund", {"order_id": "A-3", "amount": 500}),
    ]


async def test_an_allowed_call_runs_as_called_and_the_tool_fills_its_defaults(
    traced: Capture, policy: Any
) -> None:
    RAN.clear()
    rules = policy(None)
    output = FunctionTool.from_defaults(refund).call(order_id="A-4")

    assert (output.content, RAN) == ("refunded 500 on A-4", [("A-4", 500)])
    assert rules.asked == [("refund", {"order_id": "A-4", "amount": 500})]
    assert output.raw_input == {"args": (), "kwargs": {"order_id": "A-4"}}  # as called
    assert traced.find(type="decision") == []


async def test_field_defaults_count_and_partial_params_and_the_context_stay_out(
    traced: Capture, policy: Any
) -> None:
    ran: list[Any] = []

    def charge(
        ctx: Context, card: str, account: str, amount: int = Field(default=250), note: str = ""
    ) -> str:
        """Charge a card."""
        ran.append((card, account, amount, note))
        return "charged"

    rules = policy(refund_limit)
    tool = FunctionTool.from_defaults(charge, name="refund", partial_params={"account": "acme"})
    with_context = Context.__new__(Context)  # the workflow's: passed through, never shown

    with pytest.raises(ToolDenied):
        tool.call(card="4242", ctx=with_context)

    assert ran == []
    assert rules.asked == [("refund", {"card": "4242", "amount": 250, "note": ""})]


class OrderRefund(AsyncBaseTool):
    """A tool class of yours: the defaults are those of its own ``call``."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="refund", description="Refund an order.")

    def call(self, order_id: str, amount: int = 300) -> ToolOutput:
        self.ran.append((order_id, amount))
        return ToolOutput(content="refunded", tool_name="refund", raw_input={}, raw_output="ok")

    async def acall(self, order_id: str, amount: int = 300) -> ToolOutput:
        return self.call(order_id, amount)


async def test_a_tool_class_of_yours_shows_the_defaults_of_its_method(
    traced: Capture, policy: Any
) -> None:
    rules = policy(refund_limit)
    tool = OrderRefund()

    assert str(await shop(tool, "c1", order_id="A-5").run(user_msg="refund")) == "ok"

    assert tool.ran == []
    assert rules.asked == [("refund", {"order_id": "A-5", "amount": 300})]


async def test_a_policy_capping_a_defaulted_argument_runs_the_tool_with_the_cap(
    traced: Capture, policy: Any
) -> None:
    RAN.clear()
    policy(lambda name, arguments: Decision(True, "capped", {**arguments, "amount": 100}))

    FunctionTool.from_defaults(refund).call(order_id="A-6")

    assert RAN == [("A-6", 100)]
