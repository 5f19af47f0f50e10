"""The mapping from CrewAI objects to Sightline events, in one place.

Two kinds of CrewAI objects become events:

- events of ``crewai_event_bus`` (:data:`RULES`, keyed by event class name): a *start* event opens
  a span, the matching *end* event fills and ends it, a *point* event is a span that starts and
  ends at once. A rule whose ``event_type`` is ``None`` is a *scope*: it records nothing but is
  kept so that events nested in it find their parent (CrewAI's agent executor is itself a flow:
  the flows CrewAI runs itself are scopes, those a user wrote are recorded);
- the steps and task outputs handed to ``step_callback`` / ``task_callback``
  (:func:`step_rule`, :func:`fill_task_output`).

Every reader here is guarded: a failure to read one attribute loses that attribute, never the
event and never the user's call. Nothing is serialised here; the background worker does that.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sightline import ErrorKind, EventType, Span, ToolDenied
from sightline.capture import KEPT_ITEMS, bounded_copy
from sightline.logs import log_safely

__all__ = [
    "AGENT_ACTION",
    "AGENT_FINISH",
    "FRAMEWORK",
    "RULES",
    "SCOPE",
    "TOOL_RESULT",
    "UNEXPORTED_RULES",
    "CrewEventRule",
    "FlowRun",
    "MethodCall",
    "event_time_ns",
    "fill_task_output",
    "flow_run",
    "flow_run_ended",
    "method_call",
    "method_call_ended",
    "step_rule",
    "task_output_name",
    "tool_arguments",
]


FRAMEWORK = "crewai"

START, END, POINT = "start", "end", "point"

Filler = Callable[[Span, Any, Any], None]
Namer = Callable[[Any, Any], str]


@dataclass(frozen=True)
class CrewEventRule:
    """How one CrewAI event class becomes (part of) a Sightline event.

    ``phase`` is ``"start"``, ``"end"`` or ``"point"``. ``event_type`` is ``None`` for a scope
    that records nothing of its own. ``name(event, source)`` names the span (start and point
    rules); ``private_name``, when set, names it instead with ``capture_content`` off (the name
    would otherwise carry content: a task's description, a guardrail's prompt).
    ``fill(span, event, source)`` copies what the event knows onto the span.
    ``agent(event, source)`` names the Sightline agent of the span (children inherit it).
    ``pair`` lists attributes that identify the matching start of an end event that arrives
    without ``started_event_id``. ``choose(event, source)``, when set, picks the rule that
    records this particular event (``None``: record nothing). A ``rejection`` is a tool call
    CrewAI refused before running it; a rule that ``repeats_rejection`` is skipped when such a
    rejection of the same tool, in the same scope, came just before it.
    ``as_emitted(event)``, when set, is called as the event is received, in (a copy of) the
    context CrewAI emitted it in: it returns the event to record, with the values the flow may
    change in place afterwards as they were when the event was emitted.
    """

    phase: str
    event_type: EventType | None = None
    name: Namer | None = None
    fill: Filler | None = None
    agent: Callable[[Any, Any], str | None] | None = None
    pair: tuple[str, ...] = ()
    start: str | None = None  # the class name of the start event an end event closes
    choose: Callable[[Any, Any], CrewEventRule | None] | None = None
    rejection: bool = False
    repeats_rejection: bool = False
    private_name: Namer | None = None
    as_emitted: Callable[[Any], Any] | None = None


# -- guarded readers ------------------------------------------------------------------------------


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    """``obj.a.b`` along ``path`` (keys of dicts, attributes of anything else); ``default``
    when a step is missing or raises."""
    try:
        for name in path:
            if obj is None:
                return default
            # dict first: an isinstance check against Mapping costs more than the whole lookup
            obj = obj.get(name) if type(obj) is dict else getattr(obj, name, None)
        return default if obj is None else obj
    except Exception:
        return default


def _guarded(fill: Filler) -> Filler:
    """A filler that never raises: a failure loses the rest of this filler's fields only."""

    def run(span: Span, event: Any, source: Any) -> None:
        try:
            fill(span, event, source)
        except Exception:
            log_safely(
                logging.DEBUG,
                "sightline: crewai: could not read %s",
                type(event).__name__,
                exc_info=True,
            )

    run.__name__ = fill.__name__
    run.__doc__ = fill.__doc__
    return run


def event_time_ns(event: Any) -> int | None:
    """When CrewAI created the event, in ns since the epoch (``None`` when unknown)."""
    stamp = getattr(event, "timestamp", None)
    if isinstance(stamp, datetime):
        try:
            whole = stamp.replace(microsecond=0).timestamp()
            return int(whole) * 1_000_000_000 + stamp.microsecond * 1000
        except Exception:
            return None
    if isinstance(stamp, int):
        return stamp
    return None


def _names(items: Any) -> list[str]:
    """Names of tools (objects with ``.name``, or OpenAI-style ``{"function": {"name"}}``)."""
    names: list[str] = []
    for item in list(items or ()):
        name = _get(item, "function", "name") or _get(item, "name")
        if name:
            names.append(str(name))
    return names


