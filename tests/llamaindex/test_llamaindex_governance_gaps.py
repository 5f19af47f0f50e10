"""Tool governance beyond the agent's FunctionTool: a tool you call yourself (``tool.call``,
``await tool.acall``) that a policy denies is a failed ``tool_call`` with its ``decision`` under
it, as an allowed one is a ``tool_call``; and tool classes of your own (``AsyncBaseTool`` and
``BaseTool`` subclasses, a ``FunctionTool`` subclass that overrides ``call``), defined before or
after ``instrument()``, ask the policy once per call. ``uninstrument()`` puts everything back."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.tools import FunctionTool, QueryPlanTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool, BaseTool

import sightline
import sightline_llamaindex
from sightline import Decision, ToolDenied
from sightline.testing import Capture, capture
from sightline_llamaindex import patches
from tests.llamaindex.events import (
    assert_no_open_spans,
    decision_under_call,
    denied_tool_call,
    deny_decision,
    fields,
    last_message_to_model,
    outline,
)
from tests.llamaindex.scripted import CARD, charging_tool, shop
from tests.support.governance import policies

DENIED = "tool 'charge' denied: no charges"


async def call_directly(tool: BaseTool, how: str, *args: Any, **kwargs: Any) -> Any:
    if how == "call":
        return tool.call(*args, **kwargs)
    if how == "acall":
        return await tool.acall(*args, **kwargs)
    return tool(*args, **kwargs)


# -- 1. a tool you call yourself, denied --------------------------------------------------------


DIRECT = ["call", "acall"]


@pytest.mark.parametrize("how", DIRECT)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync-fn", "async-fn"])
async def test_a_denied_direct_call_is_a_failed_tool_call_with_the_decision_under_it(
    traced: Capture, policy: Any, how: str, use_async: bool
) -> None:
    rules = policy(Decision(False, "no charges"))
    tool, ran = charging_tool(use_async)

    with pytest.raises(ToolDenied, match="no charges") as denied:  # as before: raised to you
        await call_directly(tool, how, card=CARD, amount=30)

    assert (denied.value.tool, denied.value.reason, str(denied.value)) == (
        "charge",
        "no charges",
        DENIED,
    )
    assert ran == []
    assert rules.asked == [("charge", {"card": CARD, "amount": 30})]
    assert rules.contexts[0]["agent"] is None
    call, decision = decision_under_call(traced)
    assert call.parent_span_id is None  # a trace of its own, as an allowed direct call
    assert fields(call) == denied_tool_call("charge", {"card": CARD, "amount": 30}, "no charges")
    assert fields(decision) == deny_decision("charge", {"card": CARD, "amount": 30}, "no charges")
    assert outline(traced.events) == [
        ("tool_call", "charge", "error", [("decision", "authorize:charge", "error", [])])
    ]

    traced.clear()  # the same call allowed: the tool_call a deny mirrors, no decision
    rules.answer = None
    output = await call_directly(tool, how, card=CARD, amount=30)
    assert (output.content, output.is_error, ran) == ("charged 30", False, [(CARD, 30)])
    assert len(rules.asked) == 2
    allowed = traced.one(type="tool_call")
    assert traced.find(type="decision") == [] and allowed.parent_span_id is None
    assert fields(allowed) == {
        **denied_tool_call("charge", {"card": CARD, "amount": 30}, "no charges"),
        "status": "ok",
        "output": "charged 30",
        "error": None,
        "metadata": {"is_error": False},  # a raising call, denied or not, has no ToolOutput
    }


@pytest.mark.parametrize("how", DIRECT)
async def test_a_denied_direct_call_nests_under_your_span_and_takes_its_agent(
    traced: Capture, policy: Any, how: str
) -> None:
    rules = policy(Decision(False, "no charges"))
    tool, _ = charging_tool()
    with sightline.trace("checkout", agent="cashier") as checkout:
        with pytest.raises(ToolDenied):
            await call_directly(tool, how, CARD, 30)  # positional: named after charge()

    assert rules.asked == [("charge", {"card": CARD, "amount": 30})]
    assert rules.contexts[0]["agent"] == "cashier"
    call, decision = decision_under_call(traced)
    assert (call.trace_id, call.parent_span_id) == (checkout.trace_id, checkout.span_id)
    assert fields(call) == denied_tool_call(
        "charge", {"args": [CARD, 30], "kwargs": {}}, "no charges", agent="cashier"
    )
    assert fields(decision) == deny_decision(
        "charge", {"card": CARD, "amount": 30}, "no charges", "cashier"
    )


@pytest.mark.parametrize("how", DIRECT)
async def test_a_denied_direct_call_without_content_capture_records_no_arguments(
    how: str,
) -> None:
    with capture(capture_content=False) as cap, policies(cap.client) as install:
        sightline_llamaindex.instrument(cap.client)
        try:
            rules = install(Decision(False, "no charges"))
            with pytest.raises(ToolDenied):
                await call_directly(charging_tool()[0], how, card=CARD, amount=30)
        finally:
            sightline_llamaindex.uninstrument()
        assert len(rules.asked) == 1
        call, decision = decision_under_call(cap)
        assert (call.type.value, call.name, call.status.value) == ("tool_call", "charge", "error")
        assert (call.error.type, call.error.kind) == ("ToolDenied", "guardrail")
        assert (call.input, call.output, decision.input, decision.output) == (None,) * 4
        assert CARD not in str([e.to_dict() for e in cap.events])
    assert_no_open_spans()


@pytest.mark.parametrize("how", DIRECT)
async def test_a_direct_call_allowed_with_other_arguments_runs_them_under_its_tool_call(
    traced: Capture, policy: Any, how: str
) -> None:
    rules = policy(lambda tool, args: Decision(True, "masked", {**args, "card": "****4242"}))
    tool, ran = charging_tool()
    output = await call_directly(tool, how, card=CARD, amount=30)

    assert (type(output), output.content, output.is_error) == (ToolOutput, "charged 30", False)
    assert ran == [("****4242", 30)]
    assert len(rules.asked) == 1
    call, decision = decision_under_call(traced)
    assert (call.status.value, call.input, call.output) == (
        "ok",
        {"card": "****4242", "amount": 30},
        "charged 30",
    )
    assert (decision.status.value, decision.output) == (
        "ok",
        {"decision": "allow_redacted", "reason": "masked"},
    )


# -- 2. tool classes of your own ----------------------------------------------------------------


class OrderLookup(AsyncBaseTool):
    """A tool class of yours, defined before ``instrument()``: its own ``call``, and an
    ``acall`` that calls it (one tool call, one question)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="lookup_order", description="Look an order up.")

    def call(self, order_id: str) -> ToolOutput:
        self.ran.append(order_id)
        return ToolOutput(
            content=f"order {order_id}: shipped",
            tool_name="lookup_order",
            raw_input={"order_id": order_id},
            raw_output="shipped",
        )

    async def acall(self, order_id: str) -> ToolOutput:
        return self.call(order_id)


