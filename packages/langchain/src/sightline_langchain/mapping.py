"""The mapping from LangChain callback arguments to the fields of Sightline events.

Every function here is an extractor: it reads what LangChain handed to a callback and returns a
plain value for one event field. Each one is guarded: a failure to read an attribute loses that
attribute (the function returns its empty answer), never the event and never the user's call.
They run on the background worker, replaying what the callbacks queued (``read_llm_result`` and
``retry_record`` run in the callback itself: what they read changes right after it). They only
pick values out; turning those values into bounded JSON is left to the redaction processor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue, PromptValue

from sightline.event import EventType

__all__ = [
    "AGENT_NAMES",
    "INTERNAL_TAG_PREFIXES",
    "RETRIEVAL_PREVIEW_CHARS",
    "RETRIEVAL_PREVIEW_DOCUMENTS",
    "UNKNOWN_TOOL",
    "LLMOutcome",
    "chain_event_type",
    "compact_value",
    "control_flow",
    "documents_summary",
    "graph_interrupts",
    "is_control_flow",
    "is_graph_node",
    "llm_identity",
    "message_to_dict",
    "messages_to_dicts",
    "offered_tool_names",
    "private_tool_names",
    "read_llm_result",
    "retry_record",
    "run_name",
    "tool_input",
    "tool_output",
    "usage_details",
    "user_metadata",
    "user_tags",
]

RETRIEVAL_PREVIEW_CHARS = 500
"""Characters of each retrieved document's text kept in a ``retrieval`` event's output."""
RETRIEVAL_PREVIEW_DOCUMENTS = 20
"""Retrieved documents described in a ``retrieval`` event's output (the count covers all)."""

# LangChain message ``type`` → chat role.
_ROLES = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "developer": "developer",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "function": "function",
    "FunctionMessageChunk": "function",
}
# Tuple/dict message shorthands (``("user", "hi")``) use these names for roles.
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "assistant": "assistant", "user": "user"}

# Metadata keys LangChain, LangSmith and LangGraph add to every run: not the user's.
_INTERNAL_METADATA_PREFIXES = ("ls_", "lc_", "langgraph_", "sightline_", "checkpoint_", "__")
INTERNAL_TAG_PREFIXES = ("seq:step:", "graph:step:", "langsmith:", "map:key:", "branch:")
"""Tags LangChain adds to locate a run inside its parent (not the user's): dropped."""

_AGENT_INTEGRATIONS = frozenset({"langgraph", "langchain_create_agent"})


# -- names and kinds --------------------------------------------------------------------------


def run_name(serialized: Any, name: Any, default: str) -> str:
    """The name LangChain gives a run: ``run_name``/``name``, else the serialized name or class."""
    if name and isinstance(name, str):
        return name
    if serialized:
        try:
            value = serialized.get("name")
            if value and isinstance(value, str):
                return value
            ident = serialized.get("id")
            if ident and isinstance(ident, (list, tuple)):
                last = ident[-1]
                if isinstance(last, str) and last:
                    return last
        except Exception:
            pass
    return default


