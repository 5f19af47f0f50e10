"""Lifecycles CrewAI reports only in part: refused tool calls, kickoffs that end without their
end event, spans still open when recording stops, and several listeners on one client."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from unittest.mock import ANY

import pytest
from crewai.events import LLMCallStartedEvent, ToolFailureDetectedEvent
from crewai.tools import tool
from crewai.tools.tool_failure import ToolFailure, ToolFailurePolicy, ToolFailureReason

import sightline_crewai
from sightline.testing import capture
from sightline_crewai import SightlineEventListener
from sightline_crewai.instrumentation import active_listener
from sightline_crewai.mapping import RULES
from sightline_crewai.tree import SpanTree
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    DrainingCapture,
    Subset,
    calculator_crew,
    check_event,
    tree_of,
)
from tests.support.openai_server import Reply, tool_then_answer

pytestmark = CREWAI_WARNINGS


class Interrupt(BaseException):
    """Like ``KeyboardInterrupt``: not an ``Exception``, so CrewAI reports nothing."""


@tool("halt")
def halt(a: int) -> int:
    """Stop everything."""
    raise Interrupt("stopped by the user")


def in_a_thread(call: Any) -> BaseException | None:
    """Run ``call`` in a thread of its own (CrewAI leaves an interrupted kickoff's event scopes
    in the context it ran in); return what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return raised[0] if raised else None


def statuses(events: list) -> list[tuple[str, str, str | None]]:
    return sorted((e.type.value, e.status.value, e.error.type if e.error else None) for e in events)


# -- refused tool calls ---------------------------------------------------------------------------


def test_tool_call_with_malformed_json_arguments_is_a_tool_error(instrumented, server, llm):
    # CrewAI never runs the tool and reports the call only as ToolFailureDetectedEvent.
    server.add(Reply.tool_call("add", '{"a": 1, "b": '), Reply.text("3"))

    calculator_crew(llm()).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [("chain", "Add 1 and 2", [("agent", "Calculator", [
            ("llm_invoke", "gpt-4o-mini", []),
            ("tool_call", "add", []),
            ("llm_invoke", "gpt-4o-mini", []),
        ])])]),
    ]  # fmt: skip
    agent = instrumented.one(type="agent")
    check_event(
        instrumented.one(type="tool_call"), type="tool_call", name="add",
        parent_span_id=agent.span_id, agent="Calculator", status="error",
        input='{"a": 1, "b": ',
        error=Subset(kind="tool", type="invalid_input",
                     message=ANY),
        metadata={"rejected": "tool_failure_detected", "code": "json_decode_error",
                  "policy": "warn", "agent_role": "Calculator"},
    )  # fmt: skip
    assert (
        "Failed to parse tool arguments as JSON" in instrumented.one(type="tool_call").error.message
    )


def test_a_repeated_call_failure_is_a_decision_not_a_tool_call():
    # CrewAI 1.15 raises for a repeated call without emitting the event; a version that emits
    # it records the agent being stopped, not one more tool call (the calls are recorded).
    event = ToolFailureDetectedEvent(
        tool_name="add", tool_args={"a": 1, "b": 2}, policy=ToolFailurePolicy.RAISE,
        failure=ToolFailure(message="called 'add' 5 times", reason=ToolFailureReason.REPEATED_CALL),
    )  # fmt: skip
    with capture() as cap:
        SpanTree().receive("ToolFailureDetectedEvent", RULES["ToolFailureDetectedEvent"], event)
        check_event(
            cap.one(), type="decision", name="repeated_call", status="error",
            input={"tool": "add", "tool_args": {"a": 1, "b": 2}},
            error=Subset(kind="orchestration", type="repeated_call",
                         message="called 'add' 5 times"),
        )  # fmt: skip


# -- kickoffs that end without their end event ----------------------------------------------------


def test_a_cancelled_akickoff_is_exported_as_errors_and_frees_its_spans(instrumented, server, llm):
    server.set_responder(lambda request: Reply.text("3", delay_s=1.0))

    async def cancel_during_the_llm_call() -> None:
        kickoff = asyncio.create_task(calculator_crew(llm(), tools=[]).akickoff())
        await asyncio.get_running_loop().run_in_executor(None, server.wait_for_requests, 1)
        kickoff.cancel()
        with pytest.raises(asyncio.CancelledError):
            await kickoff

    asyncio.run(cancel_during_the_llm_call())
    sightline_crewai.flush()

    cancelled = ("error", "CancelledError")
    assert statuses(instrumented.events) == [
        ("agent", *cancelled), ("chain", *cancelled), ("llm_invoke", *cancelled),
        ("run", *cancelled),
    ]  # fmt: skip
    assert tree_of(instrumented) == [
        ("run", "crew", [("chain", "Add 1 and 2", [("agent", "Calculator", [
            ("llm_invoke", "gpt-4o-mini", []),
        ])])]),
    ]  # fmt: skip
    run = instrumented.one(type="run")
    assert run.error.kind == "orchestration"
    assert run.metadata["incomplete"] is True
    listener = active_listener()
    assert listener is not None
    assert listener.tree.open_spans() == 0


