"""The global integration: a ``BaseEventListener`` on ``crewai_event_bus``.

This module imports CrewAI; :mod:`sightline_crewai.instrumentation` imports it only once CrewAI
itself is imported, so that ``sightline.init()`` never pays for loading CrewAI.
"""

from __future__ import annotations

import importlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from crewai.events import BaseEventListener, crewai_event_bus
from crewai.events.event_bus import CrewAIEventsBus

from sightline.span import current_span
from sightline_crewai.mapping import RULES, SCOPE, CrewEventRule
from sightline_crewai.tree import SpanTree

__all__ = ["SightlineEventListener", "event_classes", "live_listeners"]

logger = logging.getLogger("sightline")

try:
    from crewai.events.event_bus import is_replaying as _is_replaying
except ImportError:  # older CrewAI: no checkpoint replay

    def _is_replaying() -> bool:
        return False


_LIVE: weakref.WeakSet[SightlineEventListener] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def live_listeners() -> list[SightlineEventListener]:
    """The listeners currently registered on the bus."""
    with _LIVE_LOCK:
        return list(_LIVE)


def event_classes() -> list[tuple[type, str, CrewEventRule]]:
    """``(class, class name, rule)`` for every CrewAI event class Sightline listens to.

    The bus dispatches by exact class, so each class of :data:`~sightline_crewai.mapping.RULES`
    is looked up by name (a class this CrewAI version lacks is skipped); every other class that
    opens a CrewAI scope is added as a scope, so that events nested in it keep their parent.
    """
    events = importlib.import_module("crewai.events")
    found: list[tuple[type, str, CrewEventRule]] = []
    for name, rule in RULES.items():
        try:
            cls = getattr(events, name)
        except Exception:
            logger.debug("sightline: crewai: this CrewAI has no %s; not listened to", name)
            continue
        if isinstance(cls, type):
            found.append((cls, name, rule))
    known = {cls for cls, _, _ in found}
    try:
        importlib.import_module("crewai.events.event_types")  # loads every event module
        from crewai.events.base_events import BaseEvent
        from crewai.events.event_context import SCOPE_STARTING_EVENTS

        for cls in _subclasses(BaseEvent):
            if cls in known:
                continue
            field = getattr(cls, "model_fields", {}).get("type")
            if field is not None and field.default in SCOPE_STARTING_EVENTS:
                found.append((cls, cls.__name__, SCOPE))
                known.add(cls)
    except Exception:
        logger.debug("sightline: crewai: could not list CrewAI's scope events", exc_info=True)
    return found


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
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def client(self) -> Any:
        """The client events go to (``None``: the global client at the time of each event)."""
        return self.tree.client

    @property
    def active(self) -> bool:
        return self._active

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        """Register one handler per event class (called by ``BaseEventListener.__init__``)."""
        for cls, name, rule in event_classes():
            handler = self._handler(name, rule)
            crewai_event_bus.on(cls)(handler)
            self._handlers.append((cls, handler))

    def _handler(self, kind: str, rule: CrewEventRule) -> Callable[[Any, Any], None]:
        tree = self.tree

        def on_crewai_event(source: Any, event: Any) -> None:
            # Runs on CrewAI's handler pool, in a copy of the emitter's context: the ambient
            # Sightline span here is the one current where CrewAI emitted the event.
            if not self._active or _is_replaying():
                return
            tree.receive(kind, rule, event, source, current_span())

        on_crewai_event.__name__ = f"sightline_{kind}"
        return on_crewai_event

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for the handlers CrewAI's bus has already dispatched (never raises)."""
        if not self._active:
            return
        try:
            crewai_event_bus.flush(timeout)
        except Exception:
            logger.debug("sightline: crewai: flushing the event bus failed", exc_info=True)

    def close(self, timeout: float = 5.0) -> None:
        """Wait for handlers already dispatched, unregister from the bus, end what is open.

        Idempotent.
        """
        if not self._active:
            return
        self.flush(timeout)
        self._active = False
        with _LIVE_LOCK:
            _LIVE.discard(self)
        for cls, handler in self._handlers:
            try:
                crewai_event_bus.off(cls, handler)
            except Exception:
                logger.debug("sightline: crewai: could not unregister %s", cls, exc_info=True)
        self._handlers.clear()
        self.tree.close()
