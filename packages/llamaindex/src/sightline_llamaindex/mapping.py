"""The mapping from LlamaIndex objects to Sightline events.

LlamaIndex reports every decorated method as a span: ``span_enter(id_, bound_args, instance,
parent_id)`` where ``id_`` is ``"<Class>.<method>-<uuid4>"``. Most of those spans are internal
plumbing (text splitters, private helpers); this module decides which ones become Sightline
events, of which type and name, and reads inputs, outputs, usage and errors off the framework's
objects. :mod:`sightline_llamaindex.handlers` owns the life cycle (maps, parents, streams).

Everything here is called on the framework's thread, so it is cheap: immutable values are stored
by reference or wrapped in small lazy views that the Sightline worker formats off the caller's
thread; LlamaIndex's mutable messages and nodes are copied into small dicts of strings when they
are seen (see "snapshots" below). Every reader is guarded: a
failure to read one attribute loses that attribute, never the event and never the user's call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from sightline import EventType
from sightline.logs import log_safely

if TYPE_CHECKING:
    from sightline import Client, Span

__all__ = [
    "EVENT_TYPES",
    "RESPONSE_KINDS",
    "STREAM_END_METHODS",
    "UNKNOWN_TOOL",
    "Kind",
    "ResponseShape",
    "agent_tool_names",
    "apply_llm_prompt",
    "apply_llm_response",
    "apply_llm_start",
    "classify",
    "family",
    "finish_fields",
    "merges_into",
    "private_tool_names",
    "response_shape",
    "span_prefix",
    "start_event",
    "start_step",
    "step_kind",
    "streamed_text",
    "tool_step_name",
]


FRAMEWORK = "llamaindex"
PREVIEW_CHARS = 200
MAX_NODES = 10
MAX_TEXTS = 3

UNKNOWN_TOOL = "unknown_tool"
"""A tool name a model asked for that names none of the tools the application gave the run, as
recorded with ``capture_content`` off: a name the model made up is model output."""


class Kind:
    """What a LlamaIndex span is, for Sightline (plain ints: compared on every span)."""

    TRANSPARENT = 0  # plumbing: not recorded, its children attach to its nearest recorded parent
    LLM = 1
    EMBEDDING = 2
    RETRIEVAL = 3
    TOOL = 4
    QUERY = 5
    SYNTHESIS = 6
    CHAT_ENGINE = 7
    PROGRAM = 8  # LLM.predict_and_call: an LLM call plus the tool it picks
    AGENT = 9
    WORKFLOW = 10
    STEP = 11
    TOOL_STEP = 12  # an agent's ``call_tool`` workflow step


EVENT_TYPES: dict[int, EventType] = {
    Kind.LLM: EventType.LLM_INVOKE,
    Kind.EMBEDDING: EventType.EMBEDDING,
    Kind.RETRIEVAL: EventType.RETRIEVAL,
    Kind.TOOL: EventType.TOOL_CALL,
    Kind.TOOL_STEP: EventType.TOOL_CALL,
    Kind.QUERY: EventType.CHAIN,
    Kind.SYNTHESIS: EventType.CHAIN,
    Kind.CHAT_ENGINE: EventType.CHAIN,
    Kind.PROGRAM: EventType.CHAIN,
    Kind.WORKFLOW: EventType.CHAIN,
    Kind.STEP: EventType.CHAIN,
    Kind.AGENT: EventType.AGENT,
}

# Kinds whose nested spans are one unit of work when they are of the same family: ``achat``
# calling ``chat``, ``predict`` calling ``complete``, ``__call__`` calling ``call``.
_FAMILY = {Kind.TOOL_STEP: Kind.TOOL}

_LLM_METHODS = {
    name: Kind.LLM
    for name in (
        "chat", "achat", "stream_chat", "astream_chat",
        "complete", "acomplete", "stream_complete", "astream_complete",
        "predict", "apredict", "stream", "astream",
        "structured_predict", "astructured_predict",
        "stream_structured_predict", "astream_structured_predict",
    )
}  # fmt: skip
_LLM_METHODS.update(predict_and_call=Kind.PROGRAM, apredict_and_call=Kind.PROGRAM)
# LLM methods that report the end of the stream they return with an end event: those LlamaIndex's
# LLM callbacks wrap, with an ``LLMChatEndEvent`` / ``LLMCompletionEndEvent`` of their own span;
# the structured ones with an ``LLMStructuredPredictEndEvent`` sent from inside the stream while it
# is read (under the reader's span: the handlers link it to the stream by its frames).
STREAM_END_METHODS = frozenset(
    (
        "stream_chat", "astream_chat", "stream_complete", "astream_complete",
        "stream_structured_predict", "astream_structured_predict",
    )
)  # fmt: skip
_EMBEDDING_METHODS = {
    name: Kind.EMBEDDING
    for name in (
        "get_query_embedding", "aget_query_embedding",
        "get_text_embedding", "aget_text_embedding",
        "get_text_embedding_batch", "aget_text_embedding_batch",
    )
}  # fmt: skip

# (module, class, methods): a span is recorded when its instance is one of these classes and the
# method is listed. Classes are looked up in ``sys.modules`` only: a class whose module was never
# imported can have no instances, so nothing is imported here.
_RULES: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("llama_index.core.agent.workflow.base_agent", "BaseWorkflowAgent", {"run": Kind.AGENT}),
    ("llama_index.core.agent.workflow.multi_agent_workflow", "AgentWorkflow", {"run": Kind.AGENT}),
    ("workflows.workflow", "Workflow", {"run": Kind.WORKFLOW}),
    ("llama_index.core.base.llms.base", "BaseLLM", _LLM_METHODS),
    ("llama_index.core.base.embeddings.base", "BaseEmbedding", _EMBEDDING_METHODS),
    (
        "llama_index.core.base.base_retriever",
        "BaseRetriever",
        {"retrieve": Kind.RETRIEVAL, "aretrieve": Kind.RETRIEVAL},
    ),
    (
        "llama_index.core.base.base_query_engine",
        "BaseQueryEngine",
        {"query": Kind.QUERY, "aquery": Kind.QUERY},
    ),
    (
        "llama_index.core.response_synthesizers.base",
        "BaseSynthesizer",
        {"synthesize": Kind.SYNTHESIS, "asynthesize": Kind.SYNTHESIS},
    ),
    (
        "llama_index.core.chat_engine.types",
        "BaseChatEngine",
        dict.fromkeys(("chat", "achat", "stream_chat", "astream_chat"), Kind.CHAT_ENGINE),
    ),
    (
        "llama_index.core.tools.types",
        "BaseTool",
        {"call": Kind.TOOL, "acall": Kind.TOOL, "__call__": Kind.TOOL},
    ),
)

_NO_METHODS: dict[str, int] = {}
_METHODS_BY_TYPE: dict[type, dict[str, int]] = {}


def span_prefix(span_id: str) -> str:
    """``"FunctionAgent.run"`` from ``"FunctionAgent.run-<uuid4>"`` (the LlamaIndex span name)."""
    # A uuid4 string is 36 characters, joined to the name by "-".
    if len(span_id) > 37 and span_id[-37] == "-":
        return span_id[:-37]
    return span_id.rsplit("-", 5)[0]


def classify(cls: type, method: str) -> int:
    """The :class:`Kind` of method ``method`` of an instance of ``cls``."""
    methods = _METHODS_BY_TYPE.get(cls)
    if methods is None:
        methods = _methods_of(cls)
    return methods.get(method, Kind.TRANSPARENT)


def _methods_of(cls: type) -> dict[str, int]:
    methods: dict[str, int] = {}
    for module_name, class_name, table in _RULES:
        module = sys.modules.get(module_name)
        base = getattr(module, class_name, None) if module is not None else None
        try:
            matches = base is not None and issubclass(cls, base)
        except TypeError:
            matches = False
        if matches:
            for name, kind in table.items():
                methods.setdefault(name, kind)
    methods = methods or _NO_METHODS
    _METHODS_BY_TYPE[cls] = methods
    return methods


def family(kind: int) -> int:
    """The kind a span merges with: a ``call_tool`` step is a tool call."""
    return _FAMILY.get(kind, kind)


def step_kind(method: str, arguments: Mapping[str, Any]) -> int:
    """The kind of a workflow step span (a span without instance directly under a run)."""
    if method == "call_tool":
        event = _step_event(arguments)
        if event is not None and hasattr(event, "tool_name") and hasattr(event, "tool_kwargs"):
            return Kind.TOOL_STEP
    return Kind.STEP


def merges_into(
    parent_kind: int, parent_name: str, parent_instance: int, kind: int, instance: Any
) -> bool:
    """True when a span of ``kind`` nested under a recorded span is part of the same work.

    Everything inside an LLM call is that call: ``achat`` calling ``chat``, ``predict`` calling
    ``complete``, ``structured_predict`` running a program that calls ``chat`` and parses the
    answer through a tool. Embedding spans inside an embedding are one call; a tool inside a tool
    of the same name is one call (``call_tool`` step → ``FunctionTool.acall``, ``__call__`` →
    ``call``); other kinds merge only when the same object calls itself.
    """
    if parent_kind == Kind.LLM:
        return True
    family = _FAMILY.get(parent_kind, parent_kind)
    if instance is None or family != _FAMILY.get(kind, kind):
        return False
    if family == Kind.EMBEDDING:
        return True
    if family == Kind.TOOL:
        return tool_name(instance) == parent_name
    return id(instance) == parent_instance


class ResponseShape:
    """How a query, synthesis or chat engine span's streamed response ends (plain ints)."""

    NONE = 0  # not streamed: the span's exit has the answer
    TOKENS = 1  # ``StreamingResponse`` / ``AsyncStreamingResponse``: when ``response_gen`` ends
    CHAT = 2  # ``StreamingAgentChatResponse``: when its writer (``write_response_to_history``,
    # run in a thread or task the engine started) has read the LLM stream to its end


