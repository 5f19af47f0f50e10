"""Tool governance for CrewAI: ask the ``sightline_authorize_tool`` plugins before a tool runs.

While the global instrumentation is on, the methods through which CrewAI runs a tool with its
parsed arguments are wrapped (and restored by ``uninstrument()``):

- ``BaseTool.run`` / ``arun`` and ``Tool.run`` / ``arun`` (the ``@tool`` class overrides them):
  native function calling calls ``tool.run(**arguments)``;
- ``CrewStructuredTool.invoke`` / ``ainvoke``: CrewAI's ReAct text loop calls
  ``structured_tool.invoke(input=arguments)``.

With no policy registered (:func:`sightline.governance.enforced` is false) a wrapper only calls
the original. With one, :func:`sightline.governance.authorize` is asked first, inside CrewAI's
tool scope (so its ``decision`` event nests under the ``tool_call``), with the arguments the
tool will run with (the defaults of its ``args_schema`` included): the tool runs as it was
called, or with the arguments the policy returns when it replaces them (the ``tool_call`` then
records those as its input), or ``ToolDenied`` is raised where the tool would have run. CrewAI
turns an exception of a tool into an error message for the agent: the model reads ``Error
executing tool: tool 'x' denied: <reason>`` and goes on; the ``tool_call`` is recorded failed
with kind ``guardrail``. CrewAI's ReAct loop invokes a failing tool a second time with its
unfiltered arguments within the same attempt: the same arguments are denied again without asking
twice.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sightline import ToolDenied
from sightline.client import get_client
from sightline.governance import authorize, enforced, with_schema_defaults
from sightline.logs import log_safely
from sightline_crewai.mapping import FRAMEWORK
from sightline_crewai.patching import ORIGINAL, MethodPatches

__all__ = ["install", "installed", "remove"]


# (module, class, methods taking keyword arguments, methods taking one ``input``)
_TARGETS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("crewai.tools.base_tool", "BaseTool", ("run", "arun"), ()),
    ("crewai.tools.base_tool", "Tool", ("run", "arun"), ()),
    ("crewai.tools.structured_tool", "CrewStructuredTool", (), ("invoke", "ainvoke")),
)

# The tool being authorized or run in this context: a tool whose run calls another wrapped
# method of itself (a structured tool around ``BaseTool.run``) is asked once, not twice.
_RUNNING: ContextVar[str | None] = ContextVar("sightline_crewai_governed_tool", default=None)

_lock = threading.Lock()
_client_of: Callable[[], Any] = lambda: None  # noqa: E731
_patches = MethodPatches("govern")

# CrewAI tool scope (event id) -> (tool, arguments, reason) of the deny given in it
_MAX_DENIALS = 256
_denials: OrderedDict[str, tuple[str, dict[str, Any], str]] = OrderedDict()

try:  # the scope stack CrewAI keeps in a context variable: (event id, event type), outermost first
    from crewai.events.event_context import _event_id_stack
except ImportError:  # older CrewAI: decisions nest under the ambient span, denials are re-asked
    _event_id_stack = None  # type: ignore[assignment]


def install(client_of: Callable[[], Any]) -> None:
    """Wrap CrewAI's tool entry points; ``client_of()`` gives the Sightline client whose
    policies apply (``None``: the global client). Idempotent; never raises."""
    global _client_of
    with _lock:
        _client_of = client_of
        if _patches:
            return
        for module_name, class_name, keyword_methods, input_methods in _TARGETS:
            _patches.wrap(module_name, class_name, keyword_methods, _with_keywords)
            _patches.wrap(module_name, class_name, input_methods, _with_input)


def remove() -> None:
    """Put the original methods back (those nobody replaced since). Idempotent."""
    with _lock:
        _patches.restore()


def installed() -> list[str]:
    """``Class.method`` of each method wrapped now."""
    return _patches.names()


# -- the wrappers ----------------------------------------------------------------------------


def _policy_client(tool: Any) -> Any:
    """The client whose policies apply to this run of ``tool``, or ``None`` when there is
    nothing to ask (no policy, or this tool is already being run under one)."""
    try:
        name = getattr(tool, "name", None)
        if _RUNNING.get() == name:
            return None
        client = _client_of()
        if client is None:
            client = get_client()
        return client if enforced(client) else None
    except Exception:
        return None


def _ask(tool: Any, client: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments to run ``tool`` with; raises ToolDenied (after recording the decision)."""
    name = str(getattr(tool, "name", None) or type(tool).__name__)
    stack = _scopes()
    scope = _tool_scope(stack)
    if scope is not None:
        with _lock:
            denial = _denials.get(scope)
        if denial is not None and denial[0] == name and denial[1] == arguments:
            raise ToolDenied(name, denial[2])  # asked already in this attempt: no new decision
    try:
        allowed = authorize(
            name, arguments, client=client, framework=FRAMEWORK, agent=_agent_of(stack)
        )
    except ToolDenied as denied:
        if scope is not None:
            with _lock:
                _denials[scope] = (name, dict(arguments), denied.reason)
                while len(_denials) > _MAX_DENIALS:
                    _denials.popitem(last=False)
        raise
    if allowed is not arguments and scope is not None:
        _record_arguments(scope, allowed)
    return allowed


