"""SIGTERM: deliver or spool what is pending, then do what the process would have done anyway.

Containers, job schedulers and ``kill`` stop a process with SIGTERM. Python's default reaction
ends the process at once, without ``atexit``, so events still queued would be lost. A client
offers a handler (``init(handle_signals=True)``; by default it is installed only when nothing
else handles SIGTERM and the client is built in the main thread) that:

1. flushes every client it was installed for, within :data:`SHUTDOWN_TIMEOUT` seconds; what
   cannot be delivered in that time is spooled by exporters that can (``http``);
2. then chains to the previous behaviour: the previous Python handler is called; under the
   default disposition the default is restored and the signal raised again, so the process ends
   exactly as it would have (exit status "killed by SIGTERM"); an ignored signal stays ignored.

When the previous disposition ends the process, the clients are closed (so even events still in
the queue are spooled); otherwise they are only flushed, since the program goes on.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any

from sightline.pipeline import log_safely
from sightline.threads import start_background_thread

if TYPE_CHECKING:
    from sightline.client import Client

__all__ = ["SHUTDOWN_TIMEOUT", "install_signal_handler", "uninstall_signal_handler"]


SHUTDOWN_TIMEOUT = 5.0
"""Seconds the SIGTERM handler spends delivering before it spools the rest and chains."""

_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_previous: Any = None
_installed = False
_lock = threading.Lock()


def install_signal_handler(client: Client, handle_signals: bool | None = None) -> bool:
    """Have SIGTERM flush ``client`` before the process goes on to its previous behaviour.

    ``handle_signals``: ``True`` installs the handler (chaining to any existing one), ``False``
    never does, ``None`` (the default) installs it only if SIGTERM has the default disposition.
    Returns True when ``client`` is covered by the handler. Only the main thread can install a
    signal handler; elsewhere this returns False (logged when ``True`` was asked for).
    """
    global _installed, _previous
    if handle_signals is False or not hasattr(signal, "SIGTERM"):
        return False
    with _lock:
        if _installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            _clients.add(client)
            return True
        if threading.current_thread() is not threading.main_thread():
            if handle_signals:
                log_safely(
                    logging.WARNING,
                    "sightline: handle_signals=True ignored: a SIGTERM handler can only be "
                    "installed from the main thread",
                )
            return False
        current = signal.getsignal(signal.SIGTERM)
        if handle_signals is None and current is not signal.SIG_DFL:
            return False  # the application handles SIGTERM itself; leave it alone
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError) as exc:
            log_safely(logging.WARNING, "sightline: could not install a SIGTERM handler: %s", exc)
            return False
        _previous = current
        _installed = True
        _clients.add(client)
        return True


def uninstall_signal_handler() -> None:
    """Restore the SIGTERM disposition found when the handler was installed."""
    global _installed, _previous
    with _lock:
        if not _installed:
            return
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            try:
                signal.signal(
                    signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL
                )
            except (ValueError, OSError):
                return
        _installed = False
        _previous = None
        _clients.clear()


def _on_sigterm(signum: int, frame: Any) -> None:
    previous = _previous
    terminating = previous is None or previous is signal.SIG_DFL
    # The work runs on a helper thread: the main thread may have been interrupted while holding
    # a lock the flush needs, and a bounded join keeps the handler from hanging on it. What
    # the main thread was doing stays stopped meanwhile: a close() it was running is taken
    # over by the helper, not waited for.
    worker = start_background_thread(
        _flush_clients, "sightline-sigterm", (terminating, threading.current_thread())
    )
    worker.join(SHUTDOWN_TIMEOUT + 2.0)
    if callable(previous):
        previous(signum, frame)
    elif terminating:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN: the signal stays ignored and the program goes on.


def _flush_clients(terminating: bool, interrupted: threading.Thread) -> None:
    import time

    from sightline.client import Client, settle_then_end_open_spans

    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    if terminating:
        settle_then_end_open_spans(
            "still open when the process was terminated (SIGTERM)",
            time.monotonic() + SHUTDOWN_TIMEOUT / 2,
        )
    for client in list(_clients):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            # The synchronous methods, also for an AsyncClient (whose own are coroutines).
            if terminating:
                Client._close(client, remaining, suspended=interrupted)
            else:
                Client.flush(client, remaining)
        except Exception:
            log_safely(
                logging.ERROR, "sightline: failed to flush a client on SIGTERM", exc_info=True
            )