# Kinds whose spans may return a streamed response, which they end with.
RESPONSE_KINDS = frozenset((Kind.QUERY, Kind.SYNTHESIS, Kind.CHAT_ENGINE))
# By class name (importing them would load llama_index.core): the classes and their subclasses.
_SHAPE_BY_NAME = {
    "StreamingResponse": ResponseShape.TOKENS,
    "AsyncStreamingResponse": ResponseShape.TOKENS,
    "StreamingAgentChatResponse": ResponseShape.CHAT,
}
_SHAPES: dict[type, int] = {}


def response_shape(result: Any) -> int:
    """The :class:`ResponseShape` of what a query, synthesis or chat engine span returned."""
    cls = type(result)
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = ResponseShape.NONE
        for base in cls.__mro__:
            shape = _SHAPE_BY_NAME.get(base.__name__, ResponseShape.NONE)
            if shape:
                break
        _SHAPES[cls] = shape
    return shape


def streamed_text(chunks: list[Any]) -> str:
    """The text of a streamed response: its string chunks, joined."""
    return "".join(chunk for chunk in chunks if isinstance(chunk, str))


# -- starting an event ------------------------------------------------------------------------


def start_event(
    client: Client,
    kind: int,
    parent: Span | None,
    prefix: str,
    method: str,
    instance: Any,
    arguments: Mapping[str, Any],
    agent: str | None = None,
    tools: Collection[str] | None = None,
) -> Span:
    """Start the Sightline span for a LlamaIndex span of ``kind``; never raises.

    ``agent``: the agent a workflow run's latest step ran for (a ``call_tool`` step's event does
    not name it).
    ``tools``: with ``capture_content`` off, the names of the tools the run knows: a
    ``call_tool`` step for any other tool (one the model made up) is named ``unknown_tool``.

    An LLM call's model comes from its start event (``model_dict`` is the LLM's metadata,
    which LlamaIndex builds anyway); :func:`finish_fields` reads the LLM itself only when no
    start event named one.
    """
    name = prefix
    model = None
    input_value: Any = None
    metadata: dict[str, Any] = {}
    try:
        if kind == Kind.LLM:
            pass
        elif kind == Kind.TOOL:
            name = tool_name(instance) or prefix
            input_value = _tool_input(arguments)
        elif kind == Kind.TOOL_STEP:
            event = _step_event(arguments)
            name = str(event.tool_name)
            if tools is not None and name not in tools:
                name = UNKNOWN_TOOL
            input_value = _copy_dict(event.tool_kwargs)
            tool_id = getattr(event, "tool_id", None)
            if tool_id:
                metadata["tool_call_id"] = tool_id
        elif kind == Kind.RETRIEVAL:
            input_value = {"query": query_text(arguments.get("str_or_query_bundle"))}
        elif kind == Kind.EMBEDDING:
            model = _known(getattr(instance, "model_name", None))
            texts = _embedding_texts(arguments)
            metadata["text_count"] = len(texts)
            input_value = TextsView(texts)
        elif kind == Kind.QUERY:
            input_value = {"query": query_text(arguments.get("str_or_query_bundle"))}
        elif kind == Kind.SYNTHESIS:
            input_value = {"query": query_text(arguments.get("query"))}
            nodes = arguments.get("nodes")
            if nodes is not None:
                metadata["node_count"] = len(nodes)
        elif kind == Kind.CHAT_ENGINE:
            input_value = {"message": arguments.get("message")}
        elif kind == Kind.PROGRAM:
            model = llm_model(instance)
            metadata["tools"] = _tool_names(arguments.get("tools"))
        elif kind == Kind.AGENT:
            name, agent, input_value, metadata = _agent_start(instance, prefix, arguments)
        elif kind == Kind.WORKFLOW:
            name = type(instance).__name__
            start = arguments.get("start_event")
            input_value = WorkflowEventView(start) if start is not None else None
    except Exception as exc:
        log_safely(
            logging.DEBUG, "sightline: llamaindex could not read the start of %s: %r", prefix, exc
        )
    return client.start_span(
        name,
        EVENT_TYPES[kind],
        parent=parent,
        input=input_value,
        metadata=metadata,
        framework=FRAMEWORK,
        model=model,
        agent=agent,
    )


