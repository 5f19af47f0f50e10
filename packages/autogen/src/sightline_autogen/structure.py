"""Agent and team structure: ``agent`` and ``run`` spans around AutoGen's units of work.

AutoGen's event loggers report model and tool calls but not where a turn begins or ends, so the
global instrumentation wraps a few methods (and restores them on ``uninstrument``):

==========================================================  ===================================
method                                                      span
==========================================================  ===================================
``BaseChatAgent.run`` / ``run_stream``                      ``agent`` named after the agent
``AssistantAgent.on_messages`` / ``on_messages_stream``     ``agent`` (when not already inside
                                                            one of the same agent)
``BaseGroupChat.run`` / ``run_stream`` (RoundRobinGroupChat,  ``run`` named after the team
SelectorGroupChat, Swarm, ...)
``ChatAgentContainer.handle_request`` (a participant's turn  ``agent`` under the team's ``run``
in a team)
``ChatAgentContainer._log_message``                          none: the turn's output (the last
                                                            chat message the participant gave)
``SelectorGroupChatManager.select_speaker``                 ``decision`` ``select_speaker``
``BaseTool.run_json`` / ``BaseStreamTool.run_json_stream``  none: asks the governance
                                                            plugins (when one is registered),
                                                            then makes the requested tool
                                                            call's span ambient for the tool
                                                            (an ``AgentTool`` / ``TeamTool``
                                                            runs its agent or team under it)
``FunctionTool.run``                                        none: runs a sync tool in the
                                                            thread pool with the caller's
                                                            context
``AssistantAgent._execute_tool_call`` /                     none: asks the governance plugins
``_check_and_handle_handoff`` / ``_summarize_tool_use``     about a handoff; a denied one fails
                                                            instead of transferring (see
                                                            :mod:`~sightline_autogen.handoffs`)
==========================================================  ===================================

Inside each span the model and tool events of that turn nest. A turn is entered and left one
step at a time (each ``__anext__`` of a stream), so the ambient span never leaks into the code
consuming the stream.

A wrapper can outlive ``uninstrument``: AutoGen's ``RoutedAgent`` copies its message handlers
(``handle_request``) into each instance, so a team built while instrumented keeps the wrapper
after the class attribute is restored. Every wrapper therefore looks up the live patcher at each
call (:func:`live_patcher`) and passes straight through when there is none; a later
``instrument`` makes those old wrappers report to the new client.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sightline.client import AMBIENT, get_client
from sightline.errors import ToolDenied
from sightline.event import EventType
from sightline.governance import authorize, enforced
from sightline.logs import log_safely
from sightline.span import current_span, use_span
from sightline_autogen.handoffs import (
    DeniedHandoff,
    arguments_with_defaults,
    authorize_handoff,
    denied_calls,
    handoff_tool_of,
    handoffs_not_denied,
    is_running_handoff,
    refuse_handoff,
    running_handoff,
    without_denied_calls,
    without_denied_results,
)
from sightline_autogen.mapping import FRAMEWORK, agent_input, message_view
from sightline_autogen.scopes import (
    REGISTRY,
    PendingToolCall,
    Scope,
    activate,
    current_scope,
    direct_tool_run,
)

if TYPE_CHECKING:
    from sightline.client import Client

__all__ = ["PATCHES", "MethodPatch", "StructurePatcher", "live_patcher"]


# The patcher of the instrumentation that is on, or None: read by every wrapper at each call.
_LIVE: StructurePatcher | None = None


def live_patcher() -> StructurePatcher | None:
    """The patcher of the global instrumentation that is on (``None`` when it is off)."""
    return _LIVE


@dataclass(frozen=True)
class MethodPatch:
    """One method of one AutoGen class to wrap: where it is and how to wrap it."""

    module: str
    owner: str
    attribute: str
    wrap: Callable[[Any], Any]


class StructurePatcher:
    """Applies and removes the method patches; knows which Sightline client to report to."""

    def __init__(self, client: Client | None = None) -> None:
        self.client = client
        self._applied: dict[tuple[str, str, str], tuple[type, Any, Any]] = {}
        self._warned = False

    def make_live(self) -> None:
        """Make this patcher the one every wrapper (old or new) reports through."""
        global _LIVE
        _LIVE = self

    def resolve_client(self) -> Client:
        """The client given to the patcher, else the global one (looked up at each event)."""
        return self.client if self.client is not None else get_client()

    def apply_for_module(self, module_name: str, module: Any) -> None:
        """Apply the patches that target ``module_name`` (just imported, or already loaded)."""
        for patch in PATCHES:
            if patch.module == module_name:
                self._apply(patch, module)

    def _apply(self, patch: MethodPatch, module: Any) -> None:
        key = (patch.module, patch.owner, patch.attribute)
        if key in self._applied:
            return
        try:
            owner = getattr(module, patch.owner)
            original = owner.__dict__[patch.attribute]
            wrapper = patch.wrap(original)
            setattr(owner, patch.attribute, wrapper)
        except Exception as exc:  # a changed AutoGen layout loses one span kind, nothing else
            log_safely(
                logging.DEBUG,
                "sightline: AutoGen %s.%s.%s not instrumented: %s",
                patch.module,
                patch.owner,
                patch.attribute,
                exc,
            )
            return
        self._applied[key] = (owner, original, wrapper)

    def remove_all(self) -> None:
        """Restore every original method that is still our wrapper; wrappers that AutoGen
        copied into instances pass through from now on."""
        global _LIVE
        if _LIVE is self:
            _LIVE = None
        applied, self._applied = self._applied, {}
        for (_, _, attribute), (owner, original, wrapper) in applied.items():
            if owner.__dict__.get(attribute) is wrapper:
                setattr(owner, attribute, original)

    def wraps(self, module: str, owner: str, attribute: str) -> bool:
        """Whether ``owner.attribute`` (of ``module``) is currently wrapped by this patcher."""
        return (module, owner, attribute) in self._applied

    @property
    def applied(self) -> list[str]:
        """``Owner.attribute`` of each method currently wrapped."""
        return sorted(f"{owner}.{attribute}" for (_, owner, attribute) in self._applied)

    def warn_once(self, what: str, exc: Exception) -> None:
        """Report a recording failure once (logger ``sightline``); AutoGen goes on."""
        if not self._warned:
            self._warned = True
            log_safely(
                logging.WARNING,
                "sightline: AutoGen %s not recorded: %s: %s",
                what,
                type(exc).__name__,
                exc,
            )


# -- scopes ------------------------------------------------------------------------------------


def _open_agent(
    patcher: StructurePatcher,
    agent: Any,
    task: Any,
    *,
    parent: Any = AMBIENT,
    metadata: dict[str, Any] | None = None,
) -> Scope | None:
    """Open an ``agent`` scope for ``agent`` unless one of the same agent is already current."""
    try:
        if _inside(agent, "agent") is not None:
            return None
        name = str(getattr(agent, "name", None) or type(agent).__name__)
        fields = {"agent_type": type(agent).__name__}
        if metadata:
            fields.update(metadata)
        return REGISTRY.open(
            patcher.resolve_client(),
            "agent",
            name,
            agent,
            event_type=EventType.AGENT,
            parent=parent,
            input=agent_input(task),
            metadata=fields,
            agent=name,
        )
    except Exception as exc:
        patcher.warn_once("agent turn", exc)
        return None


def _open_team(patcher: StructurePatcher, team: Any, task: Any) -> Scope | None:
    try:
        if _inside(team, "team") is not None:
            return None
        name = str(getattr(team, "name", None) or type(team).__name__)
        team_id = getattr(team, "_team_id", None)
        participants = [
            str(getattr(p, "name", "?")) for p in getattr(team, "_participants", None) or []
        ]
        return REGISTRY.open(
            patcher.resolve_client(),
            "team",
            name,
            team,
            event_type=EventType.RUN,
            parent=AMBIENT,
            key=team_id if isinstance(team_id, str) else None,
            input=agent_input(task),
            metadata={
                "team_type": type(team).__name__,
                "participants": participants,
                "team_id": team_id,
            },
        )
    except Exception as exc:
        patcher.warn_once("team run", exc)
        return None


def _observe(scope: Scope, item: Any) -> None:
    """Take the output of a turn or run from what it produced (a Response or a TaskResult)."""
    chat_message = getattr(item, "chat_message", None)
    if chat_message is not None:
        scope.span.set_output(message_view(chat_message))
        return
    messages = getattr(item, "messages", None)
    if messages is not None and hasattr(item, "stop_reason"):
        messages = list(messages)
        scope.span.set_output(message_view(messages[-1]) if messages else None)
        metadata: dict[str, Any] = {"message_count": len(messages)}
        if item.stop_reason is not None:
            metadata["stop_reason"] = item.stop_reason
        scope.span.set_metadata(metadata)


def _is_final(item: Any) -> bool:
    """Whether ``item`` is the last a stream yields: a ``Response`` or a ``TaskResult``."""
    if getattr(item, "chat_message", None) is not None:
        return True
    return getattr(item, "messages", None) is not None and hasattr(item, "stop_reason")


def _close(
    patcher: StructurePatcher,
    scope: Scope,
    error: BaseException | None,
    closed_early: bool = False,
) -> None:
    try:
        REGISTRY.close(scope, error, closed_early=closed_early)
    except Exception as exc:
        patcher.warn_once("end of a turn", exc)


def _safe_observe(patcher: StructurePatcher, scope: Scope, item: Any) -> None:
    try:
        _observe(scope, item)
    except Exception as exc:
        patcher.warn_once("output of a turn", exc)


def _scoped_coroutine(
    original: Any,
    open_scope: Callable[[StructurePatcher, Any, tuple[Any, ...], dict[str, Any]], Scope | None],
    observe: Callable[[Scope, Any], None] = _observe,
) -> Any:
    """Wrap the coroutine method ``original`` so that it runs inside the scope ``open_scope``
    opens (or as it is, when that returns None or the instrumentation is off). One frame deep:
    every suspension of the wrapped method passes through it."""

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        patcher = _LIVE
        if patcher is None:
            return await original(self, *args, **kwargs)
        scope = open_scope(patcher, self, args, kwargs)
        if scope is None:
            return await original(self, *args, **kwargs)
        try:
            with activate(scope):
                result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _close(patcher, scope, exc)
            raise
        try:
            observe(scope, result)
        except Exception as exc:
            patcher.warn_once("output of a turn", exc)
        _close(patcher, scope, None)
        return result

    return wrapper


async def _stream_in_scope(
    patcher: StructurePatcher, open_scope: Callable[[], Scope | None], stream: Any
) -> AsyncGenerator[Any, None]:
    """Relay ``stream``, each step inside the scope opened at the first step."""
    scope = open_scope()
    if scope is None:
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()
        return
    error: BaseException | None = None
    finished = closed_early = False
    try:
        while True:
            with activate(scope):
                try:
                    item = await stream.__anext__()
                except StopAsyncIteration:
                    break
            _safe_observe(patcher, scope, item)
            # The final item (the turn's Response, the run's TaskResult): a caller may stop
            # reading there without cutting anything short.
            finished = _is_final(item)
            yield item
    except GeneratorExit:
        closed_early = not finished  # the caller stopped reading (break, aclose) mid-way
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            await stream.aclose()
        finally:
            _close(patcher, scope, error, closed_early)


def _inside(subject: object, kind: str) -> Scope | None:
    """The current scope when it is ``subject``'s own (a method called from another of its
    methods: ``run`` -> ``on_messages`` -> ``on_messages_stream``)."""
    scope = current_scope()
    if scope is not None and scope.kind == kind and scope.subject is subject:
        return scope
    return None


def _task_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs["task"] if "task" in kwargs else (args[0] if args else None)


def _messages_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs["messages"] if "messages" in kwargs else (args[0] if args else None)


# -- wrappers ----------------------------------------------------------------------------------


def wrap_agent_run(original: Any) -> Any:
    """``BaseChatAgent.run``: an ``agent`` span for the run."""
    return _scoped_coroutine(
        original,
        lambda patcher, agent, args, kwargs: _open_agent(patcher, agent, _task_of(args, kwargs)),
    )


def _wrap_stream_method(
    original: Any,
    kind: str,
    open_scope: Callable[[StructurePatcher, Any, tuple[Any, ...], dict[str, Any]], Scope | None],
) -> Any:
    """Wrap the async-generator method ``original``: its stream runs inside the scope
    ``open_scope`` opens at the first step, unless already inside ``self``'s own scope."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        stream = original(self, *args, **kwargs)
        patcher = _LIVE
        if patcher is None or _inside(self, kind) is not None:
            return stream
        return _stream_in_scope(patcher, lambda: open_scope(patcher, self, args, kwargs), stream)

    return wrapper


