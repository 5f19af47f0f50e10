"""Notice a kickoff that ends without its end event.

CrewAI emits ``CrewKickoffFailedEvent`` (and the agent's error event) only for an ``Exception``:
when ``asyncio`` cancels ``crew.akickoff()``, or a ``KeyboardInterrupt`` or another
``BaseException`` goes through ``crew.kickoff()``, the kickoff, its task and its agent are left
open on the bus. The event bus cannot tell, so the kickoff entry points are watched: while a
listener is registered, ``Crew.kickoff`` / ``Crew.akickoff``, ``Agent.kickoff`` /
``Agent.kickoff_async`` / ``Agent.akickoff`` and ``Flow.kickoff_async`` (which ``Flow.kickoff``
and ``Flow.akickoff`` run) are wrapped, and a ``BaseException`` that is not an ``Exception``
going through one of them is reported (with the id of the kickoff's start event) before it
propagates unchanged. Return values and ``Exception`` are untouched, and the cost on the common
path is one function call (for a flow, two reads of CrewAI's scope stack).
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
Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]

try:  # the scope stack CrewAI keeps in a context variable: (event id, event type), outermost first
    from crewai.events.event_context import _event_id_stack
except ImportError:  # older CrewAI: an interrupted flow's spans end when recording stops
    _event_id_stack = None  # type: ignore[assignment]

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
        for module_name, class_name, names, wrapper in _ENTRY_POINTS:
            _patches.wrap(module_name, class_name, names, wrapper)


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


def _watched_flow(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Flow.kickoff_async``: a flow keeps no id of its start event, but CrewAI pushes it on
    the scope stack of the context the kickoff runs in, and an interrupted kickoff leaves it
    there: the first ``flow_started`` pushed during the call is this flow's."""

    @functools.wraps(original)
    async def watched_flow(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = _scope_stack()
        try:
            return await original(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            _flow_ended_abruptly(self, before, exc)
            raise

    setattr(watched_flow, ORIGINAL, original)
    return watched_flow


def _scope_stack() -> tuple[tuple[str, str], ...]:
    try:
        return tuple(_event_id_stack.get()) if _event_id_stack is not None else ()
    except Exception:
        return ()


def _flow_ended_abruptly(
    flow: Any, before: tuple[tuple[str, str], ...], error: BaseException
) -> None:
    try:
        on_abort = _on_abort
        if on_abort is None or getattr(type(flow), "is_crewai_internal", False):
            return  # CrewAI's own flows (the agent executor) are reported with their kickoff
        after = _scope_stack()
        pushed = after[len(before) :] if after[: len(before)] == before else after
        root_id = next((str(event_id) for event_id, kind in pushed if kind == "flow_started"), None)
        if root_id:
            on_abort(root_id, error)
    except Exception:
        log_safely(
            logging.DEBUG,
            "sightline: crewai: could not report an interrupted flow",
            exc_info=True,
        )


_ENTRY_POINTS: tuple[tuple[str, str, tuple[str, ...], Wrapper], ...] = (
    ("crewai", "Crew", ("kickoff", "akickoff"), _watched),
    ("crewai", "Agent", ("kickoff", "kickoff_async", "akickoff"), _watched),
    # where CrewAI 1.15 defines it (older ones: crewai.flow.flow; a class defining no
    # kickoff_async of its own is skipped)
    ("crewai.flow.runtime", "Flow", ("kickoff_async",), _watched_flow),
    ("crewai.flow.flow", "Flow", ("kickoff_async",), _watched_flow),
)