def start_step(
    client: Client,
    parent: Span | None,
    method: str,
    arguments: Mapping[str, Any],
    agent: str | None = None,
) -> Span:
    """Start the ``chain`` span of a workflow step; never raises.

    A step is named by what it is and by the events it takes and returns (``input_event``, and
    ``output_event`` when it ends); what they carry is in the LLM and tool events below it
    (LlamaIndex's 200-character summaries of them would mostly repeat those, at a cost on every
    step). In an ``AgentWorkflow`` the step's ``agent`` is the agent it runs for: the one its
    event names, else ``agent`` (the one the run's previous step ran for).
    """
    metadata: dict[str, Any] = {}
    try:
        event = _step_event(arguments)
        if event is not None:
            metadata["input_event"] = type(event).__name__
            agent = _declared_field(event, "current_agent_name") or agent
    except Exception as exc:
        log_safely(
            logging.DEBUG, "sightline: llamaindex could not read the step %s: %r", method, exc
        )
    return client.start_span(
        method,
        EventType.CHAIN,
        parent=parent,
        metadata=metadata,
        framework=FRAMEWORK,
        agent=agent,
    )


def _agent_start(
    instance: Any, prefix: str, arguments: Mapping[str, Any]
) -> tuple[str, str | None, Any, dict[str, Any]]:
    metadata: dict[str, Any] = {"agent_type": type(instance).__name__}
    name = prefix.rpartition(".")[0] or prefix
    agent = None
    agents = getattr(instance, "agents", None)
    if isinstance(agents, Mapping):  # AgentWorkflow: several agents, one root
        metadata["agents"] = list(agents)
        root = getattr(instance, "root_agent", None)
        if root:
            metadata["root_agent"] = root
    else:
        agent_name = getattr(instance, "name", None)
        if isinstance(agent_name, str) and agent_name:
            name = agent = agent_name
        tools = _tool_names(getattr(instance, "tools", None))
        if tools:
            metadata["tools"] = tools
    input_value = None
    start = arguments.get("start_event")
    if start is not None:
        user_msg = _event_field(start, "user_msg")
        if user_msg is not None:
            input_value = user_msg if isinstance(user_msg, str) else message_content(user_msg)
        else:
            history = _event_field(start, "chat_history")
            if history:
                input_value = messages_snapshot(history)
    return name, agent, input_value, metadata


