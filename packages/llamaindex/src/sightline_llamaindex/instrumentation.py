"""Global instrumentation: the Sightline handlers on LlamaIndex's root dispatcher.

Every LlamaIndex module dispatches through a child of the root dispatcher, and children propagate
to it, so handlers on the root see the whole framework. ``sightline.init()`` calls
:func:`instrument` through the plugin hook; it can also be called directly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sightline import Client
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler

__all__ = ["installed_handlers", "instrument", "uninstrument"]

_lock = threading.Lock()
# The handlers this module put on the root dispatcher (None when not instrumented).
_installed: tuple[SightlineSpanHandler | None, SightlineEventHandler | None] | None = None
_span_handler: SightlineSpanHandler | None = None


def instrument(client: Client | None = None) -> None:
    """Record every LlamaIndex agent run, LLM call, tool call, retrieval... (idempotent).

    Adds a :class:`SightlineSpanHandler` and a :class:`SightlineEventHandler` to the root
    dispatcher (``llama_index.core.instrumentation.get_dispatcher()``), once. ``client``: the
    Sightline client to report to; by default the global one, looked up when a span starts.
    Calling again only changes the client. Handlers you attached to the root dispatcher yourself
    are used instead of adding new ones.
    """
    global _installed, _span_handler
    from sightline_llamaindex._framework import get_dispatcher
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler

    with _lock:
        if _installed is not None:
            if _span_handler is not None and _installed[0] is not None:
                _span_handler.client = client
            return
        root = get_dispatcher()
        span_handler = next(
            (h for h in root.span_handlers if isinstance(h, SightlineSpanHandler)), None
        )
        added_span = None
        if span_handler is None:
            span_handler = added_span = SightlineSpanHandler(client=client)
            # A new list rather than an append: a thread iterating the old one is undisturbed.
            root.span_handlers = [*root.span_handlers, span_handler]
        added_event = None
        if not any(isinstance(h, SightlineEventHandler) for h in root.event_handlers):
            added_event = SightlineEventHandler()
            root.event_handlers = [*root.event_handlers, added_event]
        _installed = (added_span, added_event)
        _span_handler = added_span


def uninstrument() -> None:
    """Remove the handlers :func:`instrument` added to the root dispatcher (idempotent).

    Spans still open stay in the shared table; a handler attached later finishes them.
    """
    global _installed, _span_handler
    from sightline_llamaindex._framework import get_dispatcher

    with _lock:
        if _installed is None:
            return
        added_span, added_event = _installed
        root = get_dispatcher()
        if added_span is not None:
            root.span_handlers = [h for h in root.span_handlers if h is not added_span]
        if added_event is not None:
            root.event_handlers = [h for h in root.event_handlers if h is not added_event]
        _installed = None
        _span_handler = None


def installed_handlers() -> tuple[SightlineSpanHandler | None, SightlineEventHandler | None]:
    """The handlers :func:`instrument` added to the root dispatcher (``(None, None)`` if none)."""
    installed = _installed
    return installed if installed is not None else (None, None)
