"""The handler on AutoGen's event loggers (``autogen_core.events``, ``autogen_agentchat.events``).

AutoGen logs structured event objects (``record.msg`` is the object): model clients log
``LLMCallEvent`` / ``LLMStreamStartEvent`` / ``LLMStreamEndEvent``, tools log ``ToolCallEvent``,
the runtime logs ``MessageDroppedEvent`` and ``MessageHandlerExceptionEvent``, and
``AssistantAgent`` logs ``ToolCallRequestEvent`` / ``ToolCallExecutionEvent`` at DEBUG level.

:class:`SightlineEventLogHandler` turns them into Sightline events. :class:`EventLogTap` attaches
it: the loggers' level is lowered so that these records are produced at all, and a filter keeps
the records only Sightline asked for away from the application's own handlers, so that turning
Sightline on never changes what the application's logging prints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sightline.client import AMBIENT, get_client
from sightline.event import ErrorKind, EventType
from sightline.logs import log_safely
from sightline_autogen.mapping import (
    FRAMEWORK,
    bounded_text,
    function_calls_of,
    model_name_of,
    response_fields,
    tool_names,
    usage_details_of,
    whole_prompt_tokens,
)
from sightline_autogen.scopes import (
    REGISTRY,
    ScopeRegistry,
    WrappedCall,
    current_scope,
    wrapped_llm_call,
)

if TYPE_CHECKING:
    from sightline.client import Client

__all__ = [
    "EVENT_LOGGER_NAMES",
    "EventLogTap",
    "SightlineEventLogHandler",
    "set_instrumented_handler",
]

logger = logging.getLogger("sightline")

EVENT_LOGGER_NAMES = ("autogen_core.events", "autogen_agentchat.events")
"""The AutoGen loggers the handler listens to."""

_PAYLOAD_LIMIT = 2000

# The handler of the global instrumentation while it is on: every other handler stands aside,
# so that a handler attached by hand and the global one never record the same event twice.
_INSTRUMENTED: SightlineEventLogHandler | None = None


def set_instrumented_handler(handler: SightlineEventLogHandler | None) -> None:
    """Name the handler of the global instrumentation (``None``: it is off)."""
    global _INSTRUMENTED
    _INSTRUMENTED = handler


class SightlineEventLogHandler(logging.Handler):
    """A ``logging.Handler`` that records AutoGen's structured events as Sightline events.

    ``sightline.init()`` attaches one to AutoGen's event loggers; attach one yourself with::

        logging.getLogger("autogen_core.events").addHandler(SightlineEventLogHandler())

    (``ToolCallRequestEvent`` / ``ToolCallExecutionEvent`` are logged at DEBUG level: set the
    ``autogen_agentchat.events`` logger's level to DEBUG, or use :class:`EventLogTap`.)

    Model calls made through a client wrapped by ``instrument_model_client`` are left to the
    wrapper, so that using both never records a call twice. While the global instrumentation
    is on, its own handler records and any other one stands aside (whichever was attached
    first), for the same reason. Never raises.
    """

    def __init__(self, client: Client | None = None, registry: ScopeRegistry | None = None) -> None:
        super().__init__(logging.NOTSET)
        self.client = client
        self.registry = registry if registry is not None else REGISTRY
        self._warned = False
        # Loggers whose records an EventLogTap hands over directly: the copy that reaches this
        # handler through logging is the same record again.
        self.intercepted: frozenset[str] = frozenset()
        self._dispatch: dict[str, Callable[[Any], None]] = {
            "LLMCallEvent": self._on_llm_call,
            "LLMStreamStartEvent": self._on_stream_start,
            "LLMStreamEndEvent": self._on_stream_end,
            "ToolCallEvent": self._on_tool_call,
            "ToolCallRequestEvent": self._on_tool_request,
            "ToolCallExecutionEvent": self._on_tool_execution,
            "MessageDroppedEvent": self._on_message_dropped,
            "MessageHandlerExceptionEvent": self._on_handler_exception,
            "AgentConstructionExceptionEvent": self._on_construction_exception,
        }

    # -- logging.Handler ----------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: recording is thread-safe and must not serialise AutoGen's threads.
        if record.name not in self.intercepted:
            self.record(record.msg)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.record(record.msg)

    def record(self, message: Any) -> None:
        """Record one AutoGen event object (what AutoGen passes as the log message)."""
        method = self._dispatch.get(type(message).__name__)
        if method is None:
            return
        instrumented = _INSTRUMENTED
        if instrumented is not None and instrumented is not self:
            return  # the global instrumentation records it
        try:
            method(message)
        except Exception as exc:  # never raise into AutoGen
            if not self._warned:
                self._warned = True
                log_safely(
                    logging.WARNING,
                    "sightline: could not record AutoGen %s: %s: %s",
                    type(message).__name__,
                    type(exc).__name__,
                    exc,
                )

    def _client(self) -> Client:
        return self.client if self.client is not None else get_client()

    # -- model calls --------------------------------------------------------------------------

    def _on_llm_call(self, event: Any) -> None:
        fields = _kwargs(event)
        if "tools" in fields:
            self._note_offered_tools(fields["tools"])
        wrapped = wrapped_llm_call()
        if wrapped is not None:
            _enrich_wrapped(wrapped, fields.get("response"))
            return
        end_ns = time.time_ns()
        self._record_llm(fields, fields.get("response"), end_ns, None, stream=False)

    def _note_offered_tools(self, tools: Any) -> None:
        """With ``capture_content`` off, tell the current scope which tools its model was
        offered: the tool names its calls may be recorded with (see ``Scope.offered``)."""
        scope = current_scope()
        if scope is not None and not self._client().config.capture_content:
            self.registry.offer_tools(scope, tool_names(tools))

    def _on_stream_start(self, event: Any) -> None:
        wrapped = wrapped_llm_call()
        if wrapped is not None:
            # The client logs this on its first chunk: the wrapper's time to first chunk.
            if wrapped.stream_started_ns is None:
                wrapped.stream_started_ns = time.time_ns()
            return
        fields = _kwargs(event)
        self.registry.stream_started(_stream_key(), time.time_ns(), fields.get("messages"))

    def _on_stream_end(self, event: Any) -> None:
        fields = _kwargs(event)
        wrapped = wrapped_llm_call()
        if wrapped is not None:
            _enrich_wrapped(wrapped, fields.get("response"))
            return
        end_ns = time.time_ns()
        started = self.registry.stream_ended(_stream_key())
        first_chunk_ns = None
        if started is not None:
            first_chunk_ns, messages, _ = started
            fields.setdefault("messages", messages)
        self._record_llm(fields, fields.get("response"), end_ns, first_chunk_ns, stream=True)

    def _record_llm(
        self,
        fields: Mapping[str, Any],
        response: Any,
        end_ns: int,
        first_chunk_ns: int | None,
        *,
        stream: bool,
    ) -> None:
        client = self._client()
        if not client.enabled:
            return
        scope = current_scope()
        # The call was only seen when it ended: it started at the scope's last step (its start,
        # the previous model call, the last tool results), or at the first chunk of a stream;
        # outside any scope its start is unknown (taken as its end). Inferred either way.
        if scope is not None:
            start_ns = min(scope.mark_ns, end_ns)
        else:
            start_ns = first_chunk_ns if first_chunk_ns is not None else end_ns
        read = response_fields(response)
        model = read.get("model")
        if model is None and scope is not None and scope.kind == "agent":
            model = model_name_of(getattr(scope.subject, "_model_client", None))
        metadata: dict[str, Any] = {"stream": stream}
        if "tools" in fields:  # AutoGen logs them with a whole call, not with a stream's start
            metadata["tools"] = tool_names(fields["tools"])
        metadata["source"] = "event_log"
        metadata["start_inferred"] = True
        if "finish_reason" in read:
            metadata["finish_reason"] = read["finish_reason"]
        if first_chunk_ns is not None and scope is not None:
            metadata["time_to_first_chunk_ms"] = round(
                max(0, first_chunk_ns - start_ns) / 1_000_000, 3
            )
        agent_id = fields.get("agent_id")
        if agent_id:
            metadata["agent_id"] = agent_id
        span = client.start_span(
            "chat_completion",
            EventType.LLM_INVOKE,
            input=fields.get("messages"),
            metadata=metadata,
            framework=FRAMEWORK,
            model=model,
            start_ns=start_ns,
        )
        if "output" in read:
            span.set_output(read["output"])
        prompt, completion = fields.get("prompt_tokens"), fields.get("completion_tokens")
        if isinstance(prompt, int) or isinstance(completion, int):
            span.set_usage(
                input_tokens=whole_prompt_tokens(prompt, response)
                if isinstance(prompt, int)
                else None,
                output_tokens=completion if isinstance(completion, int) else None,
            )
            details = usage_details_of(response)
            if details:
                span.set_metadata(usage_details=details)
        span.end(end_ns)
        if scope is not None:
            scope.mark_ns = end_ns

    # -- tool calls ---------------------------------------------------------------------------

    def _on_tool_request(self, event: Any) -> None:
        client = self._client()
        if not client.enabled:
            return
        calls = function_calls_of(getattr(event, "content", None)) or []
        self.registry.request_tools(client, getattr(event, "source", None), calls, time.time_ns())

    def _on_tool_call(self, event: Any) -> None:
        fields = _kwargs(event)
        client = self._client()
        if not client.enabled:
            return
        self.registry.finish_tool(
            client,
            fields.get("tool_name") or "tool",
            fields.get("arguments"),
            fields.get("result"),
            time.time_ns(),
        )

    def _on_tool_execution(self, event: Any) -> None:
        client = self._client()
        if not client.enabled:
            return
        results = []
        for item in getattr(event, "content", None) or []:
            results.append(
                {
                    "call_id": getattr(item, "call_id", None),
                    "name": getattr(item, "name", None),
                    "content": getattr(item, "content", None),
                    "is_error": getattr(item, "is_error", None),
                }
            )
        self.registry.complete_tools(
            client, getattr(event, "source", None), results, time.time_ns()
        )

    # -- runtime failures ---------------------------------------------------------------------

    def _on_message_dropped(self, event: Any) -> None:
        fields = _kwargs(event)
        self._record_failure(
            EventType.DECISION,
            "message_dropped",
            ErrorKind.GUARDRAIL,
            "MessageDropped",
            "an intervention handler dropped the message",
            fields,
            team_of=fields.get("receiver") or fields.get("sender"),
            metadata={
                "sender": fields.get("sender"),
                "recipient": fields.get("receiver"),
                "delivery": _kind_name(fields.get("kind")),
            },
        )

    def _on_handler_exception(self, event: Any) -> None:
        self._on_exception(event, "message_handler_exception", "MessageHandlerException",
                           "handling_agent")  # fmt: skip

    def _on_construction_exception(self, event: Any) -> None:
        self._on_exception(event, "agent_construction_exception", "AgentConstructionException",
                           "agent_id")  # fmt: skip

    def _on_exception(self, event: Any, name: str, error_type: str, agent_key: str) -> None:
        """An exception AutoGen logged for an agent: a ``custom`` error event of kind
        ``orchestration`` under that agent's team."""
        fields = _kwargs(event)
        self._record_failure(
            EventType.CUSTOM,
            name,
            ErrorKind.ORCHESTRATION,
            error_type,
            str(fields.get("exception") or ""),
            fields,
            team_of=fields.get(agent_key),
            metadata={agent_key: fields.get(agent_key)},
        )

    def _record_failure(
        self,
        event_type: EventType,
        name: str,
        kind: ErrorKind,
        code: str,
        message: str,
        fields: Mapping[str, Any],
        *,
        team_of: Any,
        metadata: dict[str, Any],
    ) -> None:
        client = self._client()
        if not client.enabled:
            return
        now = time.time_ns()
        parent: Any = AMBIENT
        scope = current_scope()
        team_span = self.registry.team_span(_team_id_of(team_of))
        if scope is not None:
            parent = scope.span
        elif team_span is not None:
            parent = team_span
        payload = fields.get("payload")
        span = client.start_span(
            name,
            event_type,
            parent=parent,
            input=bounded_text(payload, _PAYLOAD_LIMIT) if payload is not None else None,
            metadata=metadata,
            framework=FRAMEWORK,
            start_ns=now,
        )
        span.set_error(kind=kind, type=code, message=message)
        span.end(now)


def _kwargs(event: Any) -> dict[str, Any]:
    fields = getattr(event, "kwargs", None)
    return dict(fields) if isinstance(fields, Mapping) else {}


def _enrich_wrapped(call: WrappedCall, response: Any) -> None:
    """Give the wrapper's call what only the client's own log knows: the model that answered
    (``gpt-4o-mini-2024-07-18`` where the client was configured with ``gpt-4o-mini``), and the
    raw response, whose usage the wrapper reads when the call ends (``RequestUsage`` has no
    prompt-cache or reasoning tokens)."""
    call.logged_response = response
    model = response_fields(response).get("model")
    if model:
        call.span.set_model(model)


def _stream_key() -> Any:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.get_ident()


def _kind_name(kind: Any) -> str | None:
    if not isinstance(kind, str):
        return None
    return kind.rsplit(".", 1)[-1].lower()


def _team_id_of(agent_or_topic: Any) -> str | None:
    """The team id inside an AgentId / TopicId string (``type/key``; teams use their id as key)."""
    if not isinstance(agent_or_topic, str) or "/" not in agent_or_topic:
        return None
    return agent_or_topic.rsplit("/", 1)[-1]


def _enabled_for_sightline(level: int) -> bool:
    """``isEnabledFor`` of an intercepted logger: every record reaches the interception, even on
    a logger the application disabled (``dictConfig`` disables the loggers it does not name)
    or under ``logging.disable``; the interception decides who else sees it."""
    return True


class _LoggerInterception:
    """Replaces ``_log`` (and ``isEnabledFor``) on one logger instance (restored on detach).

    Every record is handed to the Sightline handler directly, without building a ``LogRecord``.
    A record the application's own configuration would let through (its level, ``disabled``,
    ``logging.disable``) is then logged as usual, to the application's handlers; the Sightline
    handler on the logger ignores that copy. So the application's logs do not change, and
    Sightline records even what the application's configuration silences.
    """

    def __init__(
        self, target: logging.Logger, saved_level: int, handler: SightlineEventLogHandler
    ) -> None:
        self.target = target
        self.saved_level = saved_level
        self.handler = handler

    def allowed_by_application(self, level: int) -> bool:
        target = self.target
        if target.disabled or target.manager.disable >= level:
            return False
        # DEBUG is the level Sightline set; any other is the application's (set since).
        app_level = target.level if target.level != logging.DEBUG else self.saved_level
        if app_level != logging.NOTSET:
            return level >= app_level
        parent = target.parent
        if parent is None:
            return level >= logging.WARNING
        if parent.disabled:  # a disabled ancestor still handles what propagates to it
            return level >= parent.getEffectiveLevel()
        return parent.isEnabledFor(level)

    def __call__(
        self,
        level: int,
        msg: Any,
        args: Any,
        exc_info: Any = None,
        extra: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
    ) -> None:
        self.handler.record(msg)
        if self.allowed_by_application(level):
            # One more frame to skip: this one, so the record names AutoGen's caller.
            logging.Logger._log(
                self.target, level, msg, args, exc_info, extra, stack_info, stacklevel + 1
            )


class EventLogTap:
    """Attaches a :class:`SightlineEventLogHandler` to AutoGen's event loggers, and detaches it.

    The loggers are set to DEBUG while attached (AutoGen logs tool requests and results at
    DEBUG, model and tool calls at INFO); what the application's logging configuration would
    not have shown goes to Sightline only, so the application's logs do not change. A logger
    the application disables later (``logging.config.dictConfig`` disables every existing
    logger it does not name) is still recorded.
    """

    def __init__(
        self, handler: SightlineEventLogHandler, names: Sequence[str] = EVENT_LOGGER_NAMES
    ) -> None:
        self.handler = handler
        self.names = tuple(names)
        self._attached: list[tuple[logging.Logger, int, _LoggerInterception]] = []

    @property
    def attached(self) -> bool:
        """True while the handler is attached."""
        return bool(self._attached)

    def attach(self) -> None:
        """Attach the handler and lower the loggers' level (idempotent)."""
        if self._attached:
            return
        self.handler.intercepted = frozenset(self.names)
        for name in self.names:
            target = logging.getLogger(name)
            saved = target.level
            interception = _LoggerInterception(target, saved, self.handler)
            target._log = interception  # type: ignore[method-assign]
            target.isEnabledFor = _enabled_for_sightline  # type: ignore[method-assign]
            target.addHandler(self.handler)
            target.setLevel(logging.DEBUG)
            self._attached.append((target, saved, interception))

    def detach(self) -> None:
        """Detach the handler and restore the loggers as they were (idempotent)."""
        attached, self._attached = self._attached, []
        if attached:
            self.handler.intercepted = frozenset()
        for target, saved, interception in attached:
            target.removeHandler(self.handler)
            if target.__dict__.get("_log") is interception:
                del target._log
            if target.__dict__.get("isEnabledFor") is _enabled_for_sightline:
                del target.isEnabledFor
            if target.level == logging.DEBUG:
                target.setLevel(saved)