class LegacyRefund(BaseTool):
    """A synchronous ``BaseTool`` of yours: only ``__call__`` (an agent adapts it with
    ``BaseToolAsyncAdapter``, which calls it)."""

    def __init__(self) -> None:
        self.ran: list[Any] = []

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="refund", description="Refund an order.")

    def __call__(self, input: Any) -> ToolOutput:
        self.ran.append(input)
        return ToolOutput(
            content=f"refunded {input}", tool_name="refund", raw_input={}, raw_output="ok"
        )


AUDIT: list[str] = []


class AuditedTool(FunctionTool):
    """A ``FunctionTool`` whose ``call`` / ``acall`` note the call, then run it (``super()``)."""

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        AUDIT.append("call")
        return super().call(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        AUDIT.append("acall")
        return await super().acall(*args, **kwargs)


async def test_a_tool_class_of_yours_denied_in_an_agent_fails_its_tool_call_with_kind_guardrail(
    traced: Capture, policy: Any
) -> None:
    rules = policy(Decision(False, "no charges"))
    tool = OrderLookup()
    assert str(await shop(tool, "c1", order_id="A-17").run(user_msg="where?")) == "ok"

    assert tool.ran == []
    assert rules.asked == [("lookup_order", {"order_id": "A-17"})]
    assert rules.contexts[0]["agent"] == "shop"
    call, decision = decision_under_call(traced)
    denied = "tool 'lookup_order' denied: no charges"
    assert fields(call) == {
        **denied_tool_call("lookup_order", {"order_id": "A-17"}, "no charges", agent="shop"),
        "output": denied, "metadata": {"tool_call_id": "c1", "is_error": True},
    }  # fmt: skip
    assert fields(decision) == deny_decision(
        "lookup_order", {"order_id": "A-17"}, "no charges", "shop"
    )
    assert traced.one(type="agent").status.value == "ok"
    assert last_message_to_model(traced) == {
        "role": "tool",
        "content": denied,
        "tool_call_id": "c1",
    }


async def test_a_tool_class_of_yours_allowed_runs_unchanged_after_one_question(
    traced: Capture, policy: Any
) -> None:
    rules = policy(None)  # no objection
    tool = OrderLookup()
    await shop(tool, "c1", order_id="A-17").run(user_msg="where?")
    output = await tool.acall("B-2")  # acall calls call: one tool call, one question

    assert tool.ran == ["A-17", "B-2"]
    assert (output.content, output.is_error) == ("order B-2: shipped", False)
    assert rules.asked == [("lookup_order", {"order_id": "A-17"}), ("lookup_order", {"order_id": "B-2"})]  # fmt: skip
    assert traced.find(type="decision") == []
    in_agent, direct = sorted(traced.find(type="tool_call"), key=lambda e: e.start_ns)
    assert (in_agent.status.value, in_agent.input, in_agent.output, in_agent.agent) == (
        "ok",
        {"order_id": "A-17"},
        "order A-17: shipped",
        "shop",
    )
    assert (direct.status.value, direct.input, direct.output, direct.parent_span_id) == (
        "ok",
        {"order_id": "B-2"},
        "order B-2: shipped",
        None,
    )


async def test_a_synchronous_base_tool_of_yours_is_asked_once_through_the_agents_adapter(
    traced: Capture, policy: Any
) -> None:
    rules = policy(Decision(False, "no charges"))
    tool = LegacyRefund()
    await shop(tool, "r1", input="A-17").run(user_msg="refund")

    assert tool.ran == []
    assert rules.asked == [("refund", {"input": "A-17"})]  # not again for the adapter
    call, decision = decision_under_call(traced)
    assert (call.name, call.status.value, call.agent) == ("refund", "error", "shop")
    assert (call.error.type, call.error.kind) == ("ToolDenied", "guardrail")
    assert (decision.name, decision.agent) == ("authorize:refund", "shop")
    with pytest.raises(ToolDenied):
        tool("B-2")  # and called yourself
    assert len(rules.asked) == 2 and tool.ran == []


@pytest.mark.parametrize("how", ["call", "acall", "__call__"])
async def test_an_override_that_calls_super_is_asked_once(
    traced: Capture, policy: Any, how: str
) -> None:
    rules = policy(Decision(False, "no charges"))
    charge, ran = charging_tool()
    tool = AuditedTool.from_defaults(charge.fn, name="charge")
    AUDIT.clear()
    with pytest.raises(ToolDenied):
        await call_directly(tool, how, card=CARD, amount=30)

    assert AUDIT == [] and ran == []  # the override is governed too: it did not run
    assert rules.asked == [("charge", {"card": CARD, "amount": 30})]
    call, _ = decision_under_call(traced)
    assert fields(call) == denied_tool_call("charge", {"card": CARD, "amount": 30}, "no charges")

    rules.answer = None
    output = await call_directly(tool, how, card=CARD, amount=5)
    overridden = "acall" if how == "acall" else "call"  # FunctionTool.__call__ calls call
    assert (output.content, AUDIT, ran) == ("charged 5", [overridden], [(CARD, 5)])
    assert len(rules.asked) == 2  # once for the override, not again in FunctionTool's method


async def test_a_tool_class_defined_after_instrument_is_governed(
    traced: Capture, policy: Any
) -> None:
    class Inventory(AsyncBaseTool):
        """Parameters of its own, called positionally."""

        @property
        def metadata(self) -> ToolMetadata:
            return ToolMetadata(name="inventory", description="Count items.")

        def call(self, sku: str, warehouse: str = "main") -> ToolOutput:
            return ToolOutput(content="7", tool_name="inventory", raw_input={}, raw_output=7)

        async def acall(self, sku: str, warehouse: str = "main") -> ToolOutput:
            return self.call(sku, warehouse)

    assert {"Inventory.acall", "Inventory.call"} <= set(patches.governed_tool_methods())
    rules = policy(Decision(False, "no charges"))
    with pytest.raises(ToolDenied):
        await Inventory().acall("X-1", "north")

    assert rules.asked == [("inventory", {"sku": "X-1", "warehouse": "north"})]
    call, decision = decision_under_call(traced)
    assert fields(call) == denied_tool_call(
        "inventory", {"sku": "X-1", "warehouse": "north"}, "no charges"
    )
    assert fields(decision) == deny_decision(
        "inventory", {"sku": "X-1", "warehouse": "north"}, "no charges"
    )


# -- 3. uninstrument() -------------------------------------------------------------------------


def governed(cls: type, name: str) -> bool:
    return f"{cls.__name__}.{name}" in patches.governed_tool_methods()


def test_uninstrument_restores_the_tool_classes_and_base_tool_init_subclass(
    traced: Capture, policy: Any
) -> None:
    classes = {OrderLookup: ("call", "acall"), LegacyRefund: ("__call__",),
               AuditedTool: ("call", "acall"), QueryPlanTool: ("__call__",)}  # fmt: skip
    wrappers = {(cls, name): cls.__dict__[name] for cls, names in classes.items() for name in names}
    assert all(governed(cls, name) for cls, name in wrappers)
    assert {
        "AuditedTool.acall", "AuditedTool.call", "LegacyRefund.__call__", "OrderLookup.acall",
        "OrderLookup.call", "QueryPlanTool.__call__",
    } <= set(patches.governed_tool_methods())  # fmt: skip
    assert "FunctionTool.call" not in patches.governed_tool_methods()  # wrapped by name
    assert "__init_subclass__" in BaseTool.__dict__

    sightline_llamaindex.uninstrument()
    for (cls, name), wrapper in wrappers.items():
        assert cls.__dict__[name] is wrapper.__wrapped__
    assert "__init_subclass__" not in BaseTool.__dict__
    assert patches.governed_tool_methods() == []

    class Later(OrderLookup):
        def call(self, order_id: str) -> ToolOutput:
            return super().call(order_id)

    rules = policy(Decision(False, "no charges"))
    assert OrderLookup().call("A-1").content == "order A-1: shipped"  # nobody asked
    assert Later().call("A-2").content == "order A-2: shipped"  # defined after: not wrapped
    assert rules.asked == []

    sightline_llamaindex.instrument(traced.client)
    assert governed(Later, "call") and governed(OrderLookup, "acall")
    with pytest.raises(ToolDenied):
        Later().call("A-1")
    assert len(rules.asked) == 1
    traced.clear()
