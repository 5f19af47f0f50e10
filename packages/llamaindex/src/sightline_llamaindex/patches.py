"""The few LlamaIndex methods the adapter wraps, from ``instrument()`` to ``uninstrument()``.

Recording needs no patch: LlamaIndex's dispatcher reports its spans and events. Two things it
does not report do:

- a tool about to run, with its arguments: governance asks the ``sightline_authorize_tool``
  plugins then (:mod:`sightline_llamaindex.governance`), in the ``call`` / ``acall`` of
  LlamaIndex's tool classes;
- a workflow step suspending itself until an event arrives: ``Context.wait_for_event`` raises
  ``WaitingForEvent``, which LlamaIndex's step runner catches before the step's span ends (the
  span ends as if the step had returned nothing); the wrapper tells the handlers.

Each method is wrapped when its module is imported (:func:`sightline.imports.when_imported`:
instrumenting does not import LlamaIndex) and restored by :func:`remove`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sightline.imports import PostImportHook, when_imported
from sightline.logs import log_safely
from sightline_llamaindex import governance

__all__ = ["client", "install", "patched_methods", "remove"]


_lock = threading.RLock()  # re-entrant: when_imported() calls back at once for loaded modules
_wanted = False
_client: Any = None
_watcher: PostImportHook | None = None
# (class, method) -> (the original attribute, our wrapper)
_applied: dict[tuple[type, str], tuple[Any, Any]] = {}


def install(client: Any = None) -> None:
    """Wrap the methods (now for the modules already imported, else when they are; idempotent:
    again, only the client changes). ``client``: the Sightline client whose governance plugins
    decide; ``None``, the global one at the time of each tool call."""
    global _wanted, _client, _watcher
    with _lock:
        _client = client
        if _wanted:
            return
        _wanted = True
        _watcher = when_imported(_PATCHES, _on_import)


def remove() -> None:
    """Restore every method :func:`install` wrapped (idempotent)."""
    global _wanted, _client, _watcher
    with _lock:
        _wanted = False
        _client = None
        watcher, _watcher = _watcher, None
        applied = list(_applied.items())
        _applied.clear()
    if watcher is not None:
        watcher.cancel()
    for (owner, attribute), (original, wrapper) in applied:
        if owner.__dict__.get(attribute) is wrapper:  # unless someone wrapped it after us
            setattr(owner, attribute, original)


def client() -> Any:
    """The client given to :func:`install` (``None``: the global one)."""
    return _client


def patched_methods() -> list[str]:
    """``Class.method`` of each method currently wrapped."""
    with _lock:
        return sorted(f"{owner.__name__}.{attribute}" for owner, attribute in _applied)


def _on_import(name: str, module: ModuleType) -> None:
    with _lock:
        if not _wanted:
            return
        for class_name, attributes, wrap in _PATCHES.get(name, ()):
            owner = getattr(module, class_name, None)
            if isinstance(owner, type):
                for attribute in attributes:
                    _patch(owner, attribute, wrap)


def _patch(owner: type, attribute: str, wrap: Callable[[Any], Any]) -> None:
    if (owner, attribute) in _applied:
        return
    try:
        original = owner.__dict__[attribute]
        wrapper = wrap(original)
        setattr(owner, attribute, wrapper)
    except Exception as exc:  # a changed LlamaIndex: this one method stays as it is
        log_safely(
            logging.DEBUG,
            "sightline: llamaindex %s.%s not wrapped: %r",
            owner.__name__,
            attribute,
            exc,
        )
        return
    _applied[(owner, attribute)] = (original, wrapper)


def _governed(original: Any) -> Callable[..., Any]:
    """A tool's ``call`` or ``acall``, asking governance first when a policy is registered.
    ``functools.wraps`` keeps what LlamaIndex reads off the method (its name, its signature,
    the mark that makes subclasses' overrides spans)."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = _client
            if governance.enforced(client):
                args, kwargs = governance.authorized(self, args, kwargs, client)
            return await original.__get__(self, type(self))(*args, **kwargs)

        return acall

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = _client
        if governance.enforced(client):
            args, kwargs = governance.authorized(self, args, kwargs, client)
        return original.__get__(self, type(self))(*args, **kwargs)

    return call


def _noting_waits(original: Any) -> Callable[..., Any]:
    """``Context.wait_for_event``, telling the handlers when it suspends the step (by the
    exception's class name: importing it would load LlamaIndex's workflows package)."""
    from sightline_llamaindex.handlers import WAITING, step_waiting

    @functools.wraps(original)
    async def wait_for_event(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original.__get__(self, type(self))(*args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ in WAITING:
                step_waiting(exc)
            raise

    return wait_for_event


_Wrap = Callable[[Any], Callable[..., Any]]
_TOOL_METHODS = ("call", "acall")
# module -> (class, its methods to wrap, the wrapper factory)
_PATCHES: dict[str, tuple[tuple[str, tuple[str, ...], _Wrap], ...]] = {
    "llama_index.core.tools.function_tool": (("FunctionTool", _TOOL_METHODS, _governed),),
    "llama_index.core.tools.query_engine": (("QueryEngineTool", _TOOL_METHODS, _governed),),
    "llama_index.core.tools.retriever_tool": (("RetrieverTool", _TOOL_METHODS, _governed),),
    "workflows.context.context": (("Context", ("wait_for_event",), _noting_waits),),
}