def chain_event_type(
    name: str,
    tags: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    parent_tags: Sequence[str] | None = None,
) -> EventType:
    """``agent`` for agents, LangGraph graphs and graph nodes; ``chain`` for everything else.

    A run is an agent when its name contains "agent" (``AgentExecutor``, ``research_agent``),
    when one of its tags is ``agent`` (or ``agent:<something>``) and its parent's
    (``parent_tags``) is not (LangChain hands a run's tags down to every run inside it: only
    the run they were given to is the agent), when it is the root of a
    LangGraph graph or of a ``create_agent`` agent (LangGraph marks those runs with
    ``ls_integration``), or when it is a node of a graph (LangGraph tags those
    ``graph:step:<n>`` and names them after ``langgraph_node``).
    """
    try:
        agentish = AGENT_NAMES.get(name)
        if agentish is None:
            agentish = "agent" in name.lower()
            if len(AGENT_NAMES) < 4096:
                AGENT_NAMES[name] = agentish
        if agentish:
            return EventType.AGENT
        if tags:
            for tag in tags:
                if (
                    tag.startswith("agent")
                    and (len(tag) == 5 or tag[5] == ":")
                    and not (parent_tags and tag in parent_tags)
                ):
                    return EventType.AGENT
        if metadata:
            node = metadata.get("langgraph_node")
            if node is None:
                if metadata.get("ls_integration") in _AGENT_INTEGRATIONS:
                    return EventType.AGENT
            elif node == name and tags:
                for tag in tags:
                    if tag.startswith("graph:step:"):
                        return EventType.AGENT
            elif name == metadata.get("lc_agent_name") and node != name:
                # A create_agent agent run as a graph's node or inside one: it inherits the
                # node's langgraph_node, but its own name is the agent's.
                return EventType.AGENT
    except Exception:
        pass
    return EventType.CHAIN


def is_graph_node(
    name: str, tags: Sequence[str] | None, metadata: Mapping[str, Any] | None
) -> bool:
    """True for the run of a LangGraph graph's node: LangGraph names it after ``langgraph_node``
    and tags it ``graph:step:<n>``. Its parent run is always the graph's own run, which is how
    a graph used as a node or called inside one (a subgraph: it inherits the node's metadata and
    cannot be told apart from any runnable in the node when it starts) is known as a graph."""
    try:
        if metadata and tags and metadata.get("langgraph_node") == name:
            for tag in tags:
                if tag.startswith("graph:step:"):
                    return True
    except Exception:
        pass
    return False


AGENT_NAMES: dict[str, bool] = {}
"""Run name → does it contain "agent" (the same few names come back on every run)."""


def user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The run's metadata without the keys LangChain/LangSmith/LangGraph add themselves.

    ``langgraph_node`` and ``langgraph_step`` are kept: they say where in a graph a run was.
    """
    if not metadata:
        return None
    try:
        out = {
            k: v
            for k, v in metadata.items()
            if not isinstance(k, str) or not k.startswith(_INTERNAL_METADATA_PREFIXES)
        }
        node = metadata.get("langgraph_node")
        if node is not None:
            out["langgraph_node"] = node
            step = metadata.get("langgraph_step")
            if step is not None:
                out["langgraph_step"] = step
        return out or None
    except Exception:
        return None


def user_tags(tags: Sequence[str] | None) -> list[str] | None:
    """The run's tags without the positional ones LangChain adds (``seq:step:1``...)."""
    if not tags:
        return None
    try:
        out = [t for t in tags if isinstance(t, str) and not t.startswith(INTERNAL_TAG_PREFIXES)]
        return out or None
    except Exception:
        return None


# -- chat models and LLMs ---------------------------------------------------------------------


def llm_identity(
    serialized: Any, invocation_params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None
) -> tuple[str | None, str | None]:
    """``(model, provider)`` of a model run.

    The model from the invocation parameters (``model``, ``model_name``...), else
    ``ls_model_name``, else the constructor's keyword arguments in ``serialized``; the provider
    from ``ls_provider``, else the model's ``_type``.
    """
    model = provider = None
    try:
        if invocation_params:
            for key in _MODEL_KEYS:
                value = invocation_params.get(key)
                if value and isinstance(value, str):
                    model = value
                    break
            value = invocation_params.get("_type")
            if value and isinstance(value, str):
                provider = value
        if metadata:
            if model is None:
                value = metadata.get("ls_model_name")
                if value and isinstance(value, str):
                    model = value
            value = metadata.get("ls_provider")
            if value and isinstance(value, str):
                provider = value
        if model is None and serialized:
            kwargs = serialized.get("kwargs")
            if isinstance(kwargs, Mapping):
                for key in _MODEL_KEYS:
                    value = kwargs.get(key)
                    if value and isinstance(value, str):
                        model = value
                        break
    except Exception:
        pass
    return model, provider


_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")


