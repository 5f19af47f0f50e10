"""Tool governance: ask the ``sightline_authorize_tool`` plugins before a tool runs.

``guard(tool)`` wraps a callable; integrations call :func:`authorize` directly before a
framework's tool runs (when :func:`enforced` says a policy is registered). A deny raises
:class:`~sightline.ToolDenied` in the agent and records a ``decision`` event.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sightline.errors import ToolDenied
from sightline.event import EventType

if TYPE_CHECKING:
    pass

__all__ = ["Decision", "authorize", "enforced", "guard"]

F = TypeVar("F", bound=Callable[..., Any])
_HOOK = "sightline_authorize_tool"


@dataclass(frozen=True)
class Decision:
    """A governance answer: allow (possibly with replaced arguments) or deny with a reason."""

    allow: bool
    reason: str = ""
    arguments: dict[str, Any] | None = field(default=None)

    @classmethod
    def from_answer(cls, answer: Any) -> Decision:
        """The decision a ``sightline_authorize_tool`` answer stands for.

        The answers of the hook's contract are ``None`` or ``True`` or ``"allow"`` (allow),
        ``False`` or ``"deny"`` (deny), and a ``Decision`` whose ``allow`` is a bool and whose
        ``arguments`` is ``None`` or a mapping. Anything else raises TypeError.
        """
        if answer is None or answer is True:
            return _ALLOW
        if answer is False:
            return _DENY
        if isinstance(answer, Decision):
            return answer._checked()
        if isinstance(answer, str):  # str.__eq__: a str subclass runs no code of its own
            if str.__eq__(answer, "allow"):
                return _ALLOW
            if str.__eq__(answer, "deny"):
                return _DENY
        raise TypeError(f"unsupported {_HOOK} answer: {_bounded_repr(answer)}")

    def _checked(self) -> Decision:
        """This decision, with plain values; TypeError when it is not one of the contract."""
        allow, reason, arguments = self.allow, self.reason, self.arguments
        if type(allow) is not bool:  # a guessed truthiness would be a silent policy change
            raise TypeError(
                f"unsupported {_HOOK} answer: Decision.allow must be True or False, "
                f"not {_bounded_repr(allow)}"
            )
        if arguments is not None and not isinstance(arguments, Mapping):
            raise TypeError(
                f"unsupported {_HOOK} answer: Decision.arguments must be a mapping or None, "
                f"not {type(arguments).__name__}"
            )
        if type(reason) is str and (arguments is None or type(arguments) is dict):
            return self
        try:
            return Decision(
                allow,
                "" if reason is None else str(reason),
                None if arguments is None else dict(arguments),
            )
        except Exception as exc:
            raise TypeError(f"unsupported {_HOOK} answer: {type(exc).__name__}: {exc}") from None


_ALLOW = Decision(True)
_DENY = Decision(False, "denied by policy")


def _bounded_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def enforced(client: Any = None) -> bool:
    """True when a ``sightline_authorize_tool`` plugin is registered on ``client`` (default: the
    global client): integrations call :func:`authorize` before a framework's tool runs only
    then, so that tools cost nothing more without a policy. Cheap (a cached lookup); never
    raises."""
    try:
        if client is None:
            from sightline.client import get_client

            client = get_client()
        return bool(client.enabled and client.plugins.implementations(_HOOK))
    except Exception:
        return False


def authorize(
    tool_name: str,
    arguments: dict[str, Any],
    *,
    client: Any = None,
    framework: str | None = None,
    agent: str | None = None,
    cannot_replace: str | None = None,
    run: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Consult the governance plugins; return the arguments to run with or raise ToolDenied.

    ``agent`` is the agent running the tool when the integration knows it (the policies' context
    has it; by default the ambient span's agent, or the client's).

    ``run``: the ``(trace_id, span_id)`` of the framework's run of this tool call, when the
    integration knows it before the run's span exists: the policies' context names it and the
    ``decision`` event is its child (by default: the framework run going on here, or the ambient
    span).

    ``cannot_replace``: for an integration that can stop a tool but not change its arguments,
    why not. A policy's replacement then denies the call (running the tool with the arguments
    the policy replaced would defeat it), with this added to the policy's reason; a
    replacement equal to the arguments changes nothing and allows it.

    A deny (or a redaction) is recorded as a ``decision`` event under the ambient span. A
    plugin that raises or answers outside the hook's contract denies the call it failed on,
    saying so in the reason, and stays registered (governance fails closed: a policy that a
    model's odd arguments make raise must not switch governance off); its first failure is
    logged at error level.
    """
    from sightline.client import get_client
    from sightline.span import current_span, framework_run_within

    owner = client if client is not None else get_client()
    if not owner.enabled:
        return arguments
    span = current_span()
    context = {
        "trace_id": span.trace_id if span else None,
        "span_id": span.span_id if span else None,
        "agent": agent or (span.event.agent if span else owner.config.agent),
        "framework": framework,
    }
    within = framework_run_within(span, owner) if run is None else run
    if within is not None:  # a framework's run (its tool call) inside that span
        context["trace_id"], context["span_id"] = within[0], within[1]
    # The first answer wins. A plugin that raises or answers outside the hook's contract
    # denies this call (fails closed) and stays registered.
    decision = (
        owner.plugins.call(
            _HOOK,
            firstresult=True,
            accept=Decision.from_answer,
            on_failure=_failed_policy,
            on_failure_says="the call it failed on is refused (governance fails closed)",
            tool_name=tool_name,
            arguments=arguments,
            context=context,
        )
        or _ALLOW
    )
    if decision.allow and decision.arguments is None:
        return arguments
    if decision.allow and cannot_replace is not None and not _same(decision.arguments, arguments):
        reason = f"{decision.reason}; " if decision.reason else ""
        decision = Decision(
            False, f"{reason}replaced arguments cannot be applied: {cannot_replace}"
        )
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
        agent=context["agent"],
        status="ok" if decision.allow else "error",
        error=None if decision.allow else f"tool {tool_name!r} denied: {decision.reason}",
        error_kind="guardrail",
        # Under a run known by its ids, the session still comes from the ambient span (the agent
        # is in the context already).
        session_id=span.event.session_id if run is not None and span is not None else None,
        trace_id=run[0] if run is not None else None,
        parent_span_id=run[1] if run is not None else None,
    )
    if not decision.allow:
        raise ToolDenied(tool_name, decision.reason)
    return dict(decision.arguments or {})


