"""Tool governance (ARCHITECTURE.md §6) for LangChain: with instrumentation on, every tool asks
the ``sightline_authorize_tool`` policies before it runs; a deny raises ToolDenied in the agent
and records a ``decision`` event, a replacement of the arguments reaches the tool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from langchain_core.tools import InjectedToolArg, tool

import sightline
import sightline_langchain
from sightline import Decision, ToolDenied
from sightline.testing import Capture
from sightline_langchain import governance
from tests.langchain.langchain_refunds import (
    RAN,
    assert_refund_agent_refused,
    refund,
    refund_agent,
    refund_limit,
)


@tool
def note(text: str, author: Annotated[str, InjectedToolArg]) -> str:
    """Write a note."""
    RAN.append(("note", text, author))
    return "noted"


class Policy:
    """Denies refunds over 100, caps notes at 5 characters, allows the rest."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    @sightline.hookimpl
    def sightline_authorize_tool(self, tool_name, arguments, context):
        self.calls.append((tool_name, dict(arguments), dict(context)))
        if tool_name == "note":
            return Decision(True, "shortened", {"text": arguments["text"][:5]})
        return refund_limit(tool_name, arguments)


@pytest.fixture
def governed(global_cap: Capture) -> Iterator[tuple[Capture, Policy]]:
    RAN.clear()
    policy = Policy()
    global_cap.client.plugins.register(policy, "refund-policy")
    try:
        yield global_cap, policy
    finally:
        global_cap.client.plugins.unregister("refund-policy")


def test_a_denied_tool_does_not_run_and_raises_tool_denied_in_the_agent(governed) -> None:
    cap, policy = governed
    with pytest.raises(ToolDenied, match="over the refund limit"):
        refund_agent().invoke({"messages": [("user", "refund A-1")]})
    assert RAN == []
    [(name, arguments, context)] = policy.calls
    assert (name, arguments) == ("refund", {"order_id": "A-1", "amount": 500})
    # under the refused tool call (recorded failed, although LangChain never started it),
    # itself under the agent's tools node; both fail with kind guardrail
    call = assert_refund_agent_refused(cap, context)
    assert call.agent == "support"


def test_an_allowed_tool_runs_unchanged(governed) -> None:
    cap, policy = governed
    assert refund.invoke({"order_id": "A-2", "amount": 20}) == "refunded 20.0 on A-2"
    assert RAN == [("refund", "A-2", 20.0)]
    assert [c[0] for c in policy.calls] == ["refund"]
    assert cap.find(type="decision") == []
    [call] = cap.find(type="tool_call")
    assert (call.name, call.status) == ("refund", "ok")


async def test_async_tools_are_governed_too(governed) -> None:
    cap, _ = governed
    with pytest.raises(ToolDenied):
        await refund.ainvoke({"order_id": "A-3", "amount": 101})
    assert RAN == []
    assert [d.name for d in cap.find(type="decision")] == ["authorize:refund"]


def test_replaced_arguments_reach_the_tool_and_injected_ones_are_kept(governed) -> None:
    cap, policy = governed
    assert note.invoke({"text": "a long note", "author": "ops"}) == "noted"
    assert RAN == [("note", "a lon", "ops")]
    # the policy saw the model's arguments, not the injected one
    assert policy.calls[0][:2] == ("note", {"text": "a long note"})
    [decision] = cap.find(type="decision")
    assert decision.output == {"decision": "allow_redacted", "reason": "shortened"}
    assert decision.input == {"tool": "note", "arguments": {"text": "a lon"}}
    [call] = cap.find(type="tool_call")  # the decision is under the call it let run
    assert (call.name, call.status, decision.parent_span_id) == ("note", "ok", call.span_id)
    assert policy.calls[0][2]["span_id"] == call.span_id


def test_without_a_policy_or_after_uninstrument_tools_run_as_before(global_cap: Capture) -> None:
    RAN.clear()
    assert refund.invoke({"order_id": "A-4", "amount": 500}) == "refunded 500.0 on A-4"
    assert governance.is_installed()
    sightline_langchain.uninstrument()
    assert not governance.is_installed()
    from langchain_core.tools import BaseTool

    assert not getattr(BaseTool.run, "__sightline_governed__", False)
    assert not getattr(BaseTool.arun, "__sightline_governed__", False)
    assert global_cap.find(type="decision") == []


def test_the_governance_example_allows_caps_and_denies(tmp_path) -> None:
    import os
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    database = tmp_path / "example.db"
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "governance_example.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SIGHTLINE_DB": str(database), "SIGHTLINE_HANDLE_SIGNALS": "false"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "     42.50 EUR → refund of 42.50 EUR for A-1001 issued",
        "    250.00 EUR → refund of 100.00 EUR for A-1001 issued",
        "    900.00 EUR → denied, escalated to a supervisor (refunds above 500 EUR need a "
        "supervisor (900.00))",
    ]
    with sqlite3.connect(database) as store:
        decisions = store.execute(
            "SELECT name, status FROM events WHERE type = 'decision' ORDER BY id"
        ).fetchall()
    assert decisions == [("authorize:issue_refund", "ok"), ("authorize:issue_refund", "error")]