def message_to_dict(message: Any) -> dict[str, Any]:
    """``{"role", "content"}`` of a message, plus ``tool_calls`` / ``tool_call_id`` / ``name``.

    Accepts LangChain messages and the shorthands LangChain accepts (``("user", "hi")``,
    ``{"role": ..., "content": ...}``, a bare string); anything else is kept as content with the
    role ``unknown``.
    """
    try:
        kind_of_class = _KINDS.get(message.__class__)
        if kind_of_class is None:
            kind_of_class = _kind_of(message.__class__)
        if kind_of_class != _MESSAGE:
            return _shorthand_to_dict(message)
        kind = message.type
        role = _ROLES.get(kind)
        if role is None:
            role = getattr(message, "role", None) or kind  # ChatMessage has its own role
        out: dict[str, Any] = {"role": role, "content": message.content}
        if message.name:
            out["name"] = message.name
        # Only fields the message's type declares are read: a missing attribute on a pydantic
        # model costs an exception.
        if role == "assistant":
            calls = getattr(message, "tool_calls", None)
            if calls:
                out["tool_calls"] = [_tool_call(call) for call in calls]
            invalid = getattr(message, "invalid_tool_calls", None)
            if invalid:
                out["invalid_tool_calls"] = [_tool_call(call) for call in invalid]
        elif role == "tool":
            out["tool_call_id"] = getattr(message, "tool_call_id", None)
            if getattr(message, "status", None) == "error":
                out["status"] = "error"
        return out
    except Exception:
        return {"role": "unknown", "content": message}


# What a class is, for the values the adapter converts: looked up by exact class, because an
# isinstance() check against a pydantic (ABCMeta) class runs Python code.
_OTHER, _MESSAGE, _CHAT_PROMPT, _PROMPT, _COMMAND = 0, 1, 2, 3, 4
_KINDS: dict[type, int] = {}


def _kind_of(cls: type) -> int:
    kind = _KINDS.get(cls)
    if kind is None:
        if issubclass(cls, BaseMessage):
            kind = _MESSAGE
        elif issubclass(cls, ChatPromptValue):
            kind = _CHAT_PROMPT
        elif issubclass(cls, PromptValue):
            kind = _PROMPT
        elif _is_langgraph_class(cls, "Command"):
            kind = _COMMAND
        else:
            kind = _OTHER
        if len(_KINDS) < 1024:
            _KINDS[cls] = kind
    return kind


def _is_langgraph_class(cls: type, name: str) -> bool:
    """``cls`` is LangGraph's class ``name`` or a subclass (by name: LangGraph is optional)."""
    for base in cls.__mro__:
        if base.__name__ == name and base.__module__.startswith("langgraph."):
            return True
    return False


def _shorthand_to_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, str):
        return {"role": "user", "content": message}
    if isinstance(message, (tuple, list)) and len(message) == 2:
        role = str(message[0])
        return {"role": _ROLE_ALIASES.get(role, role), "content": message[1]}
    if isinstance(message, Mapping):
        role = message.get("role") or message.get("type") or "unknown"
        out = {"role": _ROLE_ALIASES.get(role, role), "content": message.get("content")}
        for key in ("tool_calls", "tool_call_id", "name"):
            if message.get(key):
                out[key] = message[key]
        return out
    return {"role": "unknown", "content": message}


def _tool_call(call: Any) -> dict[str, Any]:
    if isinstance(call, Mapping):
        return {"id": call.get("id"), "name": call.get("name"), "arguments": call.get("args")}
    return {"id": None, "name": None, "arguments": call}


