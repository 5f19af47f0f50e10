"""The mapping from AutoGen objects to Sightline event fields.

Every function here reads a framework object defensively: a failure to read one attribute loses
that attribute (the function returns ``None`` or a partial value), never the event and never the
user's call. Nothing here imports AutoGen; objects are read by duck typing, so the module works
for model clients, messages and tools of any AutoGen package (``autogen_ext``, third parties).

Values are kept as plain Python objects; the Sightline worker turns them into bounded JSON off
the caller's thread. Only what must be copied now (because AutoGen mutates or clears it later) is
copied here, and only shallowly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "FRAMEWORK",
    "UNKNOWN_TOOL",
    "agent_input",
    "agent_tool_names",
    "bounded_text",
    "finish_reason_of",
    "function_calls_of",
    "message_preview",
    "message_view",
    "model_name_of",
    "parse_arguments",
    "response_fields",
    "result_output",
    "tool_names",
    "usage_details_of",
    "usage_of",
    "whole_prompt_tokens",
]

FRAMEWORK = "autogen"
"""The ``framework`` of every event this adapter emits."""


UNKNOWN_TOOL = "unknown_tool"
"""A tool name a model asked for that names none of the agent's tools, as recorded with
``capture_content`` off: a name the model made up is model output."""

_MISSING = object()


def bounded_text(value: Any, limit: int) -> str:
    """``value`` as text (``str`` or a safe ``repr``), cut to ``limit`` characters."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > limit:
        return text[:limit] + "…[truncated]"
    return text


# -- model clients -----------------------------------------------------------------------------


def model_name_of(model_client: Any) -> str | None:
    """The model a client is configured for: its create arguments, a ``model`` attribute, or
    the family of its ``model_info`` (``None`` when the family is ``unknown``)."""
    try:
        create_args = getattr(model_client, "_create_args", None)
        if isinstance(create_args, Mapping):
            model = create_args.get("model")
            if isinstance(model, str) and model:
                return model
        model = getattr(model_client, "model", None)
        if isinstance(model, str) and model:
            return model
        info = model_client.model_info
        family = info.get("family") if isinstance(info, Mapping) else None
        if isinstance(family, str) and family and family != "unknown":
            return family
    except Exception:
        pass
    return None


def tool_names(tools: Any) -> list[str]:
    """Names of the tools offered to a model.

    Tools arrive as AutoGen ``Tool`` objects (``.name``), ``ToolSchema`` dicts (``{"name": ...}``),
    OpenAI tool parameters (``{"type": "function", "function": {"name": ...}}``) or objects
    shaped like either; an entry that cannot be read is skipped.
    """
    names: list[str] = []
    if not tools:
        return names
    try:
        items = list(tools)
    except Exception:
        return names
    for tool in items:
        try:
            name = _tool_name(tool)
        except Exception:
            name = None
        if name:
            names.append(name)
    return names


def _tool_name(tool: Any) -> str | None:
    name = getattr(tool, "name", None)  # a Tool object: the common case, and the cheapest check
    if isinstance(name, str):
        return name
    if isinstance(tool, Mapping):
        name = tool.get("name")
        if isinstance(name, str):
            return name
        function = tool.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
            return name if isinstance(name, str) else None
        return None
    function = getattr(tool, "function", None)
    name = getattr(function, "name", None)
    return name if isinstance(name, str) else None


def agent_tool_names(agent: Any) -> set[str]:
    """The names of the tools an agent was given: an ``AssistantAgent``'s tools, handoff
    tools and the tools of its static workbenches (a workbench listing its tools only when
    awaited, such as MCP's, is known by the tools the agent offers its model instead)."""
    names: set[str] = set()
    try:
        workbenches = getattr(agent, "_workbench", None) or ()
        if not isinstance(workbenches, (list, tuple)):
            workbenches = (workbenches,)
        groups = [getattr(agent, "_tools", None), getattr(agent, "_handoff_tools", None)]
        groups.extend(getattr(workbench, "_tools", None) for workbench in workbenches)
        for group in groups:
            if isinstance(group, (list, tuple)):
                names.update(tool_names(group))
    except Exception:
        pass
    return names


