"""Global instrumentation of AutoGen: switched on by ``sightline.init()`` (or ``instrument()``).

Two parts, installed and removed together:

- a :class:`~sightline_autogen.event_log.SightlineEventLogHandler` on AutoGen's event loggers
  (model calls, tool calls, dropped messages, handler exceptions);
- the :mod:`~sightline_autogen.structure` patches (agent turns and team runs as spans), applied
  when AutoGen is imported — at once if it already is.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import TYPE_CHECKING

from sightline.imports import PostImportHook, when_imported
from sightline_autogen.event_log import (
    EventLogTap,
    SightlineEventLogHandler,
    set_instrumented_handler,
)
from sightline_autogen.scopes import REGISTRY
from sightline_autogen.structure import PATCHED_MODULES, StructurePatcher

if TYPE_CHECKING:
    from sightline.client import Client

__all__ = ["INSTRUMENTOR", "AutogenInstrumentor"]


class AutogenInstrumentor:
    """Installs and removes the global AutoGen instrumentation. Both calls are idempotent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handler: SightlineEventLogHandler | None = None
        self._tap: EventLogTap | None = None
        self._patcher: StructurePatcher | None = None
        self._hook: PostImportHook | None = None

    @property
    def instrumented(self) -> bool:
        """True while the instrumentation is on."""
        return self._tap is not None

    @property
    def patched_methods(self) -> list[str]:
        """``Class.method`` of each AutoGen method currently wrapped."""
        return self._patcher.applied if self._patcher is not None else []

    def instrument(self, client: Client | None = None) -> None:
        """Switch the instrumentation on, reporting to ``client`` (default: the global client,
        resolved when each event is recorded). While on, a new ``client`` replaces the old."""
        with self._lock:
            if self._tap is not None:
                assert self._handler is not None and self._patcher is not None
                self._handler.client = client
                self._patcher.client = client
                return
            handler = SightlineEventLogHandler(client)
            patcher = StructurePatcher(client)
            tap = EventLogTap(handler)
            self._handler, self._patcher, self._tap = handler, patcher, tap
            # Wrappers left in AutoGen instances by an earlier instrumentation report here too.
            patcher.make_live()
            set_instrumented_handler(handler)
            tap.attach()
            # Patches AutoGen now if it is imported, else when the application imports it.
            self._hook = when_imported(PATCHED_MODULES, self._on_import)

    def uninstrument(self) -> None:
        """Switch the instrumentation off and restore AutoGen as it was."""
        with self._lock:
            tap, hook, patcher = self._tap, self._hook, self._patcher
            self._handler = self._tap = self._hook = self._patcher = None
        if hook is not None:
            hook.cancel()
        if tap is not None:
            set_instrumented_handler(None)
            tap.detach()
        if patcher is not None:
            patcher.remove_all()
        REGISTRY.clear()

    def _on_import(self, name: str, module: ModuleType) -> None:
        patcher = self._patcher
        if patcher is not None:
            patcher.apply_for_module(name, module)


INSTRUMENTOR = AutogenInstrumentor()
"""The process-wide instrumentation (there is one set of AutoGen loggers and classes)."""
