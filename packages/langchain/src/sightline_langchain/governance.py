"""Tool governance for LangChain: the ``sightline_authorize_tool`` policies decide before a tool runs.

:func:`install` (called by :func:`sightline_langchain.instrument`) wraps ``BaseTool.run`` and
``BaseTool.arun``, through which every LangChain tool runs (``invoke``, ``ainvoke``, LangGraph's
``ToolNode``, ``create_agent``). With no policy registered the wrapper costs one cached lookup
(:func:`sightline.governance.enforced`). With one, :func:`sightline.governance.authorize` is
consulted with the arguments the tool will run with: the model's, and the defaults of the
parameters it left out, from the tool's own schema (``tool_call_schema``); not the arguments
LangChain injects, such as the graph's state or runtime, which are the application's and not the
model's:

- allowed: the tool runs, with the arguments the policy gave when it replaced them;
- denied: the tool does not run and :class:`sightline.ToolDenied` is raised from it, in the
  agent (LangChain starts no tool run, so the ``decision`` event recording the deny is a child of
  the run that called the tool, such as the agent's ``tools`` node).

Without instrumentation, a :class:`~sightline_langchain.SightlineCallbackHandler` passed
explicitly governs through its ``on_tool_start`` callback (:func:`check_tool_start`): it can
deny (LangChain re-raises what that callback raises, see the handler's ``raise_error``), but not
replace arguments, since LangChain hands callbacks a copy of them: a replacement there denies the
call, saying why.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any

from sightline.errors import ToolDenied
from sightline.governance import authorize, enforced
from sightline.logs import log_safely

__all__ = ["check_tool_start", "install", "is_installed", "remove"]

FRAMEWORK = "langchain"

_originals: tuple[Any, Any] | None = None


def install(client_of: Callable[[], Any]) -> None:
    """Wrap ``BaseTool.run`` / ``arun`` (idempotent). ``client_of()`` gives the client whose
    policies decide (``None``: the global client at the time of the call)."""
    global _originals
    if _originals is not None:
        return
    from langchain_core.tools import BaseTool

    run, arun = BaseTool.run, BaseTool.arun

    @functools.wraps(run)
    def governed_run(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        client = client_of()
        if enforced(client):
            tool_input = _authorized_run(self, tool_input, args, kwargs, client)
        return run(self, tool_input, *args, **kwargs)

    @functools.wraps(arun)
    async def governed_arun(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        client = client_of()
        if enforced(client):
            tool_input = _authorized_run(self, tool_input, args, kwargs, client)
        return await arun(self, tool_input, *args, **kwargs)

    governed_run.__sightline_governed__ = True  # type: ignore[attr-defined]
    governed_arun.__sightline_governed__ = True  # type: ignore[attr-defined]
    BaseTool.run = governed_run  # type: ignore[method-assign]
    BaseTool.arun = governed_arun  # type: ignore[method-assign]
    _originals = (run, arun)


def remove() -> None:
    """Put ``BaseTool.run`` / ``arun`` back (idempotent)."""
    global _originals
    originals, _originals = _originals, None
    if originals is None:
        return
    from langchain_core.tools import BaseTool

    BaseTool.run, BaseTool.arun = originals  # type: ignore[method-assign]


def is_installed() -> bool:
    return _originals is not None


CALLBACK_CANNOT_REPLACE = (
    "a LangChain callback handler cannot change a tool's input; instrument LangChain "
    "(sightline.init()) to apply replacements"
)

# ``(run id, serialized)`` of the tool start a callback handler allowed last: a tool run seen by
# two explicit handlers (one in ``config``, one on the tool) asks the policies once. LangChain
# hands every handler of one ``on_tool_start`` the same ``serialized`` dict, made anew for each
# run of a tool, so a run id used again (a retry passing the same ``run_id``, after a deny, an
# allow or a cancelled run) asks again; a race between threads can only ask twice, never skip.
_last_allowed: tuple[Any, Any] | None = None


def check_tool_start(
    client: Any,
    serialized: Any,
    input_str: Any,
    run_id: Any,
    parent_run_id: Any,
    kwargs: dict[str, Any],
) -> None:
    """From an explicit handler's ``on_tool_start``: ask the policies, raise ToolDenied on a deny
    (the handler then records the tool run as failed, the ``decision`` under it).

    Skipped when :func:`install` governs every tool already, or no policy is registered.
    Never raises anything but ToolDenied.
    """
    global _last_allowed
    try:
        last = _last_allowed
        if (
            _originals is not None
            or (last is not None and last[1] is serialized and last[0] == run_id)
            or not enforced(client)
        ):
            return
        from sightline_langchain.handler import run_ids

        name = serialized.get("name") if isinstance(serialized, dict) else None
        if not isinstance(name, str) or not name:
            name = str(kwargs.get("name") or "tool")
        inputs = kwargs.get("inputs")
        # ``inputs``: the arguments without those LangChain injects (None for a string input).
        arguments = dict(inputs) if isinstance(inputs, dict) else {"input": input_str}
        tool = _tool_calling_back(name)
        if tool is not None:
            arguments = _with_defaults(tool, arguments, string_input=not isinstance(inputs, dict))
        authorize(
            name,
            arguments,
            client=client,
            framework=FRAMEWORK,
            agent=_agent_running(),
            cannot_replace=CALLBACK_CANNOT_REPLACE,
            run=run_ids(run_id, parent_run_id, client),
        )
        _last_allowed = (run_id, serialized)
    except ToolDenied:
        _quiet_langchain_warning()
        raise
    except Exception:
        log_safely(
            logging.WARNING,
            "sightline: LangChain tool governance failed in on_tool_start; the tool runs",
            exc_info=True,
        )


class _DenialWarnings(logging.Filter):
    """Drops LangChain's warning about the ToolDenied our ``on_tool_start`` raised on purpose
    ("Error in SightlineCallbackHandler.on_tool_start callback: ToolDenied(...)"): the deny is
    recorded as a ``decision`` event and raised in the agent, not a callback failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            isinstance(args, tuple)
            and len(args) == 3
            and args[1] == "on_tool_start"
            and isinstance(args[2], str)
            and args[2].startswith("ToolDenied(")
        )