def function_calls_of(content: Any) -> list[dict[str, Any]] | None:
    """The function calls of a model result as ``[{"id", "name", "arguments"}]``, or ``None``
    when the content is not a list of calls (a text answer)."""
    if isinstance(content, (str, bytes)) or not isinstance(content, Sequence):
        return None
    calls: list[dict[str, Any]] = []
    for call in content:
        if isinstance(call, Mapping):
            calls.append(
                {"id": call.get("id"), "name": call.get("name"), "arguments": call.get("arguments")}
            )
            continue
        name = getattr(call, "name", _MISSING)
        if name is _MISSING:
            return None
        calls.append(
            {
                "id": getattr(call, "id", None),
                "name": name,
                "arguments": getattr(call, "arguments", None),
            }
        )
    return calls


def usage_of(usage: Any) -> tuple[int | None, int | None]:
    """``(prompt_tokens, completion_tokens)`` of an AutoGen ``RequestUsage`` (or a mapping)."""
    if usage is None:
        return None, None
    try:
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        else:
            prompt = getattr(usage, "prompt_tokens", None)
            completion = getattr(usage, "completion_tokens", None)
    except Exception:
        return None, None
    return _int_or_none(prompt), _int_or_none(completion)


def usage_details_of(response: Any) -> dict[str, int] | None:
    """The prompt-cache and reasoning tokens of the provider's usage in a raw response a model
    client logged (``LLMCallEvent``), as ``metadata["usage_details"]``: those of
    ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that are known and
    not zero. They are parts of the input and output counts, never added to them.

    OpenAI (``ChatCompletion`` dump): ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens``; Anthropic (``Message`` dump):
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. A ``CreateResult`` dump
    (what clients log at the end of a stream) has none.
    """
    usage = _provider_usage(response)
    if usage is None:
        return None
    details: dict[str, int] = {}
    try:
        for name, value in (
            ("cache_read_tokens", _nested_count(usage, "prompt_tokens_details", "cached_tokens")),
            ("cache_read_tokens", _int_or_none(usage.get("cache_read_input_tokens"))),
            ("cache_creation_tokens", _int_or_none(usage.get("cache_creation_input_tokens"))),
            (
                "reasoning_tokens",
                _nested_count(usage, "completion_tokens_details", "reasoning_tokens"),
            ),
        ):
            if value and name not in details:
                details[name] = value
    except Exception:
        return None
    return details or None


def whole_prompt_tokens(prompt_tokens: int | None, response: Any) -> int | None:
    """``prompt_tokens`` as a model client counted them (``RequestUsage``, ``LLMCallEvent``),
    made the whole prompt: AutoGen's Anthropic client copies Anthropic's ``input_tokens``,
    which leave out the prompt read from or written to the cache (``cache_read_input_tokens``,
    ``cache_creation_input_tokens`` of the logged ``response``); those are added."""
    usage = _provider_usage(response)
    if prompt_tokens is None or usage is None:
        return prompt_tokens
    try:
        if prompt_tokens == usage.get("input_tokens") and (
            "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
        ):
            read = _int_or_none(usage.get("cache_read_input_tokens")) or 0
            creation = _int_or_none(usage.get("cache_creation_input_tokens")) or 0
            return prompt_tokens + read + creation
    except Exception:
        pass
    return prompt_tokens


def _provider_usage(response: Any) -> Mapping[str, Any] | None:
    if not isinstance(response, Mapping):
        return None
    usage = response.get("usage")
    return usage if isinstance(usage, Mapping) else None


def _nested_count(usage: Mapping[str, Any], group: str, key: str) -> int | None:
    details = usage.get(group)
    return _int_or_none(details.get(key)) if isinstance(details, Mapping) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def finish_reason_of(result: Any) -> str | None:
    """The finish reason of a ``CreateResult`` (``stop``, ``function_calls``, ``length``...)."""
    try:
        reason = getattr(result, "finish_reason", None)
    except Exception:
        return None
    return reason if isinstance(reason, str) else None


