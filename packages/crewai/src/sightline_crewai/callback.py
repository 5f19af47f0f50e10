"""The per-constructor integration: ``step_callback`` and ``task_callback`` for a crew.

CrewAI calls ``step_callback`` on the agent's worker thread and ``task_callback`` on the task's
thread, with no ids. Both run inside CrewAI's event scopes, so the enclosing ``task_started``
event id tells which task a step belongs to; the task's event gets a span id derived from that
id, and the steps name it as their parent before it ends (CrewAI reports the task last).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from sightline import EventType
from sightline.logs import log_safely
from sightline.span import Span, current_span
from sightline_crewai.mapping import (
    FRAMEWORK,
    TOOL_RESULT,
    CrewEventRule,
    event_time_ns,
    fill_task_output,
    step_rule,
    task_output_name,
)

__all__ = ["SightlineCrewCallback"]


_MAX_TRACKED_TASKS = 1024


class _Step:
    """A step seen as a CrewAI event: its own fields plus a parent id and a time."""

    __slots__ = (
        "emission_sequence",
        "event_id",
        "parent_event_id",
        "started_event_id",
        "step",
        "timestamp",
    )

    def __init__(self, step: Any, parent_event_id: str | None, timestamp: int) -> None:
        self.step = step
        self.parent_event_id = parent_event_id
        self.event_id = None
        self.started_event_id = None
        self.emission_sequence = _emission_sequence()
        self.timestamp = timestamp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)


class SightlineCrewCallback:
    """Records a crew's task outputs and agent steps, per constructor::

        sightline_cb = SightlineCrewCallback(agent="research-crew")
        crew = Crew(agents=[...], tasks=[...],
                    step_callback=sightline_cb.step_callback,
                    task_callback=sightline_cb.task_callback)

    Each task output becomes a ``chain`` event; ``AgentAction`` and ``AgentFinish`` steps become
    ``decision`` events and a ``ToolResult`` a ``tool_call`` event, under their task. With the
    global integration active as well (``sightline.init()``), tasks and tool calls are left to
    it and the decisions nest under its agent events: nothing is recorded twice.

    ``client`` defaults to the global client at the time of each call; ``agent`` and
    ``session_id`` are set on every event recorded here.
    """

    def __init__(
        self, client: Any = None, *, agent: str | None = None, session_id: str | None = None
    ) -> None:
        self.client = client
        self.agent = agent
        self.session_id = session_id
        self._lock = threading.Lock()
        # task key -> (ToolResult, time): a ToolResult waits for the AgentAction naming its tool
        self._tool_results: OrderedDict[str | None, tuple[Any, int]] = OrderedDict()
        self._first_step_ns: OrderedDict[str, int] = OrderedDict()
        self._warned = False

    # -- callbacks ------------------------------------------------------------------------------

    def step_callback(self, step: Any) -> None:
        """Pass as ``step_callback=`` to ``Crew(...)`` or ``Agent(...)``. Never raises."""
        try:
            self._step(step)
        except Exception:
            self._report("step not recorded")

    def task_callback(self, output: Any) -> None:
        """Pass as ``task_callback=`` to ``Crew(...)`` (or ``callback=`` to a ``Task``).
        Never raises."""
        try:
            self._task(output)
        except Exception:
            self._report("task output not recorded")

    def _report(self, what: str) -> None:
        """Log a failure of Sightline's own: the first as a warning, the others quietly."""
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log_safely(level, "sightline: crewai: %s", what, exc_info=True)

    # -- steps ----------------------------------------------------------------------------------

    def _step(self, step: Any) -> None:
        rule = step_rule(step)
        if rule is None:
            return
        client = self._client()
        if not client.enabled:
            return
        kind = type(step).__name__
        scopes = _scopes()
        now = time.time_ns()
        ambient = current_span()
        listener = _listener_for(client)
        if listener is not None:
            # The listener records the tool call itself; only the agent's decisions are new.
            if kind != "ToolResult":
                parent_id = scopes[-1][0] if scopes else None
                listener.tree.receive(
                    kind, rule, _Step(step, parent_id, now), None, ambient,
                    agent=self.agent, session_id=self.session_id,
                )  # fmt: skip
            return

        task_id = _innermost(scopes, "task_started")
        with self._lock:
            if task_id is not None and task_id not in self._first_step_ns:
                self._first_step_ns[task_id] = now
                _trim(self._first_step_ns)
            if kind == "ToolResult":
                self._tool_results[task_id] = (step, now)
                _trim(self._tool_results)
                return
            waiting = self._tool_results.pop(task_id, None)
        place = _Placement(client, scopes, task_id, ambient)
        if waiting is not None:
            tool_result, at = waiting
            action = step if kind == "AgentAction" else None
            self._record(place, TOOL_RESULT, tool_result, action, at)
        elif kind == "AgentAction" and getattr(step, "result", None) is not None:
            # A ToolResult CrewAI did not report (or that went to another callback).
            self._record(place, TOOL_RESULT, step, step, now)
        self._record(place, rule, step, None, now)

    def _record(
        self, place: _Placement, rule: CrewEventRule | None, step: Any, source: Any, at: int
    ) -> None:
        if rule is None:
            return
        try:
            name = rule.name(step, source) if rule.name else type(step).__name__
        except Exception:
            name = type(step).__name__
        span = place.start(name, rule.event_type or EventType.CUSTOM, self, at)
        if rule.fill is not None:
            rule.fill(span, step, source)
        span.end(at)

    # -- tasks ----------------------------------------------------------------------------------

    def _task(self, output: Any) -> None:
        client = self._client()
        if not client.enabled:
            return
        if _listener_for(client) is not None:
            return  # the listener records the task, from its start to its end
        scopes = _scopes()
        task_id = _innermost(scopes, "task_started")
        now = time.time_ns()
        with self._lock:
            waiting = self._tool_results.pop(task_id, None)
            first_step = self._first_step_ns.pop(task_id, None) if task_id else None
        place = _Placement(client, scopes, task_id, current_span())
        if waiting is not None:
            self._record(place, TOOL_RESULT, waiting[0], None, waiting[1])
        start_ns = _task_started_ns(task_id) or first_step or now
        name = task_output_name(output, capture_content=_captures_content(client))
        span = place.start_task(name, self, start_ns)
        fill_task_output(span, output, None)
        span.end(now)

    def _client(self) -> Any:
        if self.client is not None:
            return self.client
        import sightline

        return sightline.get_client()