def wrap_agent_run_stream(original: Any) -> Any:
    """``BaseChatAgent.run_stream``: an ``agent`` span around the stream."""
    return _wrap_stream_method(
        original,
        "agent",
        lambda patcher, agent, args, kwargs: _open_agent(patcher, agent, _task_of(args, kwargs)),
    )


def wrap_agent_on_messages(original: Any) -> Any:
    """``AssistantAgent.on_messages``: an ``agent`` span, unless already in this agent's turn."""
    return _scoped_coroutine(
        original,
        lambda patcher, agent, args, kwargs: _open_agent(
            patcher, agent, _messages_of(args, kwargs)
        ),
    )


def wrap_agent_on_messages_stream(original: Any) -> Any:
    """``AssistantAgent.on_messages_stream``: as ``on_messages``, for the stream."""
    return _wrap_stream_method(
        original,
        "agent",
        lambda patcher, agent, args, kwargs: _open_agent(
            patcher, agent, _messages_of(args, kwargs)
        ),
    )


def wrap_team_run(original: Any) -> Any:
    """``BaseGroupChat.run``: a ``run`` span for the team run."""
    return _scoped_coroutine(
        original,
        lambda patcher, team, args, kwargs: _open_team(patcher, team, _task_of(args, kwargs)),
    )