def compact_value(value: Any, depth: int = 0) -> Any:
    """A chain's input or output with LangChain messages and prompt values made small.

    Messages become :func:`message_to_dict` values and prompt values their messages (or text),
    also one level inside a mapping or a sequence (LangGraph state: ``{"messages": [...]}``).
    A LangGraph ``Command`` (a node's or a tool's output, a resumed turn's input) becomes its
    ``update``, ``goto``, ``resume`` and ``graph`` when set, its update's messages made small.
    Everything else is returned as it is: the background worker makes it JSON.
    """
    cls = value.__class__
    if cls in _SCALARS or value is None:
        return value
    try:
        if cls is dict:
            if depth < 2:
                for item in value.values():
                    if not (item is None or item.__class__ in _SCALARS):
                        return {key: compact_value(item, depth + 1) for key, item in value.items()}
            return value
        if cls is list or cls is tuple:
            if depth < 2:
                for item in value:
                    if not (item is None or item.__class__ in _SCALARS):
                        return [compact_value(item, depth + 1) for item in value]
            return value
        kind = _KINDS.get(cls)
        if kind is None:
            kind = _kind_of(cls)
        if kind == _MESSAGE:
            return message_to_dict(value)
        if kind == _CHAT_PROMPT:
            return messages_to_dicts(value.messages)
        if kind == _PROMPT:
            return value.to_string()
        if kind == _COMMAND and depth < _COMMAND_DEPTH:
            return _command_to_dict(value, depth)
    except Exception:
        pass
    return value


_SCALARS = frozenset({str, int, float, bool})
# A Command nested deeper (a Command inside a Command's update...) is left to the worker's
# generic reading: the depth only grows with nesting, so a Command holding itself ends.
_COMMAND_DEPTH = 4


def _command_to_dict(command: Any, depth: int) -> dict[str, Any]:
    """A LangGraph ``Command`` as ``{update?, goto?, resume?, graph?}``, only the fields set.

    The update is a state update (``{"messages": [...]}``, or a list of ``(key, value)`` pairs)
    and is made small as a state is, whatever the depth the Command was found at (create_agent's
    nodes return ``[Command(update=...)]``).
    """
    out: dict[str, Any] = {}
    update = command.update
    if update is not None:
        if update.__class__ is dict:
            out["update"] = {key: _state_value(item, depth) for key, item in update.items()}
        elif update.__class__ is list or update.__class__ is tuple:
            out["update"] = [
                (item[0], _state_value(item[1], depth))
                if item.__class__ is tuple and len(item) == 2
                else compact_value(item, depth + 1)
                for item in update
            ]
        else:
            out["update"] = compact_value(update, depth + 1)
    goto = command.goto
    if goto:
        out["goto"] = _goto_value(goto, depth)
    resume = command.resume
    if resume is not None:
        out["resume"] = compact_value(resume, depth + 1)
    graph = command.graph
    if graph is not None:
        out["graph"] = graph
    return out


def _state_value(item: Any, depth: int) -> Any:
    """One key's value of a Command's update: a list (of messages) is made small item by item."""
    if item.__class__ is list or item.__class__ is tuple:
        return [compact_value(element, depth + 2) for element in item]
    return compact_value(item, depth + 1)


def _goto_value(goto: Any, depth: int) -> Any:
    """Where a Command sends the graph: node names, and ``Send`` packets as ``{node, arg}``."""
    if isinstance(goto, str):
        return goto
    if isinstance(goto, (list, tuple)):
        return [_goto_value(item, depth) for item in goto]
    node = getattr(goto, "node", None)
    if isinstance(node, str):  # a Send
        return {"node": node, "arg": compact_value(getattr(goto, "arg", None), depth + 1)}
    return goto


def _goto_nodes(goto: Any) -> Any:
    """Where a Command sends the graph, as node names only (a ``Send`` as ``{node}``)."""
    if isinstance(goto, str):
        return goto
    if isinstance(goto, (list, tuple)):
        return [_goto_nodes(item) for item in goto]
    node = getattr(goto, "node", None)
    if isinstance(node, str):  # a Send
        return {"node": node}
    return True


def messages_to_dicts(messages: Any) -> list[Any]:
    """A conversation as a list of :func:`message_to_dict` values (one bad message stays alone)."""
    out: list[Any] = []
    try:
        for message in messages:  # a loop, not a comprehension: one call fewer per list
            out.append(message_to_dict(message))
    except Exception:
        return [messages]
    return out