def tool_arguments(value: Any) -> Any:
    """Tool arguments as a mapping when they are JSON text, else as given."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _snapshot(value: Any) -> Any:
    """A shallow copy of a list CrewAI keeps appending to (messages), so the event keeps the
    state at the time of the call."""
    return list(value) if isinstance(value, list) else value


def _error_text(event: Any) -> str:
    error = _get(event, "error")
    return error if isinstance(error, str) else repr(error)


def _set_error(span: Span, event: Any, kind: ErrorKind, error_type: str | None = None) -> None:
    error = _get(event, "error")
    if isinstance(error, BaseException):
        span.set_error(error, kind=kind)
    else:
        span.set_error(kind=kind, type=error_type, message=_error_text(event))


def _output_of(result: Any) -> Any:
    """The useful output of a TaskOutput / CrewOutput: structured when there is, else raw."""
    if result is None or isinstance(result, (str, int, float, bool, dict, list)):
        return result
    structured = _get(result, "json_dict") or _get(result, "pydantic")
    if structured is not None:
        return structured
    raw = _get(result, "raw")
    return raw if raw is not None else result


def _usage(span: Span, usage: Any) -> None:
    """Token counts from the usage dict of CrewAI's LLM events, and their prompt-cache and
    reasoning parts as ``metadata["usage_details"]`` (see :func:`_usage_details`).

    CrewAI's native providers hand it over normalised (OpenAI ``prompt_tokens``, Anthropic
    ``input_tokens`` with the cached prompt folded in, Gemini ``prompt_token_count`` with a
    ``completion_tokens`` that counts the thoughts); LiteLLM's ``prompt_tokens`` include the
    cached prompt too. Raw Anthropic usage (``input_tokens`` beside ``cache_read_input_tokens``
    / ``cache_creation_input_tokens``) and Bedrock's (``inputTokens`` beside
    ``cacheReadInputTokens`` / ``cacheWriteInputTokens``) leave the cached prompt out of the
    input: it is added, so that the input is always the whole prompt.
    """
    if not isinstance(usage, Mapping):
        return
    prompt = _first_count(usage, "prompt_tokens", "prompt_token_count")
    raw_cache: tuple[str, ...] = ()
    if prompt is None:
        prompt = _first_count(usage, "input_tokens", "inputTokens")
        raw_cache = (
            ("cache_read_input_tokens", "cache_creation_input_tokens")
            if "input_tokens" in usage
            else ("cacheReadInputTokens", "cacheWriteInputTokens")
        )
    completion = _first_count(usage, "completion_tokens", "output_tokens", "outputTokens")
    total = _first_count(usage, "total_tokens", "total_token_count", "totalTokens")
    if prompt is None and completion is None and total is None:
        return
    cached = sum(_first_count(usage, key) or 0 for key in raw_cache)
    if cached and prompt is not None:
        if total is not None and total == prompt + (completion or 0):
            total += cached  # a total that left them out too
        prompt += cached
    span.set_usage(input_tokens=prompt, output_tokens=completion, total_tokens=total)
    details = _usage_details(usage)
    if details:
        span.set_metadata(usage_details=details)


# Where CrewAI's usage dicts keep each detail: its own flat keys first, then the providers'.
_DETAIL_KEYS = (
    ("cache_read_tokens", ("cached_prompt_tokens", "cache_read_input_tokens", "cacheReadInputTokens")),
    ("cache_creation_tokens", ("cache_creation_tokens", "cache_creation_input_tokens", "cacheWriteInputTokens")),
    ("reasoning_tokens", ("reasoning_tokens",)),
)  # fmt: skip
_NESTED_DETAIL_KEYS = (
    ("cache_read_tokens", "prompt_tokens_details", "cached_tokens"),
    ("reasoning_tokens", "completion_tokens_details", "reasoning_tokens"),
)


def _usage_details(usage: Mapping[str, Any]) -> dict[str, int]:
    """Those of ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that
    the usage dict knows and are not zero: parts of the input and output, never added to them."""
    details: dict[str, int] = {}
    for name, keys in _DETAIL_KEYS:
        value = _first_count(usage, *keys)
        if value:
            details[name] = value
    for name, group, key in _NESTED_DETAIL_KEYS:
        nested = usage.get(group)
        if name not in details and isinstance(nested, Mapping):
            value = _first_count(nested, key)
            if value:
                details[name] = value
    return details


def _first_count(source: Mapping[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` that holds a count (an int, not a bool)."""
    for key in keys:
        value = source.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _text(value: Any, *, only_str: bool = False) -> str | None:
    """``str(value)`` (ids are UUID objects), ``None`` for ``None`` or, with ``only_str``, for
    anything that is not text already."""
    if value is None or (only_str and not isinstance(value, str)):
        return None
    return str(value)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# -- crew -----------------------------------------------------------------------------------------


def _crew_name(event: Any, source: Any) -> str:
    return str(_get(event, "crew_name") or _get(source, "name") or "crew")


@_guarded
def _crew_started(span: Span, event: Any, source: Any) -> None:
    """Run: the crew's inputs, its process and who is in it."""
    span.set_input(_get(event, "inputs"))
    process = _get(source, "process")
    span.set_metadata(
        _drop_none(
            {
                "process": _get(process, "value", default=process),
                "agents": [_get(agent, "role") for agent in list(_get(source, "agents") or ())]
                or None,
                "tasks": len(list(_get(source, "tasks") or ())) or None,
            }
        )
    )


@_guarded
def _crew_completed(span: Span, event: Any, source: Any) -> None:
    """Run: the final output. (Its usage is the sum of the kickoff's own LLM calls, added by
    the tree: CrewAI's ``token_usage`` counts every call its LLM objects ever made.)"""
    span.set_output(_output_of(_get(event, "output")))


# The type of the exception each failed kickoff raised, by the id of its start event: CrewAI's
# CrewKickoffFailedEvent carries the message only. Noted on the kickoff's thread before the event
# is emitted (see kickoff.py), read when it is handled; bounded.
_CREW_FAILURES: dict[str, str] = {}
_CREW_FAILURES_KEPT = 1024


def note_crew_failure(started_event_id: str, error: BaseException) -> None:
    """Remember the type of the exception a kickoff (start event ``started_event_id``) raised."""
    if len(_CREW_FAILURES) >= _CREW_FAILURES_KEPT:
        try:
            del _CREW_FAILURES[next(iter(_CREW_FAILURES))]
        except (StopIteration, KeyError, RuntimeError):  # another thread took it first
            pass
    _CREW_FAILURES[started_event_id] = type(error).__name__


@_guarded
def _crew_failed(span: Span, event: Any, source: Any) -> None:
    started = _get(event, "started_event_id")
    error_type = _CREW_FAILURES.pop(str(started), None) if started else None
    _set_error(span, event, ErrorKind.ORCHESTRATION, error_type)


# -- task -----------------------------------------------------------------------------------------


_NAME_FROM_TEXT = 80  # characters of a description (a prompt) kept in a span's name


def _short(text: Any) -> str:
    """The start of a text used as a name: one line, at most :data:`_NAME_FROM_TEXT` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= _NAME_FROM_TEXT else line[: _NAME_FROM_TEXT - 1] + "…"


def _task_name(event: Any, source: Any) -> str:
    """The task's name, else the start of its description (CrewAI's own ``task_name`` falls
    back to the description too)."""
    task = _get(event, "task") or source
    name = _get(task, "name")
    if name:
        return str(name)
    return _short(_get(event, "task_name") or _get(task, "description") or "task")


def _task_private_name(event: Any, source: Any) -> str:
    """With ``capture_content`` off: the task's name, never its description (a prompt)."""
    return str(_get(_get(event, "task") or source, "name") or "task")


@_guarded
def _task_started(span: Span, event: Any, source: Any) -> None:
    """Chain: the task's description, expected output and context from earlier tasks."""
    task = _get(event, "task") or source
    span.set_input(
        _drop_none(
            {
                "description": _get(task, "description"),
                "expected_output": _get(task, "expected_output"),
                "context": _get(event, "context") or None,
            }
        )
    )
    span.set_metadata(
        _drop_none(
            {
                "task_id": _get(event, "task_id") or _text(_get(task, "id")),
                "agent_role": _get(task, "agent", "role"),
                "async_execution": _get(task, "async_execution") or None,
            }
        )
    )