def with_schema_defaults(schema: Any, given: dict[str, Any]) -> dict[str, Any]:
    """For integrations: ``given`` (a tool call's arguments) with the defaults of the
    parameters it leaves out, read from ``schema``, the pydantic model the framework validates
    the arguments with before running the tool. What a policy is asked about: a limit on
    ``amount`` holds when the model leaves ``amount`` at its default.

    The defaults come from that same validation (``model_validate`` then ``model_dump``), so
    they are the values the tool runs with. ``given`` itself when it leaves nothing out, when
    ``schema`` cannot be read, or when the arguments do not validate (the framework then
    refuses them without running the tool). Never raises.
    """
    try:
        left_out = [
            name
            for name, field in schema.model_fields.items()
            if name not in given and (field.alias is None or field.alias not in given)
        ]
        if not left_out:
            return given
        validated = schema.model_validate(given).model_dump()
        defaults = {name: validated[name] for name in left_out if name in validated}
    except Exception:
        return given
    return {**given, **defaults}


def _failed_policy(plugin: str, problem: str) -> Decision:
    """The answer of a policy that raised or answered outside the hook's contract: a deny."""
    return Decision(False, f"policy {plugin!r} failed ({problem}), so the call is refused")


def _same(replaced: Any, arguments: dict[str, Any]) -> bool:
    """Whether a policy's replacement leaves the arguments as they were (a value whose ``==``
    raises counts as changed)."""
    try:
        return bool(replaced == arguments)
    except Exception:
        return False


def guard(tool: F | None = None, *, name: str | None = None) -> Any:
    """Wrap a tool so that governance plugins are consulted before each call.

    Example::

        @sightline.guard
        def delete_account(user_id: str) -> None: ...
    """

    def decorate(function: F) -> F:
        tool_name: str = name or str(getattr(function, "__name__", repr(function)))
        signature = inspect.signature(function)
        spread = {
            parameter.name
            for parameter in signature.parameters.values()
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        }

        def authorized_call(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            """The positional and keyword arguments to call the tool with, once authorized.

            The policy sees every parameter the tool will run with, defaults included (a
            limit on ``amount`` holds when the caller leaves ``amount`` at its default), and
            ``*args`` / ``**kwargs`` only when the caller passed some. Going back through the
            bound signature keeps positional-only parameters positional and ``*args`` /
            ``**kwargs`` spread, as the caller passed them.
            """
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = {
                key: value
                for key, value in bound.arguments.items()
                if value or key not in spread  # an empty *args / **kwargs: nothing passed
            }
            allowed = authorize(tool_name, arguments)
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
