"""Tool governance sees the arguments a LangChain tool will run with, its defaults included (from
the tool's ``tool_call_schema``), never the arguments LangChain injects: a limit on ``amount``
holds when the model leaves ``amount`` at its default, through instrumentation and through an
explicit handler alike. A policy that allows without replacing leaves the tool's input as it was;
one that replaces it runs the tool with what it returned."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.tools import BaseTool, InjectedToolArg, InjectedToolCallId, tool

from sightline import Decision, ToolDenied
from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_refunds import RAN, refund_limit
from tests.langchain.langchain_scripted import chat_model, reply
from tests.support.governance import Policy, policies


@tool
def refund(order_id: str, amount: float = 500) -> str:
    """Refund an order."""
    RAN.append(("refund", order_id, amount))
    return f"refunded {amount} on {order_id}"


@tool
def note(
    text: str,
    author: Annotated[str, InjectedToolArg] = "ops",
    call_id: Annotated[str, InjectedToolCallId] = "",
    urgent: bool = False,
) -> str:
    """Write a note."""
    RAN.append(("note", text, author, urgent))
    return "noted"


@tool
def lookup(order_id: str, limit: int = None) -> str:  # type: ignore[assignment]  # noqa: RUF013
    """Look an order up (a default its own type rejects, as tools in the wild have)."""
    RAN.append(("lookup", order_id, limit))
    return "found"


class ClassicRefund(BaseTool):
    """A tool class without ``args_schema``: its parameters are those of ``_run``."""

    name: str = "refund"
    description: str = "Refund an order."

    def _run(self, order_id: str, amount: float = 300) -> str:
        RAN.append(("classic", order_id, amount))
        return "refunded"


@pytest.fixture
def install(global_cap: Capture) -> Iterator[Any]:
    """Instrumented; ``install(answer)`` registers a recording policy for the test."""
    RAN.clear()
    with policies(global_cap.client) as install_policy:
        yield install_policy


def test_a_limit_on_a_defaulted_argument_denies_the_agents_call(
    global_cap: Capture, install: Any
) -> None:
    policy: Policy = install(refund_limit)
    agent = create_agent(
        chat_model(reply(tool_calls=[("refund", {"order_id": "A-1"}, "call-1")]), reply("done")),
        tools=[refund],
        name="support",
    )

    with pytest.raises(ToolDenied, match="over the refund limit"):
        agent.invoke({"messages": [("user", "refund A-1")]})

    assert RAN == []
    assert policy.asked == [("refund", {"order_id": "A-1", "amount": 500})]
    [decision] = global_cap.find(type="decision")
    assert decision.input == {"tool": "refund", "arguments": {"order_id": "A-1", "amount": 500}}
    [call] = global_cap.find(type="tool_call")
    assert call.input == {"order_id": "A-1"}  # the call is recorded as the model made it


async def test_async_runs_and_string_inputs_show_the_defaults_too(install: Any) -> None:
    policy: Policy = install(refund_limit)

    with pytest.raises(ToolDenied):
        await refund.ainvoke({"order_id": "A-2"})
    with pytest.raises(ToolDenied):
        refund.run("A-3")

    assert RAN == []
    assert policy.asked == [
        ("refund", {"order_id": "A-2", "amount": 500}),
        ("refund", {"input": "A-3", "amount": 500}),  # the string fills the first parameter
    ]


def test_a_policy_written_as_the_readme_once_was_is_not_disabled_by_a_defaulted_call(
    install: Any,
) -> None:
    # ``arguments["amount"]`` raised KeyError on a call leaving ``amount`` out, and a policy
    # that raises is disabled for the rest of the process: the next refunds went ungoverned.
    install(lambda name, arguments: False if arguments["amount"] > 100 else None)

    for arguments in ({"order_id": "A-4", "amount": 1000}, {"order_id": "A-5"}):
        with pytest.raises(ToolDenied):
            refund.invoke(arguments)
    with pytest.raises(ToolDenied):
        refund.invoke({"order_id": "A-6", "amount": 1000})

    assert RAN == []


def test_injected_arguments_stay_out_and_the_models_defaults_are_in(install: Any) -> None:
    policy: Policy = install(None)
    call = {"name": "note", "args": {"text": "hi"}, "id": "c-7", "type": "tool_call"}

    note.invoke(call)

    assert policy.asked == [("note", {"text": "hi", "urgent": False})]
    assert RAN == [("note", "hi", "ops", False)]


def test_an_allowed_call_reaches_the_tool_as_called(install: Any) -> None:
    # Passed explicitly, ``limit=None`` would fail the tool's validation: the tool must get
    # its input as the model gave it, and fill its defaults in itself.
    policy: Policy = install(None)

    assert lookup.invoke({"order_id": "A-8"}) == "found"

    assert policy.asked == [("lookup", {"order_id": "A-8", "limit": None})]
    assert RAN == [("lookup", "A-8", None)]


def test_a_policy_capping_a_defaulted_argument_runs_the_tool_with_the_cap(
    install: Any,
) -> None:
    install(lambda name, arguments: Decision(True, "capped", {**arguments, "amount": 100}))

    refund.invoke({"order_id": "A-9"})
    refund.run("A-10")

    assert RAN == [("refund", "A-9", 100.0), ("refund", "A-10", 100.0)]


def test_a_tool_class_without_args_schema_shows_the_defaults_of_its_run(install: Any) -> None:
    policy: Policy = install(refund_limit)

    with pytest.raises(ToolDenied):
        ClassicRefund().invoke({"order_id": "A-11"})

    assert RAN == []
    assert policy.asked == [("refund", {"order_id": "A-11", "amount": 300})]


async def test_an_explicit_handler_shows_the_defaults_too(cap: Capture) -> None:
    RAN.clear()
    with policies(cap.client) as install_policy:
        policy: Policy = install_policy(refund_limit)
        handler = SightlineCallbackHandler()
        with pytest.raises(ToolDenied):
            refund.invoke({"order_id": "A-12"}, config={"callbacks": [handler]})
        with pytest.raises(ToolDenied):
            await refund.ainvoke({"order_id": "A-13"}, config={"callbacks": [handler]})
        with pytest.raises(ToolDenied):
            refund.run("A-14", callbacks=[handler])

    assert RAN == []
    assert policy.asked == [
        ("refund", {"order_id": "A-12", "amount": 500}),
        ("refund", {"order_id": "A-13", "amount": 500}),
        ("refund", {"input": "A-14", "amount": 500}),
    ]
