"""Tool governance through an explicit ``SightlineCallbackHandler`` alone (no instrumentation):
``on_tool_start`` asks the policies; a deny raises ToolDenied in the agent before the tool runs,
a replacement (which a callback cannot apply) denies, and no call is asked about twice."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

import sightline
import sightline_langchain
from sightline import Decision, ToolDenied
from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler, governance
from sightline_langchain.handler import _IDS, _RUNS
from tests.langchain.langchain_refunds import (
    RAN,
    assert_refund_agent_refused,
    refund,
    refund_agent,
    refund_limit,
)
from tests.support.governance import Policy, policies


@tool
def lookup(query: str) -> str:
    """Look an order up."""
    RAN.append(("lookup", query))
    return "order found"


@pytest.fixture
def install(cap: Capture) -> Iterator[Any]:
    RAN.clear()
    assert not governance.is_installed()
    with policies(cap.client) as install_policy:
        yield install_policy


def test_a_deny_raises_in_the_agent_and_records_the_decision_under_the_calling_node(
    cap: Capture, install: Any, caplog: pytest.LogCaptureFixture
) -> None:
    policy: Policy = install(refund_limit)
    agent = refund_agent()
    handler = SightlineCallbackHandler()
    with caplog.at_level(logging.WARNING), pytest.raises(ToolDenied, match="refund limit"):
        agent.invoke({"messages": [("user", "refund A-1")]}, config={"callbacks": [handler]})
    assert RAN == []
    assert policy.asked == [("refund", {"order_id": "A-1", "amount": 500})]
    [context] = policy.contexts
    assert_refund_agent_refused(cap, context)  # the refused call, failed; it never ran
    [root] = [event for event in cap.events if event.parent_span_id is None]
    assert (root.name, root.status, root.error.type) == ("support", "error", "ToolDenied")
    # LangChain's "Error in ... callback" warning is not shown for a deliberate deny
    assert not [r for r in caplog.records if "on_tool_start" in r.getMessage()]


def test_an_allowed_call_runs_and_is_recorded_as_before(cap: Capture, install: Any) -> None:
    policy: Policy = install(refund_limit)
    handler = SightlineCallbackHandler(agent="desk")
    answer = refund.invoke({"order_id": "A-2", "amount": 20}, config={"callbacks": [handler]})
    assert answer == "refunded 20.0 on A-2"
    assert RAN == [("refund", "A-2", 20.0)]
    assert policy.asked == [("refund", {"order_id": "A-2", "amount": 20})]
    assert cap.find(type="decision") == []
    [call] = cap.find(type="tool_call")
    assert (call.name, call.status, call.agent) == ("refund", "ok", "desk")
    assert call.input == {"order_id": "A-2", "amount": 20}


async def test_async_tools_are_governed_by_the_explicit_handler(cap: Capture, install: Any) -> None:
    policy: Policy = install(refund_limit)
    chain = RunnableLambda(lambda _: {"order_id": "A-3", "amount": 101}, name="prepare") | refund
    with pytest.raises(ToolDenied):
        await chain.ainvoke("go", config={"callbacks": [SightlineCallbackHandler()]})
    assert RAN == [] and len(policy.asked) == 1
    [decision] = cap.find(type="decision")
    [call] = cap.find(type="tool_call")
    [sequence] = cap.find(name="RunnableSequence")
    assert (decision.parent_span_id, call.parent_span_id) == (call.span_id, sequence.span_id)
    assert (call.status, call.error.kind) == ("error", "guardrail")
    assert (sequence.status, sequence.error.kind) == ("error", "guardrail")


def test_a_replacement_cannot_be_applied_by_a_callback_so_it_denies(
    cap: Capture, install: Any
) -> None:
    install(lambda name, arguments: Decision(True, "capped", {**arguments, "amount": 100}))
    with pytest.raises(ToolDenied) as raised:
        refund.invoke(
            {"order_id": "A-4", "amount": 250}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    assert RAN == []  # never with the original arguments the policy replaced
    assert "capped; replaced arguments cannot be applied" in str(raised.value)
    [decision] = cap.find(type="decision")
    assert decision.output["decision"] == "deny"
    assert decision.output["reason"] == (
        "capped; replaced arguments cannot be applied: " + governance.CALLBACK_CANNOT_REPLACE
    )
    assert decision.input == {"tool": "refund", "arguments": {"order_id": "A-4", "amount": 250}}


def test_a_string_input_tool_is_asked_with_its_input(cap: Capture, install: Any) -> None:
    policy: Policy = install(lambda name, arguments: False)
    with pytest.raises(ToolDenied):
        lookup.invoke("A-5", config={"callbacks": [SightlineCallbackHandler()]})
    assert policy.asked == [("lookup", {"input": "A-5"})]
    assert RAN == []


def test_two_explicit_handlers_on_one_call_ask_once(cap: Capture, install: Any) -> None:
    policy: Policy = install(None)
    governed_tool = refund.with_config(callbacks=[SightlineCallbackHandler(agent="tool-level")])
    governed_tool.invoke(
        {"order_id": "A-6", "amount": 1}, config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert [asked[0] for asked in policy.asked] == ["refund"]
    assert [e.name for e in cap.find(type="tool_call")] == ["refund"]


def test_with_instrumentation_the_handler_leaves_the_question_to_it(
    global_cap: Capture,
) -> None:
    RAN.clear()
    with policies(global_cap.client) as install_policy:
        policy = install_policy(refund_limit)
        with pytest.raises(ToolDenied):
            refund.invoke(
                {"order_id": "A-7", "amount": 900},
                config={"callbacks": [SightlineCallbackHandler()]},
            )
        refund.invoke(
            {"order_id": "A-8", "amount": 9}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    assert [args["order_id"] for _, args in policy.asked] == ["A-7", "A-8"]
    assert RAN == [("refund", "A-8", 9.0)]
    assert len(global_cap.find(type="decision")) == 1


def test_other_callback_failures_are_still_swallowed(cap: Capture, install: Any) -> None:
    handler = SightlineCallbackHandler()
    assert handler.raise_error is False
    try:
        raise RuntimeError("a callback's own failure")
    except RuntimeError:
        assert handler.raise_error is False  # what LangChain reads while handling it
    try:
        raise ToolDenied("refund", "no")
    except ToolDenied:
        assert handler.raise_error is True
    handler.raise_error = True  # a user asking for every error keeps that choice
    assert handler.raise_error is True


def test_without_a_policy_nothing_is_asked_and_uninstrument_keeps_explicit_governance(
    cap: Capture,
) -> None:
    RAN.clear()
    handler = SightlineCallbackHandler()
    assert refund.invoke({"order_id": "A-9", "amount": 999}, config={"callbacks": [handler]})
    sightline_langchain.instrument()
    sightline_langchain.uninstrument()
    with policies(cap.client) as install_policy:
        install_policy(refund_limit)
        with pytest.raises(ToolDenied):
            refund.invoke({"order_id": "A-10", "amount": 999}, config={"callbacks": [handler]})
    assert RAN == [("refund", "A-9", 999.0)]
    assert [d.name for d in cap.find(type="decision")] == ["authorize:refund"]


def test_a_run_id_used_again_is_asked_again_after_a_deny_and_after_an_allow(
    cap: Capture, install: Any
) -> None:
    # A caller passing its own run_id (a request id) on a retry: each call is a new question.
    answers = iter([False, None, False])
    policy: Policy = install(lambda name, arguments: next(answers))
    config = {"callbacks": [SightlineCallbackHandler()], "run_id": uuid.uuid4()}
    outcomes = []
    for amount in (500, 5, 500):
        try:
            refund.invoke({"order_id": "A-11", "amount": amount}, config=dict(config))
            outcomes.append("ran")
        except ToolDenied:
            outcomes.append("denied")
    assert outcomes == ["denied", "ran", "denied"]
    assert [arguments["amount"] for _, arguments in policy.asked] == [500, 5, 500]
    assert RAN == [("refund", "A-11", 5.0)]
    assert [d.status for d in cap.find(type="decision")] == ["error", "error"]


def test_a_replacement_equal_to_the_arguments_allows_the_call(cap: Capture, install: Any) -> None:
    # A scrubbing policy that found nothing to scrub answers with the arguments unchanged.
    policy: Policy = install(lambda name, arguments: Decision(True, "scrubbed", dict(arguments)))
    answer = refund.invoke(
        {"order_id": "A-12", "amount": 3}, config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert answer == "refunded 3.0 on A-12" and RAN == [("refund", "A-12", 3.0)]
    assert len(policy.asked) == 1
    [decision] = cap.find(type="decision")  # recorded as any replacement is
    assert (decision.status, decision.output["decision"]) == ("ok", "allow_redacted")


@tool
async def slow_refund(order_id: str, amount: float) -> str:
    """Refund an order, slowly."""
    await asyncio.sleep(5)
    RAN.append(("slow_refund", order_id, amount))
    return "refunded"


async def test_a_run_id_used_again_after_a_cancelled_run_is_asked_again(
    cap: Capture, install: Any
) -> None:
    # LangChain sends no end for a cancelled tool run: the allow must not carry over to a retry.
    policy: Policy = install(lambda name, arguments: arguments["amount"] <= 100 or "deny")
    handler, run_id = SightlineCallbackHandler(), uuid.uuid4()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            slow_refund.ainvoke(
                {"order_id": "A-13", "amount": 50},
                config={"callbacks": [handler], "run_id": run_id},
            ),
            0.2,
        )
    with pytest.raises(ToolDenied):
        await slow_refund.ainvoke(
            {"order_id": "A-13", "amount": 5000}, config={"callbacks": [handler], "run_id": run_id}
        )
    assert [arguments["amount"] for _, arguments in policy.asked] == [50, 5000]
    assert RAN == []
    # LangChain never ends a cancelled top-level tool run: it stays open (ended as Incomplete at
    # exit); forgotten here so that the fixture's check of open runs covers the other tests.
    cap.client.flush()
    _RUNS.clear()
    _IDS.clear()


def test_the_decision_keeps_the_session_of_the_trace_it_is_in(cap: Capture, install: Any) -> None:
    install(refund_limit)
    with sightline.trace("ticket", session_id="sess-1"), pytest.raises(ToolDenied):
        refund.invoke(
            {"order_id": "A-14", "amount": 500}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    [decision] = cap.find(type="decision")
    [call] = cap.find(type="tool_call")
    assert (decision.session_id, call.session_id) == ("sess-1", "sess-1")
    assert decision.parent_span_id == call.span_id


def test_instrumented_without_a_client_a_tool_run_langchain_lost_the_parent_of_nests(
    cap: Capture,
) -> None:
    # sightline_langchain.instrument() with no client (the global one); tool.run inside a
    # RunnableLambda starts without a parent: the handler nests it under the lambda's run, and
    # the decision and the policy's context follow it there.
    RAN.clear()

    def body(_: Any) -> str:
        try:
            return refund.run({"order_id": "A-15", "amount": 500})
        except ToolDenied:
            return "denied"

    with policies(cap.client) as install_policy:
        policy = install_policy(refund_limit)
        sightline_langchain.instrument()
        try:
            assert RunnableLambda(body, name="step").invoke(1) == "denied"
        finally:
            sightline_langchain.uninstrument()
    [step] = cap.find(name="step")
    [call] = cap.find(type="tool_call")
    [decision] = cap.find(type="decision")
    assert (call.trace_id, call.parent_span_id) == (step.trace_id, step.span_id)
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    [context] = policy.contexts
    assert (context["trace_id"], context["span_id"]) == (call.trace_id, call.span_id)
