"""Helpers to assert the events a test produced."""

from __future__ import annotations

from typing import Any

from sightline.event import Event
from sightline.testing import Capture

# Fields that differ on every run; everything else of an event is asserted exactly.
VOLATILE = ("id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
            "duration_ms", "schema_version")  # fmt: skip


def wire(event: Event, *drop: str) -> dict[str, Any]:
    """The event's wire form without the volatile fields (and ``drop``)."""
    data = event.to_dict()
    for key in (*VOLATILE, *drop):
        data.pop(key, None)
    return data


def only(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


def tree(cap: Capture, trace_id: str | None = None) -> list[tuple[int, str, str, str]]:
    """``(depth, type, name, status)`` of every event of a trace (of all, by default), in order."""
    rows: list[tuple[int, str, str, str]] = []

    def walk(nodes: list[dict[str, Any]], depth: int) -> None:
        for node in nodes:
            rows.append((depth, node["type"], node["name"], node["status"]))
            walk(node["children"], depth + 1)

    walk(cap.tree(trace_id), 0)
    return rows