_denial_filter: _DenialWarnings | None = None


def _quiet_langchain_warning() -> None:
    global _denial_filter
    if _denial_filter is None:
        _denial_filter = _DenialWarnings()
        logging.getLogger("langchain_core.callbacks.manager").addFilter(_denial_filter)


def _authorized_run(
    tool: Any, tool_input: Any, args: tuple[Any, ...], kwargs: dict[str, Any], client: Any
) -> Any:
    """The input to run ``tool`` with (``BaseTool.run``'s ``args`` / ``kwargs``), once the
    policies allowed it. The run's id is chosen here (set in ``kwargs``) so that the decision
    is recorded under the tool's run. A deny records that run, as failed, through the global
    handler (LangChain never starts it), then raises ToolDenied."""
    from sightline.client import get_client
    from sightline_langchain.handler import run_ids

    client = client if client is not None else get_client()  # as the handler will record it
    run_id = kwargs.get("run_id")
    if run_id is None:
        run_id = kwargs["run_id"] = _new_run_id()
    callbacks = kwargs["callbacks"] if "callbacks" in kwargs else args[3] if len(args) > 3 else None
    parent_run_id = getattr(callbacks, "parent_run_id", None)
    try:
        return _authorized(tool, tool_input, client, run_ids(run_id, parent_run_id, client))
    except ToolDenied as denied:
        _record_denied_run(tool, tool_input, run_id, parent_run_id, kwargs, denied)
        raise


def _new_run_id() -> Any:
    """A run id as this LangChain would choose it: time-ordered ``uuid7`` where
    ``langchain_core.utils.uuid`` exists (1.1.1 and later), a random ``uuid4`` before."""
    try:
        from langchain_core.utils.uuid import uuid7
    except ImportError:
        return uuid.uuid4()
    return uuid7()