class _Placement:
    """Where the events of one callback call go: under the task's span id when the call runs
    inside a CrewAI task, else under the ambient span."""

    __slots__ = ("ambient", "client", "task_span_id", "trace_id")

    def __init__(
        self,
        client: Any,
        scopes: tuple[tuple[str, str], ...],
        task_id: str | None,
        ambient: Span | None,
    ) -> None:
        self.client = client
        self.ambient = ambient if ambient is not None and ambient.is_recording else None
        self.task_span_id = _span_id_of(task_id) if task_id else None
        if self.ambient is not None:
            self.trace_id: str | None = self.ambient.trace_id
        else:
            # Steps and task callbacks of one kickoff share the kickoff's event id: one trace.
            self.trace_id = _trace_id_of(scopes[0][0]) if scopes else None

    def start(self, name: str, type: EventType, owner: SightlineCrewCallback, at: int) -> Span:
        if self.task_span_id is None:
            return self._span(name, type, owner, at, parent_span_id=None)
        return self.client.start_span(
            name, type, parent=None, trace_id=self.trace_id, parent_span_id=self.task_span_id,
            framework=FRAMEWORK, agent=owner.agent, session_id=owner.session_id, start_ns=at,
        )  # fmt: skip

    def start_task(self, name: str, owner: SightlineCrewCallback, at: int) -> Span:
        return self._span(name, EventType.CHAIN, owner, at, span_id=self.task_span_id)

    def _span(
        self,
        name: str,
        type: EventType,
        owner: SightlineCrewCallback,
        at: int,
        *,
        parent_span_id: str | None = None,
        span_id: str | None = None,
    ) -> Span:
        return self.client.start_span(
            name, type, parent=self.ambient, trace_id=self.trace_id, parent_span_id=parent_span_id,
            span_id=span_id, framework=FRAMEWORK, agent=owner.agent,
            session_id=owner.session_id, start_ns=at,
        )  # fmt: skip


# -- reading CrewAI's context (guarded: private details that may move) ---------------------------


def _scopes() -> tuple[tuple[str, str], ...]:
    """CrewAI's stack of open event scopes in this context: ``((event_id, type), ...)``."""
    try:
        from crewai.events.event_context import _event_id_stack

        return tuple(_event_id_stack.get())
    except Exception:
        return ()


def _innermost(scopes: tuple[tuple[str, str], ...], event_type: str) -> str | None:
    for event_id, kind in reversed(scopes):
        if kind == event_type:
            return event_id
    return None


def _emission_sequence() -> int:
    try:
        from crewai.events.base_events import get_emission_sequence

        return int(get_emission_sequence())
    except Exception:
        return 0


def _task_started_ns(task_id: str | None) -> int | None:
    """When CrewAI started the task, from the bus's record of this run's events."""
    if task_id is None:
        return None
    try:
        from crewai.events.event_bus import crewai_event_bus

        state = crewai_event_bus.runtime_state
        node = state.event_record.nodes.get(task_id) if state is not None else None
        return event_time_ns(node.event) if node is not None else None
    except Exception:
        return None


def _captures_content(client: Any) -> bool:
    try:
        return bool(client.config.capture_content)
    except Exception:
        return False


def _listener_for(client: Any) -> Any:
    """The active global listener recording to ``client``, if any."""
    module = sys.modules.get("sightline_crewai.listener")
    if module is None:  # never imported: no listener can exist
        return None
    for listener in module.live_listeners():
        if not listener.active:
            continue
        target = listener.client
        if target is None:
            import sightline

            target = sightline.get_client()
        if target is client:
            return listener
    return None


def _hex_of(event_id: str) -> str:
    return "".join(ch for ch in event_id.lower() if ch in "0123456789abcdef")


def _span_id_of(event_id: str) -> str | None:
    digits = _hex_of(event_id)
    return digits[-16:] if len(digits) >= 16 else None


def _trace_id_of(event_id: str) -> str | None:
    digits = _hex_of(event_id)
    return digits[:32] if len(digits) >= 32 else None


def _trim(mapping: OrderedDict[Any, Any]) -> None:
    while len(mapping) > _MAX_TRACKED_TASKS:
        mapping.popitem(last=False)
