"""Tool governance: ask the ``sightline_authorize_tool`` plugins before a tool runs.

``guard(tool)`` wraps a callable; integrations call :func:`authorize` directly. A deny raises
:class:`~sightline.ToolDenied` in the agent and records a ``decision`` event.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sightline.errors import ToolDenied
from sightline.event import EventType

__all__ = ["Decision", "authorize", "guard"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Decision:
    """A governance answer: allow (possibly with replaced arguments) or deny with a reason."""

    allow: bool
    reason: str = ""
    arguments: dict[str, Any] | None = field(default=None)

    @classmethod
    def from_answer(cls, answer: Any) -> Decision:
        if answer is None or answer is True or answer == "allow":
            return cls(True)
        if answer is False or answer == "deny":
            return cls(False, "denied by policy")
        if isinstance(answer, Decision):
            return answer
        raise TypeError(f"unsupported sightline_authorize_tool answer: {answer!r}")


def authorize(
    tool_name: str,
    arguments: dict[str, Any],
    *,
    client: Any = None,
    framework: str | None = None,
) -> dict[str, Any]:
    """Consult the governance plugins; return the arguments to run with or raise ToolDenied.

    A deny (or a redaction) is recorded as a ``decision`` event under the ambient span.
    """
    from sightline.client import get_client
    from sightline.span import current_span

    owner = client if client is not None else get_client()
    if not owner.enabled:
        return arguments
    span = current_span()
    context = {
        "trace_id": span.trace_id if span else None,
        "span_id": span.span_id if span else None,
        "agent": span.event.agent if span else owner.config.agent,
        "framework": framework,
    }
    answer = owner.plugins.call(
        "sightline_authorize_tool",
        firstresult=True,
        tool_name=tool_name,
        arguments=arguments,
        context=context,
    )
    decision = Decision.from_answer(answer)
    if decision.allow and decision.arguments is None:
        return arguments
    outcome = "allow_redacted" if decision.allow else "deny"
    # After a redaction only the redacted arguments are recorded: the originals are exactly
    # what the plugin wanted kept out.
    recorded = dict(decision.arguments or {}) if decision.allow else arguments
    owner.log_event(
        EventType.DECISION,
        f"authorize:{tool_name}",
        input={"tool": tool_name, "arguments": recorded},
        output={"decision": outcome, "reason": decision.reason},
        metadata={"governance": True},
        framework=framework,
        status="ok" if decision.allow else "error",
        error=None if decision.allow else f"tool {tool_name!r} denied: {decision.reason}",
        error_kind="guardrail",
    )
    if not decision.allow:
        raise ToolDenied(tool_name, decision.reason)
    return dict(decision.arguments or {})


def guard(tool: F | None = None, *, name: str | None = None) -> Any:
    """Wrap a tool so that governance plugins are consulted before each call.

    Example::

        @sightline.guard
        def delete_account(user_id: str) -> None: ...
    """

    def decorate(function: F) -> F:
        tool_name: str = name or str(getattr(function, "__name__", repr(function)))
        signature = inspect.signature(function)

        def authorized_call(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            """The positional and keyword arguments to call the tool with, once authorized.

            Going back through the bound signature keeps positional-only parameters positional
            and ``*args`` / ``**kwargs`` spread, as the caller passed them.
            """
            bound = signature.bind(*args, **kwargs)
            allowed = authorize(tool_name, dict(bound.arguments))
            bound.arguments.clear()
            bound.arguments.update(allowed)
            return bound.args, bound.kwargs

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call_args, call_kwargs = authorized_call(args, kwargs)
                return await function(*call_args, **call_kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call_args, call_kwargs = authorized_call(args, kwargs)
            return function(*call_args, **call_kwargs)

        return wrapper  # type: ignore[return-value]

    if tool is not None:
        return decorate(tool)
    return decorate
