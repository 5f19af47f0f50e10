"""Tool governance for LangChain: the ``sightline_authorize_tool`` policies decide before a tool runs.

:func:`install` (called by :func:`sightline_langchain.instrument`) wraps ``BaseTool.run`` and
``BaseTool.arun``, through which every LangChain tool runs (``invoke``, ``ainvoke``, LangGraph's
``ToolNode``, ``create_agent``). With no policy registered the wrapper costs one cached lookup
(:func:`sightline.governance.enforced`). With one, :func:`sightline.governance.authorize` is
consulted with the tool's arguments (without the arguments LangChain injects, such as the
graph's state or runtime, which are the application's and not the model's):

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
import logging
from collections.abc import Callable
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
        from langchain_core.utils.uuid import uuid7

        run_id = kwargs["run_id"] = uuid7()  # as LangChain would (time first)
    callbacks = kwargs["callbacks"] if "callbacks" in kwargs else args[3] if len(args) > 3 else None
    parent_run_id = getattr(callbacks, "parent_run_id", None)
    try:
        return _authorized(tool, tool_input, client, run_ids(run_id, parent_run_id, client))
    except ToolDenied as denied:
        _record_denied_run(tool, tool_input, run_id, parent_run_id, kwargs, denied)
        raise


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
        allowed = authorize(
            name, arguments, client=client, framework=FRAMEWORK, agent=agent, run=run
        )
        if allowed is arguments:
            return tool_input
        # The injected arguments (state, runtime, store...) are kept as LangChain gave them.
        injected = {key: value for key, value in tool_input.items() if key not in arguments}
        return {**allowed, **injected}
    arguments = {"input": tool_input}
    allowed = authorize(name, arguments, client=client, framework=FRAMEWORK, agent=agent, run=run)
    if allowed is arguments:
        return tool_input
    if set(allowed) == {"input"}:  # a one-string tool stays one
        return allowed["input"]
    return allowed


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
