"""Sightline plugin hooks: ``sightline.init()`` instruments LlamaIndex through these.

Registered as ``[project.entry-points.sightline] llamaindex = "sightline_llamaindex.plugin"``.
Neither discovering the plugin nor calling its hooks imports LlamaIndex: the handlers are added
once the application imports it (:func:`sightline.imports.when_imported` waits for LlamaIndex's
instrumentation package, the first thing ``llama_index.core`` loads), so an application that has
the adapter installed but does not use LlamaIndex pays nothing at ``init()``.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sightline import hookimpl
from sightline.imports import PostImportHook, when_imported

if TYPE_CHECKING:
    from sightline import Client

# Where LlamaIndex's dispatcher lives: its own small package, or llama_index.core before the
# package was split out. Whichever is imported first switches instrumentation on.
_FRAMEWORK_MODULES = ("llama_index_instrumentation", "llama_index.core")

_lock = threading.RLock()  # when_imported calls back at once, in this thread, if loaded already
_wanted = False
_client: Any = None
_watch: PostImportHook | None = None


@hookimpl
def sightline_instrument(client: Client) -> None:
    """Add the Sightline handlers to LlamaIndex's root dispatcher, reporting to ``client``: now
    if LlamaIndex is loaded, else as soon as it is."""
    global _wanted, _client, _watch
    with _lock:
        _client = client
        if not _wanted:
            _wanted = True
            _watch = when_imported(_FRAMEWORK_MODULES, _on_import)
        elif "sightline_llamaindex.instrumentation" in sys.modules:
            sys.modules["sightline_llamaindex.instrumentation"].instrument(client)


def _on_import(name: str, module: ModuleType) -> None:
    from sightline_llamaindex.instrumentation import instrument

    with _lock:
        if _wanted:
            instrument(_client)  # a second call (for the other module) changes nothing


@hookimpl
def sightline_uninstrument() -> None:
    """Remove the handlers :func:`sightline_instrument` added, or stop waiting for LlamaIndex."""
    global _wanted, _client, _watch
    with _lock:
        _wanted = False
        watch, _watch = _watch, None
        _client = None
    if watch is not None:
        watch.cancel()
    instrumentation = sys.modules.get("sightline_llamaindex.instrumentation")
    if instrumentation is not None:
        instrumentation.uninstrument()
