"""What the AutoGen handoff tests share: the hang guard every run goes through, the agents they
hand off between, and how a refused handoff looks in the events.

A handoff refused the wrong way (an exception inside AutoGen's tool-call task) hangs the agent
(0.7.5): ``within`` turns that hang into a test failure instead of a blocked suite."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage

from sightline.event import Event
from sightline.testing import Capture
from sightline_autogen import instrument_model_client
from tests.autogen.conftest import replay, wire

HANG_GUARD_S = 10.0


async def within(work: Coroutine[Any, Any, Any]) -> Any:
    """``work``'s result, or a test failure when it does not finish in time (a hang).

    A hung team does not end when cancelled (its run waits for its hung runtime), so on a
    hang every task of the test's loop is cancelled, and the test fails without waiting for
    more than a moment."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=HANG_GUARD_S)
    if task in done:
        return task.result()
    hung = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for other in hung:
        other.cancel()
    await asyncio.wait(hung, timeout=1.0)
    # Their unretrieved exceptions are reported now, not from a finalizer amid pytest's report.
    gc.collect()
    pytest.fail(f"no answer within {HANG_GUARD_S} s: the agent or team hangs")


def assistant(name: str, model: Any, **kwargs: Any) -> AssistantAgent:
    """An ``AssistantAgent`` ``name`` answering with ``model`` (a scripted model, wrapped)."""
    return AssistantAgent(name, model_client=instrument_model_client(model), **kwargs)


def alice(*responses: Any, **kwargs: Any) -> AssistantAgent:
    """``alice``, who may hand off to ``bob`` (or to ``handoffs=``), answering ``responses``
    (wrapped model)."""
    kwargs.setdefault("handoffs", ["bob"])
    return assistant("alice", replay(*responses), **kwargs)


def transferred(target: str) -> str:
    """The message of AutoGen's own handoff tool to ``target``."""
    return f"Transferred to {target}, adopting the role of {target} immediately."


def shape(cap: Capture) -> list[Any]:
    """The captured trees as nested ``(type, name, [children])``, children by start."""

    def nodes(level: list[dict[str, Any]]) -> list[Any]:
        return [(n["type"], n["name"], nodes(n["children"])) for n in level]

    return nodes(cap.tree())


def chat(result: TaskResult) -> list[tuple[str, str]]:
    """``(source, type)`` of the chat messages of a run (the inner events left out)."""
    return [(m.source, type(m).__name__) for m in result.messages if isinstance(m, BaseChatMessage)]


def assert_handoff_denied(
    call: Event,
    decision: Event,
    *,
    target: str,
    reason: str,
    agent: str,
    call_id: str,
    arguments: dict[str, Any],
) -> None:
    """``call`` is the failed ``tool_call`` (kind guardrail) of ``agent``'s handoff to
    ``target`` asked as ``call_id`` with ``arguments``, and ``decision`` the deny for ``reason``
    under it, as for any tool."""
    tool = f"transfer_to_{target}"
    message = f"tool '{tool}' denied: {reason}"
    assert decision.parent_span_id == call.span_id
    call_wire = wire(call)
    call_error = call_wire.pop("error")
    assert call_error.pop("stack").endswith(f"sightline.errors.ToolDenied: {message}\n")
    assert call_error == {"type": "ToolDenied", "message": message, "kind": "guardrail"}
    assert call_wire == {
        "type": "tool_call", "name": tool, "status": "error", "agent": agent,
        "session_id": None, "framework": "autogen", "input": arguments,
        "output": f"handoff to {target} denied: {reason}", "model": None, "usage": None,
        "cost_usd": None, "metadata": {"call_id": call_id}, "tags": [],
    }  # fmt: skip
    decision_wire = wire(decision)
    assert decision_wire.pop("error") == {
        "type": "Error", "message": message, "stack": None, "kind": "guardrail",
    }  # fmt: skip
    assert decision_wire == {
        "type": "decision", "name": f"authorize:{tool}", "status": "error", "agent": agent,
        "session_id": None, "framework": "autogen",
        "input": {"tool": tool, "arguments": arguments},
        "output": {"decision": "deny", "reason": reason},
        "model": None, "usage": None, "cost_usd": None, "metadata": {"governance": True},
        "tags": [],
    }  # fmt: skip