def _scopes() -> tuple[tuple[str, str], ...]:
    """CrewAI's scopes open in this context, outermost first: ``((event id, type), ...)``."""
    try:
        return tuple(_event_id_stack.get() or ()) if _event_id_stack is not None else ()
    except Exception:
        log_safely(logging.DEBUG, "sightline: crewai: cannot read CrewAI's scopes", exc_info=True)
        return ()


def _tool_scope(stack: tuple[tuple[str, str], ...]) -> str | None:
    """The event id of the CrewAI tool call running here (its ``tool_usage_started`` scope)."""
    for event_id, event_type in reversed(stack):
        if event_type == "tool_usage_started":
            return str(event_id)
    return None


def _agent_of(stack: tuple[tuple[str, str], ...]) -> str | None:
    """The agent (role) running the tool, as the listener recorded it, for the policy."""
    listener_module = sys.modules.get("sightline_crewai.listener")
    if listener_module is None or not stack:
        return None
    try:
        for listener in listener_module.live_listeners():
            agent = listener.tree.agent_within(stack)
            if agent is not None:
                return str(agent)
    except Exception:
        log_safely(logging.DEBUG, "sightline: crewai: cannot tell the tool's agent", exc_info=True)
    return None


def _record_arguments(scope: str, arguments: dict[str, Any]) -> None:
    """A policy replaced the arguments: the ``tool_call`` records what the tool ran with, not
    what the policy kept from it."""
    listener_module = sys.modules.get("sightline_crewai.listener")
    if listener_module is None:
        return
    for listener in listener_module.live_listeners():
        listener.tree.replace_input(scope, dict(arguments))


def _with_keywords(original: Callable[..., Any]) -> Callable[..., Any]:
    """``run(*args, **kwargs)``: the policy sees the keyword arguments (positional ones, which
    CrewAI never passes, under ``"args"``)."""

    def authorized(self: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # CrewAI validates (and fills in the defaults of) keyword arguments alone.
        arguments = {**kwargs, "args": list(args)} if args else _with_defaults(self, dict(kwargs))
        answer = _ask(self, client, arguments)
        if answer is arguments:  # the tool fills its defaults in itself, as without a policy
            return args, kwargs
        allowed = dict(answer)
        return tuple(allowed.pop("args", args) or ()), allowed

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def governed_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = _policy_client(self)
            if client is None:
                return await original(self, *args, **kwargs)
            token = _RUNNING.set(getattr(self, "name", None))
            try:
                args, kwargs = authorized(self, client, args, kwargs)
                return await original(self, *args, **kwargs)
            finally:
                _RUNNING.reset(token)

        setattr(governed_async, ORIGINAL, original)
        return governed_async

    @functools.wraps(original)
    def governed(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = _policy_client(self)
        if client is None:
            return original(self, *args, **kwargs)
        token = _RUNNING.set(getattr(self, "name", None))
        try:
            args, kwargs = authorized(self, client, args, kwargs)
            return original(self, *args, **kwargs)
        finally:
            _RUNNING.reset(token)

    setattr(governed, ORIGINAL, original)
    return governed


def _with_defaults(tool: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``given``, with the defaults of the tool's parameters they leave out, as the tool will
    run with them: a limit on ``amount`` holds when the model leaves ``amount`` at its default.

    CrewAI validates a tool's arguments with its ``args_schema`` and runs it with the result
    (see :func:`sightline.governance.with_schema_defaults`). Never raises."""
    try:
        schema = tool.args_schema
    except Exception:
        return given
    return with_schema_defaults(schema, given)


def _parsed(value: Any) -> dict[str, Any] | None:
    """A structured tool's ``input`` as a dict (it is one, or JSON text of one), else None."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _with_input(original: Callable[..., Any]) -> Callable[..., Any]:
    """``invoke(input, config=None, **kwargs)``: the policy sees ``input`` parsed; input that is
    not a JSON object is left to the tool, which rejects it without running."""

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def governed_async(self: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
            client = _policy_client(self)
            arguments = _parsed(input) if client is not None else None
            if arguments is None:
                return await original(self, input, *args, **kwargs)
            token = _RUNNING.set(getattr(self, "name", None))
            try:
                arguments = _with_defaults(self, arguments)
                allowed = _ask(self, client, arguments)
                # Allowed as they are, the tool gets its input as it was (and fills in its defaults).
                return await original(
                    self, input if allowed is arguments else allowed, *args, **kwargs
                )
            finally:
                _RUNNING.reset(token)

        setattr(governed_async, ORIGINAL, original)
        return governed_async

    @functools.wraps(original)
    def governed(self: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
        client = _policy_client(self)
        arguments = _parsed(input) if client is not None else None
        if arguments is None:
            return original(self, input, *args, **kwargs)
        token = _RUNNING.set(getattr(self, "name", None))
        try:
            arguments = _with_defaults(self, arguments)
            allowed = _ask(self, client, arguments)
            # Allowed as they are, the tool gets its input as it was (and fills in its defaults).
            return original(self, input if allowed is arguments else allowed, *args, **kwargs)
        finally:
            _RUNNING.reset(token)

    setattr(governed, ORIGINAL, original)
    return governed