@_guarded
def _task_completed(span: Span, event: Any, source: Any) -> None:
    output = _get(event, "output")
    span.set_output(_output_of(output))
    output_format = _get(output, "output_format")
    if output_format is not None:
        span.set_metadata(output_format=_get(output_format, "value", default=output_format))


@_guarded
def _task_failed(span: Span, event: Any, source: Any) -> None:
    error_class = _get(event, "error_type")
    name = error_class.__name__ if isinstance(error_class, type) else None
    _set_error(span, event, ErrorKind.ORCHESTRATION, name)


# -- agent ----------------------------------------------------------------------------------------


def _agent_role(event: Any, source: Any) -> str | None:
    role = _get(event, "agent", "role") or _get(event, "agent_info", "role")
    role = role or _get(event, "agent_role") or _get(source, "role")
    return str(role) if role else None


def _agent_name(event: Any, source: Any) -> str:
    return _agent_role(event, source) or "agent"


def _model_name(llm: Any) -> str | None:
    if isinstance(llm, str):
        return llm
    model = _get(llm, "model")
    return str(model) if model else None


def _captures_content(span: Span) -> bool:
    """Whether the span's client records content (an agent's goal is part of its prompt)."""
    try:
        return bool(span.client.config.capture_content)
    except Exception:
        return False


@_guarded
def _agent_started(span: Span, event: Any, source: Any) -> None:
    """Agent: the prompt it works on, its goal, its tools and its model."""
    agent = _get(event, "agent") or source
    span.set_input(_get(event, "task_prompt"))
    span.set_metadata(
        _drop_none(
            {
                "role": _get(agent, "role"),
                "goal": _get(agent, "goal") if _captures_content(span) else None,
                "tools": _names(_get(event, "tools")),
                "model": _model_name(_get(agent, "llm")),
                "task_id": _text(_get(event, "task", "id")),
            }
        )
    )


@_guarded
def _lite_agent_started(span: Span, event: Any, source: Any) -> None:
    """Agent (``Agent.kickoff`` without a crew): its messages, goal and tools."""
    info = _get(event, "agent_info") or {}
    span.set_input(_snapshot(_get(event, "messages")))
    span.set_metadata(
        _drop_none(
            {
                "role": _get(info, "role"),
                "goal": _get(info, "goal") if _captures_content(span) else None,
                "tools": _names(_get(event, "tools")),
                "model": _model_name(_get(source, "llm")),
            }
        )
    )


@_guarded
def _agent_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "output"))


@_guarded
def _agent_failed(span: Span, event: Any, source: Any) -> None:
    _set_error(span, event, ErrorKind.ORCHESTRATION)


# -- llm ------------------------------------------------------------------------------------------


def _llm_name(event: Any, source: Any) -> str:
    return str(_get(event, "model") or _model_name(source) or "llm")


_SAMPLING = (
    "temperature", "top_p", "max_tokens", "stream", "seed", "stop_sequences",
    "frequency_penalty", "presence_penalty", "n",
)  # fmt: skip


@_guarded
def _llm_started(span: Span, event: Any, source: Any) -> None:
    """LLM call: model, messages, the tools offered and the sampling parameters."""
    span.set_model(_get(event, "model") or _model_name(source))
    span.set_input(_snapshot(_get(event, "messages")))
    metadata: dict[str, Any] = {"call_id": _get(event, "call_id")}
    tools = _names(_get(event, "tools"))
    if tools:
        metadata["tools"] = tools
    for key in _SAMPLING:
        value = getattr(event, key, None)
        if value is not None:
            metadata[key] = value
    provider = _get(source, "provider")
    if isinstance(provider, str):
        metadata["provider"] = provider
    span.set_metadata(_drop_none(metadata))


@_guarded
def _llm_completed(span: Span, event: Any, source: Any) -> None:
    """LLM call: the response (text or tool calls), finish reason and token usage."""
    if _get(event, "model"):
        span.set_model(event.model)
    span.set_output(_snapshot(_get(event, "response")))
    call_type = _get(event, "call_type")
    span.set_metadata(
        _drop_none(
            {
                "finish_reason": _get(event, "finish_reason"),
                "response_id": _get(event, "response_id"),
                "call_type": _get(call_type, "value", default=call_type),
            }
        )
    )
    _usage(span, _get(event, "usage"))


@_guarded
def _llm_failed(span: Span, event: Any, source: Any) -> None:
    _set_error(span, event, ErrorKind.MODEL)


# -- tools ----------------------------------------------------------------------------------------


def _tool_name(event: Any, source: Any) -> str:
    return str(_get(event, "tool_name") or "tool")


def _known_tool_private_name(event: Any, source: Any) -> str:
    """With ``capture_content`` off, for a tool call CrewAI refused: the tool's name when the
    agent has such a tool, else ``unknown_tool`` (a name the model made up is model output)."""
    name = _get(event, "tool_name")
    tools = _names(_get(event, "agent", "tools")) or _names(_get(source, "tools"))
    return str(name) if name and str(name) in tools else "unknown_tool"


@_guarded
def _tool_started(span: Span, event: Any, source: Any) -> None:
    """Tool call: name, arguments, run attempts and delegations."""
    span.set_input(tool_arguments(_get(event, "tool_args")))
    span.set_metadata(
        _drop_none(
            {
                "tool_class": _text(_get(event, "tool_class"), only_str=True),
                "run_attempts": _get(event, "run_attempts"),
                "delegations": _get(event, "delegations"),
                "agent_role": _get(event, "agent_role"),
            }
        )
    )


@_guarded
def _tool_finished(span: Span, event: Any, source: Any) -> None:
    """Tool call: output, whether it came from the cache, and a failure the tool reported."""
    span.set_output(_get(event, "output"))
    span.set_metadata(
        from_cache=bool(_get(event, "from_cache", default=False)),
        run_attempts=_get(event, "run_attempts", default=0),
    )
    failure = _get(event, "failure")
    if failure is not None:
        reason = _get(failure, "reason")
        span.set_error(
            kind=ErrorKind.TOOL,
            type=str(_get(reason, "value", default=reason) or "ToolFailure"),
            message=str(_get(failure, "message") or ""),
        )


@_guarded
def _tool_error(span: Span, event: Any, source: Any) -> None:
    """Tool call: the exception the tool raised; a governance deny (``ToolDenied``, raised
    where the tool would have run) is of kind ``guardrail``."""
    span.set_metadata(run_attempts=_get(event, "run_attempts", default=0))
    denied = isinstance(_get(event, "error"), ToolDenied)
    _set_error(span, event, ErrorKind.GUARDRAIL if denied else ErrorKind.TOOL)


