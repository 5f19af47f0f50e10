"""Helpers for the CrewAI adapter tests: real CrewAI against the scripted OpenAI server.

(``conftest.py`` sets CrewAI's environment before anything imports CrewAI.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.events import crewai_event_bus
from crewai.flow.async_feedback.types import HumanFeedbackPending
from crewai.tools import tool

from sightline.testing import Capture

__all__ = [
    "CREWAI_WARNINGS",
    "DrainingCapture",
    "LaterReviewer",
    "Subset",
    "add",
    "calculator_crew",
    "check_event",
    "divide",
    "open_spans",
    "tree_of",
]


CREWAI_WARNINGS = [
    # CrewAI's own deprecations, and its warning that bound-method callbacks cannot be
    # checkpointed: not ours to fix, noise in every test.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*callbacks cannot be serialized"),
    pytest.mark.filterwarnings("ignore:create_scalar_index is deprecated"),
]


@tool("add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool("divide")
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b


def calculator_crew(llm: Any, *, tools: list[Any] | None = None, **crew_options: Any) -> Crew:
    """One agent (``Calculator``) with the ``add`` tool (or ``tools``) and one task."""
    agent = Agent(
        role="Calculator",
        goal="Add numbers",
        backstory="You are good at math.",
        llm=llm,
        tools=[add] if tools is None else tools,
        max_retry_limit=0,
    )
    task = Task(description="Add 1 and 2", expected_output="The sum", agent=agent)
    return Crew(agents=[agent], tasks=[task], **crew_options)


class DrainingCapture(Capture):
    """A capture that first waits for CrewAI's handler pool, then reads."""

    def __init__(self, inner: Capture) -> None:
        super().__init__(inner.client, inner.exporter)

    @property
    def events(self) -> list[Any]:
        crewai_event_bus.flush(10.0)
        return super().events

    def find(self, *args: Any, **kwargs: Any) -> list[Any]:
        crewai_event_bus.flush(10.0)
        return super().find(*args, **kwargs)

    def one(self, *args: Any, **kwargs: Any) -> Any:
        crewai_event_bus.flush(10.0)
        return super().one(*args, **kwargs)

    def children(self, parent: Any) -> list[Any]:
        crewai_event_bus.flush(10.0)
        return super().children(parent)

    def tree(self, trace_id: str | None = None) -> list[dict[str, Any]]:
        crewai_event_bus.flush(10.0)
        return super().tree(trace_id)


class LaterReviewer:
    """A human feedback provider that answers later: the flow pauses."""

    def request_feedback(self, context: Any, flow: Any) -> str:
        raise HumanFeedbackPending(context=context)


def open_spans() -> int:
    """How many spans the active listener's tree holds open (0 once every run has ended)."""
    from sightline_crewai.instrumentation import active_listener

    listener = active_listener()
    assert listener is not None
    return listener.tree.open_spans()


def tree_of(capture: Capture) -> list[Any]:
    """The captured trees as nested ``(type, name, [children])`` tuples, children by start."""

    def shape(nodes: list[dict[str, Any]]) -> list[Any]:
        return [(n["type"], n["name"], shape(n["children"])) for n in nodes]

    return shape(capture.tree())


_IDENTITY = ("schema_version", "id", "trace_id", "span_id", "start_time", "end_time", "duration_ms")
_DEFAULTS: dict[str, Any] = {
    "parent_span_id": None,
    "status": "ok",
    "agent": None,
    "session_id": None,
    "framework": "crewai",
    "input": None,
    "output": None,
    "model": None,
    "usage": None,
    "cost_usd": None,
    "error": None,
    "metadata": {},
    "tags": [],
}


class Subset(dict):  # type: ignore[type-arg]
    """Matches a mapping holding at least these items (``Subset(kind="tool") == error``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and all(
            key in other and other[key] == value for key, value in self.items()
        )

    __hash__ = None  # type: ignore[assignment]


def check_event(event: Any, **expected: Any) -> None:
    """Assert the wire form of ``event``: the fields given equal ``expected``, every other field
    has its default (``framework="crewai"``, no input, no output, empty metadata...)."""
    data = event.to_dict()
    for key in _IDENTITY:
        data.pop(key)
    for key, value in expected.items():
        actual = data.pop(key)
        assert actual == value, (
            f"{event.type.value} {event.name!r}: {key} = {actual!r}, expected {value!r}"
        )
    unexpected = {key: value for key, value in data.items() if _DEFAULTS.get(key) != value}
    assert unexpected == {}, f"{event.type.value} {event.name!r}: unexpected fields {unexpected}"


Recorded = tuple[str, Any, Any]  # (event class name, source, event)


def record_events(kickoff: Any) -> list[Recorded]:
    """Run ``kickoff()`` with only a recorder on CrewAI's bus; the real events it emitted, in
    emission order (to be replayed into a ``SpanTree`` in any order)."""
    from sightline_crewai.listener import event_classes

    recorded: list[Recorded] = []
    lock = threading.Lock()

    def recorder(name: str) -> Any:
        def on_event(source: Any, event: Any) -> None:
            with lock:
                recorded.append((name, source, event))

        return on_event

    with crewai_event_bus.scoped_handlers():
        for cls, name, _rule in event_classes():
            crewai_event_bus.on(cls)(recorder(name))
        kickoff()
        crewai_event_bus.flush(10.0)
    return sorted(recorded, key=lambda item: item[2].emission_sequence)


def replay(events: list[Recorded], tree: Any) -> None:
    """Hand recorded events to ``tree`` (a ``SpanTree``) as the listener would."""
    from sightline_crewai.mapping import RULES, SCOPE

    for name, source, event in events:
        tree.receive(name, RULES.get(name, SCOPE), event, source, None)
