"""An exporter that keeps events in memory, for tests and notebooks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sightline.event import Event, EventType, coerce_type
from sightline.pipeline import ExportResult

__all__ = ["InMemoryExporter"]


class InMemoryExporter:
    """Keeps every exported event in ``.events`` (in export order); ``.clear()`` empties it.

    Helpers make assertions read well::

        exporter.find(type="tool_call", name="search")   # events matching every field given
        exporter.children(run_event)                     # direct children of an event
        exporter.tree(trace_id)                          # nested dicts of one trace
    """

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self.agents: list[dict[str, Any]] = []
        self.shut_down = False

    def export(self, events: Sequence[Event]) -> ExportResult:
        with self._lock:
            self._events.extend(events)
        return ExportResult.SUCCESS

    def register_agent(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.agents.append(record)

    def shutdown(self) -> None:
        self.shut_down = True

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def find(
        self, type: EventType | str | None = None, name: str | None = None, **fields: Any
    ) -> list[Event]:
        """Events whose type, name and other attributes equal the values given."""
        wanted_type = coerce_type(type) if type is not None else None  # aliases too: "tool"
        found = []
        for event in self.events:
            if wanted_type is not None and event.type is not wanted_type:
                continue
            if name is not None and event.name != name:
                continue
            if all(getattr(event, key, None) == value for key, value in fields.items()):
                found.append(event)
        return found

    def one(
        self, type: EventType | str | None = None, name: str | None = None, **fields: Any
    ) -> Event:
        """The single event matching; AssertionError when there are none or several."""
        found = self.find(type, name, **fields)
        if len(found) != 1:
            raise AssertionError(
                f"expected one event type={type} name={name} {fields}, found {len(found)}: {found}"
            )
        return found[0]

    def children(self, parent: Event) -> list[Event]:
        return sorted(
            (
                e
                for e in self.events
                if e.parent_span_id == parent.span_id and e.trace_id == parent.trace_id
            ),
            key=lambda e: e.start_ns,
        )

    def roots(self) -> list[Event]:
        return sorted(
            (e for e in self.events if e.parent_span_id is None), key=lambda e: e.start_ns
        )

    def tree(self, trace_id: str | None = None) -> list[dict[str, Any]]:
        """Nested ``{"type", "name", "status", "children"}`` dicts, children by start time."""
        events = [e for e in self.events if trace_id is None or e.trace_id == trace_id]
        by_parent: dict[str | None, list[Event]] = {}
        ids = {e.span_id for e in events}
        for event in events:
            parent = event.parent_span_id if event.parent_span_id in ids else None
            by_parent.setdefault(parent, []).append(event)

        def build(parent: str | None) -> list[dict[str, Any]]:
            return [
                {
                    "type": e.type.value,
                    "name": e.name,
                    "status": e.status.value,
                    "children": build(e.span_id),
                }
                for e in sorted(by_parent.get(parent, []), key=lambda e: e.start_ns)
            ]

        return build(None)