@_guarded
def _tool_rejected(span: Span, event: Any, source: Any) -> None:
    """A tool the model asked for that does not exist, or with arguments that do not fit."""
    span.set_input(tool_arguments(_get(event, "tool_args")) or None)
    span.set_metadata(rejected=event.type)
    _set_error(span, event, ErrorKind.TOOL, type(event).__name__.removesuffix("Event"))


def _failure_reason(event: Any) -> str:
    reason = _get(event, "failure", "reason")
    return str(_get(reason, "value", default=reason) or "")


@_guarded
def _tool_failure_detected(span: Span, event: Any, source: Any) -> None:
    """A tool call CrewAI refused before running it: the arguments and CrewAI's reason."""
    failure = _get(event, "failure")
    policy = _get(event, "policy")
    span.set_input(tool_arguments(_get(event, "tool_args")) or None)
    span.set_metadata(
        _drop_none(
            {
                "rejected": _get(event, "type"),
                "code": _get(failure, "code"),
                "policy": _get(policy, "value", default=policy),
                "agent_role": _get(event, "agent_role"),
            }
        )
    )
    span.set_error(
        kind=ErrorKind.TOOL,
        type=_failure_reason(event) or "ToolFailure",
        message=str(_get(failure, "message") or ""),
    )


@_guarded
def _repeated_call(span: Span, event: Any, source: Any) -> None:
    """CrewAI stopped an agent that kept making the same tool call."""
    failure = _get(event, "failure")
    span.set_input(
        {"tool": _get(event, "tool_name"), "tool_args": tool_arguments(_get(event, "tool_args"))}
    )
    span.set_error(
        kind=ErrorKind.ORCHESTRATION,
        type=_failure_reason(event),
        message=str(_get(failure, "message") or ""),
    )


def _tool_failure_rule(event: Any, source: Any) -> CrewEventRule | None:
    """``ToolFailureDetectedEvent`` repeats, for most reasons, a failure the ``ToolUsage*``
    events already carry (``failure`` on the finished event, the error event, a selection
    error). Two reasons are news: ``invalid_input`` (arguments that are not JSON never reach
    the tool, so nothing else reports the call) and ``repeated_call`` (CrewAI stops the agent)."""
    reason = _failure_reason(event)
    if reason == "invalid_input":
        return _INVALID_TOOL_CALL
    if reason == "repeated_call":
        return _REPEATED_CALL
    return None


# -- memory, knowledge, reasoning, guardrails -----------------------------------------------------


def _fixed(name: str) -> Namer:
    return lambda event, source: name


@_guarded
def _memory_query_started(span: Span, event: Any, source: Any) -> None:
    span.set_input(_get(event, "query"))
    span.set_metadata(
        _drop_none(
            {
                "limit": _get(event, "limit"),
                "score_threshold": _get(event, "score_threshold"),
                "source_type": _get(event, "source_type"),
            }
        )
    )


@_guarded
def _memory_query_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "results"))


@_guarded
def _memory_retrieval_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "memory_content"))


@_guarded
def _memory_save_started(span: Span, event: Any, source: Any) -> None:
    span.set_input(_get(event, "value"))
    if _get(event, "metadata"):
        span.set_metadata(memory_metadata=event.metadata)


@_guarded
def _knowledge_query_started(span: Span, event: Any, source: Any) -> None:
    span.set_input(_get(event, "task_prompt"))


@_guarded
def _knowledge_query_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "query"))


@_guarded
def _knowledge_search_completed(span: Span, event: Any, source: Any) -> None:
    span.set_input(_get(event, "query"))
    span.set_output(_get(event, "retrieved_knowledge"))


def _failed(kind: ErrorKind) -> Filler:
    @_guarded
    def fill(span: Span, event: Any, source: Any) -> None:
        _set_error(span, event, kind)

    return fill


@_guarded
def _reasoning_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "plan"))
    span.set_metadata(ready=_get(event, "ready"), attempt=_get(event, "attempt"))


def _guardrail_name(event: Any, source: Any) -> str:
    """``guardrail:`` and the function's name, or the start of an LLM guardrail's prompt."""
    name = _get(event, "guardrail_name") or _get(event, "guardrail_type") or "task"
    return f"guardrail:{_short(name)}"


def _guardrail_private_name(event: Any, source: Any) -> str:
    """With ``capture_content`` off: an LLM guardrail's name is its prompt, so only its kind
    (``guardrail:llm``, ``guardrail:hallucination``); a function guardrail keeps its name."""
    kind = _get(event, "guardrail_type")
    if kind == "function":
        return _guardrail_name(event, source)
    return f"guardrail:{kind or 'task'}"


@_guarded
def _guardrail_started(span: Span, event: Any, source: Any) -> None:
    span.set_metadata(
        _drop_none(
            {
                "guardrail_type": _get(event, "guardrail_type"),
                "retry_count": _get(event, "retry_count"),
            }
        )
    )


@_guarded
def _guardrail_completed(span: Span, event: Any, source: Any) -> None:
    span.set_output(_get(event, "result"))
    span.set_metadata(success=_get(event, "success"), retry_count=_get(event, "retry_count"))
    if _get(event, "success") is False:
        span.set_error(
            kind=ErrorKind.GUARDRAIL,
            type="GuardrailRejected",
            message=str(_get(event, "error") or ""),
        )


# -- flows ----------------------------------------------------------------------------------------


def _internal_flow(source: Any) -> bool:
    """Whether ``source`` is a flow CrewAI runs itself (its agent executor, memory encoding and
    recall): those stay scopes, their work belongs to the agent or crew that ran them."""
    try:
        cls = type(source)
        marker = getattr(cls, "is_crewai_internal", None)
        if marker is not None:
            return bool(marker)
        # A CrewAI without the marker: its own flows are defined in its own modules (a
        # declarative flow is typed as ``Flow`` itself, in ``crewai.flow``: a user's).
        module = str(getattr(cls, "__module__", "") or "")
        return module.startswith("crewai.") and not module.startswith("crewai.flow")
    except Exception:
        return False


def _user_flows_only(rule: CrewEventRule) -> CrewEventRule:
    """A rule that chooses ``rule`` for the events of a flow a user wrote; for a flow CrewAI
    runs itself, a start is a scope (its children keep their parent) and an end records
    nothing. (It keeps what an end's pairing needs: ``start`` and ``pair``.)"""
    internal = _SCOPE if rule.phase == START else None

    def choose(event: Any, source: Any) -> CrewEventRule | None:
        return internal if _internal_flow(source) else rule

    return CrewEventRule(rule.phase, start=rule.start, pair=rule.pair, choose=choose)