def wrap_team_run_stream(original: Any) -> Any:
    """``BaseGroupChat.run_stream``: a ``run`` span around the stream."""
    return _wrap_stream_method(
        original,
        "team",
        lambda patcher, team, args, kwargs: _open_team(patcher, team, _task_of(args, kwargs)),
    )


def _open_container_turn(
    patcher: StructurePatcher, container: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Scope | None:
    """A participant's turn in a team: an agent scope under the team's run."""
    agent = getattr(container, "_agent", None)
    if agent is None or not hasattr(agent, "on_messages_stream"):  # a team runs its own span
        return None
    team_id = _agent_key(container)
    team_span = REGISTRY.team_span(team_id)
    scope = _open_agent(
        patcher,
        agent,
        list(getattr(container, "_message_buffer", None) or []),
        parent=team_span if team_span is not None else AMBIENT,
        metadata={"team_id": team_id},
    )
    if scope is not None:
        scope.relay_output = True
    return scope


def wrap_container_request(original: Any) -> Any:
    """``ChatAgentContainer.handle_request``: a participant's turn as an ``agent`` span."""
    # functools.wraps (in _scoped_coroutine) copies the message-handler markers (target_types,
    # router...) that AutoGen's RoutedAgent reads when it discovers handlers. RoutedAgent also
    # copies this wrapper into every container it builds: hence the live-patcher check.
    return _scoped_coroutine(original, _open_container_turn)


def wrap_container_log_message(original: Any) -> Any:
    """``ChatAgentContainer._log_message``: the output of a participant's turn.

    The container logs every message its agent streams, the response's chat message last,
    whatever the agent's class (``AssistantAgent``, ``UserProxyAgent``, ``CodeExecutorAgent``,
    a custom ``BaseChatAgent``): the last chat message logged in the turn is its output.
    """

    @functools.wraps(original)
    async def log_message(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        patcher = _LIVE
        if patcher is not None:
            scope = current_scope()
            if (
                scope is not None
                and scope.relay_output
                and scope.subject is getattr(self, "_agent", None)
                and hasattr(type(message), "to_model_message")  # a chat message, not an event
            ):
                try:
                    scope.span.set_output(message_view(message))
                except Exception as exc:
                    patcher.warn_once("output of a turn", exc)
        return await original(self, message, *args, **kwargs)

    return log_message


def _open_selection(
    patcher: StructurePatcher, manager: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Scope | None:
    try:
        team_span = REGISTRY.team_span(_agent_key(manager))
        return REGISTRY.open(
            patcher.resolve_client(),
            "decision",
            "select_speaker",
            manager,
            event_type=EventType.DECISION,
            parent=team_span if team_span is not None else AMBIENT,
            input={"participants": list(getattr(manager, "_participant_names", None) or [])},
            metadata={"manager": type(manager).__name__},
        )
    except Exception as exc:
        patcher.warn_once("speaker selection", exc)
        return None


def _observe_selection(scope: Scope, selected: Any) -> None:
    scope.span.set_output(selected)


def wrap_select_speaker(original: Any) -> Any:
    """``SelectorGroupChatManager.select_speaker``: a ``decision`` span."""
    return _scoped_coroutine(original, _open_selection, _observe_selection)


def _requested_call(
    patcher: StructurePatcher, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The pending call a ``run_json`` / ``run_json_stream`` call runs (by its ``call_id``)."""
    call_id = kwargs.get("call_id", args[2] if len(args) > 2 else None)
    try:
        return REGISTRY.pending_call(call_id) if isinstance(call_id, str) else None
    except Exception as exc:
        patcher.warn_once("tool context", exc)
        return None


def _authorized(
    patcher: StructurePatcher,
    tool: Any,
    pending: PendingToolCall | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments to run ``tool`` with, once the governance plugins allowed it (unchanged,
    at the cost of one :func:`~sightline.governance.enforced` call, when no policy is
    registered). A deny raises ToolDenied where the tool would have run, after its ``decision``
    event; the requested call's ``tool_call`` fails with kind ``guardrail``."""
    try:
        client = patcher.resolve_client()
        if _is_handoff(patcher, tool) or not enforced(client):  # handoffs: asked before
            return args, kwargs
        arguments = args[0] if args else kwargs.get("args")
        if not isinstance(arguments, Mapping):
            return args, kwargs
        # The policy sees the defaults too; allowed as they are, the tool fills them in itself.
        given = arguments_with_defaults(tool, dict(arguments))
        name = str(getattr(tool, "name", None) or type(tool).__name__)
    except Exception as exc:
        patcher.warn_once("tool governance", exc)
        return args, kwargs
    try:
        allowed = authorize(name, given, client=client, framework=FRAMEWORK)
    except ToolDenied as denied:
        if pending is not None:
            REGISTRY.deny(pending, denied)
        raise
    if allowed is given:
        return args, kwargs
    if pending is not None:
        # The tool runs with what the policy gave: that is its input, and what its result
        # (ToolCallEvent) reports.
        pending.arguments = allowed
        pending.span.set_input(allowed)
    if args:
        return (allowed, *args[1:]), kwargs
    return args, {**kwargs, "args": allowed}


def _is_handoff(patcher: StructurePatcher, tool: Any) -> bool:
    """Whether ``tool`` is a handoff, which is not submitted here.

    AutoGen runs a handoff outside its workbench, where an exception leaves the agent waiting
    for ever (0.7.5). An agent's handoffs are submitted before they run instead, once, by
    :func:`wrap_execute_tool_call`, which can refuse one without raising, and which marks the
    handoff tool it runs (whatever its class: a ``Handoff`` subclass may make its own).

    Where that step of AutoGen is not wrapped (another layout), nothing can refuse a handoff
    without hanging the agent: AutoGen's own handoffs (``Handoff.handoff_tool``) then run
    ungoverned, as documented (nothing here can refuse them)."""
    if is_running_handoff(tool):
        return True
    if patcher.wraps(*_HANDOFF_STEP):
        return False
    func = getattr(tool, "__dict__", {}).get("_func")
    return str(getattr(func, "__qualname__", "")).startswith("Handoff.handoff_tool.")


def wrap_tool_run_json(original: Any) -> Any:
    """``BaseTool.run_json``: the governance plugins are asked first; the requested call's
    ``tool_call`` span is ambient in the tool; a tool run directly (no requested call) has
    its start remembered for its ``tool_call``."""

    @functools.wraps(original)
    async def run_json(self: Any, *args: Any, **kwargs: Any) -> Any:
        patcher = _LIVE
        if patcher is None:
            return await original(self, *args, **kwargs)
        pending = _requested_call(patcher, args, kwargs)
        if pending is None:
            with direct_tool_run(getattr(self, "name", None)):
                args, kwargs = _authorized(patcher, self, None, args, kwargs)
                return await original(self, *args, **kwargs)
        # The tool's own code (and any Sightline span it opens) runs under its tool_call span.
        with use_span(pending.span):
            args, kwargs = _authorized(patcher, self, pending, args, kwargs)
            return await original(self, *args, **kwargs)

    return run_json


def wrap_tool_run_json_stream(original: Any) -> Any:
    """``BaseStreamTool.run_json_stream`` (an agent or a team used as a tool: ``AgentTool``,
    ``TeamTool``): as ``run_json``, the requested call's ``tool_call`` span ambient on each
    step, so that the agent's or team's own span nests under it."""

    @functools.wraps(original)
    def run_json_stream(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        patcher = _LIVE
        if patcher is None:
            return original(self, *args, **kwargs)
        return _tool_stream(patcher, original, self, args, kwargs)

    return run_json_stream


async def _tool_stream(
    patcher: StructurePatcher,
    original: Any,
    tool: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    pending = _requested_call(patcher, args, kwargs)
    name = getattr(tool, "name", None)
    start_ns = time.time_ns()

    def step() -> Any:
        return use_span(pending.span) if pending is not None else direct_tool_run(name, start_ns)

    with step():
        args, kwargs = _authorized(patcher, tool, pending, args, kwargs)
        stream = original(tool, *args, **kwargs)
    try:
        while True:
            with step():
                try:
                    item = await stream.__anext__()
                except StopAsyncIteration:
                    break
            yield item
    finally:
        await stream.aclose()


def wrap_function_tool_run(original: Any) -> Any:
    """``FunctionTool.run``: a sync tool runs in the pool with a copy of the context."""

    @functools.wraps(original)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        patcher = _LIVE
        if patcher is None:
            return await original(self, *args, **kwargs)
        runner = self
        try:
            func = self.__dict__.get("_func")
            if (
                func is not None
                and current_span() is not None
                and not asyncio.iscoroutinefunction(func)
            ):
                # FunctionTool runs a sync function with run_in_executor, which does not copy
                # the context: hand a shallow copy of the tool a function that does.
                runner = object.__new__(type(self))
                runner.__dict__.update(self.__dict__)
                runner._func = functools.partial(contextvars.copy_context().run, func)
        except Exception as exc:
            patcher.warn_once("sync tool context", exc)
            runner = self
        return await original(runner, *args, **kwargs)

    return run


def _static_function(original: Any, *parameters: str) -> tuple[Any, inspect.Signature]:
    """The function of the staticmethod ``original``, and its signature (TypeError when it is
    not one, or lacks one of the named ``parameters``: that AutoGen layout is not patched)."""
    if not isinstance(original, staticmethod):
        raise TypeError(f"expected a staticmethod, got {type(original).__name__}")
    function = original.__func__
    signature = inspect.signature(function)
    missing = [name for name in parameters if name not in signature.parameters]
    if missing:
        raise TypeError(f"no parameter {', '.join(missing)}")
    return function, signature


def _warn_handoff(exc: Exception) -> None:
    patcher = _LIVE
    if patcher is not None:
        patcher.warn_once("handoff governance", exc)


def wrap_execute_tool_call(original: Any) -> Any:
    """``AssistantAgent._execute_tool_call``: the governance plugins are asked about a handoff
    before it runs, once (other tools are asked by ``run_json``, which leaves the handoff tool
    running here alone); a denied handoff does not run, and its failed result is returned
    instead, marked so that the turn does not transfer. Nothing governance raises gets into
    AutoGen's task: a ``ToolDenied`` out of the handoff's run is answered the same way."""
    function, signature = _static_function(original, "tool_call", "handoff_tools", "agent_name")

    @functools.wraps(function)
    async def execute_tool_call(*args: Any, **kwargs: Any) -> Any:
        patcher = _LIVE
        if patcher is None:
            return await function(*args, **kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
            call = bound.arguments["tool_call"]
            tool = handoff_tool_of(call, bound.arguments["handoff_tools"])
            agent_name = bound.arguments["agent_name"]
        except Exception as exc:  # not AutoGen's own call: the original answers it
            patcher.warn_once("handoff governance", exc)
            return await function(*args, **kwargs)
        if tool is None:  # a workbench tool: asked by run_json
            return await function(*args, **kwargs)
        with running_handoff(tool):
            verdict = authorize_handoff(patcher, call, tool, agent_name)
            if isinstance(verdict, DeniedHandoff):
                return verdict
            if verdict is not None:
                # Run with the policy's arguments; AutoGen pairs the result with the model's
                # own call.
                bound.arguments["tool_call"] = verdict
            try:
                _, result = await function(*bound.args, **bound.kwargs)
            except ToolDenied as denied:
                refused = refuse_handoff(patcher, call, tool, denied)
                if refused is None:
                    raise
                return refused
            return (call, result)

    return staticmethod(execute_tool_call)


def wrap_check_and_handle_handoff(original: Any) -> Any:
    """``AssistantAgent._check_and_handle_handoff``: the handoffs a policy refused, and their
    results, are not among the calls it looks through, so a turn whose handoffs were all
    refused transfers to no one, and one that transfers carries the performed handoff's own
    result (AutoGen takes the last of its name: a refused second call to it would be that)
    and no refusal in its context. Unchanged when none was refused (and, on purpose, whether or
    not the instrumentation is still on: a refusal already answered stays one)."""
    function, signature = _static_function(original, "executed_calls_and_results", "model_result")

    @functools.wraps(function)
    def check_and_handle_handoff(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
            executed = bound.arguments["executed_calls_and_results"]
            denied = denied_calls(executed)
            if denied:
                model_result = bound.arguments["model_result"]
                bound.arguments["model_result"] = without_denied_calls(model_result, denied)
                bound.arguments["executed_calls_and_results"] = without_denied_results(executed)
                args, kwargs = bound.args, bound.kwargs
        except Exception as exc:
            _warn_handoff(exc)
        return function(*args, **kwargs)

    return staticmethod(check_and_handle_handoff)


def wrap_summarize_tool_use(original: Any) -> Any:
    """``AssistantAgent._summarize_tool_use``: a refused handoff is summarized as the failed
    call it is (AutoGen leaves handoffs out, as they transfer instead)."""
    function, signature = _static_function(original, "executed_calls_and_results", "handoffs")

    @functools.wraps(function)
    def summarize_tool_use(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
            denied = denied_calls(bound.arguments["executed_calls_and_results"])
            if denied:
                bound.arguments["handoffs"] = handoffs_not_denied(
                    bound.arguments["handoffs"], denied
                )
                args, kwargs = bound.args, bound.kwargs
        except Exception as exc:
            _warn_handoff(exc)
        return function(*args, **kwargs)

    return staticmethod(summarize_tool_use)


def _agent_key(routed_agent: Any) -> str | None:
    """The key of a runtime agent's id: the team id for the agents of a group chat."""
    try:
        key = routed_agent.id.key
    except Exception:
        return None
    return key if isinstance(key, str) else None


_AGENTS = "autogen_agentchat.agents"
_GROUP_CHAT = "autogen_agentchat.teams._group_chat"
# The patch that asks about handoffs before they run (see _is_handoff).
_HANDOFF_STEP = (f"{_AGENTS}._assistant_agent", "AssistantAgent", "_execute_tool_call")

PATCHES: tuple[MethodPatch, ...] = (
    MethodPatch(f"{_AGENTS}._base_chat_agent", "BaseChatAgent", "run", wrap_agent_run),
    MethodPatch(
        f"{_AGENTS}._base_chat_agent", "BaseChatAgent", "run_stream", wrap_agent_run_stream
    ),
    MethodPatch(
        f"{_AGENTS}._assistant_agent", "AssistantAgent", "on_messages", wrap_agent_on_messages
    ),
    MethodPatch(
        f"{_AGENTS}._assistant_agent",
        "AssistantAgent",
        "on_messages_stream",
        wrap_agent_on_messages_stream,
    ),
    MethodPatch(
        f"{_AGENTS}._assistant_agent",
        "AssistantAgent",
        "_execute_tool_call",
        wrap_execute_tool_call,
    ),
    MethodPatch(
        f"{_AGENTS}._assistant_agent",
        "AssistantAgent",
        "_check_and_handle_handoff",
        wrap_check_and_handle_handoff,
    ),
    MethodPatch(
        f"{_AGENTS}._assistant_agent",
        "AssistantAgent",
        "_summarize_tool_use",
        wrap_summarize_tool_use,
    ),
    MethodPatch(f"{_GROUP_CHAT}._base_group_chat", "BaseGroupChat", "run", wrap_team_run),
    MethodPatch(
        f"{_GROUP_CHAT}._base_group_chat", "BaseGroupChat", "run_stream", wrap_team_run_stream
    ),
    MethodPatch(
        f"{_GROUP_CHAT}._chat_agent_container",
        "ChatAgentContainer",
        "handle_request",
        wrap_container_request,
    ),
    MethodPatch(
        f"{_GROUP_CHAT}._chat_agent_container",
        "ChatAgentContainer",
        "_log_message",
        wrap_container_log_message,
    ),
    MethodPatch(
        f"{_GROUP_CHAT}._selector_group_chat",
        "SelectorGroupChatManager",
        "select_speaker",
        wrap_select_speaker,
    ),
    MethodPatch("autogen_core.tools._base", "BaseTool", "run_json", wrap_tool_run_json),
    MethodPatch(
        "autogen_core.tools._base", "BaseStreamTool", "run_json_stream", wrap_tool_run_json_stream
    ),
    MethodPatch("autogen_core.tools._function_tool", "FunctionTool", "run", wrap_function_tool_run),
)
"""Every method the global instrumentation wraps, by defining module."""

PATCHED_MODULES = frozenset(patch.module for patch in PATCHES)