class LLMOutcome:
    """What an ``LLMResult`` says: the output, usage, finish reason, model, tool calls asked.

    ``usage_metadata`` (the counted ``usage_metadata`` mapping, a list of them when several
    prompts had one) and ``token_usage`` (``llm_output``'s usage mapping) are what the counts
    of ``usage`` were read from: kept, not read, so that their cache and reasoning details are
    read by :func:`usage_details` on the worker.
    """

    __slots__ = (
        "finish_reason",
        "model",
        "output",
        "token_usage",
        "tool_calls",
        "usage",
        "usage_metadata",
    )

    def __init__(self) -> None:
        self.output: Any = None
        self.usage: tuple[int | None, int | None, int | None] | None = None
        self.usage_metadata: Any = None
        self.token_usage: Mapping[str, Any] | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.tool_calls: list[Any] | None = None


def read_llm_result(response: Any) -> LLMOutcome:
    """Everything an event needs from an ``LLMResult``, in one pass over its generations.

    The output is the assistant message as :func:`message_to_dict` for chat models, or the
    generated text for text-completion models (a list when there are several generations).
    Usage is each prompt's ``usage_metadata``, summed over the prompts, else
    ``llm_output["token_usage"]``. A prompt's usage is that of its first generation carrying
    one, as in LangChain's own ``UsageMetadataCallbackHandler``: a response of ``n`` choices is
    billed once, and OpenAI-style integrations put the whole response's usage on every choice.
    """
    outcome = LLMOutcome()
    outputs: list[Any] = []
    usage: list[int] | None = None
    try:
        for per_prompt in response.generations:
            counted = False  # this prompt's usage (see above)
            for generation in per_prompt:
                message = getattr(generation, "message", None)
                info = getattr(generation, "generation_info", None)
                if message is None:
                    outputs.append(generation.text)
                    metadata = None
                else:
                    data = message_to_dict(message)
                    outputs.append(data)
                    calls = data.get("tool_calls")
                    if calls and outcome.tool_calls is None:
                        outcome.tool_calls = [call["name"] for call in calls]
                    counts = getattr(message, "usage_metadata", None)
                    if counts and not counted:
                        counted = True
                        if usage is None:
                            usage = [0, 0, 0]
                            outcome.usage_metadata = counts
                        else:
                            kept = outcome.usage_metadata
                            outcome.usage_metadata = (
                                [*kept, counts] if kept.__class__ is list else [kept, counts]
                            )
                        usage[0] += counts.get("input_tokens") or 0
                        usage[1] += counts.get("output_tokens") or 0
                        usage[2] += counts.get("total_tokens") or 0
                    metadata = message.response_metadata
                    if metadata and outcome.model is None:
                        value = metadata.get("model_name") or metadata.get("model")
                        if value and isinstance(value, str):
                            outcome.model = value
                if outcome.finish_reason is None and (info or metadata):
                    outcome.finish_reason = _finish_reason(info) or _finish_reason(metadata)
    except Exception:
        pass
    if outputs:
        outcome.output = outputs[0] if len(outputs) == 1 else outputs
    if usage is not None:
        outcome.usage = (usage[0], usage[1], usage[2] or None)
    else:
        outcome.usage = _llm_output_usage(response, outcome)
    return outcome


def _finish_reason(source: Any) -> str | None:
    if source:
        for key in ("finish_reason", "stop_reason", "done_reason"):
            value = source.get(key)
            if value:
                return str(value)
    return None


def _llm_output_usage(
    response: Any, outcome: LLMOutcome
) -> tuple[int | None, int | None, int | None] | None:
    try:
        llm_output = response.llm_output
        if llm_output:
            usage = llm_output.get("token_usage") or llm_output.get("usage")
            if isinstance(usage, Mapping) and usage:
                inp = _first_int(usage, "prompt_tokens", "input_tokens")
                out = _first_int(usage, "completion_tokens", "output_tokens")
                total = _first_int(usage, "total_tokens")
                if inp is not None or out is not None or total is not None:
                    outcome.token_usage = usage
                    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
                        # Anthropic's own usage: its input_tokens leave the cached prompt out.
                        cached = _cache_parts(usage)
                        if cached:
                            inp = (inp or 0) + cached
                            if total is not None:
                                total += cached
                    return inp, out, total
    except Exception:
        pass
    return None