def result_output(result: Any) -> Any:
    """The output of a ``CreateResult``: its text, or its function calls as dicts."""
    try:
        content = result.content
    except Exception:
        return None
    calls = function_calls_of(content)
    return calls if calls is not None else content


def response_fields(response: Any) -> dict[str, Any]:
    """Fields of a raw response logged by a model client in an ``LLMCallEvent`` or
    ``LLMStreamEndEvent`` (an OpenAI ``ChatCompletion`` dump, a ``CreateResult`` dump...).

    Returns any of ``model``, ``finish_reason`` and ``output`` that could be read.
    """
    fields: dict[str, Any] = {}
    if not isinstance(response, Mapping):
        return fields
    try:
        model = response.get("model")
        if isinstance(model, str) and model:
            fields["model"] = model
        choices = response.get("choices")
        if isinstance(choices, Sequence) and choices and isinstance(choices[0], Mapping):
            choice = choices[0]
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                fields["finish_reason"] = reason
            message = choice.get("message")
            if isinstance(message, Mapping):
                tool_calls = message.get("tool_calls")
                if tool_calls:
                    fields["output"] = [_openai_call(call) for call in tool_calls]
                else:
                    fields["output"] = message.get("content")
            return fields
        reason = response.get("finish_reason", response.get("stop_reason"))
        if isinstance(reason, str):
            fields["finish_reason"] = reason
        if "content" in response:
            content = response.get("content")
            calls = function_calls_of(content)
            fields["output"] = calls if calls is not None else content
    except Exception:
        pass
    return fields


def _openai_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        return {"id": None, "name": None, "arguments": None}
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    return {
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": function.get("arguments"),
    }


# -- tools -------------------------------------------------------------------------------------


def parse_arguments(arguments: Any) -> Any:
    """Tool arguments as a mapping: JSON text is decoded, anything else is kept as it is."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except Exception:
            return arguments
    return arguments


# -- agentchat messages ------------------------------------------------------------------------


def message_view(message: Any) -> Any:
    """A compact view of an agentchat message: ``{"source", "type", "content"}``."""
    try:
        content = getattr(message, "content", _MISSING)
        if content is _MISSING:
            return {"type": type(message).__name__}
        calls = function_calls_of(content)
        view: dict[str, Any] = {
            "source": getattr(message, "source", None),
            "type": getattr(message, "type", type(message).__name__),
            "content": calls if calls is not None else content,
        }
        return view
    except Exception:
        return {"type": type(message).__name__}


def agent_input(task: Any) -> Any:
    """The input of an agent or team run: the task text, or views of the task messages."""
    if task is None or isinstance(task, str):
        return task
    if isinstance(task, Sequence):
        return [message_view(item) for item in list(task)]
    return message_view(task)


def message_preview(message: Any, limit: int) -> Any:
    """A bounded preview of a runtime message (a hop between agents).

    Text content is cut to ``limit`` characters; group-chat envelopes are opened one level
    (``.message``, ``.response.chat_message``, ``.messages``); anything else becomes a bounded
    ``repr``.
    """
    try:
        content = getattr(message, "content", _MISSING)
        if isinstance(content, str):
            return {"type": type(message).__name__, "content": bounded_text(content, limit)}
        inner = getattr(message, "message", None)
        if inner is None:
            response = getattr(message, "response", None)
            inner = getattr(response, "chat_message", None)
        if inner is not None:
            inner_content = getattr(inner, "content", _MISSING)
            return {
                "type": type(message).__name__,
                "source": getattr(inner, "source", None),
                "content": bounded_text(
                    inner_content if inner_content is not _MISSING else inner, limit
                ),
            }
        messages = getattr(message, "messages", None)
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            shown = list(messages)[:10]
            return {
                "type": type(message).__name__,
                "messages": [
                    {
                        "source": getattr(item, "source", None),
                        "content": bounded_text(getattr(item, "content", item), limit),
                    }
                    for item in shown
                ],
            }
        if content is not _MISSING:
            return {"type": type(message).__name__, "content": bounded_text(content, limit)}
        return {"type": type(message).__name__, "content": bounded_text(message, limit)}
    except Exception:
        return {"type": type(message).__name__}