# -- finishing an event -----------------------------------------------------------------------


def finish_fields(
    span: Span,
    kind: int,
    instance: Any,
    result: Any,
    started: bool,
    response_seen: bool,
    inner_error: BaseException | None,
    tools: Collection[str] | None = None,
) -> None:
    """Read what a LlamaIndex span returned onto its Sightline span; never raises.

    ``started``, ``response_seen``: the LLM call's start and response already came through
    instrumentation events.
    ``inner_error``: what a nested span of the same call raised (a tool's exception that the
    agent caught and turned into an error output).
    ``tools``: with ``capture_content`` off, the names of the tools the call knows (see
    :func:`private_tool_names`).
    """
    try:
        if kind == Kind.LLM and span.event.model is None and instance is not None:
            # The start event had the metadata's model name (or there was none): only an LLM
            # without start event is asked for its metadata again.
            span.set_model(llm_model(instance) if not started else _model_attribute(instance))
        if result is None and kind != Kind.TOOL_STEP:
            return
        if kind == Kind.LLM:
            if not response_seen:
                if hasattr(result, "message") or hasattr(result, "text"):
                    apply_llm_response(span, result, tools)
                elif not _is_stream(result):
                    span.set_output(result)
        elif kind == Kind.TOOL:
            _apply_tool_output(span, result, inner_error)
        elif kind == Kind.TOOL_STEP:
            _apply_tool_output(span, getattr(result, "tool_output", None), inner_error)
        elif kind == Kind.RETRIEVAL:
            nodes = list(result)
            span.set_output(nodes_snapshot(nodes))
            span.set_metadata(node_count=len(nodes), scores=[_score(n) for n in nodes])
        elif kind == Kind.EMBEDDING:
            span.set_metadata(dimensions=_dimensions(result))
        elif kind in (Kind.QUERY, Kind.SYNTHESIS, Kind.CHAT_ENGINE, Kind.PROGRAM):
            text = getattr(result, "response", None)
            if isinstance(text, str):
                span.set_output(text)
            sources = getattr(result, "source_nodes", None)
            if sources is not None:
                span.set_metadata(source_count=len(sources))
        elif kind == Kind.AGENT:
            _apply_agent_output(span, result, tools)
        elif kind == Kind.WORKFLOW:
            span.set_output(_workflow_result(result))
    except Exception as exc:
        log_safely(
            logging.DEBUG, "sightline: llamaindex could not read the result of %s: %r", span, exc
        )


def _workflow_result(stop_event: Any) -> Any:
    """What a workflow run returns to its caller: a ``StopEvent``'s ``result``; a custom stop
    event (a subclass) is the result itself, recorded by its fields."""
    cls = type(stop_event)
    if cls.__name__ == "StopEvent":
        return getattr(stop_event, "result", None)
    if any(base.__name__ == "StopEvent" for base in cls.__mro__[1:]):
        return StopEventView(stop_event)
    return getattr(stop_event, "result", stop_event)


def _apply_tool_output(span: Span, output: Any, inner_error: BaseException | None) -> None:
    if output is None:
        return
    content = getattr(output, "content", None)
    if content is None and not hasattr(output, "raw_output"):
        # no ToolOutput: the response of a tool's query engine a router ran as that tool
        text = getattr(output, "response", None)
        if isinstance(text, str):
            span.set_output(text)
        return
    span.set_output(content if content is not None else getattr(output, "raw_output", None))
    is_error = bool(getattr(output, "is_error", False))
    span.set_metadata(is_error=is_error)
    if is_error:
        exc = getattr(output, "exception", None) or inner_error
        if isinstance(exc, BaseException):
            span.set_error(exc)  # tool, or timeout / guardrail for what the exception says
        elif span.event.error is None:
            span.set_error(kind="tool", type="ToolError", message=str(content or ""))