def _flow_name(event: Any, source: Any) -> str:
    """The flow's ``name``, else its class name (CrewAI's ``flow_name`` is that already)."""
    name = _get(event, "flow_name") or _get(source, "name")
    if not name and source is not None:
        name = type(source).__name__
    return str(name or "flow")


def _method_name(event: Any, source: Any) -> str:
    return str(_get(event, "method_name") or "method")


_ID_LENGTH = 64  # characters of a flow id chosen by the user kept in metadata


def _flow_id(span: Span, value: Any) -> str | None:
    """The flow's state id for metadata. CrewAI's own ids are UUIDs, kept as they are; an id the
    user chose (``inputs["id"]``) is state content: kept only with ``capture_content`` on, cut to
    :data:`_ID_LENGTH` characters."""
    text = _text(value)
    if not text:
        return None
    if len(text) == 36:
        try:
            uuid.UUID(text)
            return text
        except ValueError:
            pass
    if not _captures_content(span):
        return None
    return text if len(text) <= _ID_LENGTH else text[: _ID_LENGTH - 1] + "…"


# CrewAI's own results, recorded by their structured (or raw) output; a result of any other
# class is recorded as it is, whatever its attributes are called.
_CREWAI_OUTPUTS = frozenset({"CrewOutput", "TaskOutput", "LiteAgentOutput"})


def _is_crewai_output(value: Any) -> bool:
    for cls in type(value).__mro__:
        if cls.__name__ in _CREWAI_OUTPUTS and cls.__module__.startswith("crewai."):
            return True
    return False


def _flow_value(value: Any) -> Any:
    """What a flow method returned (or was handed), as recorded, as it is now: a crew's output as
    for a crew, an Enum (a router's choice) by its value, a dict or list copied (see
    :func:`_own`)."""
    cls = value.__class__
    if cls is str or value is None:
        return value
    if isinstance(value, Enum):
        return value.value
    if _is_crewai_output(value):
        return _output_of(value)
    return _own(value)


def _own(value: Any) -> Any:
    """``value`` as it is now, for a value the flow may change in place after the event (kickoff
    inputs, a method's result that the next method is handed): a dict or list copied two
    levels deep, at most the 500 items a level that are recorded (as ``sightline.monitor`` and
    the LangChain integration do). Deeper changes, and changes inside other objects, still
    show: copying arbitrary objects is neither cheap nor safe."""
    if isinstance(value, dict):
        copy: Any = dict(value) if len(value) <= KEPT_ITEMS else bounded_copy(value)
    elif value.__class__ is list:
        copy = value.copy() if len(value) <= KEPT_ITEMS else bounded_copy(value)
    else:
        return value
    if copy.__class__ is dict:
        for key, item in copy.items():
            if item.__class__ is list or isinstance(item, dict):
                copy[key] = _shallow(item)
    else:
        for index, item in enumerate(copy):
            if item.__class__ is list or isinstance(item, dict):
                copy[index] = _shallow(item)
    return copy


def _shallow(value: Any) -> Any:
    if len(value) > KEPT_ITEMS:
        return bounded_copy(value)
    return dict(value) if isinstance(value, dict) else value.copy()


class MethodCall:
    """One run of a flow method going on in this context (``Flow._execute_method``, wrapped
    while a listener is registered): its parameters as it was called with them, and its result
    as it returned it, before the next method (handed the same objects) could change them.

    CrewAI runs the handlers on its pool: the next method may run before the handler of the
    previous one's end, so what the event holds is read too late there. The handler runs in a
    copy of the context the event was emitted in, where this call is current (see
    :func:`method_call`).

    Each value is copied once (:func:`_flow_value`) and the handlers record that copy as it is:
    a parameter that is the very object an earlier method of the run returned (a listener's
    ``_0``) is that method's copy of its result; the result is copied by whichever comes first,
    the call as it returns or the handler of its end (the method has then returned its value,
    and the next method starts only once the call has it)."""

    __slots__ = ("args", "kwargs", "lock", "name", "params", "result", "returned", "run")

    def __init__(
        self,
        name: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run: FlowRun | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.run = run
        self.lock = threading.Lock()
        self.returned: Any = _NOTHING
        self.result: Any = None
        # as CrewAI reports them: positional arguments as _0, _1..., then the keywords
        self.params = {f"_{index}": _handed_over(arg, run) for index, arg in enumerate(args)}
        for key, value in kwargs.items():
            self.params[key] = _flow_value(value)

    def finished(self, outcome: Any) -> None:
        """``Flow._execute_method`` returned ``outcome``: ``(result, finished event id)``."""
        if outcome.__class__ is tuple and outcome:
            self.kept(outcome[0])
            run = self.run
            if run is not None:
                run.finished(self)

    def kept(self, result: Any) -> Any:
        """``result`` (what the method returned) as recorded: copied the first time only."""
        with self.lock:
            if self.returned is not result:
                self.result = _flow_value(result)
                self.returned = result  # set last: a reader that sees it finds the result
            return self.result

    def same_params(self, params: Any) -> bool:
        """Whether ``params`` (a start event's) holds the very objects this call was given."""
        args, kwargs = self.args, self.kwargs
        if not isinstance(params, dict) or len(params) != len(args) + len(kwargs):
            return False
        for index, arg in enumerate(args):
            if params.get(f"_{index}", _NOTHING) is not arg:
                return False
        return all(params.get(key, _NOTHING) is value for key, value in kwargs.items())


class FlowRun:
    """One run of a flow (``Flow.kickoff_async`` / ``Flow.resume_async``, wrapped): the latest
    finished call of each of its methods, whose result copies the next methods (handed the same
    objects) and the flow's end reuse. Current in the run's context (see :func:`flow_run`);
    it goes with the run's context."""

    __slots__ = ("calls", "flow")

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        self.calls: dict[Any, MethodCall] = {}  # method name -> its latest finished call

    def finished(self, call: MethodCall) -> None:
        calls = self.calls
        calls.pop(call.name, None)  # the latest last: the copy of a value changed since
        calls[call.name] = call

    def copy_of(self, value: Any) -> Any:
        """The copy made of ``value`` when the latest method that returned it did, else
        ``_NOTHING``."""
        for call in reversed(list(self.calls.values())):
            if call.returned is value:
                return call.result
        return _NOTHING


def _handed_over(value: Any, run: FlowRun | None) -> Any:
    """A method's parameter as recorded: the copy made of it as an earlier method of the run
    returned it (the trigger's result CrewAI hands a listener), else a copy of its own."""
    if run is not None and (value.__class__ is list or isinstance(value, dict)):
        kept = run.copy_of(value)
        if kept is not _NOTHING:
            return kept
    return _flow_value(value)


_NOTHING: Any = object()
_method_call: ContextVar[MethodCall | None] = ContextVar("sightline_crewai_method", default=None)
_flow_run: ContextVar[FlowRun | None] = ContextVar("sightline_crewai_flow_run", default=None)


def flow_run(flow: Any) -> Token[FlowRun | None]:
    """Make a run of ``flow`` the current one here (give the token back to
    :func:`flow_run_ended`)."""
    return _flow_run.set(FlowRun(flow))


def flow_run_ended(token: Token[FlowRun | None]) -> None:
    """The run :func:`flow_run` made current has ended (here: the contexts its methods and the
    handlers of its events run in keep it while they need it)."""
    try:
        _flow_run.reset(token)
    except ValueError:  # ended in another context than it began in: that one goes with it
        pass


def method_call(
    name: Any, args: tuple[Any, ...], kwargs: dict[str, Any], flow: Any = None
) -> tuple[MethodCall, Token[MethodCall | None]]:
    """Make a run of method ``name`` of ``flow`` with ``args`` and ``kwargs`` the current one
    here (give the token back to :func:`method_call_ended`)."""
    run = _flow_run.get()
    if run is not None and run.flow is not flow:
        run = None
    call = MethodCall(name, args, kwargs, run)
    return call, _method_call.set(call)


def method_call_ended(token: Token[MethodCall | None]) -> None:
    """The run :func:`method_call` made current has ended."""
    _method_call.reset(token)


class _AsEmitted:
    """A CrewAI event with some of its values replaced by what they were when it was emitted."""

    __slots__ = ("_event", "_values")

    def __init__(self, event: Any, values: dict[str, Any]) -> None:
        self._event = event
        self._values = values

    def __getattr__(self, name: str) -> Any:
        values = self._values
        return values[name] if name in values else getattr(self._event, name)


def _params_as_called(event: Any) -> Any:
    """A method's start: its parameters as the method was called with them."""
    try:
        call = _method_call.get()
        if (
            call is not None
            and call.name == _get(event, "method_name")
            and call.same_params(_get(event, "params"))
        ):
            return _AsEmitted(event, {"params": call.params})
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: crewai: could not read a method's call", exc_info=True
        )
    return event