def _record_denied_run(
    tool: Any,
    tool_input: Any,
    run_id: Any,
    parent_run_id: Any,
    kwargs: dict[str, Any],
    denied: ToolDenied,
) -> None:
    """Record the run of a tool a policy refused as LangChain would have started it, failed
    with ``denied`` (kind ``guardrail``). Never raises."""
    try:
        from sightline_langchain.instrumentation import global_handler

        handler = global_handler()
        if handler is None:
            return
        inputs = _model_arguments(tool, tool_input) if isinstance(tool_input, dict) else None
        handler.on_tool_start(
            {"name": tool.name, "description": getattr(tool, "description", "")},
            tool_input if isinstance(tool_input, str) else str(inputs or tool_input),
            run_id=run_id,
            parent_run_id=parent_run_id,
            tags=[*(kwargs.get("tags") or ()), *(getattr(tool, "tags", None) or ())] or None,
            metadata={**(kwargs.get("metadata") or {}), **(getattr(tool, "metadata", None) or {})},
            inputs=inputs,
            tool_call_id=kwargs.get("tool_call_id"),
            name=kwargs.get("run_name"),
        )
        handler.on_tool_error(denied, run_id=run_id, parent_run_id=parent_run_id)
    except Exception:
        log_safely(
            logging.WARNING,
            "sightline: LangChain tool run refused by a policy could not be recorded",
            exc_info=True,
        )


def _model_arguments(tool: Any, tool_input: dict[str, Any]) -> dict[str, Any]:
    """A dict input without the arguments LangChain injects (state, runtime, store...)."""
    try:
        return dict(tool._filter_injected_args(tool_input))
    except Exception:  # a LangChain without the method: the arguments as given
        return dict(tool_input)


def _authorized(tool: Any, tool_input: Any, client: Any, run: tuple[str, str] | None) -> Any:
    """The input to run ``tool`` with, once the policies allowed it; raises ToolDenied.
    ``run``: the ids of the tool's run (see ``authorize``)."""
    name = str(getattr(tool, "name", None) or type(tool).__name__)
    agent = _agent_running()
    if isinstance(tool_input, dict):
        arguments = _model_arguments(tool, tool_input)
        asked = _with_defaults(tool, arguments)
        allowed = authorize(name, asked, client=client, framework=FRAMEWORK, agent=agent, run=run)
        if allowed is asked:  # the tool fills its defaults in itself, as without a policy
            return tool_input
        # The injected arguments (state, runtime, store...) are kept as LangChain gave them.
        injected = {key: value for key, value in tool_input.items() if key not in arguments}
        return {**allowed, **injected}
    asked = _with_defaults(tool, {"input": tool_input}, string_input=True)
    allowed = authorize(name, asked, client=client, framework=FRAMEWORK, agent=agent, run=run)
    if allowed is asked:
        return tool_input
    if set(allowed) == {"input"}:  # a one-string tool stays one
        return allowed["input"]
    first = _first_parameter(tool) if "input" in allowed else None
    if first is not None and first not in allowed:
        # The string fills the tool's first parameter; the others are as the policy gave them.
        rest = {key: value for key, value in allowed.items() if key != "input"}
        return {first: allowed["input"], **rest}
    return allowed


# LangChain's names for the fields a schema gets from ``*args`` / ``**kwargs``: never passed.
_VARIADIC = frozenset({"args", "kwargs"})


def _with_defaults(
    tool: Any, arguments: dict[str, Any], *, string_input: bool = False
) -> dict[str, Any]:
    """``arguments`` (the model's, without the injected ones), with the defaults of the tool's
    parameters they leave out, as the tool will run with them: a limit on ``amount`` holds when
    the model leaves ``amount`` at its default. ``string_input``: ``arguments`` is
    ``{"input": <a string>}``, which fills the tool's first parameter.

    The defaults come from ``tool_call_schema`` (the tool's schema without the injected
    arguments; made from ``_run``'s signature for a tool without ``args_schema``), or the
    ``default`` of a JSON schema's properties. ``arguments`` itself when there are none, or
    when they cannot be read (the policy then sees the model's arguments alone)."""
    try:
        defaults = _defaults(tool, arguments, string_input)
    except Exception:
        log_safely(
            logging.DEBUG,
            "sightline: cannot read the defaults of LangChain tool %r",
            getattr(tool, "name", None),
            exc_info=True,
        )
        return arguments
    return {**arguments, **defaults} if defaults else arguments


