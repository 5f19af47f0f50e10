"""Global instrumentation: every LangChain run reports to Sightline, with no handler passed.

LangChain builds each run's callback manager through ``CallbackManager.configure``, which adds
the handler held by every context variable registered with ``register_configure_hook``. We
register one whose *default* is our handler: a value set with ``ContextVar.set`` would be seen
only by the current thread and the tasks and threads that copy its context, while the default
is seen by every thread, including those of a plain ``ThreadPoolExecutor``.

The hook is registered with ``handle_class=SightlineCallbackHandler``, so LangChain leaves the
global handler out of any run that already has a Sightline handler; where both still meet (an
explicit handler on a model inside a globally traced chain), the handlers share their run map
and the run is recorded once.

Importing LangChain takes about a second, so ``sightline.init()`` does not: when
``langchain_core`` is not imported yet, :func:`sightline.imports.when_imported` waits for it and
the hook is registered then. Calling ``sightline.init()`` before or after importing LangChain
both work.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sightline.imports import PostImportHook, when_imported
from sightline.logs import log_safely

if TYPE_CHECKING:
    from sightline.client import Client
    from sightline_langchain.handler import SightlineCallbackHandler

__all__ = ["global_handler", "instrument", "is_instrumented", "uninstrument"]


_lock = threading.RLock()
_wanted = False
_client: Client | None = None
_watcher: PostImportHook | None = None
_installed: tuple[ContextVar[Any], SightlineCallbackHandler] | None = None


def instrument(client: Client | None = None) -> None:
    """Record every LangChain run in this process (``sightline.init()`` calls this).

    ``client`` is the Sightline client to report to; ``None`` uses the global client at the
    time of each run, which records nothing until ``sightline.init()`` (or
    ``sightline.set_client()``) installs one: a warning says so once. Idempotent: a second call
    while instrumented installs nothing more (it only switches to ``client`` if that is another
    one).

    Instrumenting LangChain alone, reporting to the global client::

        sightline.init(instrument=False)  # the global client, no integration instrumented
        sightline_langchain.instrument()
    """
    global _wanted, _client, _watcher
    if client is None:
        _warn_if_nothing_records()
    with _lock:
        if _wanted:
            if client is not _client:
                _client = client
                if _installed is not None:
                    _installed[1].client = client
            return
        _wanted = True
        _client = client
        _watcher = when_imported(["langchain_core"], _on_langchain_imported)


_warned_disabled = False


def _warn_if_nothing_records() -> None:
    """Warn once when instrument() reports to the global client while it is the disabled one."""
    global _warned_disabled
    if _warned_disabled:
        return
    try:
        from sightline.client import get_client

        if get_client().enabled:
            return
    except Exception:
        return
    _warned_disabled = True
    log_safely(
        logging.WARNING,
        "sightline: sightline_langchain.instrument() reports to the global client, which "
        "records nothing until sightline.init() (or sightline.set_client()) installs one; "
        "call sightline.init() first, or pass instrument(client=...)",
    )


def uninstrument() -> None:
    """Stop recording LangChain runs that were not given a handler explicitly. Idempotent.

    Runs already under way finish recording normally.
    """
    global _wanted, _client, _watcher, _installed
    with _lock:
        _wanted = False
        _client = None
        watcher, _watcher = _watcher, None
        installed, _installed = _installed, None
    if watcher is not None:
        watcher.cancel()
    if installed is None:
        return
    variable, handler = installed
    try:
        from langchain_core.tracers import context as lc_context

        hooks = lc_context._configure_hooks
        hooks[:] = [hook for hook in hooks if hook[0] is not variable]
    except Exception as exc:  # a LangChain without the list: leave the handler inert
        log_safely(
            logging.WARNING,
            "sightline: could not remove the LangChain configure hook (%s); the global "
            "handler stays registered but records nothing",
            exc,
        )
        from sightline.client import Client

        handler.client = Client(enabled=False)
    finally:
        _remove_governance()


def _remove_governance() -> None:
    try:
        from sightline_langchain import governance

        governance.remove()
    except Exception as exc:
        log_safely(
            logging.WARNING, "sightline: could not remove LangChain tool governance: %s", exc
        )


def _client_of() -> Client | None:
    """The client that instrument() was given (None: the global one)."""
    return _client


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument` (even before LangChain loads)."""
    return _wanted


def global_handler() -> SightlineCallbackHandler | None:
    """The handler :func:`instrument` registered, once LangChain is loaded; else ``None``."""
    installed = _installed
    return installed[1] if installed is not None else None


def _on_langchain_imported(name: str, module: ModuleType) -> None:
    with _lock:
        if _wanted:
            _install()


def _install() -> None:
    global _installed
    if _installed is not None:
        return
    try:
        from langchain_core.tracers.context import register_configure_hook

        from sightline_langchain.handler import SightlineCallbackHandler

        handler = SightlineCallbackHandler(_client)
        handler.is_global = True
        # A new variable per install: a ContextVar's default cannot be changed or removed.
        variable: ContextVar[Any] = ContextVar("sightline_langchain_handler", default=handler)
        register_configure_hook(variable, True, SightlineCallbackHandler)
        _installed = (variable, handler)
        from sightline_langchain import governance

        governance.install(_client_of)  # sightline_authorize_tool policies, before each tool
    except Exception as exc:
        log_safely(
            logging.ERROR,
            "sightline: langchain: could not instrument LangChain: %s: %s",
            type(exc).__name__,
            exc,
        )
