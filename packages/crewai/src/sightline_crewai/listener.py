"""The global integration: a ``BaseEventListener`` on ``crewai_event_bus``.

This module imports CrewAI; :mod:`sightline_crewai.instrumentation` imports it only once CrewAI
itself is imported, so that ``sightline.init()`` never pays for loading CrewAI.

Several listeners may be registered (the global one, explicit ones): for each event, only the
first registered listener that records to the event's client records it, so that the same work
is never recorded twice; listeners recording to different clients each record.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from crewai.events import BaseEventListener, crewai_event_bus
from crewai.events.event_bus import CrewAIEventsBus

from sightline.client import get_client
from sightline.logs import log_safely
from sightline.span import add_parent_source, current_span, remove_parent_source
from sightline.threads import start_background_thread
from sightline_crewai import kickoff
from sightline_crewai.mapping import RULES, SCOPE, START, UNEXPORTED_RULES, CrewEventRule
from sightline_crewai.tree import SpanTree

__all__ = ["SightlineEventListener", "event_classes", "live_listeners"]


try:
    from crewai.events.event_bus import is_replaying as _is_replaying
except ImportError:  # older CrewAI: no checkpoint replay

    def _is_replaying() -> bool:
        return False


try:  # the scope stack CrewAI keeps in a context variable: (event id, event type), outermost first
    from crewai.events.event_context import _event_id_stack
except ImportError:  # older CrewAI: spans started inside a tool do not nest under it
    _event_id_stack = None  # type: ignore[assignment]


# The listeners registered on the bus, oldest first. Replaced, never mutated, so that a handler
# reads it without a lock. (The bus holds each listener's handlers until close() anyway.)
_LIVE: tuple[SightlineEventListener, ...] = ()
_LIVE_LOCK = threading.Lock()


def live_listeners() -> list[SightlineEventListener]:
    """The listeners currently registered on the bus, oldest first."""
    return list(_LIVE)


# The types (``event.type``) of the CrewAI start events that open a Sightline span.
_RECORDED_TYPES: frozenset[str] = frozenset()


def _register(listener: SightlineEventListener) -> None:
    global _LIVE
    with _LIVE_LOCK:
        _LIVE = (*_LIVE, listener)
        if len(_LIVE) == 1:
            kickoff.watch(_kickoff_aborted)
            if _event_id_stack is not None:
                add_parent_source(_run_parent)


def _unregister(listener: SightlineEventListener) -> None:
    global _LIVE
    with _LIVE_LOCK:
        _LIVE = tuple(other for other in _LIVE if other is not listener)
        if not _LIVE:
            kickoff.unwatch()
            remove_parent_source(_run_parent)


def _run_parent() -> tuple[str, str, int, Any] | None:
    """``(trace id, span id, start time, client)`` of the CrewAI span (a tool call, an agent's
    execution...) whose code runs here, so that a ``@monitor`` function called by a tool nests
    under its ``tool_call``: CrewAI keeps the ids of the scopes open in this context on a stack
    in a context variable (see :meth:`SpanTree.run_parent`)."""
    stack = _event_id_stack.get() if _event_id_stack is not None else None
    if not stack:
        return None
    for listener in _LIVE:
        if listener._active:
            ids = listener.tree.run_parent(stack, _RECORDED_TYPES)
            if ids is not None:
                return ids
    return None


def _kickoff_aborted(root_id: str, error: BaseException) -> None:
    """A kickoff ended by a ``BaseException`` CrewAI did not report (cancellation, interrupt).

    Runs in the user's thread as the exception propagates: it only takes note, and a
    short-lived thread ends the kickoff's open spans once CrewAI's handlers for the events
    emitted before have run (``flush()`` and ``close()`` do it too, whichever comes first)."""
    at = time.time_ns()
    listeners = [listener for listener in _LIVE if listener.active]
    if not listeners:
        return
    for listener in listeners:
        listener.tree.abort(root_id, error, at)
    # Signals blocked in it, as in every Sightline thread: this runs while a Ctrl-C propagates.
    start_background_thread(_end_aborted, "sightline-crewai-abort", (listeners,))


def _end_aborted(listeners: list[SightlineEventListener]) -> None:
    try:
        crewai_event_bus.flush(5.0)
    except Exception:
        log_safely(logging.DEBUG, "sightline: crewai: flushing the event bus failed", exc_info=True)
    for listener in listeners:
        listener.tree.apply_aborts()


def event_classes() -> list[tuple[type, str, CrewEventRule]]:
    """``(class, class name, rule)`` for every CrewAI event class Sightline listens to.

    The bus dispatches by exact class, so each class of :data:`~sightline_crewai.mapping.RULES`
    is looked up by name in ``crewai.events``, each of
    :data:`~sightline_crewai.mapping.UNEXPORTED_RULES` among CrewAI's event classes; a class
    this CrewAI version lacks is skipped. Every other class that opens a CrewAI scope is added
    as a scope, so that events nested in it keep their parent.
    """
    events = importlib.import_module("crewai.events")
    every = _crewai_event_classes()
    found: list[tuple[type, str, CrewEventRule]] = []
    for name, rule in (*RULES.items(), *UNEXPORTED_RULES.items()):
        cls: Any = None
        if name in RULES:
            try:
                cls = getattr(events, name)
            except Exception:
                cls = None
        else:
            cls = next(
                (c for c in every if c.__name__ == name and c.__module__.startswith("crewai.")),
                None,
            )
        if not isinstance(cls, type):
            log_safely(
                logging.DEBUG, "sightline: crewai: this CrewAI has no %s; not listened to", name
            )
            continue
        found.append((cls, name, rule))
    known = {cls for cls, _, _ in found}
    try:
        from crewai.events.event_context import SCOPE_STARTING_EVENTS

        for cls in every:
            if cls in known:
                continue
            field = getattr(cls, "model_fields", {}).get("type")
            if field is not None and field.default in SCOPE_STARTING_EVENTS:
                found.append((cls, cls.__name__, SCOPE))
                known.add(cls)
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: crewai: could not list CrewAI's scope events", exc_info=True
        )
    return found


def _crewai_event_classes() -> list[type]:
    """Every event class loaded (CrewAI's, all of its event modules loaded first); ``[]`` when
    they cannot be listed."""
    try:
        importlib.import_module("crewai.events.event_types")  # loads every event module
        from crewai.events.base_events import BaseEvent

        return _subclasses(BaseEvent)
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: crewai: could not list CrewAI's event classes", exc_info=True
        )
        return []


def _subclasses(cls: type) -> list[type]:
    seen: list[type] = []
    stack: list[type] = list(cls.__subclasses__())
    while stack:
        sub = stack.pop()
        if sub not in seen:
            seen.append(sub)
            stack.extend(sub.__subclasses__())
    return seen


class SightlineEventListener(BaseEventListener):
    """Records every crew kickoff, task, agent execution, LLM call, tool call, memory and
    knowledge retrieval as Sightline events, by listening to ``crewai_event_bus``.

    ``sightline.init()`` creates one when this package is installed (see
    :func:`sightline_crewai.instrument`); create one yourself only to record to an explicit
    client, and :meth:`close` it when done::

        listener = SightlineEventListener(client=my_client)
        crew.kickoff()
        listener.close()
    """

    def __init__(self, client: Any = None) -> None:
        self.tree = SpanTree(client)
        self._handlers: list[tuple[type, Callable[[Any, Any], None]]] = []
        self._active = True
        super().__init__()
        _register(self)

    @property
    def client(self) -> Any:
        """The client events go to (``None``: the global client at the time of each event)."""
        return self.tree.client

    @property
    def active(self) -> bool:
        return self._active

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        """Register one handler per event class (called by ``BaseEventListener.__init__``)."""
        global _RECORDED_TYPES
        recorded = set()
        for cls, name, rule in event_classes():
            # a start that opens a span, or may (a flow's: a user's, not CrewAI's own)
            if rule.phase == START and (rule.event_type is not None or rule.choose is not None):
                field = getattr(cls, "model_fields", {}).get("type")
                if field is not None and isinstance(field.default, str):
                    recorded.add(field.default)
            handler = self._handler(name, rule)
            crewai_event_bus.on(cls)(handler)
            self._handlers.append((cls, handler))
        _RECORDED_TYPES = _RECORDED_TYPES | recorded

    def _handler(self, kind: str, rule: CrewEventRule) -> Callable[[Any, Any], None]:
        tree = self.tree

        def on_crewai_event(source: Any, event: Any) -> None:
            # Runs on CrewAI's handler pool, in a copy of the emitter's context: the ambient
            # Sightline span here is the one current where CrewAI emitted the event.
            if not self._active or _is_replaying() or not self._records_now():
                return
            tree.receive(kind, rule, event, source, current_span())

        on_crewai_event.__name__ = f"sightline_{kind}"
        return on_crewai_event

    def _records_now(self) -> bool:
        """Whether this listener records the event being handled: no older live listener
        records to the same client (``None`` resolved to the global client, now)."""
        live = _LIVE
        if live and live[0] is self:
            return True
        target = self.tree.client
        if target is None:
            target = get_client()
        for other in live:
            if other is self:
                return True
            if not other._active:
                continue
            other_target = other.tree.client
            if (other_target if other_target is not None else get_client()) is target:
                return False
        return True

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for the handlers CrewAI's bus has already dispatched, then end what interrupted
        kickoffs left open (never raises)."""
        if not self._active:
            return
        try:
            crewai_event_bus.flush(timeout)
        except Exception:
            log_safely(
                logging.DEBUG, "sightline: crewai: flushing the event bus failed", exc_info=True
            )
        self.tree.apply_aborts()
        self.tree.settle()

    def close(self, timeout: float = 5.0) -> None:
        """Wait for handlers already dispatched, unregister from the bus, end what is open.

        Idempotent.
        """
        if not self._active:
            return
        self.flush(timeout)
        self._active = False
        _unregister(self)
        for cls, handler in self._handlers:
            try:
                crewai_event_bus.off(cls, handler)
            except Exception:
                log_safely(
                    logging.DEBUG, "sightline: crewai: could not unregister %s", cls, exc_info=True
                )
        self._handlers.clear()
        self.tree.close()
