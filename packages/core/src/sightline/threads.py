"""Sightline's background threads, started with the asynchronous signals blocked.

The kernel hands a signal sent to the process (SIGTERM from a container runtime or ``kill``,
SIGINT from Ctrl-C) to one thread that does not block it: Linux prefers the main thread, unless
that thread blocks the signal for a moment or has another one pending; macOS and the BSDs pick
any thread. Python runs signal handlers on the main thread only; when the signal lands on another
thread while the main thread waits in a system call (``time.sleep``, a socket read,
``signal.pause``), nothing wakes the main thread, and the handler (Sightline's SIGTERM flush, the
application's own, ``KeyboardInterrupt``) runs only once that call returns by itself: the signal
seems ignored. Threads started here block those signals, so the kernel delivers them to a thread
of the application.

The signals that report a fault of the thread itself (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT,
SIGTRAP, SIGSYS) are left unblocked: they must reach the thread that caused them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ASYNCHRONOUS_SIGNALS", "start_background_thread"]

_FAULTS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS")


def _asynchronous_signals() -> frozenset[int]:
    if not hasattr(signal, "pthread_sigmask"):
        return frozenset()
    faults = {getattr(signal, name) for name in _FAULTS if hasattr(signal, name)}
    return frozenset(number for number in signal.valid_signals() if number not in faults)


ASYNCHRONOUS_SIGNALS: frozenset[int] = _asynchronous_signals()
"""The signals Sightline's threads block (empty where threads have no signal mask: Windows)."""


def start_background_thread(
    target: Callable[..., object], name: str, args: tuple[Any, ...] = ()
) -> threading.Thread:
    """Start a daemon thread running ``target(*args)`` with :data:`ASYNCHRONOUS_SIGNALS`
    blocked in it, and return it.

    A new thread inherits the signal mask of the thread starting it: the mask is set on the
    calling thread for the moment of the start, then restored, so that the new thread has no
    instant in which it could take a signal. A signal arriving in that instant waits, pending,
    until the caller's mask is restored (or another thread takes it).
    """
    thread = threading.Thread(target=target, name=name, args=args, daemon=True)
    if not ASYNCHRONOUS_SIGNALS:
        thread.start()
        return thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ASYNCHRONOUS_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
