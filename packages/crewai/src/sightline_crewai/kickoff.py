"""Notice a kickoff, or a flow method, that ends without its end event.

CrewAI emits ``CrewKickoffFailedEvent`` (and the agent's error event) only for an ``Exception``:
when ``asyncio`` cancels ``crew.akickoff()``, or a ``KeyboardInterrupt`` or another
``BaseException`` goes through ``crew.kickoff()``, the kickoff, its task and its agent are left
open on the bus. The same holds for a flow method CrewAI cancels itself (the losers of an
``or_`` race, a parallel branch still running when its flow fails or pauses). The event bus
cannot tell, so the entry points are watched: while a listener is registered, ``Crew.kickoff``
/ ``Crew.akickoff``, ``Agent.kickoff`` / ``Agent.kickoff_async`` / ``Agent.akickoff``,
``Flow.kickoff`` / ``Flow.kickoff_async`` (which ``Flow.akickoff`` runs) / ``Flow.resume`` /
``Flow.resume_async`` and ``Flow._execute_method`` (one method of a flow run) are wrapped, and a
``BaseException`` that is not an ``Exception`` going through one of them is reported (with the id
of the start event of the kickoff, flow run or method) before it propagates unchanged. Return
values and ``Exception`` are untouched, and the cost on the common path is one function call
(for a flow and each of its methods, two reads of CrewAI's scope stack). The wrapper of a flow
method also notes the parameters the method is called with and the result it returns, as they
are then (:class:`~sightline_crewai.mapping.MethodCall`): the next method, handed the same
objects, may change them before CrewAI's pool has run the handlers of the events.

A synchronous ``Flow.kickoff`` / ``Flow.resume`` runs its flow in ``asyncio.run``: a
``KeyboardInterrupt`` raised in a method stops the event loop, which then cancels the flow's
task, so the asynchronous entry point sees a ``CancelledError``; the synchronous one reports the
flow with the exception its caller gets.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sightline.logs import log_safely
from sightline_crewai.mapping import (
    flow_run,
    flow_run_ended,
    method_call,
    method_call_ended,
    note_crew_failure,
)
from sightline_crewai.patching import ORIGINAL, MethodPatches

__all__ = ["unwatch", "watch"]


OnAbort = Callable[[str, BaseException], None]
Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]

try:  # the scope stack CrewAI keeps in a context variable: (event id, event type), outermost first
    from crewai.events.event_context import _event_id_stack
except ImportError:  # older CrewAI: an interrupted flow's spans end when recording stops
    _event_id_stack = None  # type: ignore[assignment]

_lock = threading.Lock()
_runs_lock = threading.Lock()  # the synchronous flow runs' hand-over (_SyncRun)
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
        _hook_execution_end(True)


def unwatch() -> None:
    """Put the original entry points back (those nobody replaced since). Idempotent."""
    global _on_abort
    with _lock:
        _on_abort = None
        _patches.restore()
        _hook_execution_end(False)


def _hook_execution_end(on: bool) -> None:
    """Register (or remove) the interception hook CrewAI calls, with the exception, when a
    crew's kickoff fails: on the kickoff's thread, before it emits ``CrewKickoffFailedEvent``
    (which carries the message only). An older CrewAI without the hook: no type is noted."""
    try:
        from crewai.hooks.dispatch import InterceptionPoint, register, unregister
    except ImportError:
        return
    try:
        if on:
            register(InterceptionPoint.EXECUTION_END, _execution_ended)
        else:
            unregister(InterceptionPoint.EXECUTION_END, _execution_ended)
    except Exception:
        log_safely(logging.DEBUG, "sightline: crewai: cannot hook execution_end", exc_info=True)


def _execution_ended(context: Any) -> None:
    """CrewAI's ``execution_end`` hook: note the type of a failed kickoff's exception."""
    error = getattr(context, "error", None)
    crew = getattr(context, "crew", None)
    if error is None or crew is None:
        return None
    started = getattr(crew, "_kickoff_event_id", None)
    if started:
        note_crew_failure(str(started), error)
    return None


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
    """``Flow.kickoff_async`` / ``Flow.resume_async``: a flow keeps no id of its start event, but
    CrewAI pushes it on the scope stack of the context the run goes on in, and an interrupted run
    leaves it there: the first ``flow_started`` pushed during the call is this run's. The run
    is current while it goes on (see ``FlowRun``)."""

    @functools.wraps(original)
    async def watched_flow(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(type(self), "is_crewai_internal", False):
            return await original(self, *args, **kwargs)  # reported with their kickoff
        before = _scope_stack()
        token = flow_run(self)
        try:
            return await original(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            _scope_ended_abruptly(self, before, "flow_started", exc)
            raise
        finally:
            flow_run_ended(token)

    setattr(watched_flow, ORIGINAL, original)
    return watched_flow


def _watched_method(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Flow._execute_method(method_name, method, *args, **kwargs)``: one method of a flow
    run. CrewAI cancels some methods itself (the losers of an ``or_`` race; the parallel
    branches still running when ``asyncio.run`` ends a flow that failed or paused) and emits
    nothing then: the ``method_execution_started`` this call pushed on the scope stack names the
    method interrupted. The call is current while it runs (see ``MethodCall``)."""

    @functools.wraps(original)
    async def watched_method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(type(self), "is_crewai_internal", False) or len(args) < 2:
            # CrewAI's own flows (an agent's executor) record nothing; their kickoff is reported
            return await original(self, *args, **kwargs)
        before = _scope_stack()
        call, token = method_call(args[0], args[2:], kwargs, self)
        try:
            outcome = await original(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            _scope_ended_abruptly(self, before, "method_execution_started", exc)
            raise
        finally:
            method_call_ended(token)
        call.finished(outcome)
        return outcome

    setattr(watched_method, ORIGINAL, original)
    return watched_method


class _SyncRun:
    """A synchronous ``Flow.kickoff`` / ``Flow.resume`` going on: the flow run its asynchronous
    entry point saw interrupted, reported when the exception reaches the synchronous caller."""

    __slots__ = ("active", "error", "flow", "root_id")

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        self.active = True
        self.root_id: str | None = None
        self.error: BaseException | None = None


# Seen by the asynchronous entry point: asyncio.run (and the thread CrewAI uses inside a running
# loop) runs it in a copy of the synchronous caller's context.
_sync_run: ContextVar[_SyncRun | None] = ContextVar("sightline_crewai_sync_flow", default=None)


def _watched_sync_flow(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Flow.kickoff`` / ``Flow.resume``: report an interrupted flow run with the exception the
    caller gets (a ``KeyboardInterrupt`` in a method reaches the asynchronous entry point as a
    ``CancelledError``)."""

    @functools.wraps(original)
    def watched_sync_flow(self: Any, *args: Any, **kwargs: Any) -> Any:
        run = _SyncRun(self)
        token = _sync_run.set(run)
        error: BaseException | None = None
        try:
            return original(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            _sync_run.reset(token)
            with _runs_lock:
                run.active = False
            if run.root_id is not None:
                _report(run.root_id, error if error is not None else run.error)

    setattr(watched_sync_flow, ORIGINAL, original)
    return watched_sync_flow


def _scope_stack() -> tuple[tuple[str, str], ...]:
    try:
        return tuple(_event_id_stack.get()) if _event_id_stack is not None else ()
    except Exception:
        return ()


def _scope_ended_abruptly(
    flow: Any, before: tuple[tuple[str, str], ...], started: str, error: BaseException
) -> None:
    """Report the first scope of type ``started`` the call pushed (it ended by ``error``)."""
    try:
        if _on_abort is None or getattr(type(flow), "is_crewai_internal", False):
            return  # CrewAI's own flows (the agent executor) are reported with their kickoff
        after = _scope_stack()
        pushed = after[len(before) :] if after[: len(before)] == before else after
        root_id = next((str(event_id) for event_id, kind in pushed if kind == started), None)
        if root_id is None:
            return
        if started == "flow_started":
            run = _sync_run.get()
            if run is not None and run.flow is flow:
                with _runs_lock:
                    if run.active and run.root_id is None:
                        run.root_id, run.error = root_id, error
                        return
        _report(root_id, error)
    except Exception:
        log_safely(
            logging.DEBUG,
            "sightline: crewai: could not report an interrupted flow",
            exc_info=True,
        )


def _report(root_id: str, error: BaseException | None) -> None:
    try:
        on_abort = _on_abort
        if on_abort is not None and error is not None:
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
    # where CrewAI 1.15 defines them (older ones: crewai.flow.flow; a class defining no such
    # method of its own is skipped)
    *(
        (module, "Flow", names, wrapper)
        for module in ("crewai.flow.runtime", "crewai.flow.flow")
        for names, wrapper in (
            (("kickoff", "resume"), _watched_sync_flow),
            (("kickoff_async", "resume_async"), _watched_flow),
            (("_execute_method",), _watched_method),
        )
    ),
)
