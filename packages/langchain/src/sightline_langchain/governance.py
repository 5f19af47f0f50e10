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

Callbacks cannot do this: LangChain swallows what a callback handler raises (unless it sets
``raise_error``) and a callback cannot change a tool's input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sightline.governance import authorize, enforced

__all__ = ["install", "is_installed", "remove"]

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
            tool_input = _authorized(self, tool_input, client)
        return run(self, tool_input, *args, **kwargs)

    @functools.wraps(arun)
    async def governed_arun(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        client = client_of()
        if enforced(client):
            tool_input = _authorized(self, tool_input, client)
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


def _authorized(tool: Any, tool_input: Any, client: Any) -> Any:
    """The input to run ``tool`` with, once the policies allowed it; raises ToolDenied."""
    name = str(getattr(tool, "name", None) or type(tool).__name__)
    agent = _agent_running()
    if isinstance(tool_input, dict):
        try:
            arguments = dict(tool._filter_injected_args(tool_input))
        except Exception:  # a LangChain without the method: the arguments as given
            arguments = dict(tool_input)
        allowed = authorize(name, arguments, client=client, framework=FRAMEWORK, agent=agent)
        if allowed is arguments:
            return tool_input
        # The injected arguments (state, runtime, store...) are kept as LangChain gave them.
        injected = {key: value for key, value in tool_input.items() if key not in arguments}
        return {**allowed, **injected}
    arguments = {"input": tool_input}
    allowed = authorize(name, arguments, client=client, framework=FRAMEWORK, agent=agent)
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