def _cache_parts(usage: Mapping[str, Any]) -> int:
    return (_first_int(usage, "cache_read_input_tokens") or 0) + (
        _first_int(usage, "cache_creation_input_tokens") or 0
    )


# (detail, where LangChain's usage_metadata keeps it)
_DETAILS = (
    ("cache_read_tokens", "input_token_details", "cache_read"),
    ("cache_creation_tokens", "input_token_details", "cache_creation"),
    ("reasoning_tokens", "output_token_details", "reasoning"),
)
# (detail, where a provider's token_usage keeps it: OpenAI's nested details)
_PROVIDER_DETAILS = (
    ("cache_read_tokens", "prompt_tokens_details", "cached_tokens"),
    ("reasoning_tokens", "completion_tokens_details", "reasoning_tokens"),
)
# (detail, Anthropic's flat count)
_PROVIDER_COUNTS = (
    ("cache_read_tokens", "cache_read_input_tokens"),
    ("cache_creation_tokens", "cache_creation_input_tokens"),
)


def usage_details(outcome: LLMOutcome) -> dict[str, int] | None:
    """The cache and reasoning details of the usage an outcome's counts were read from, summed
    over its prompts, as ``metadata["usage_details"]``: those of ``cache_read_tokens``,
    ``cache_creation_tokens`` and ``reasoning_tokens`` that are known and not zero; ``None``
    when there are none (at the cost of two key lookups for a ``usage_metadata`` without any).

    They are parts of the input and output counts, never added to them. LangChain's
    ``usage_metadata`` keeps them in ``input_token_details`` (``cache_read``,
    ``cache_creation``) and ``output_token_details`` (``reasoning``); a provider's
    ``token_usage`` in OpenAI's ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens``, or Anthropic's ``cache_read_input_tokens``
    and ``cache_creation_input_tokens``.
    """
    try:
        counts = outcome.usage_metadata
        if counts is not None:
            if counts.__class__ is not list:
                if "input_token_details" not in counts and "output_token_details" not in counts:
                    return None
                counts = (counts,)
            details: dict[str, int] = {}
            for usage in counts:
                for name, group, key in _DETAILS:
                    _add_detail(details, name, usage.get(group), key)
            return details or None
        usage = outcome.token_usage
        if usage is not None:
            details = {}
            for name, group, key in _PROVIDER_DETAILS:
                _add_detail(details, name, usage.get(group), key)
            for name, key in _PROVIDER_COUNTS:
                _add_detail(details, name, usage, key)
            return details or None
    except Exception:
        pass
    return None


def _add_detail(details: dict[str, int], name: str, group: Any, key: str) -> None:
    if isinstance(group, Mapping):
        value = group.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            details[name] = details.get(name, 0) + value