def _result_as_returned(event: Any) -> Any:
    """A method's end: its result as the method returned it, copied once (see
    :class:`MethodCall`): here, when the call has not noted it yet (the method has returned
    it; the next method starts only once the call has it)."""
    try:
        result = _get(event, "result")
        call = _method_call.get()
        if call is not None and result is not None and call.name == _get(event, "method_name"):
            kept = call.kept(result)
        else:  # no call of this method here (not wrapped): as it is now
            kept = _flow_value(result)
        return _AsEmitted(event, {"result": kept})
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: crewai: could not read a method's result", exc_info=True
        )
        return event


def _flow_result_as_returned(event: Any) -> Any:
    """A flow's end: its result (its last method's) as the method returned it, that method's
    copy when there is one."""
    try:
        result = _get(event, "result")
        run = _flow_run.get()
        kept = run.copy_of(result) if run is not None and result is not None else _NOTHING
        if kept is _NOTHING:
            kept = _flow_value(result)
        return _AsEmitted(event, {"result": kept})
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: crewai: could not read a flow's result", exc_info=True
        )
        return event


@_guarded
def _flow_started(span: Span, event: Any, source: Any) -> None:
    """Chain of a flow run: the kickoff inputs and the flow's state id."""
    span.set_input(_own(_get(event, "inputs")))
    flow_id = _flow_id(span, _get(source, "flow_id"))
    if flow_id is not None:
        span.set_metadata(flow_id=flow_id)


@_guarded
def _flow_finished(span: Span, event: Any, source: Any) -> None:
    result = _get(event, "result")
    span.set_output(result if isinstance(event, _AsEmitted) else _flow_value(result))


@_guarded
def _flow_paused(span: Span, event: Any, source: Any) -> None:
    """A flow that stopped to wait for human feedback (``kickoff`` returned; resuming it is a
    new flow run): the message shown to the reviewer, the method waiting and its outcomes."""
    span.set_output(_get(event, "message"))
    metadata = {
        "paused": True,
        "paused_method": _text(_get(event, "method_name")),
        "emit": [str(outcome) for outcome in list(_get(event, "emit") or ())] or None,
    }
    if "flow_id" not in span.event.metadata:
        metadata["flow_id"] = _flow_id(span, _get(event, "flow_id"))
    span.set_metadata(_drop_none(metadata))


@_guarded
def _method_started(span: Span, event: Any, source: Any) -> None:
    """Chain of a flow method: the arguments CrewAI calls it with (a listener's is the output
    of the method that triggered it, ``_0``) and the flow's state as the method starts."""
    params = _get(event, "params")
    if not isinstance(params, Mapping) or not params:
        params = None
    elif not isinstance(event, _AsEmitted):  # as called (copied once): recorded as they are
        params = {key: _flow_value(value) for key, value in params.items()}
    span.set_input(_drop_none({"params": params, "state": _get(event, "state")}))


_NESTED_CONDITIONS = 32  # levels of or_ / and_ followed (deeper would be a cycle)


def _condition_labels(condition: Any, labels: set[str], depth: int = 0) -> None:
    """The trigger names a ``@listen`` / ``@start`` condition mentions (``or_`` / ``and_``)."""
    if isinstance(condition, str):
        labels.add(condition)
    elif isinstance(condition, Mapping) and depth < _NESTED_CONDITIONS:
        for key in ("and", "or"):
            for child in list(condition.get(key) or ()):
                _condition_labels(child, labels, depth + 1)


def _declared_labels(source: Any) -> set[str]:
    """The names a flow's code declares as triggers: the outcomes its routers ``emit`` and every
    name its ``@listen`` / ``@start`` conditions wait for."""
    labels: set[str] = set()
    methods = _get(source, "_definition", "methods")
    if not isinstance(methods, Mapping):
        return labels
    for definition in list(methods.values()):
        for outcomes in (_get(definition, "emit"), _get(definition, "human_feedback", "emit")):
            labels.update(str(outcome) for outcome in list(outcomes or ()))
        _condition_labels(_get(definition, "listen"), labels)
        _condition_labels(_get(definition, "start"), labels)
    return labels


def _is_router(source: Any, method: Any) -> bool:
    methods = _get(source, "_definition", "methods")
    if isinstance(methods, Mapping):
        return bool(_get(methods.get(str(method)), "router", default=False))
    return str(method) in set(_get(source, "_routers") or ())  # a CrewAI before definitions


