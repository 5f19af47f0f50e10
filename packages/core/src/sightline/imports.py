"""Run a callback right after a module is imported, without importing it first.

Frameworks take from a fraction of a second to several seconds to import; ``sightline.init()``
must not pay that in an application that has an adapter installed but does not use its
framework. An adapter's ``sightline_instrument`` therefore asks::

    watch = when_imported(["crewai"], lambda name, module: install_listener())

If the module is already imported the callback runs at once; otherwise a finder placed first on
``sys.meta_path`` lets the normal machinery find the module and wraps its loader, so that the
callback runs once the module's code has executed. ``watch.cancel()`` stops watching. A callback
that raises is logged and never breaks the user's import.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from sightline.logs import log_safely

__all__ = ["PostImportHook", "when_imported"]


Callback = Callable[[str, ModuleType], None]


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader; calls back once the module has executed."""

    def __init__(self, loader: Any, callback: Callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            self._callback(module.__name__, module)
        except Exception as exc:
            log_safely(
                logging.ERROR,
                "sightline: post-import hook for %s failed: %s: %s",
                module.__name__,
                type(exc).__name__,
                exc,
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class PostImportHook(importlib.abc.MetaPathFinder):
    """Calls ``callback(name, module)`` after each of ``names`` is imported (while installed)."""

    def __init__(self, names: Iterable[str], callback: Callback) -> None:
        self.names = frozenset(names)
        self.callback = callback
        self._local = threading.local()

    def install(self) -> PostImportHook:
        """Call back now for the watched modules already imported; watch for the others."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)
        for name in sorted(self.names):
            module = sys.modules.get(name)
            if module is not None:
                self.callback(name, module)
        return self

    def cancel(self) -> None:
        """Stop watching (what the callback already did stays done). Idempotent."""
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    uninstall = cancel

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        busy: set[str] = self._local.__dict__.setdefault("busy", set())
        if fullname in busy:  # our own find_spec call below: let the other finders answer
            return None
        busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _CallbackLoader(spec.loader, self.callback)
        return spec


def when_imported(names: Iterable[str], callback: Callback) -> PostImportHook:
    """Run ``callback(name, module)`` for each of ``names`` now if imported, else on import."""
    return PostImportHook(names, callback).install()
