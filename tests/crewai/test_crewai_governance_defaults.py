"""Tool governance sees the arguments a CrewAI tool will run with, the defaults of its
``args_schema`` included: a limit on ``amount`` holds when the model leaves ``amount`` at its
default, with native function calling and in the ReAct text loop. A policy that allows without
replacing leaves the call as it was; one that replaces the arguments runs the tool with what it
returned."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crewai.tools import tool

from sightline import Decision
from tests.crewai.crewai_support import CREWAI_WARNINGS, DrainingCapture, calculator_crew
from tests.support.governance import Policy, policies, refund_limit
from tests.support.openai_server import ScriptedOpenAIServer, tool_then_answer

pytestmark = CREWAI_WARNINGS

refunded: list[tuple[str, int]] = []


@tool("refund")
def refund(order: str, amount: int = 500) -> str:
    """Refund an order."""
    refunded.append((order, amount))
    return f"refunded {amount} on {order}"


@pytest.fixture
def policy(instrumented: DrainingCapture) -> Iterator[Callable[[Any], Policy]]:
    refunded.clear()
    with policies(instrumented.client) as install:
        yield install


def test_a_limit_on_a_defaulted_argument_denies_the_call(
    instrumented: DrainingCapture, server: ScriptedOpenAIServer, llm: Any, policy: Any
) -> None:
    plugin = policy(refund_limit)
    server.set_responder(tool_then_answer("refund", {"order": "A1"}, "I may not refund"))

    calculator_crew(llm(), tools=[refund]).kickoff()

    assert refunded == []
    assert plugin.asked == [("refund", {"order": "A1", "amount": 500})]
    [tool_message] = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_message["content"] == (
        "Error executing tool: tool 'refund' denied: over the refund limit"
    )
    decision = instrumented.one(type="decision")
    assert decision.input == {"tool": "refund", "arguments": {"order": "A1", "amount": 500}}


def test_in_the_react_loop_the_defaults_are_seen_too(
    instrumented: DrainingCapture, server: ScriptedOpenAIServer, llm: Any, policy: Any
) -> None:
    plugin = policy(refund_limit)
    server.set_responder(tool_then_answer("refund", {"order": "A2"}, "I may not refund"))

    calculator_crew(llm("o1-mini"), tools=[refund]).kickoff()

    assert refunded == []
    # three attempts (CrewAI retries a failing tool), each asked once, each with the default
    assert plugin.asked == [("refund", {"order": "A2", "amount": 500})] * 3


def test_an_allowed_call_runs_as_called(
    instrumented: DrainingCapture, server: ScriptedOpenAIServer, llm: Any, policy: Any
) -> None:
    plugin = policy(None)
    server.set_responder(tool_then_answer("refund", {"order": "A3"}, "done"))

    calculator_crew(llm(), tools=[refund]).kickoff()

    assert refunded == [("A3", 500)]
    assert plugin.asked == [("refund", {"order": "A3", "amount": 500})]
    assert instrumented.find(type="decision") == []
    assert instrumented.one(type="tool_call").input == {"order": "A3"}  # as the model asked


def test_a_policy_capping_a_defaulted_argument_runs_the_tool_with_the_cap(
    instrumented: DrainingCapture, server: ScriptedOpenAIServer, llm: Any, policy: Any
) -> None:
    policy(lambda _tool, arguments: Decision(True, "capped", {**arguments, "amount": 100}))
    server.set_responder(tool_then_answer("refund", {"order": "A4"}, "done"))

    calculator_crew(llm(), tools=[refund]).kickoff()

    assert refunded == [("A4", 100)]
    assert instrumented.one(type="tool_call").input == {"order": "A4", "amount": 100}


def test_a_tool_run_directly_shows_the_defaults(instrumented: DrainingCapture, policy: Any) -> None:
    plugin = policy(None)

    assert refund.run(order="A5") == "refunded 500 on A5"

    assert refunded == [("A5", 500)]
    assert plugin.asked == [("refund", {"order": "A5", "amount": 500})]
