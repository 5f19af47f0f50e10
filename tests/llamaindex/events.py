"""Helpers to assert on recorded events: their wire form without ids, their exact tree, the
events of a tool a policy denied."""

from __future__ import annotations

import gc
from typing import Any

from sightline.event import Event
from sightline.testing import Capture
from sightline_llamaindex.handlers import OPEN_SPANS

# Fields that differ on every run; everything else of an event is asserted exactly.
VOLATILE = ("id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
            "duration_ms", "schema_version")  # fmt: skip


def fields(event: Event) -> dict[str, Any]:
    """The event's wire form without ids, timestamps and the error's stack, if it has one (the
    error of a ``decision`` has none)."""
    data = event.to_dict()
    for key in VOLATILE:
        data.pop(key)
    if data["error"] is not None:
        data["error"].pop("stack")
    return data


def wire(event: Event) -> dict[str, Any]:
    """The event's :func:`fields`, of an event whose error, if any, has its stack."""
    error = event.to_dict()["error"]
    assert error is None or error["stack"]
    return fields(event)


def outline(events: list[Event], parent: Event | None = None) -> list[Any]:
    """``[(type, name, status, [children...])]`` under ``parent`` (the roots when None),
    children in start order; asserting on it asserts the exact tree."""
    if parent is None:
        ids = {e.span_id for e in events}
        level = [e for e in events if e.parent_span_id not in ids]
    else:
        level = [
            e
            for e in events
            if e.parent_span_id == parent.span_id and e.trace_id == parent.trace_id
        ]
    return [
        (e.type.value, e.name, e.status.value, outline(events, e))
        for e in sorted(level, key=lambda e: e.start_ns)
    ]


def denied_tool_call(
    name: str, arguments: Any, reason: str, agent: str | None = None
) -> dict[str, Any]:
    """The :func:`fields` of a ``tool_call`` a policy denied for ``reason`` (called directly:
    no output)."""
    return {
        "type": "tool_call", "name": name, "status": "error", "agent": agent,
        "session_id": None, "framework": "llamaindex", "input": arguments, "output": None,
        "model": None, "usage": None, "cost_usd": None,
        "error": {"type": "ToolDenied", "message": f"tool {name!r} denied: {reason}",
                  "kind": "guardrail"},
        "metadata": {}, "tags": [],
    }  # fmt: skip


def deny_decision(
    name: str, arguments: dict[str, Any], reason: str, agent: str | None = None
) -> dict[str, Any]:
    """The :func:`fields` of the ``decision`` event of that deny."""
    return {
        "type": "decision", "name": f"authorize:{name}", "status": "error", "agent": agent,
        "session_id": None, "framework": "llamaindex",
        "input": {"tool": name, "arguments": arguments},
        "output": {"decision": "deny", "reason": reason},
        "model": None, "usage": None, "cost_usd": None,
        "error": {"type": "Error", "message": f"tool {name!r} denied: {reason}",
                  "kind": "guardrail"},
        "metadata": {"governance": True}, "tags": [],
    }  # fmt: skip


def decision_under_call(cap: Capture) -> tuple[Event, Event]:
    """The one ``tool_call`` and the one ``decision`` recorded, the decision under the call."""
    call, decision = cap.one(type="tool_call"), cap.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    return call, decision


def last_message_to_model(cap: Capture) -> Any:
    """The last message of the last model call recorded (a tool's result the model read)."""
    last_turn = max(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    return last_turn.input["messages"][-1]


def assert_no_open_spans() -> None:
    """The handlers' tables are empty: every span and stream they saw was finished."""
    gc.collect()  # streams dropped unconsumed are closed by their finalizer
    assert OPEN_SPANS.records == {}
    assert OPEN_SPANS.streams == {}
    assert OPEN_SPANS.streaming == {}
