"""Helpers to assert on recorded events: their wire form without ids, their exact tree."""

from __future__ import annotations

import gc
from typing import Any

from sightline.event import Event
from sightline_llamaindex.handlers import OPEN_SPANS

# Fields that differ on every run; everything else of an event is asserted exactly.
VOLATILE = ("id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
            "duration_ms", "schema_version")  # fmt: skip


def wire(event: Event) -> dict[str, Any]:
    """The event's wire form without ids and timestamps (and without the error's stack)."""
    data = event.to_dict()
    for key in VOLATILE:
        data.pop(key)
    if data["error"] is not None:
        assert data["error"].pop("stack")
    return data


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


def assert_no_open_spans() -> None:
    """The handlers' tables are empty: every span and stream they saw was finished."""
    gc.collect()  # streams dropped unconsumed are closed by their finalizer
    assert OPEN_SPANS.records == {}
    assert OPEN_SPANS.streams == {}
    assert OPEN_SPANS.streaming == {}
