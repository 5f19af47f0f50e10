"""Scopes: the agent turns, team runs and decisions in progress, and the tool calls they asked for.

AutoGen reports tool calls on its event loggers in three pieces: ``ToolCallRequestEvent`` (the
calls an agent's model asked for, with call ids), ``ToolCallEvent`` (one tool finished; no call
id) and ``ToolCallExecutionEvent`` (the results, by call id, with ``is_error``). The registry
ties them together through the framework's own identifiers — the agent name of the request and
the call ids — rather than through ``contextvars``, because a sync tool runs in a thread pool
without a copied context and a model client may log from anywhere. The context of the caller
only breaks ties (two concurrent turns of agents with the same name).

Every piece of state is guarded by one lock and bounded, so that turns AutoGen abandons
(cancellation, a crash) cannot grow memory without limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from sightline.client import AMBIENT
from sightline.event import ErrorKind, EventType
from sightline.span import current_span, use_span
from sightline_autogen.mapping import (
    FRAMEWORK,
    UNKNOWN_TOOL,
    agent_tool_names,
    parse_arguments,
)

if TYPE_CHECKING:
    from sightline.client import Client
    from sightline.span import Span

__all__ = [
    "REGISTRY",
    "PendingToolCall",
    "Scope",
    "ScopeRegistry",
    "WrappedCall",
    "activate",
    "current_scope",
    "direct_tool_run",
    "mark_wrapped_llm",
    "wrapped_llm_call",
    "wrapped_llm_span",
]


_CURRENT_SCOPE: ContextVar[Scope | None] = ContextVar("sightline_autogen_scope", default=None)
# Set while an instrumented model client runs a call: the event-log handler then leaves the
# call to the wrapper instead of recording it a second time (telling it when the stream began).
_WRAPPED_LLM: ContextVar[WrappedCall | None] = ContextVar(
    "sightline_autogen_wrapped_llm", default=None
)
# Set while a tool runs that no agent requested (``tool.run_json(...)`` called directly): its
# name and start, for the ``tool_call`` its ``ToolCallEvent`` reports when it has ended.
_DIRECT_TOOL: ContextVar[tuple[Any, int] | None] = ContextVar(
    "sightline_autogen_direct_tool", default=None
)

_MAX_PENDING_CALLS = 10_000
_MAX_STREAMS = 1_000


def current_scope() -> Scope | None:
    """The scope (agent turn, team run, decision) active in this context, or ``None``."""
    return _CURRENT_SCOPE.get()


def wrapped_llm_span() -> Span | None:
    """The span of the instrumented model-client call running in this context, if any."""
    call = _WRAPPED_LLM.get()
    return call.span if call is not None else None


def wrapped_llm_call() -> WrappedCall | None:
    """The instrumented model-client call running in this context, if any."""
    return _WRAPPED_LLM.get()


class WrappedCall:
    """A call of an instrumented model client in progress: its span, when the model client's
    own log said its stream began (``LLMStreamStartEvent``, logged on the first chunk received,
    whatever its kind), and the raw response it logged (``LLMCallEvent``), whose provider usage
    has the prompt-cache and reasoning tokens its ``RequestUsage`` lacks."""

    __slots__ = ("logged_response", "span", "stream_started_ns")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.stream_started_ns: int | None = None
        self.logged_response: Any = None


class Scope:
    """An agent turn, team run or decision in progress, and the tool calls it requested.

    ``mark_ns`` is the time of the scope's last step (its start, the end of a model call, the
    end of a tool execution): the start of a model call that was only seen when it ended.
    """

    __slots__ = (
        "key",
        "kind",
        "mark_ns",
        "name",
        "offered",
        "pending",
        "relay_output",
        "span",
        "subject",
        "unrequested",
    )

    def __init__(
        self, span: Span, kind: str, name: str, subject: object, key: str | None = None
    ) -> None:
        self.span = span
        self.kind = kind
        self.name = name
        self.subject = subject  # the agent, team or manager whose work this is
        self.key = key
        self.mark_ns = span.event.start_ns
        self.pending: dict[str, PendingToolCall] = {}
        # Tools that reported a result whose request was not seen, awaiting their call id.
        self.unrequested: list[PendingToolCall] = []
        self.relay_output = False  # take the output from the messages the container logs
        # With capture_content off only: the names of the tools offered to the scope's model
        # calls (as the model client logged them), which the agent may not list itself.
        self.offered: set[str] | None = None

    def known_tools(self) -> set[str]:
        """The names of the tools this scope's agent has: a tool name its model asked for that
        is none of them was made up (model output)."""
        known = agent_tool_names(self.subject) if self.kind == "agent" else set()
        if self.offered:
            known |= self.offered
        return known

    def __repr__(self) -> str:
        return f"<Scope {self.kind} {self.name!r} span={self.span.span_id}>"


class activate:
    """Make a scope (and its span) current for one step of work, without ending it."""

    __slots__ = ("_scope", "_span_ctx", "_token", "_wrapped_token")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._span_ctx = use_span(scope.span)
        self._token: Token[Scope | None] | None = None

    def __enter__(self) -> Scope:
        self._span_ctx.__enter__()
        self._token = _CURRENT_SCOPE.set(self._scope)
        return self._scope

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                _CURRENT_SCOPE.reset(token)
            except ValueError:
                pass
        self._span_ctx.__exit__(*exc)


class mark_wrapped_llm:
    """Mark the current context as inside an instrumented model-client call."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: WrappedCall) -> None:
        self._call = call
        self._token: Token[WrappedCall | None] | None = None

    def __enter__(self) -> None:
        self._token = _WRAPPED_LLM.set(self._call)

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                _WRAPPED_LLM.reset(token)
            except ValueError:
                pass


