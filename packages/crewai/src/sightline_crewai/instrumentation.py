"""``instrument()`` / ``uninstrument()``: the global listener, installed when CrewAI is loaded.

Importing CrewAI takes seconds, so ``sightline.init()`` does not: when CrewAI is not imported
yet, :func:`sightline.imports.when_imported` waits for ``import crewai`` to finish and installs
the listener (and the tool governance of :mod:`sightline_crewai.governance`) then. Calling
``sightline.init()`` before or after ``import crewai`` both work.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sightline.imports import PostImportHook, when_imported
from sightline.logs import log_safely

if TYPE_CHECKING:
    from sightline_crewai.listener import SightlineEventListener

__all__ = ["active_listener", "instrument", "is_instrumented", "uninstrument"]


_lock = threading.RLock()
_wanted = False
_client: Any = None
_listener: SightlineEventListener | None = None
_watcher: PostImportHook | None = None


def instrument(client: Any = None) -> None:
    """Record every CrewAI crew run through Sightline (``sightline.init()`` calls this).

    ``client`` is the Sightline client to record to; ``None`` means the global client at the
    time of each event. Idempotent: a second call while instrumented installs nothing more (it
    only switches to ``client`` if that is another one).
    """
    global _wanted, _client, _watcher
    with _lock:
        if _wanted:
            if client is not _client:
                _client = client
                if _listener is not None:
                    _listener.tree.client = client
            return
        _wanted = True
        _client = client
        _watcher = when_imported(["crewai"], _on_crewai_imported)


def uninstrument() -> None:
    """Stop recording CrewAI: unregister the listener (after the handlers already dispatched
    have run) and end the spans still open. Idempotent."""
    global _wanted, _client, _listener, _watcher
    with _lock:
        _wanted = False
        _client = None
        listener, _listener = _listener, None
        watcher, _watcher = _watcher, None
        if watcher is not None:
            watcher.cancel()
    if listener is not None:
        listener.close()
    if "sightline_crewai.governance" in sys.modules:
        sys.modules["sightline_crewai.governance"].remove()


def flush(timeout: float = 5.0) -> None:
    """Wait, at most ``timeout`` seconds, until CrewAI's event bus has run the handlers of the
    events emitted so far, so that they are recorded. Nothing to do before CrewAI is loaded."""
    listener = _listener
    if listener is not None:
        listener.flush(timeout)


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument` (even before CrewAI loads)."""
    return _wanted


def active_listener() -> SightlineEventListener | None:
    """The listener :func:`instrument` installed, once CrewAI is loaded."""
    return _listener


def _install() -> None:
    global _listener
    if _listener is not None:
        return
    try:
        from sightline_crewai import governance
        from sightline_crewai.listener import SightlineEventListener

        _listener = SightlineEventListener(client=_client)
        governance.install(lambda: _client)
    except Exception as exc:
        log_safely(
            logging.ERROR,
            "sightline: crewai: could not instrument CrewAI: %s: %s",
            type(exc).__name__,
            exc,
        )


def _on_crewai_imported(name: str, module: ModuleType) -> None:
    with _lock:
        if _wanted:
            _install()
