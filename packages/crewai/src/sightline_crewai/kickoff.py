"""Notice a kickoff that ends without its end event.

CrewAI emits ``CrewKickoffFailedEvent`` (and the agent's error event) only for an ``Exception``:
when ``asyncio`` cancels ``crew.akickoff()``, or a ``KeyboardInterrupt`` or another
``BaseException`` goes through ``crew.kickoff()``, the kickoff, its task and its agent are left
open on the bus. The event bus cannot tell, so the kickoff entry points are watched: while a
listener is registered, ``Crew.kickoff`` / ``Crew.akickoff`` and ``Agent.kickoff`` /
``Agent.kickoff_async`` / ``Agent.akickoff`` are wrapped, and a ``BaseException`` that is not an
``Exception`` going through one of them is reported (with the id of the kickoff's start event)
before it propagates unchanged. Return values and ``Exception`` are untouched, and the cost on
the common path is one function call.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from sightline.logs import log_safely
from sightline_crewai.patching import ORIGINAL, MethodPatches

__all__ = ["unwatch", "watch"]


OnAbort = Callable[[str, BaseException], None]

_ENTRY_POINTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("crewai", "Crew", ("kickoff", "akickoff")),
    ("crewai", "Agent", ("kickoff", "kickoff_async", "akickoff")),
)

_lock = threading.Lock()
_on_abort: OnAbort | None = None
_patches = MethodPatches("watch")


def watch(on_abort: OnAbort) -> None:
    """Wrap the kickoff entry points; ``on_abort(root_event_id, error)`` is called when one
    ends by a ``BaseException`` that is not an ``Exception``. Idempotent; never raises."""
    global _on_abort
    with _lock:
        _on_abort = on_abort
        if _patches:
            return
        for module_name, class_name, names in _ENTRY_POINTS:
            _patches.wrap(module_name, class_name, names, _watched)


def unwatch() -> None:
    """Put the original entry points back (those nobody replaced since). Idempotent."""
    global _on_abort
    with _lock:
        _on_abort = None
        _patches.restore()


def _watched(original: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def watched_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await original(self, *args, **kwargs)
            except Exception:
                raise
            except BaseException as exc:
                _ended_abruptly(self, exc)
                raise

        setattr(watched_async, ORIGINAL, original)
        return watched_async

    @functools.wraps(original)
    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            _ended_abruptly(self, exc)
            raise

    setattr(watched, ORIGINAL, original)
    return watched


def _ended_abruptly(owner: Any, error: BaseException) -> None:
    try:
        on_abort = _on_abort
        root_id = getattr(owner, "_kickoff_event_id", None)
        if on_abort is not None and root_id:
            on_abort(str(root_id), error)
    except Exception:
        log_safely(
            logging.DEBUG,
            "sightline: crewai: could not report an interrupted kickoff",
            exc_info=True,
        )
