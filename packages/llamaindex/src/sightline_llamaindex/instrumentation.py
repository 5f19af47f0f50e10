"""Global instrumentation: the Sightline handlers on LlamaIndex's root dispatcher.

Every LlamaIndex module dispatches through a child of the root dispatcher, and children propagate
to it, so handlers on the root see the whole framework. ``sightline.init()`` calls
:func:`instrument` through the plugin hook once the application imports LlamaIndex (see
:mod:`sightline_llamaindex.plugin`); called directly, it attaches at once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from sightline.logs import log_safely

if TYPE_CHECKING:
    from sightline import Client
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler

__all__ = ["installed_handlers", "instrument", "uninstrument"]


_lock = threading.Lock()
# The handlers this module put on the root dispatcher. After uninstrument() they may stay there,
# draining (recording nothing new), until the spans and streams still open when it was called
# have ended; instrument() switches them back on rather than adding a second pair.
_span_handler: SightlineSpanHandler | None = None
_event_handler: SightlineEventHandler | None = None
_active = False
_told_about_hand_handlers = False


def instrument(client: Client | None = None) -> None:
    """Record every LlamaIndex agent run, LLM call, tool call, retrieval... (idempotent).

    Adds a :class:`SightlineSpanHandler` and a :class:`SightlineEventHandler` to the root
    dispatcher (``llama_index.core.instrumentation.get_dispatcher()``), once. ``client``: the
    Sightline client to report to; by default the global one, looked up when a span starts.
    Calling again only changes the client. Handlers you attached to the root dispatcher yourself
    are used instead of adding new ones (each call looks again: once yours are gone, it adds its
    own). It also wraps the few methods whose work the dispatcher does not report (a tool about
    to run, for governance; a step suspending itself): see :mod:`sightline_llamaindex.patches`.
    """
    global _span_handler, _event_handler, _active, _told_about_hand_handlers
    from sightline_llamaindex import patches
    from sightline_llamaindex._framework import get_dispatcher
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler

    patches.install(client)

    with _lock:
        root = get_dispatcher()
        _span_handler, span_by_hand = _attach(
            root, "span_handlers", _span_handler, SightlineSpanHandler, client=client
        )
        if _span_handler is not None:
            _span_handler.client = client
        _event_handler, event_by_hand = _attach(
            root, "event_handlers", _event_handler, SightlineEventHandler
        )
        by_hand = span_by_hand or event_by_hand
        _active = _span_handler is not None or _event_handler is not None
        if by_hand and not _told_about_hand_handlers:
            _told_about_hand_handlers = True
            log_safely(
                logging.INFO,
                "sightline: LlamaIndex's root dispatcher already has Sightline handlers attached "
                "by hand; instrument() uses them (they report to their own client) and adds none",
            )


def _attach(root: Any, attribute: str, ours: Any, cls: type, **options: Any) -> tuple[Any, bool]:
    """Our handler of ``cls`` on the dispatcher's ``attribute`` list: ``ours`` if it is still
    there, else a new one added (``cls(**options)``), switched back on from draining; or
    ``(None, True)`` when a handler of ``cls`` was attached by hand (it is used instead)."""
    handlers = getattr(root, attribute)
    if ours is None or not any(h is ours for h in handlers):
        if any(isinstance(h, cls) for h in handlers):
            return None, True
        ours = cls(**options)
        # A new list rather than an append: a thread iterating the old one is undisturbed.
        setattr(root, attribute, [*handlers, ours])
    ours.draining = False
    return ours, False


def uninstrument() -> None:
    """Remove the handlers :func:`instrument` added to the root dispatcher, and restore the
    methods it wrapped (idempotent).

    Nothing new is recorded afterwards. Spans and streams still open are finished when they end:
    the handlers stay on the dispatcher for them only, and leave when the last one has ended.
    """
    global _active
    from sightline_llamaindex import patches
    from sightline_llamaindex.handlers import OPEN_SPANS

    patches.remove()
    with _lock:
        _active = False
        if _span_handler is not None:
            _span_handler.draining = True
        if _event_handler is not None:
            _event_handler.draining = True
        if OPEN_SPANS.drained():
            _remove_handlers()


def release_drained(wait: bool = True) -> None:
    """Remove the handlers left draining by :func:`uninstrument` once nothing is open.

    ``wait=False`` (from a finalizer, which may run while this thread holds the lock): only if
    the lock is free; otherwise the next span or event to end releases them.
    """
    from sightline_llamaindex.handlers import OPEN_SPANS

    if not _lock.acquire(blocking=wait):
        return
    try:
        if not _active and OPEN_SPANS.drained():
            _remove_handlers()
    finally:
        _lock.release()


def _remove_handlers() -> None:
    global _span_handler, _event_handler
    from sightline_llamaindex._framework import get_dispatcher

    span_handler, event_handler = _span_handler, _event_handler
    _span_handler = _event_handler = None
    if span_handler is None and event_handler is None:
        return
    root = get_dispatcher()
    if span_handler is not None:
        root.span_handlers = [h for h in root.span_handlers if h is not span_handler]
    if event_handler is not None:
        root.event_handlers = [h for h in root.event_handlers if h is not event_handler]


def installed_handlers() -> tuple[SightlineSpanHandler | None, SightlineEventHandler | None]:
    """The handlers :func:`instrument` added to the root dispatcher (``(None, None)`` if none)."""
    if not _active:
        return (None, None)
    return (_span_handler, _event_handler)