class direct_tool_run:
    """Mark the current context as running the tool ``name`` directly, since ``start_ns``
    (default: now)."""

    __slots__ = ("_name", "_start_ns", "_token")

    def __init__(self, name: Any, start_ns: int | None = None) -> None:
        self._name = name
        self._start_ns = start_ns
        self._token: Token[tuple[Any, int] | None] | None = None

    def __enter__(self) -> None:
        start = self._start_ns if self._start_ns is not None else time.time_ns()
        self._token = _DIRECT_TOOL.set((self._name, start))

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                _DIRECT_TOOL.reset(token)
            except ValueError:
                pass


class PendingToolCall:
    """A tool call an agent's model requested, waiting for its result.

    ``name`` is the name the model asked for, whatever its span is named (see
    :meth:`ScopeRegistry.request_tools`): reports are matched by it."""

    __slots__ = ("arguments", "call_id", "denied", "end_ns", "ended", "name", "scope", "span")

    def __init__(
        self, call_id: str | None, name: str, arguments: Any, span: Span, scope: Scope | None
    ) -> None:
        self.call_id = call_id
        self.name = name
        self.arguments = arguments
        self.span = span
        self.scope = scope
        self.ended = False
        self.end_ns: int | None = None
        self.denied = False  # a governance policy refused it: its error is already set