def _apply_agent_output(span: Span, result: Any, tools: Collection[str] | None) -> None:
    output = getattr(result, "result", result)
    response = getattr(output, "response", None)
    if response is None:
        span.set_output(output)
        return
    text = message_text(response)
    structured = getattr(output, "structured_response", None)
    if structured is not None:
        span.set_output({"response": text, "structured_response": structured})
    else:
        span.set_output(text)
    calls = getattr(output, "tool_calls", None)
    if calls:
        names = [getattr(c, "tool_name", None) for c in calls]
        span.set_metadata(tool_calls=private_tool_names(names, tools))


# -- LLM events ---------------------------------------------------------------------------------


def apply_llm_start(span: Span, messages: Any, additional_kwargs: Any, model_dict: Any) -> None:
    """An LLM call started (``LLMChatStartEvent``): its messages, tools and model.

    The outermost start of a call sets its input (``chat`` implemented with ``complete`` keeps
    its messages, not the prompt they were formatted into).
    """
    try:
        if messages is not None and span.event.input is None:
            span.set_input(messages_snapshot(messages))
        if type(additional_kwargs) is dict:
            tools = additional_kwargs.get("tools")
            if tools:
                span.set_metadata(tools=_tool_names(tools))
        if span.event.model is None and type(model_dict) is dict:
            span.set_model(_model_of(model_dict))
    except Exception as exc:
        log_safely(logging.DEBUG, "sightline: llamaindex could not read an LLM start: %r", exc)


def apply_llm_prompt(span: Span, prompt: Any, model_dict: Any) -> None:
    """A completion started (``LLMCompletionStartEvent``): its prompt and model."""
    try:
        if span.event.input is None:
            span.set_input({"prompt": prompt})
        if span.event.model is None and type(model_dict) is dict:
            span.set_model(_model_of(model_dict))
    except Exception as exc:
        log_safely(logging.DEBUG, "sightline: llamaindex could not read an LLM prompt: %r", exc)


def apply_llm_response(span: Span, response: Any, tools: Collection[str] | None = None) -> None:
    """A chat or completion response: output, tool calls requested, usage, model.

    ``tools``: with ``capture_content`` off, the names of the tools the call knows (see
    :func:`private_tool_names`)."""
    try:
        message = getattr(response, "message", None)
        if message is not None:
            output = message_snapshot(message)
            span.set_output(output)
            calls = output.get("tool_calls")
            if calls:
                names = [call["name"] for call in calls]
                span.set_metadata(tool_calls=private_tool_names(names, tools))
        else:
            span.set_output({"text": getattr(response, "text", None)})
        usage = usage_of(response)
        if usage is not None:
            span.set_usage(*usage)
            details = usage_details_of(response)
            if details:
                span.set_metadata(usage_details=details)
        if span.event.model is None:
            raw_model = _get(getattr(response, "raw", None), "model")
            if isinstance(raw_model, str) and raw_model:
                span.set_model(raw_model)
    except Exception as exc:
        log_safely(logging.DEBUG, "sightline: llamaindex could not read an LLM response: %r", exc)


def _model_of(model_dict: dict[str, Any]) -> str | None:
    # ``model_dict`` is ``LLM.to_payload()``: the LLM's metadata (``model_name``), to which
    # integrations may add their ``model``.
    return _known(model_dict.get("model_name")) or _known(model_dict.get("model"))


def llm_model(llm: Any) -> str | None:
    """The model name from the LLM's metadata (or its ``model`` attribute); None if unknown."""
    try:
        name = _known(llm.metadata.model_name)
    except Exception:
        name = None
    return name if name is not None else _model_attribute(llm)


def _model_attribute(llm: Any) -> str | None:
    # LLMs are pydantic models: ask the class before reading a field it may not have (a
    # missing attribute costs an exception inside pydantic's __getattr__).
    fields = getattr(type(llm), "model_fields", None)
    if fields is not None and "model" not in fields:
        return None
    model = getattr(llm, "model", None)
    return model if isinstance(model, str) and model else None


_USAGE_KEYS = ("usage", "usage_metadata")
_INPUT_KEYS = ("prompt_tokens", "input_tokens", "prompt_token_count", "inputTokens")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens", "candidates_token_count", "outputTokens")
_TOTAL_KEYS = ("total_tokens", "total_token_count", "totalTokens")
# Cached prompt tokens that Anthropic (snake_case) and Bedrock (camelCase) count apart from
# their input tokens: (cache read, cache write).
_CACHE_APART_KEYS = (
    ("cache_read_input_tokens", "cache_creation_input_tokens"),
    ("cacheReadInputTokens", "cacheWriteInputTokens"),
)
# Gemini counts the thoughts apart from the candidates (its total has both).
_THOUGHTS_KEY = "thoughts_token_count"


def usage_of(response: Any) -> tuple[int | None, int | None, int | None] | None:
    """Token counts from the provider's raw payload (OpenAI, Anthropic, Gemini, Bedrock shapes),
    else from ``additional_kwargs`` (where LlamaIndex's OpenAI integration copies them).

    The input is the whole prompt and the output all generated tokens: the cached prompt
    Anthropic and Bedrock count apart is added to the input, Gemini's thoughts to the output.
    """
    source = _usage_source(response)
    return None if source is None else _counts(source)