def _first_int(mapping: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# -- tools ------------------------------------------------------------------------------------

UNKNOWN_TOOL = "unknown_tool"
"""A tool name a model asked for that names none of the tools the application defined for the
call, as recorded with ``capture_content`` off: a name the model made up is model output."""


def offered_tool_names(invocation_params: Any) -> set[str]:
    """The names of the tools bound to a model call (``invocation_params["tools"]``, or the
    legacy ``functions``): names the application's code gave its tools.

    Integrations bind them in their provider's format: OpenAI ``{"type": "function",
    "function": {"name"}}`` (Responses: ``{"type": "function", "name"}``), Anthropic and most
    others ``{"name"}``, Bedrock ``{"toolSpec": {"name"}}``, Gemini ``{"function_declarations":
    [{"name"}]}``; tools bound as objects (``BaseTool``, functions, pydantic classes) as well.
    """
    names: set[str] = set()
    try:
        if not invocation_params:
            return names
        for key in ("tools", "functions"):
            tools = invocation_params.get(key)
            if tools and isinstance(tools, (list, tuple)):
                for tool in tools:
                    _add_tool_names(tool, names)
    except Exception:
        pass
    return names


def _add_tool_names(tool: Any, names: set[str]) -> None:
    if isinstance(tool, Mapping):
        for key in ("function", "toolSpec"):
            inner = tool.get(key)
            if isinstance(inner, Mapping):
                tool = inner
                break
        name = tool.get("name")
        declarations = tool.get("function_declarations") or tool.get("functionDeclarations")
    else:
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            name = getattr(tool, "__name__", None)
        declarations = getattr(tool, "function_declarations", None)
    if isinstance(name, str) and name:
        names.add(name)
    if declarations and isinstance(declarations, (list, tuple)):
        for declaration in declarations:
            _add_tool_names(declaration, names)


def private_tool_names(names: Sequence[Any], known: Any) -> list[str]:
    """The tool calls a model asked for (``names``) as recorded with ``capture_content`` off:
    each name in ``known`` (the application's tools) as it is, any other as ``unknown_tool``."""
    return [name if name.__class__ is str and name in known else UNKNOWN_TOOL for name in names]


def tool_input(input_str: Any, inputs: Any) -> Any:
    """The tool's arguments: the ``inputs`` mapping when LangChain passes it, else the string."""
    if inputs is not None:
        return inputs
    return input_str


def tool_output(output: Any) -> tuple[Any, str | None, str | None]:
    """``(output, tool_call_id, error message)`` of what a tool returned.

    A ``ToolMessage`` gives its content and ``tool_call_id``; one with ``status="error"`` (a tool
    whose error was handled, ``handle_tool_error=True``) gives its content as the error message.
    A LangGraph ``Command`` (a handoff tool) is recorded as :func:`compact_value` makes it, with
    the ``tool_call_id`` and status of the ``ToolMessage`` in its update. Anything else is the
    output as is.
    """
    try:
        if isinstance(output, ToolMessage):
            content = output.content
            artifact = getattr(output, "artifact", None)
            value = content if artifact is None else {"content": content, "artifact": artifact}
            return compact_value(value), output.tool_call_id, _tool_message_error(output)
        kind = _KINDS.get(output.__class__)
        if kind is None:
            kind = _kind_of(output.__class__)
        if kind == _COMMAND:
            message = _command_tool_message(output)
            if message is not None:
                return (
                    compact_value(output),
                    message.tool_call_id,
                    _tool_message_error(message),
                )
    except Exception:
        pass
    return compact_value(output), None, None


def _tool_message_error(message: Any) -> str | None:
    if getattr(message, "status", None) == "error":
        content = message.content
        return content if isinstance(content, str) else repr(content)
    return None


def _command_tool_message(command: Any) -> Any:
    """The ``ToolMessage`` answering the tool call in a Command's update, if there is one."""
    update = command.update
    messages = None
    if isinstance(update, Mapping):
        messages = update.get("messages")
    elif isinstance(update, (list, tuple)):  # (key, value) pairs
        for item in update:
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "messages":
                messages = item[1]
                break
    if isinstance(messages, ToolMessage):
        return messages
    if isinstance(messages, (list, tuple)):
        for message in messages:
            if isinstance(message, ToolMessage):
                return message
    return None


# -- retrievers -------------------------------------------------------------------------------


def documents_summary(documents: Any) -> tuple[int | None, list[dict[str, Any]] | None]:
    """``(count, [{"id", "metadata", "preview"}...])`` of retrieved documents, bounded."""
    try:
        count = len(documents)
    except Exception:
        return None, None
    summaries: list[dict[str, Any]] = []
    try:
        for index, document in enumerate(documents):
            if index >= RETRIEVAL_PREVIEW_DOCUMENTS:
                break
            try:
                text = getattr(document, "page_content", None)
                if text is None:
                    text = document if isinstance(document, str) else repr(document)
                elif not isinstance(text, str):
                    text = repr(text)
                if len(text) > RETRIEVAL_PREVIEW_CHARS:
                    text = text[:RETRIEVAL_PREVIEW_CHARS] + "…"
                summaries.append(
                    {
                        "id": getattr(document, "id", None),
                        "metadata": getattr(document, "metadata", None) or {},
                        "preview": text,
                    }
                )
            except Exception:
                summaries.append({"id": None, "metadata": {}, "preview": "<unreadable document>"})
    except Exception:
        pass
    return count, summaries


# -- retries and errors -----------------------------------------------------------------------


def retry_record(retry_state: Any) -> dict[str, Any]:
    """What one retry of a run looked like: ``attempt`` (the number of the attempt that
    failed), ``slept_s`` (the seconds waited after it, before the next attempt: this retry's
    wait, not the total so far) and ``error``.

    ``on_retry`` is called from tenacity's ``before_sleep``, with the wait about to be slept:
    ``upcoming_sleep``, or in a tenacity without it the ``sleep`` of the ``next_action``
    (``idle_for`` is the total of the waits so far, this one included).
    """
    record: dict[str, Any] = {}
    try:
        record["attempt"] = retry_state.attempt_number
        sleep = getattr(retry_state, "upcoming_sleep", None)
        if sleep is None:
            sleep = getattr(getattr(retry_state, "next_action", None), "sleep", None)
        if sleep is not None:
            record["slept_s"] = float(sleep)
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            record["error"] = f"{type(exc).__name__}: {exc}"
    except Exception:
        pass
    return record


def control_flow(exc: BaseException, content: bool = True) -> tuple[str, Any] | None:
    """How a run that ``exc`` ended without it having failed is marked: a metadata
    ``(key, value)``, or ``None`` for a failure.

    - ``("interrupted", class name)``: LangGraph paused the graph, waiting for input
      (``interrupt()``: ``GraphInterrupt``) or stopped it at a step to resume later
      (``GraphDrained``);
    - ``("handoff", goto)``: a node handed over to its parent graph
      (``Command(graph=Command.PARENT, goto=...)``: ``ParentCommand``), ``goto`` as
      :func:`compact_value` writes it (``True`` when it names no node); without ``content``,
      a ``Send`` is its node alone (its ``arg`` is state: messages, the model's tool calls);
    - ``("unfinished", True)``: the caller stopped reading a stream (``break``, ``aclose()``:
      ``GeneratorExit``), as a run ended with its parent is marked.

    LangGraph's classes are recognised by name, so that LangGraph need not be installed.
    """
    try:
        cls = exc.__class__
        if issubclass(cls, GeneratorExit):
            return "unfinished", True
        names = [base.__name__ for base in cls.__mro__]
        if "GraphBubbleUp" not in names:
            return None
        if "ParentCommand" in names:
            command = exc.args[0] if exc.args else None
            goto = getattr(command, "goto", None)
            if not goto:
                return "handoff", True
            return "handoff", (_goto_value(goto, 0) if content else _goto_nodes(goto))
        return "interrupted", cls.__name__
    except Exception:
        return None


def is_control_flow(exc: BaseException) -> bool:
    """True when ``exc`` ended a run without it having failed (see :func:`control_flow`)."""
    return control_flow(exc) is not None


def graph_interrupts(exc: BaseException) -> list[Any] | None:
    """The ``Interrupt`` values a LangGraph ``GraphInterrupt`` carries (what the caller gets as
    ``__interrupt__``), or ``None`` for any other exception."""
    try:
        for base in exc.__class__.__mro__:
            if base.__name__ == "GraphInterrupt":
                interrupts = exc.args[0] if exc.args else ()
                return list(interrupts) if isinstance(interrupts, (list, tuple)) else None
    except Exception:
        pass
    return None