class ScopeRegistry:
    """The scopes in progress, by agent name and team id, and the pending tool calls by call id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, list[Scope]] = {}
        self._teams: dict[str, Scope] = {}
        self._calls: OrderedDict[str, list[PendingToolCall]] = OrderedDict()
        self._streams: OrderedDict[Any, tuple[int, Any, Scope | None]] = OrderedDict()

    # -- scopes -------------------------------------------------------------------------------

    def open(
        self,
        client: Client,
        kind: str,
        name: str,
        owner: object,
        *,
        event_type: EventType,
        parent: Any,
        key: str | None = None,
        input: Any = None,
        metadata: dict[str, Any] | None = None,
        agent: str | None = None,
    ) -> Scope | None:
        """Start the span of a scope and register it; ``None`` when nothing is recorded."""
        span = client.start_span(
            name,
            event_type,
            parent=parent,
            input=input,
            metadata=metadata,
            framework=FRAMEWORK,
            agent=agent,
        )
        if not span.is_recording:
            return None
        scope = Scope(span, kind, name, owner, key)
        with self._lock:
            if kind == "agent":
                self._agents.setdefault(name, []).append(scope)
            elif kind == "team" and key is not None:
                self._teams[key] = scope
        return scope

    def close(
        self, scope: Scope, error: BaseException | None = None, *, closed_early: bool = False
    ) -> None:
        """End a scope's span, and the tool calls it left unfinished (errors of kind
        ``orchestration``, type ``Incomplete``: the tool did nothing wrong). ``closed_early``:
        the caller stopped reading the scope's stream before its end (metadata
        ``closed_early``)."""
        with self._lock:
            if scope.kind == "agent":
                scopes = self._agents.get(scope.name)
                if scopes is not None:
                    try:
                        scopes.remove(scope)
                    except ValueError:
                        pass
                    if not scopes:
                        del self._agents[scope.name]
            elif (
                scope.kind == "team"
                and scope.key is not None
                and self._teams.get(scope.key) is scope
            ):
                del self._teams[scope.key]
            leftovers = list(scope.pending.values())
            scope.pending.clear()
            for pending in leftovers:
                self._forget_call(pending)
            unrequested, scope.unrequested = scope.unrequested, []
        for pending in unrequested:
            pending.span.end(pending.end_ns)
        for pending in leftovers:
            if pending.denied and not pending.ended:
                pending.ended = True
                pending.span.end()
            elif not pending.ended:
                pending.ended = True
                pending.span.set_error(
                    kind=ErrorKind.ORCHESTRATION,
                    type="Incomplete",
                    message=(
                        "the caller stopped reading the agent's stream before the tool call "
                        "reported a result"
                        if closed_early
                        else "the agent turn ended before the tool call reported a result"
                    ),
                )
                pending.span.end()
        if closed_early:
            scope.span.set_metadata({"closed_early": True})
        if error is not None:
            scope.span.set_error(error)
        scope.span.end()

    def agent_scope(self, name: str | None) -> Scope | None:
        """The turn in progress of the agent called ``name``.

        The turn active in this context wins when it is that agent's; otherwise the latest turn
        of an agent of that name.
        """
        current = _CURRENT_SCOPE.get()
        if (
            current is not None
            and current.kind == "agent"
            and (name is None or current.name == name)
        ):
            return current
        if name is None:
            return None
        with self._lock:
            scopes = self._agents.get(name)
            return scopes[-1] if scopes else None

    def team_span(self, team_id: str | None) -> Span | None:
        """The run span of the team with this id (AutoGen's ``team_id``), if it is running."""
        if not team_id:
            return None
        with self._lock:
            scope = self._teams.get(team_id)
        return scope.span if scope is not None else None

    def clear(self) -> None:
        """Forget everything (on uninstrument)."""
        with self._lock:
            self._agents.clear()
            self._teams.clear()
            self._calls.clear()
            self._streams.clear()

    # -- tool calls ---------------------------------------------------------------------------

    def request_tools(
        self, client: Client, agent_name: str | None, calls: list[dict[str, Any]], now_ns: int
    ) -> None:
        """Open one ``tool_call`` span per requested call, under the requesting agent's turn.

        With ``capture_content`` off, a call naming none of the agent's tools is named
        ``unknown_tool`` (until the tool itself reports it ran: see :meth:`finish_tool`).
        """
        scope = self.agent_scope(agent_name)
        parent = scope.span if scope is not None else AMBIENT
        known = None if client.config.capture_content else _known_tools(scope)
        for call in calls:
            call_id = call.get("id")
            name = call.get("name") or "tool"
            arguments = parse_arguments(call.get("arguments"))
            span = client.start_span(
                name if known is None or name in known else UNKNOWN_TOOL,
                EventType.TOOL_CALL,
                parent=parent,
                input=arguments,
                metadata={"call_id": call_id},
                framework=FRAMEWORK,
                start_ns=now_ns,
            )
            if not span.is_recording:
                return
            if not isinstance(call_id, str):
                # Without an id the result cannot be matched later: record the request alone.
                span.end(now_ns)
                continue
            pending = PendingToolCall(call_id, name, arguments, span, scope)
            with self._lock:
                if scope is not None:
                    scope.pending[call_id] = pending
                self._calls.setdefault(call_id, []).append(pending)
                self._calls.move_to_end(call_id)
                while len(self._calls) > _MAX_PENDING_CALLS:
                    self._calls.popitem(last=False)

    def deny(self, pending: PendingToolCall, denied: BaseException) -> None:
        """A governance policy refused the call: its ``tool_call`` fails with kind
        ``guardrail`` (AutoGen then reports it as a failed tool call, or the agent fails)."""
        with self._lock:
            pending.denied = True
        pending.span.set_error(denied, kind=ErrorKind.GUARDRAIL)

    def pending_call(self, call_id: str | None) -> PendingToolCall | None:
        """The pending call with this id (preferring the current turn's)."""
        if not call_id:
            return None
        scope = _CURRENT_SCOPE.get()
        with self._lock:
            if scope is not None:
                pending = scope.pending.get(call_id)
                if pending is not None:
                    return pending
            candidates = self._calls.get(call_id)
            return candidates[-1] if candidates else None

    def finish_tool(
        self, client: Client, tool_name: str, arguments: Any, result: Any, now_ns: int
    ) -> None:
        """A tool reported success (``ToolCallEvent``): end its pending span with the result.

        The event has no call id, so the pending call is found by tool name and arguments, in
        the current turn first: the requested call running in this context (``run_json`` makes
        its span ambient) when it is one of them, else the first, never one a policy refused
        (it did not run; a call of the same tool and arguments in the same turn did). A tool
        whose request was not seen (run directly, outside an agent's tool loop) is recorded on
        its own under the ambient span — the current turn, or a span inside it (another tool's
        ``tool_call``, a ``@monitor`` function) — starting when its ``run_json`` started when
        that was seen; directly in a turn it waits for the turn's results to learn its call id.
        """
        scope = _CURRENT_SCOPE.get()
        ambient = current_span()
        with self._lock:
            found = None
            if scope is not None:
                found = _match(scope.pending.values(), tool_name, arguments, ambient)
            if found is None:
                found = _match(
                    (p for group in self._calls.values() for p in group),
                    tool_name,
                    arguments,
                    ambient,
                )
            if found is not None:
                found.ended = True
        if found is not None:
            if found.span.event.name == UNKNOWN_TOOL:
                found.span.event.name = tool_name  # the tool ran: its name is the code's
            found.span.set_output(result)
            found.span.end(now_ns)
            return
        parent: Any = AMBIENT
        nested = False
        if scope is not None:
            # A span opened inside the turn (another tool's call, a monitored function) is
            # where this tool ran; the turn's own span or a span of another trace is not.
            nested = (
                ambient is not None
                and ambient is not scope.span
                and ambient.event.trace_id == scope.span.event.trace_id
            )
            if not nested:
                parent = scope.span
        start_ns = now_ns
        direct = _DIRECT_TOOL.get()
        if direct is not None and direct[0] == tool_name:
            start_ns = min(direct[1], now_ns)
        span = client.start_span(
            tool_name,
            EventType.TOOL_CALL,
            parent=parent,
            input=arguments,
            metadata={"call_id": None},
            framework=FRAMEWORK,
            start_ns=start_ns,
        )
        span.set_output(result)
        if scope is None or scope.kind != "agent" or nested or not span.is_recording:
            span.end(now_ns)
            return
        pending = PendingToolCall(None, tool_name, arguments, span, scope)
        pending.end_ns = now_ns
        with self._lock:
            scope.unrequested.append(pending)

    def complete_tools(
        self, client: Client, agent_name: str | None, results: list[dict[str, Any]], now_ns: int
    ) -> None:
        """Tool results arrived (``ToolCallExecutionEvent``): end each call, by call id."""
        scope = self.agent_scope(agent_name)
        for result in results:
            call_id = result.get("call_id")
            pending = None
            with self._lock:
                if scope is not None and isinstance(call_id, str):
                    pending = scope.pending.pop(call_id, None)
                if pending is None and isinstance(call_id, str):
                    candidates = self._calls.get(call_id)
                    pending = candidates[-1] if candidates else None
                    if pending is not None and pending.scope is not None:
                        pending.scope.pending.pop(call_id, None)
                if pending is not None:
                    self._forget_call(pending)
            content = result.get("content")
            is_error = bool(result.get("is_error"))
            if pending is None and scope is not None:
                pending = self._claim_unrequested(scope, result.get("name"), content)
                if pending is not None:
                    pending.span.set_metadata(call_id=call_id)
                    pending.span.end(pending.end_ns)
                    continue
            if pending is None:
                name = result.get("name") or "tool"
                if not client.config.capture_content and name not in _known_tools(scope):
                    name = UNKNOWN_TOOL
                span = client.start_span(
                    name,
                    EventType.TOOL_CALL,
                    parent=scope.span if scope is not None else AMBIENT,
                    metadata={"call_id": call_id},
                    framework=FRAMEWORK,
                    start_ns=now_ns,
                )
                _finish_tool_span(span, content, is_error, now_ns)
                continue
            if pending.ended:
                continue
            pending.ended = True
            # A denied call keeps its own error (kind guardrail); AutoGen reports it as failed.
            _finish_tool_span(pending.span, content, is_error and not pending.denied, now_ns)
        if scope is not None:
            scope.mark_ns = now_ns

    def offer_tools(self, scope: Scope, names: list[str]) -> None:
        """Note the tools offered to a model call of ``scope`` (see ``Scope.offered``)."""
        if not names:
            return
        with self._lock:
            if scope.offered is None:
                scope.offered = set(names)
            else:
                scope.offered.update(names)

    def _claim_unrequested(self, scope: Scope, name: Any, content: Any) -> PendingToolCall | None:
        with self._lock:
            for index, pending in enumerate(scope.unrequested):
                if pending.name == name and pending.span.event.output == content:
                    return scope.unrequested.pop(index)
        return None

    def _forget_call(self, pending: PendingToolCall) -> None:
        # Caller holds the lock.
        if pending.call_id is None:
            return
        candidates = self._calls.get(pending.call_id)
        if candidates is None:
            return
        try:
            candidates.remove(pending)
        except ValueError:
            return
        if not candidates:
            del self._calls[pending.call_id]

    # -- model streams seen on the event logger -----------------------------------------------

    def stream_started(self, key: Any, start_ns: int, messages: Any) -> None:
        """Remember an ``LLMStreamStartEvent`` until its end event arrives."""
        with self._lock:
            self._streams[key] = (start_ns, messages, _CURRENT_SCOPE.get())
            while len(self._streams) > _MAX_STREAMS:
                self._streams.popitem(last=False)

    def stream_ended(self, key: Any) -> tuple[int, Any, Scope | None] | None:
        """The start of the stream that just ended (``LLMStreamEndEvent``), if it was seen."""
        with self._lock:
            return self._streams.pop(key, None)


def _match(pendings: Any, tool_name: str, arguments: Any, running: Any) -> PendingToolCall | None:
    """The unfinished call of ``tool_name`` with ``arguments`` among ``pendings`` that a tool's
    report belongs to: the one whose span is ``running`` (the ambient span: the requested call
    running in this context), else the first one not refused by a policy (which never ran)."""
    candidates = [
        pending
        for pending in pendings
        if not pending.ended and pending.name == tool_name and pending.arguments == arguments
    ]
    for pending in candidates:
        if running is not None and pending.span is running:
            return pending
    return next((pending for pending in candidates if not pending.denied), None)


def _known_tools(scope: Scope | None) -> set[str]:
    """The names of the tools of ``scope``'s agent (none known outside a scope)."""
    return scope.known_tools() if scope is not None else set()


def _finish_tool_span(span: Span, content: Any, is_error: bool, now_ns: int) -> None:
    span.set_output(content)
    if is_error:
        message = content if isinstance(content, str) else ""
        span.set_error(kind=ErrorKind.TOOL, type="ToolError", message=message)
    span.end(now_ns)


REGISTRY = ScopeRegistry()
"""The registry shared by the event-log handler, the structure patches and the handlers."""