def usage_details_of(response: Any) -> dict[str, int] | None:
    """The prompt-cache and reasoning tokens of the provider's usage, as
    ``metadata["usage_details"]``: those of ``cache_read_tokens``, ``cache_creation_tokens``
    and ``reasoning_tokens`` that are known and not zero (parts of :func:`usage_of`'s counts).

    OpenAI: ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens`` (Responses API: ``input_tokens_details``,
    ``output_tokens_details``); Anthropic: ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``; Bedrock: ``cacheReadInputTokens``,
    ``cacheWriteInputTokens``; Gemini: ``cached_content_token_count``, ``thoughts_token_count``.
    """
    source = _usage_source(response)
    if source is None:
        return None
    details: dict[str, int] = {}
    for name, value in (
        ("cache_read_tokens", _detail(source, "prompt_tokens_details", "cached_tokens")),
        ("cache_read_tokens", _detail(source, "input_tokens_details", "cached_tokens")),
        ("cache_read_tokens", _first_int(source, ("cache_read_input_tokens",))),
        ("cache_read_tokens", _first_int(source, ("cacheReadInputTokens",))),
        ("cache_read_tokens", _first_int(source, ("cached_content_token_count",))),
        ("cache_creation_tokens", _first_int(source, ("cache_creation_input_tokens",))),
        ("cache_creation_tokens", _first_int(source, ("cacheWriteInputTokens",))),
        ("reasoning_tokens", _detail(source, "completion_tokens_details", "reasoning_tokens")),
        ("reasoning_tokens", _detail(source, "output_tokens_details", "reasoning_tokens")),
        ("reasoning_tokens", _first_int(source, (_THOUGHTS_KEY,))),
    ):
        if value and name not in details:
            details[name] = value
    return details or None


def _usage_source(response: Any) -> Any:
    """The object the counts are read from: the raw payload's usage, else ``additional_kwargs``."""
    raw = getattr(response, "raw", None)
    for key in _USAGE_KEYS:
        usage = _get(raw, key)
        if usage is not None and _counts(usage) is not None:
            return usage
    extra = getattr(response, "additional_kwargs", None)
    if extra and _counts(extra) is not None:
        return extra
    return None


def _counts(source: Any) -> tuple[int | None, int | None, int | None] | None:
    prompt = _first_int(source, _INPUT_KEYS)
    completion = _first_int(source, _OUTPUT_KEYS)
    total = _first_int(source, _TOTAL_KEYS)
    if prompt is None and completion is None and total is None:
        return None
    for read_key, write_key in _CACHE_APART_KEYS:
        cached = (_first_int(source, (read_key,)) or 0) + (_first_int(source, (write_key,)) or 0)
        if cached and prompt is not None:
            if total is not None and total == prompt + (completion or 0):
                total += cached  # a total that left them out too
            prompt += cached
            break
    thoughts = _first_int(source, (_THOUGHTS_KEY,))
    if thoughts and completion is not None:
        completion += thoughts
    return prompt, completion, total


def _detail(source: Any, group: str, key: str) -> int | None:
    details = _get(source, group)
    return None if details is None else _first_int(details, (key,))