def test_a_base_exception_from_a_tool_ends_the_sync_kickoff_as_errors(instrumented, server, llm):
    server.add(Reply.tool_call("halt", {"a": 1}), Reply.text("never asked"))

    raised = in_a_thread(calculator_crew(llm(), tools=[halt]).kickoff)
    sightline_crewai.flush()

    assert isinstance(raised, Interrupt)

    interrupted = ("error", "Interrupt")
    assert statuses(instrumented.events) == [
        ("agent", *interrupted), ("chain", *interrupted), ("llm_invoke", "ok", None),
        ("run", *interrupted), ("tool_call", *interrupted),
    ]  # fmt: skip
    agent = instrumented.one(type="agent")
    check_event(
        instrumented.one(type="tool_call"), type="tool_call", name="halt",
        parent_span_id=agent.span_id, agent="Calculator", status="error", input={"a": 1},
        error=Subset(kind="orchestration", type="Interrupt", message="stopped by the user"),
        metadata={"incomplete": True, "agent_role": "Calculator", "run_attempts": 0},
    )  # fmt: skip
    listener = active_listener()
    assert listener is not None
    assert listener.tree.open_spans() == 0


def test_a_kickoff_after_an_interrupted_one_in_the_same_thread_is_a_new_root(
    instrumented, server, llm
):
    server.add(Reply.tool_call("halt", {"a": 1}), Reply.text("3"))

    def interrupted_then_again() -> None:
        with pytest.raises(Interrupt):
            calculator_crew(llm(), tools=[halt]).kickoff()
        sightline_crewai.flush()
        calculator_crew(llm(), tools=[]).kickoff()

    assert in_a_thread(interrupted_then_again) is None

    runs = instrumented.find(type="run")
    assert [(run.status.value, run.parent_span_id) for run in runs] == [
        ("error", None),
        ("ok", None),
    ]
    assert runs[0].trace_id != runs[1].trace_id


def test_spans_still_open_when_the_listener_closes_are_errors_of_type_incomplete(server, llm):
    server.set_responder(lambda request: Reply.text("3", delay_s=1.0))
    with capture() as captured:
        cap = DrainingCapture(captured)
        listener = SightlineEventListener(client=cap.client)
        kickoff = threading.Thread(target=calculator_crew(llm(), tools=[]).kickoff)
        kickoff.start()
        try:
            server.wait_for_requests(1)
            listener.close()
            incomplete = ("error", "Incomplete")
            assert statuses(cap.events) == [
                ("agent", *incomplete), ("chain", *incomplete), ("llm_invoke", *incomplete),
                ("run", *incomplete),
            ]  # fmt: skip
            assert cap.one(type="run").metadata == Subset(incomplete=True)
        finally:
            listener.close()
            kickoff.join(10)


def test_spans_forgotten_to_bound_memory_are_ended_and_exported(server):
    with capture() as cap:
        tree = SpanTree(max_nodes=8)
        for i in range(9):
            start = LLMCallStartedEvent(model="gpt-4o-mini", messages=[], call_id=f"call-{i}")
            tree.receive("LLMCallStartedEvent", RULES["LLMCallStartedEvent"], start)

        forgotten = cap.events
        assert len(forgotten) == 3  # 9 open, down to 3/4 of 8
        assert {(e.status.value, e.error.type) for e in forgotten} == {("error", "Incomplete")}
        assert sorted(e.metadata["call_id"] for e in forgotten) == ["call-0", "call-1", "call-2"]
        assert tree.open_spans() == 6


# -- several listeners ----------------------------------------------------------------------------

SIX_EVENTS = ["agent", "chain", "llm_invoke", "llm_invoke", "run", "tool_call"]


def test_global_then_explicit_listener_on_one_client_record_once(instrumented, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))
    explicit = SightlineEventListener(client=instrumented.client)
    try:
        calculator_crew(llm()).kickoff()
    finally:
        explicit.close()

    assert sorted(e.type.value for e in instrumented.events) == SIX_EVENTS


def test_explicit_then_global_listener_on_one_client_record_once(cap, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))
    explicit = SightlineEventListener(client=cap.client)
    sightline_crewai.instrument()
    try:
        calculator_crew(llm()).kickoff()
    finally:
        sightline_crewai.uninstrument()
        explicit.close()

    assert sorted(e.type.value for e in cap.events) == SIX_EVENTS


def test_listeners_on_two_clients_record_once_to_each(server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))
    with capture() as other, capture() as captured:
        cap = DrainingCapture(captured)
        listeners = [
            SightlineEventListener(client=cap.client),
            SightlineEventListener(client=cap.client),
            SightlineEventListener(client=other.client),
            SightlineEventListener(client=other.client),
        ]
        try:
            calculator_crew(llm()).kickoff()
        finally:
            for listener in listeners:
                listener.close()

        assert sorted(e.type.value for e in cap.events) == SIX_EVENTS
        assert sorted(e.type.value for e in other.events) == SIX_EVENTS