def _defaults(tool: Any, given: Collection[str], string_input: bool) -> dict[str, Any]:
    """The defaults of ``tool``'s model-facing parameters that ``given`` leaves out."""
    schema = tool.tool_call_schema
    if isinstance(schema, dict):  # a JSON schema: its declared defaults
        if string_input:
            return {}  # LangChain rejects a string for such a tool: it does not run
        properties = schema.get("properties")
        return {
            name: spec["default"]
            for name, spec in (properties.items() if isinstance(properties, dict) else ())
            if isinstance(spec, dict) and "default" in spec and name not in given
        }
    from langchain_core.utils.pydantic import get_fields

    fields = get_fields(schema)
    aliases = _aliases(tool)
    defaults: dict[str, Any] = {}
    for index, (name, field) in enumerate(fields.items()):
        if (
            (string_input and index == 0)  # the string is this one
            or name in given
            or aliases.get(name) in given
            or name in _VARIADIC
        ):
            continue
        if hasattr(field, "is_required"):  # pydantic 2
            if not field.is_required():
                defaults[name] = field.get_default(call_default_factory=True)
        elif not getattr(field, "required", True):  # pydantic.v1
            defaults[name] = field.get_default()
    # Never an argument LangChain injects (``tool_call_schema`` leaves them out already).
    return _model_arguments(tool, defaults) if defaults else defaults


def _aliases(tool: Any) -> dict[str, str]:
    """``{field: alias}`` of the tool's ``args_schema`` (``tool_call_schema`` drops aliases),
    for a model that passed an argument by its alias."""
    try:
        from langchain_core.utils.pydantic import get_fields

        fields = get_fields(tool.args_schema)
    except Exception:  # no pydantic args_schema
        return {}
    return {name: f.alias for name, f in fields.items() if isinstance(f.alias, str)}


def _first_parameter(tool: Any) -> str | None:
    """The parameter a string input fills (the first of the tool's schema), or None."""
    try:
        from langchain_core.utils.pydantic import get_fields

        return next(iter(get_fields(tool.tool_call_schema)), None)
    except Exception:
        return None


def _tool_calling_back(name: str) -> Any:
    """The tool whose run is calling ``on_tool_start`` (the ``self`` of the nearest
    ``BaseTool.run`` / ``arun`` up the stack, if it is named ``name``), or None.

    LangChain hands callbacks the tool's name, not the tool, and the policies must see the
    defaults the tool fills in. An inline handler (ours is one) is called on the run's own
    thread and, for ``arun``, from a chain of awaits, so that run is up the stack."""
    try:
        from langchain_core.tools import BaseTool

        codes: set[Any] = set()
        for method in (BaseTool.run, BaseTool.arun):
            function: Any = method
            while function is not None:  # through another library's wrapper, if any
                code = getattr(function, "__code__", None)
                if code is not None:
                    codes.add(code)
                function = getattr(function, "__wrapped__", None)
        frame = inspect.currentframe()
        while frame is not None:
            if frame.f_code in codes:
                tool = frame.f_locals.get("self")
                return tool if isinstance(tool, BaseTool) and tool.name == name else None
            frame = frame.f_back
    except Exception:
        log_safely(logging.DEBUG, "sightline: cannot find the LangChain tool", exc_info=True)
    return None


def _agent_running() -> str | None:
    """The agent of the LangChain run calling the tool, from its metadata (``sightline_agent``,
    or the name ``create_agent`` gives its runs), as the recorded events have it."""
    try:
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get()
        metadata = (config or {}).get("metadata") or {}
        agent = metadata.get("sightline_agent") or metadata.get("lc_agent_name")
        return agent if isinstance(agent, str) and agent else None
    except Exception:
        return None