def _route(span: Span, event: Any, source: Any) -> str | None:
    """The route a router method chose: the name its result gives (an Enum's value), which
    CrewAI then triggers. With ``capture_content`` off only a name the flow's code declares (a
    router may return text a model wrote)."""
    result = _get(event, "result")
    if result is None or not _is_router(source, _get(event, "method_name")):
        return None
    value = str(result.value if isinstance(result, Enum) else result)
    if not _captures_content(span) and value not in _declared_labels(source):
        return None
    return _short(value)


@_guarded
def _method_finished(span: Span, event: Any, source: Any) -> None:
    """Chain of a flow method: its result; a router's is also its ``route``."""
    result = _get(event, "result")
    span.set_output(result if isinstance(event, _AsEmitted) else _flow_value(result))
    route = _route(span, event, source)
    if route is not None:
        span.set_metadata(route=route)


@_guarded
def _method_paused(span: Span, event: Any, source: Any) -> None:
    """A ``@human_feedback`` method waiting for a reviewer: the message shown, the outcomes."""
    span.set_output(_get(event, "message"))
    emit = [str(outcome) for outcome in list(_get(event, "emit") or ())] or None
    span.set_metadata(_drop_none({"paused": True, "emit": emit}))


# -- the table ------------------------------------------------------------------------------------


def _start(
    event_type: EventType, name: Namer, fill: Filler | None = None, **kw: Any
) -> CrewEventRule:
    return CrewEventRule(START, event_type, name, fill, **kw)


def _end(start: str, fill: Filler | None = None, *pair: str) -> CrewEventRule:
    return CrewEventRule(END, None, None, fill, pair=pair, start=start)


def _point(event_type: EventType, name: Namer, fill: Filler, **kw: Any) -> CrewEventRule:
    return CrewEventRule(POINT, event_type, name, fill, **kw)


# A call whose arguments CrewAI could not parse: on the ReAct path the same refusal was
# reported just before as ToolSelectionError / ToolValidateInputError, on the native path not.
_INVALID_TOOL_CALL = _point(
    EventType.TOOL_CALL,
    _tool_name,
    _tool_failure_detected,
    repeats_rejection=True,
    private_name=_known_tool_private_name,
)
_REPEATED_CALL = _point(EventType.DECISION, _fixed("repeated_call"), _repeated_call)


_SCOPE = CrewEventRule(START)

RULES: dict[str, CrewEventRule] = {
    # crew kickoff -> run
    "CrewKickoffStartedEvent": _start(EventType.RUN, _crew_name, _crew_started),
    "CrewKickoffCompletedEvent": _end("CrewKickoffStartedEvent", _crew_completed),
    "CrewKickoffFailedEvent": _end("CrewKickoffStartedEvent", _crew_failed),
    # task -> chain
    "TaskStartedEvent": _start(
        EventType.CHAIN, _task_name, _task_started, private_name=_task_private_name
    ),
    "TaskCompletedEvent": _end("TaskStartedEvent", _task_completed, "task_id"),
    "TaskFailedEvent": _end("TaskStartedEvent", _task_failed, "task_id"),
    # agent execution -> agent
    "AgentExecutionStartedEvent": _start(
        EventType.AGENT, _agent_name, _agent_started, agent=_agent_role
    ),
    "AgentExecutionCompletedEvent": _end("AgentExecutionStartedEvent", _agent_completed),
    "AgentExecutionErrorEvent": _end("AgentExecutionStartedEvent", _agent_failed),
    "LiteAgentExecutionStartedEvent": _start(
        EventType.AGENT, _agent_name, _lite_agent_started, agent=_agent_role
    ),
    "LiteAgentExecutionCompletedEvent": _end("LiteAgentExecutionStartedEvent", _agent_completed),
    "LiteAgentExecutionErrorEvent": _end("LiteAgentExecutionStartedEvent", _agent_failed),
    # LLM call -> llm_invoke
    "LLMCallStartedEvent": _start(EventType.LLM_INVOKE, _llm_name, _llm_started),
    "LLMCallCompletedEvent": _end("LLMCallStartedEvent", _llm_completed, "call_id"),
    "LLMCallFailedEvent": _end("LLMCallStartedEvent", _llm_failed, "call_id"),
    # tool usage -> tool_call
    "ToolUsageStartedEvent": _start(
        EventType.TOOL_CALL, _tool_name, _tool_started, private_name=_known_tool_private_name
    ),
    "ToolUsageFinishedEvent": _end("ToolUsageStartedEvent", _tool_finished, "tool_name"),
    "ToolUsageErrorEvent": _end("ToolUsageStartedEvent", _tool_error, "tool_name"),
    "ToolSelectionErrorEvent": _point(
        EventType.TOOL_CALL,
        _tool_name,
        _tool_rejected,
        rejection=True,
        private_name=_known_tool_private_name,
    ),
    "ToolValidateInputErrorEvent": _point(
        EventType.TOOL_CALL,
        _tool_name,
        _tool_rejected,
        rejection=True,
        private_name=_known_tool_private_name,
    ),
    # a call refused before it ran (unparsable arguments), or an agent stopped for repeating
    # itself; other failures it reports are already on the events above
    "ToolFailureDetectedEvent": CrewEventRule(POINT, choose=_tool_failure_rule),
    # memory and knowledge -> retrieval (saving -> data_access)
    "MemoryRetrievalStartedEvent": _start(EventType.RETRIEVAL, _fixed("memory")),
    "MemoryRetrievalCompletedEvent": _end(
        "MemoryRetrievalStartedEvent", _memory_retrieval_completed
    ),
    "MemoryRetrievalFailedEvent": _end("MemoryRetrievalStartedEvent", _failed(ErrorKind.RETRIEVAL)),
    "MemoryQueryStartedEvent": _start(
        EventType.RETRIEVAL, _fixed("memory_query"), _memory_query_started
    ),
    "MemoryQueryCompletedEvent": _end("MemoryQueryStartedEvent", _memory_query_completed),
    "MemoryQueryFailedEvent": _end("MemoryQueryStartedEvent", _failed(ErrorKind.RETRIEVAL)),
    "MemorySaveStartedEvent": _start(
        EventType.DATA_ACCESS, _fixed("memory_save"), _memory_save_started
    ),
    "MemorySaveCompletedEvent": _end("MemorySaveStartedEvent"),
    "MemorySaveFailedEvent": _end("MemorySaveStartedEvent", _failed(ErrorKind.RETRIEVAL)),
    "KnowledgeRetrievalStartedEvent": _start(EventType.RETRIEVAL, _fixed("knowledge")),
    "KnowledgeRetrievalCompletedEvent": _end(
        "KnowledgeRetrievalStartedEvent", _knowledge_search_completed
    ),
    "KnowledgeSearchQueryFailedEvent": _end(
        "KnowledgeRetrievalStartedEvent", _failed(ErrorKind.RETRIEVAL)
    ),
    "KnowledgeQueryStartedEvent": _start(
        EventType.CHAIN, _fixed("knowledge_query"), _knowledge_query_started
    ),
    "KnowledgeQueryCompletedEvent": _end("KnowledgeQueryStartedEvent", _knowledge_query_completed),
    "KnowledgeQueryFailedEvent": _end("KnowledgeQueryStartedEvent", _failed(ErrorKind.RETRIEVAL)),
    # planning and guardrails -> decision
    "AgentReasoningStartedEvent": _start(EventType.DECISION, _fixed("reasoning")),
    "AgentReasoningCompletedEvent": _end("AgentReasoningStartedEvent", _reasoning_completed),
    "AgentReasoningFailedEvent": _end(
        "AgentReasoningStartedEvent", _failed(ErrorKind.ORCHESTRATION)
    ),
    "LLMGuardrailStartedEvent": _start(
        EventType.DECISION,
        _guardrail_name,
        _guardrail_started,
        private_name=_guardrail_private_name,
    ),
    "LLMGuardrailCompletedEvent": _end("LLMGuardrailStartedEvent", _guardrail_completed),
    "LLMGuardrailFailedEvent": _end("LLMGuardrailStartedEvent", _failed(ErrorKind.GUARDRAIL)),
    # a flow run and each of its methods -> chain (CrewAI's own flows, such as the agent
    # executor, stay scopes that only carry parents)
    "FlowStartedEvent": _user_flows_only(_start(EventType.CHAIN, _flow_name, _flow_started)),
    "FlowFinishedEvent": _user_flows_only(
        CrewEventRule(
            END,
            fill=_flow_finished,
            pair=("flow_name",),
            start="FlowStartedEvent",
            as_emitted=_flow_result_as_returned,
        )
    ),
    "FlowFailedEvent": _user_flows_only(
        _end("FlowStartedEvent", _failed(ErrorKind.ORCHESTRATION), "flow_name")
    ),
    "MethodExecutionStartedEvent": _user_flows_only(
        _start(EventType.CHAIN, _method_name, _method_started, as_emitted=_params_as_called)
    ),
    "MethodExecutionFinishedEvent": _user_flows_only(
        CrewEventRule(
            END,
            fill=_method_finished,
            pair=("flow_name", "method_name"),
            start="MethodExecutionStartedEvent",
            as_emitted=_result_as_returned,
        )
    ),
    "MethodExecutionFailedEvent": _user_flows_only(
        _end(
            "MethodExecutionStartedEvent",
            _failed(ErrorKind.ORCHESTRATION),
            "flow_name",
            "method_name",
        )
    ),
}
"""CrewAI event class name (a class ``crewai.events`` exports) -> rule. Scope-starting classes
not named here are added as scopes by the listener, so that nothing nested in them loses its
parent."""