def _first_int(source: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = _get(source, key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def tool_calls_of(message: Any) -> list[dict[str, Any]]:
    """The tool calls an assistant message requests: ``[{id, name, arguments}]``."""
    calls = []
    for block in getattr(message, "blocks", None) or ():
        if type(block).__name__ == "ToolCallBlock":
            calls.append(
                {"id": block.tool_call_id, "name": block.tool_name, "arguments": block.tool_kwargs}
            )
    if calls:
        return calls
    extra = getattr(message, "additional_kwargs", None)
    for item in (extra.get("tool_calls") if isinstance(extra, Mapping) else None) or ():
        function = _get(item, "function")
        if function is not None:  # OpenAI shape
            calls.append(
                {
                    "id": _get(item, "id"),
                    "name": _get(function, "name"),
                    "arguments": _get(function, "arguments"),
                }
            )
        else:  # ToolSelection and look-alikes
            calls.append(
                {
                    "id": _get(item, "tool_id") or _get(item, "id"),
                    "name": _get(item, "tool_name") or _get(item, "name"),
                    "arguments": _get(item, "tool_kwargs"),
                }
            )
    return calls


# -- small readers ------------------------------------------------------------------------------


def _get(source: Any, key: str) -> Any:
    if source is None:
        return None
    if type(source) is dict or isinstance(source, Mapping):
        return source.get(key)
    try:
        return getattr(source, key, None)
    except Exception:
        return None


def _known(name: Any) -> str | None:
    if isinstance(name, str) and name and name != "unknown":
        return name
    return None


def _copy_dict(value: Any) -> Any:
    return dict(value) if type(value) is dict or isinstance(value, Mapping) else value


def _is_stream(value: Any) -> bool:
    return hasattr(value, "__next__") or hasattr(value, "__anext__")


def _step_event(arguments: Mapping[str, Any]) -> Any:
    """The workflow event a step was called with (the argument that is not the Context)."""
    event = arguments.get("ev")
    if event is not None:
        return event
    for value in arguments.values():
        if type(value).__name__ != "Context" and hasattr(value, "_data"):
            return value
    return None


def _declared_field(event: Any, name: str) -> Any:
    # Reading an undeclared attribute of a workflow event raises inside its __getattr__: ask
    # the class first.
    fields = getattr(type(event), "model_fields", None)
    return getattr(event, name, None) if fields is not None and name in fields else None


def _event_field(event: Any, name: str) -> Any:
    try:
        return event.get(name)
    except Exception:
        return getattr(event, name, None)


def tool_name(tool: Any) -> str | None:
    """A LlamaIndex tool's name (``tool.metadata.name``)."""
    try:
        name = tool.metadata.name
    except Exception:
        return None
    return name if isinstance(name, str) and name else None


def agent_tool_names(instance: Any) -> set[str]:
    """The names of the tools an agent run was given: a workflow agent's ``tools``, or those of
    every agent of an ``AgentWorkflow`` (tools a ``tool_retriever`` picks, and those an agent
    adds itself, such as a workflow's ``handoff``, are known once offered to the LLM)."""
    names: set[str] = set()
    try:
        agents = getattr(instance, "agents", None)
        members = list(agents.values()) if isinstance(agents, Mapping) else [instance]
        for member in members:
            names.update(_tool_names(getattr(member, "tools", None)))
    except Exception:
        pass
    return names


def private_tool_names(names: list[Any], tools: Collection[str] | None) -> list[Any]:
    """The tool names a model asked for, as recorded: as they are when ``tools`` is ``None``
    (content is captured); else each one not in ``tools`` (the names of the application's
    tools the call knows) as ``unknown_tool``."""
    if tools is None:
        return names
    return [name if isinstance(name, str) and name in tools else UNKNOWN_TOOL for name in names]


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools or ():
        name = tool_name(tool) or getattr(tool, "__name__", None)
        if name:
            names.append(name)
    return names


def tool_step_name(arguments: Mapping[str, Any]) -> str | None:
    """The tool a ``call_tool`` step's ``ToolCall`` event asks for, as the model named it."""
    try:
        return str(_step_event(arguments).tool_name)
    except Exception:
        return None


def _tool_input(arguments: Mapping[str, Any]) -> Any:
    kwargs = arguments.get("kwargs")
    args = arguments.get("args")
    if args is None and kwargs is None and "input" not in arguments:
        # a tool class of yours with parameters of its own: ``def acall(self, query, limit)``
        return {k: v for k, v in arguments.items() if type(v).__name__ != "Context"}
    if args is None and "input" in arguments:  # BaseTool.__call__(input)
        args = (arguments["input"],)
    values = (
        {k: v for k, v in kwargs.items() if type(v).__name__ != "Context"}
        if isinstance(kwargs, Mapping)
        else {}
    )
    if args:
        return {"args": list(args), "kwargs": values}
    return values


def query_text(query: Any) -> Any:
    """The text of a query (a string or a ``QueryBundle``)."""
    if query is None or isinstance(query, str):
        return query
    text = getattr(query, "query_str", None)
    return text if text is not None else query


def message_text(message: Any) -> Any:
    """The text of a ``ChatMessage`` (a string passes through)."""
    if isinstance(message, str):
        return message
    try:
        return message.content
    except Exception:
        return None


def _embedding_texts(arguments: Mapping[str, Any]) -> list[Any]:
    texts = arguments.get("texts")
    if texts is not None:
        return list(texts)
    for key in ("query", "text"):
        if key in arguments:
            return [arguments[key]]
    return []


def _dimensions(result: Any) -> int | None:
    if not result:
        return None
    first = result[0]
    return len(first) if isinstance(first, (list, tuple)) else len(result)


def _score(node: Any) -> float | None:
    score = getattr(node, "score", None)
    return round(float(score), 6) if isinstance(score, (int, float)) else None


def _preview(text: Any) -> Any:
    if isinstance(text, str) and len(text) > PREVIEW_CHARS:
        return text[:PREVIEW_CHARS] + "…"
    return text


# -- snapshots --------------------------------------------------------------------------------
# Messages, responses and nodes are LlamaIndex's mutable objects, which agents keep changing
# after a call (a ReAct agent rewrites the answer it parsed, a reranker the scores): what was
# sent and received is copied when it happens, into small dicts of strings. The Sightline worker
# turns them into bounded JSON off the caller's thread.


def message_snapshot(message: Any) -> dict[str, Any]:
    """``{role, content, tool_calls?, tool_call_id?}`` of a ``ChatMessage`` (``content``: see
    :func:`message_content`)."""
    role = getattr(message, "role", None)
    out: dict[str, Any] = {
        "role": getattr(role, "value", role),
        "content": message_content(message),
    }
    calls = tool_calls_of(message)
    if calls:
        out["tool_calls"] = calls
    extra = getattr(message, "additional_kwargs", None)
    if type(extra) is dict and extra.get("tool_call_id"):
        out["tool_call_id"] = extra["tool_call_id"]
    return out


# Blocks that are not content of their own: text is the message's text, tool calls are listed
# under ``tool_calls``, a cache point only marks where a provider's prompt cache ends.
_TEXT_BLOCKS = frozenset(("TextBlock", "ToolCallBlock", "CachePoint"))
# Where a media block keeps its MIME type (an audio block: its format).
_MIMETYPE_FIELDS = ("image_mimetype", "video_mimetype", "document_mimetype", "format")


def message_content(message: Any) -> Any:
    """The content of a ``ChatMessage``: its text; or, when it carries more than text (an
    image, audio, a document...), the list of its parts, in order: ``{"type": "text", "text"}``
    and a placeholder per other block, ``{"type": "image", "url"?, "path"?, "mimetype"?}``.
    Never the bytes or base64 data of a block (nor a ``data:`` URL, which holds them)."""
    blocks = getattr(message, "blocks", None)
    if blocks:
        for block in blocks:
            if type(block).__name__ not in _TEXT_BLOCKS:
                return [part for part in map(_block_snapshot, blocks) if part is not None]
    return message_text(message)


def _block_snapshot(block: Any) -> dict[str, Any] | None:
    name = type(block).__name__
    if name == "TextBlock":
        return {"type": "text", "text": getattr(block, "text", None)}
    if name in _TEXT_BLOCKS:
        return None
    kind = getattr(block, "block_type", None)
    part: dict[str, Any] = {"type": kind if isinstance(kind, str) else name}
    fields = getattr(type(block), "model_fields", None) or {}
    try:
        if name == "ThinkingBlock":
            part["text"] = block.content
            return part
        url = block.url if "url" in fields else None
        if url is not None:
            url = str(url)
            if url.startswith("data:"):  # data:<mimetype>;base64,<the data itself>
                declared = url[5:].partition(",")[0].partition(";")[0]
                if declared:
                    part["mimetype"] = declared
            else:
                part["url"] = url
        path = block.path if "path" in fields else None
        if path is not None:
            part["path"] = str(path)
        for field in _MIMETYPE_FIELDS:
            mimetype = getattr(block, field, None) if field in fields else None
            if mimetype:
                part["mimetype"] = str(mimetype)
                break
        title = block.title if "title" in fields else None
        if isinstance(title, str) and title:
            part["title"] = title
    except Exception as exc:
        log_safely(logging.DEBUG, "sightline: llamaindex could not read a %s: %r", name, exc)
    return part


def messages_snapshot(messages: Any) -> dict[str, Any]:
    """``{"messages": [...]}`` of a list of ``ChatMessage``."""
    return {"messages": [message_snapshot(m) for m in messages]}


def nodes_snapshot(nodes: list[Any]) -> dict[str, Any]:
    """``{"nodes": [{id, score, text}], "more"?}``: the first nodes, texts cut to a preview."""
    out_nodes = []
    for item in nodes[:MAX_NODES]:
        node = getattr(item, "node", item)
        try:
            text = node.get_content()
        except Exception:
            text = getattr(node, "text", None)
        out_nodes.append(
            {"id": getattr(node, "node_id", None), "score": _score(item), "text": _preview(text)}
        )
    out: dict[str, Any] = {"nodes": out_nodes}
    if len(nodes) > MAX_NODES:
        out["more"] = len(nodes) - MAX_NODES
    return out


# -- lazy views ---------------------------------------------------------------------------------
# Immutable inputs (strings in a copied list, a workflow's start event) are formatted by the
# worker: ``capture`` reads objects offering ``model_dump()`` as mappings.
# The Sightline worker reads objects offering ``model_dump()`` as mappings, off the caller's
# thread: these views defer the formatting of messages and nodes until then.


class _View:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def model_dump(self) -> dict[str, Any]:
        try:
            return self._dump()
        except Exception as exc:
            return {"unreadable": f"{type(self.value).__name__}: {type(exc).__name__}"}

    def _dump(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class WorkflowEventView(_View):
    """The fields of a workflow event: its declared fields and its free-form data."""

    __slots__ = ()

    def _dump(self) -> dict[str, Any]:
        event = self.value
        out = {name: getattr(event, name, None) for name in type(event).model_fields}
        data = getattr(event, "_data", None)
        if isinstance(data, Mapping):
            out.update(data)
        return out


class StopEventView(WorkflowEventView):
    """The fields of a custom stop event, with the ``result`` it may also carry."""

    __slots__ = ()

    def _dump(self) -> dict[str, Any]:
        out = super()._dump()
        result = getattr(self.value, "result", None)
        if result is not None:
            out["result"] = result
        return out


class TextsView(_View):
    """``{"texts": [...]}``: the first texts sent to an embedding model, cut to a preview."""

    __slots__ = ()

    def _dump(self) -> dict[str, Any]:
        texts = [_preview(query_text(t)) for t in self.value[:MAX_TEXTS]]
        out: dict[str, Any] = {"texts": texts}
        if len(self.value) > MAX_TEXTS:
            out["more"] = len(self.value) - MAX_TEXTS
        return out
