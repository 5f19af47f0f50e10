"""Handoff governance: a policy may refuse an ``AssistantAgent``'s handoff without hanging it.

AutoGen 0.7.5 runs a handoff (``transfer_to_<agent>``) outside the agent's workbench, in
``AssistantAgent._execute_tool_call``, and hands the turn over in ``_check_and_handle_handoff``
whenever the model asked for one, whatever the handoff's result said. An exception cannot carry
a refusal there: the agent's tool calls run in a task whose end the agent awaits on a queue,
and a task that fails never closes that queue, so the agent (and its team) waits for ever.

So a denied handoff is answered instead of raised. The policy is asked (as for any tool: the
tool name ``transfer_to_<agent>``, its arguments, the agent in the context) before the handoff
runs; a deny returns, in place of running it, a failed result the model reads
(``handoff to <agent> denied: <reason>``), marked as a :class:`DeniedHandoff`; the structure
patches then leave the marked call and its result out when AutoGen looks for the handoff to
perform (and takes its message and context), and keep its result in the summary of the turn's
tool calls. The turn ends as a turn that asked for no handoff: no ``HandoffMessage``, the team
does not transfer. Beside an allowed handoff (of another agent, or the same one asked twice in
one turn), the turn transfers as if the model had asked for the allowed calls alone: the
``HandoffMessage`` carries the allowed handoff's own result, and its context the turn's other
tools, never the refusal (which the model context and the turn's events keep).

A handoff is asked once, there, whatever made its tool (``Handoff`` or a subclass with its own
``handoff_tool``): while AutoGen runs it, the tool is marked as the running handoff
(:func:`running_handoff`, by identity), and ``run_json`` leaves a tool so marked alone. A
``ToolDenied`` that still escapes the handoff's run (a tool its function runs itself, refused)
is answered the same way, as a refused handoff.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sightline.errors import ToolDenied
from sightline.governance import authorize, enforced, with_schema_defaults
from sightline.span import use_span
from sightline_autogen.mapping import FRAMEWORK
from sightline_autogen.scopes import REGISTRY

if TYPE_CHECKING:
    from sightline_autogen.structure import StructurePatcher

__all__ = [
    "DeniedHandoff",
    "arguments_with_defaults",
    "authorize_handoff",
    "denied_calls",
    "handoff_tool_of",
    "handoffs_not_denied",
    "is_running_handoff",
    "refuse_handoff",
    "running_handoff",
    "without_denied_calls",
    "without_denied_results",
]

# The handoff tool ``AssistantAgent._execute_tool_call`` is running in this context, already put
# to the policy there: ``run_json`` must not ask again (a second answer, a deny, would raise
# where the agent hangs).
_RUNNING_HANDOFF: ContextVar[Any] = ContextVar("sightline_autogen_running_handoff", default=None)


class DeniedHandoff(tuple):
    """The ``(call, result)`` pair ``_execute_tool_call`` returns for a handoff a policy refused:
    ``result`` is a failed ``FunctionExecutionResult`` saying why.

    A pair like any other to AutoGen, which only unpacks it. Only AutoGen's own list of the
    turn's executed calls holds it, so the mark never reaches a message or the model context.
    """

    __slots__ = ()


def arguments_with_defaults(tool: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (a tool call's arguments), with the defaults of the tool's parameters they
    leave out, as the tool will run with them: what a policy is asked about, for any tool and
    for a handoff's (a limit on ``amount`` holds when the model leaves ``amount`` at its
    default).

    ``run_json`` validates the arguments with the tool's ``args_type()`` and runs with the
    result (see :func:`sightline.governance.with_schema_defaults`). Never raises."""
    try:
        schema = tool.args_type()
    except Exception:
        return given
    return with_schema_defaults(schema, given)


def handoff_tool_of(call: Any, handoff_tools: Any) -> Any:
    """The tool among the agent's ``handoff_tools`` that AutoGen runs for the model's call
    ``call`` (the first of its name, as AutoGen looks), or ``None`` when ``call`` is no handoff.
    Never raises."""
    try:
        name = getattr(call, "name", None)
        if not isinstance(name, str):
            return None
        return next((t for t in handoff_tools or () if getattr(t, "name", None) == name), None)
    except Exception:
        return None


@contextlib.contextmanager
def running_handoff(tool: Any) -> Iterator[None]:
    """Mark ``tool`` as the handoff running in this context for the block: the handoff is
    asked before it runs, so :func:`is_running_handoff` tells ``run_json`` to leave it."""
    token = _RUNNING_HANDOFF.set(tool)
    try:
        yield
    finally:
        _RUNNING_HANDOFF.reset(token)


def is_running_handoff(tool: Any) -> bool:
    """Whether ``tool`` is the very handoff tool being run in this context (by identity, not by
    name or class: a ``Handoff`` subclass's own ``handoff_tool`` is one too)."""
    return tool is not None and tool is _RUNNING_HANDOFF.get()


