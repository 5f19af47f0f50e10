"""``instrument()`` / ``uninstrument()``: the global listener, installed when CrewAI is loaded.

Importing CrewAI takes seconds, so ``sightline.init()`` does not: when CrewAI is not imported
yet, a finder on ``sys.meta_path`` waits for ``import crewai`` to finish and installs the
listener then. Calling ``sightline.init()`` before or after ``import crewai`` both work.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec

    from sightline_crewai.listener import SightlineEventListener

__all__ = ["active_listener", "instrument", "is_instrumented", "uninstrument"]

logger = logging.getLogger("sightline")

_lock = threading.RLock()
_wanted = False
_client: Any = None
_listener: SightlineEventListener | None = None
_watcher: _ImportWatcher | None = None


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
        if "crewai" in sys.modules:
            _install()
        else:
            _watcher = _ImportWatcher("crewai", _on_crewai_imported)
            sys.meta_path.insert(0, _watcher)


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
            try:
                sys.meta_path.remove(watcher)
            except ValueError:
                pass
    if listener is not None:
        listener.close()


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
        from sightline_crewai.listener import SightlineEventListener

        _listener = SightlineEventListener(client=_client)
    except Exception as exc:
        logger.error(
            "sightline: crewai: could not instrument CrewAI: %s: %s", type(exc).__name__, exc
        )


def _on_crewai_imported(module: ModuleType) -> None:
    global _watcher
    with _lock:
        if _watcher is not None:
            try:
                sys.meta_path.remove(_watcher)
            except ValueError:
                pass
            _watcher = None
        if _wanted:
            _install()


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders give for ``name`` so that
    ``on_import(module)`` runs once the module has executed."""

    def __init__(self, name: str, on_import: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.on_import = on_import
        self._local = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.name or getattr(self._local, "busy", False):
            return None
        self._local.busy = True  # the lookup below asks every finder, this one included
        try:
            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _NotifyingLoader(spec.loader, self.on_import)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    """Delegates to the real loader; calls back after ``exec_module`` and puts the real loader
    back on the module, so nothing else ever sees this wrapper afterwards."""

    def __init__(self, loader: Any, on_import: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._on_import = on_import

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        try:
            self._on_import(module)
        except Exception:
            logger.exception("sightline: crewai: instrumenting on import failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