UNEXPORTED_RULES: dict[str, CrewEventRule] = {
    # a flow stopped to wait for human feedback (``@human_feedback`` with an async provider)
    "FlowPausedEvent": _user_flows_only(_end("FlowStartedEvent", _flow_paused, "flow_name")),
    "MethodExecutionPausedEvent": _user_flows_only(
        _end("MethodExecutionStartedEvent", _method_paused, "flow_name", "method_name")
    ),
}
"""Rules of the CrewAI event classes ``crewai.events`` does not export (CrewAI 1.15 defines
these in ``crewai.events.types.flow_events`` only): the listener finds them by name among
CrewAI's event classes."""

SCOPE = _SCOPE


# -- step_callback / task_callback ----------------------------------------------------------------


@_guarded
def _agent_action(span: Span, step: Any, source: Any) -> None:
    span.set_input(_get(step, "thought") or None)
    span.set_output(
        {"tool": _get(step, "tool"), "tool_input": tool_arguments(_get(step, "tool_input"))}
    )


@_guarded
def _agent_finish(span: Span, step: Any, source: Any) -> None:
    span.set_input(_get(step, "thought") or None)
    span.set_output(_get(step, "output"))


@_guarded
def _tool_result(span: Span, step: Any, source: Any) -> None:
    """``source`` is the AgentAction that asked for the tool (or ``None``)."""
    span.set_input(tool_arguments(_get(source, "tool_input")))
    result = _get(step, "result")
    span.set_output(result if result is not None else _get(source, "result"))
    span.set_metadata(result_as_answer=bool(_get(step, "result_as_answer", default=False)))


AGENT_ACTION = _point(EventType.DECISION, _fixed("agent_action"), _agent_action)
AGENT_FINISH = _point(EventType.DECISION, _fixed("agent_finish"), _agent_finish)
TOOL_RESULT = _point(
    EventType.TOOL_CALL,
    lambda step, action: str(_get(action, "tool") or "tool"),
    _tool_result,
)
"""A tool call from a step: ``fill(span, tool_result_or_action, action)``; named after the
AgentAction that asked for the tool."""

_STEP_RULES = {"AgentAction": AGENT_ACTION, "AgentFinish": AGENT_FINISH, "ToolResult": TOOL_RESULT}


def step_rule(step: Any) -> CrewEventRule | None:
    """The rule for an object ``step_callback`` received, by its class name (``None``: ignore).

    ``AgentAction`` and ``AgentFinish`` are decisions; ``ToolResult`` is a tool call.
    """
    return _STEP_RULES.get(type(step).__name__)


def task_output_name(output: Any, *, capture_content: bool = True) -> str:
    """The name of the chain event of a TaskOutput: the task's name, else the start of its
    description (never the description with ``capture_content`` off)."""
    name, description = _get(output, "name"), _get(output, "description")
    if name and name != description:  # CrewAI names an unnamed task's output by its description
        return str(name)
    return _short(description) if description and capture_content else "task"


@_guarded
def fill_task_output(span: Span, output: Any, source: Any) -> None:
    """Chain from ``task_callback``: description and expected output in, the output out."""
    span.set_input(
        _drop_none(
            {
                "description": _get(output, "description"),
                "expected_output": _get(output, "expected_output"),
            }
        )
    )
    span.set_output(_output_of(output))
    output_format = _get(output, "output_format")
    span.set_metadata(
        _drop_none(
            {
                "agent_role": _get(output, "agent"),
                "output_format": _get(output_format, "value", default=output_format),
            }
        )
    )