def authorize_handoff(patcher: StructurePatcher, call: Any, tool: Any, agent_name: Any) -> Any:
    """Ask the governance plugins about the model's call ``call`` to the handoff ``tool`` (one
    of the agent's handoff tools: :func:`handoff_tool_of`).

    Returns ``None`` when AutoGen is to run ``call`` as asked (no policy, an allow, or a
    failure of the adapter itself, which never raises into AutoGen), a copy of ``call``
    carrying the arguments a policy replaced them with, or the :class:`DeniedHandoff` to return
    instead of running it. Never raises.
    """
    try:
        name = getattr(call, "name", None)
        if tool is None or not isinstance(name, str):
            return None
        client = patcher.resolve_client()
        if not enforced(client):  # a handoff's one check when no policy is registered
            return None
        # AutoGen transfers whatever the arguments (even when they do not decode), so the
        # policy is asked every time; a handoff takes none.
        try:
            decoded = json.loads(call.arguments)
        except (TypeError, ValueError):
            decoded = None
        arguments = arguments_with_defaults(
            tool, dict(decoded) if isinstance(decoded, Mapping) else {}
        )
        pending = REGISTRY.pending_call(getattr(call, "id", None))
        agent = agent_name if isinstance(agent_name, str) else None
    except Exception as exc:
        patcher.warn_once("handoff governance", exc)
        return None
    try:
        # Inside the handoff's tool_call span, as the decision on any other tool.
        with use_span(pending.span) if pending is not None else contextlib.nullcontext():
            allowed = authorize(name, arguments, client=client, framework=FRAMEWORK, agent=agent)
    except ToolDenied as denied:
        try:
            return _denied(patcher, call, name, tool, pending, denied)
        except Exception as exc:  # raising here would hang the agent: the handoff runs
            patcher.warn_once("handoff governance", exc)
            return None
    except Exception as exc:
        patcher.warn_once("handoff governance", exc)
        return None
    if allowed is arguments:
        return None
    try:
        # A handoff ignores its arguments (its message is fixed by its Handoff): with the
        # policy's arguments it runs as any tool would, and transfers as allowed.
        replaced = dataclasses.replace(call, arguments=json.dumps(allowed))
        if pending is not None:
            pending.arguments = allowed
            pending.span.set_input(allowed)
        return replaced
    except Exception as exc:
        patcher.warn_once("handoff governance", exc)
        return None


def refuse_handoff(
    patcher: StructurePatcher, call: Any, tool: Any, denied: ToolDenied
) -> DeniedHandoff | None:
    """The :class:`DeniedHandoff` answering ``call`` to the handoff ``tool`` when ``denied``
    escaped its run (a tool the handoff's function runs itself was refused): raised there,
    it would hang the agent. ``None`` when even that cannot be built. Never raises."""
    try:
        name = getattr(call, "name", None)
        pending = REGISTRY.pending_call(getattr(call, "id", None))
        return _denied(patcher, call, name if isinstance(name, str) else "", tool, pending, denied)
    except Exception as exc:
        patcher.warn_once("handoff governance", exc)
        return None


def _denied(
    patcher: StructurePatcher, call: Any, name: str, tool: Any, pending: Any, denied: ToolDenied
) -> DeniedHandoff:
    """The failed result of the refused handoff ``call``, marked; its ``tool_call`` fails with
    kind ``guardrail``."""
    from autogen_core.models import FunctionExecutionResult

    if pending is not None:
        try:
            REGISTRY.deny(pending, denied)
        except Exception as exc:
            patcher.warn_once("handoff governance", exc)
    content = f"handoff to {_target_of(tool, name)} denied"
    if denied.reason:
        content += f": {denied.reason}"
    call_id = getattr(call, "id", None)
    result = FunctionExecutionResult(
        content=content,
        call_id=call_id if isinstance(call_id, str) else "",
        is_error=True,
        name=name,
    )
    return DeniedHandoff((call, result))


def _target_of(tool: Any, default: str) -> str:
    """The agent a handoff tool transfers to: the ``target`` of the ``Handoff`` its function
    closes over (``Handoff.handoff_tool``), else ``default``."""
    try:
        function = tool.__dict__["_func"]
        for free, cell in zip(
            function.__code__.co_freevars, function.__closure__ or (), strict=True
        ):
            if free == "self":
                target = getattr(cell.cell_contents, "target", None)
                if isinstance(target, str) and target:
                    return target
    except Exception:
        pass
    return default


def denied_calls(executed: Any) -> list[Any]:
    """The calls of ``executed`` (AutoGen's ``(call, result)`` pairs of a turn's tool calls)
    that a policy refused; empty (and cheap) when there are none."""
    if not isinstance(executed, Sequence):
        return []
    return [pair[0] for pair in executed if isinstance(pair, DeniedHandoff)]


def without_denied_calls(model_result: Any, denied: list[Any]) -> Any:
    """``model_result`` (a ``CreateResult``) without the ``denied`` calls among its contents:
    what AutoGen looks through for the handoff to perform."""
    content = model_result.content
    if not isinstance(content, list):
        return model_result
    kept = [item for item in content if not any(item is call for call in denied)]
    return model_result.model_copy(update={"content": kept})


def without_denied_results(executed: Any) -> Any:
    """``executed`` (AutoGen's ``(call, result)`` pairs of a turn's tool calls) without the
    refused handoffs' pairs, in a new list (AutoGen's own keeps them, for the turn's summary).

    What AutoGen takes the transfer's message from (the result of the last call to the handoff
    performed: without this, a refused second call to it would be that message) and the
    ``HandoffMessage``'s context (the turn's calls other than handoffs)."""
    if not isinstance(executed, Sequence):
        return executed
    return [pair for pair in executed if not isinstance(pair, DeniedHandoff)]


def handoffs_not_denied(handoffs: Any, denied: list[Any]) -> Any:
    """``handoffs`` (name → ``Handoff``) without the names of the ``denied`` calls: AutoGen
    leaves handoffs out of a turn's summary, and a refused one belongs in it, as its failed
    result."""
    if not isinstance(handoffs, Mapping):
        return handoffs
    names = {getattr(call, "name", None) for call in denied}
    return {name: handoff for name, handoff in handoffs.items() if name not in names}
