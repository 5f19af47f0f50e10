"""The event: one record per finished span, and its strict JSON wire form (schema_version 1).

An :class:`Event` is created when a unit of work starts, filled in while it runs and handed to the
client once when it ends. Processors may change it (``input``, ``output``, ``metadata`` and
``tags`` are plain mutable values) before it is exported; nothing changes it after.

Times are kept as integer nanoseconds since the epoch (``start_ns`` / ``end_ns``) so that the
caller's thread never formats a timestamp; the RFC 3339 strings of the wire form are computed by
:meth:`Event.to_dict`, off the caller's thread.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "ErrorInfo",
    "ErrorKind",
    "Event",
    "EventType",
    "Status",
    "Usage",
    "format_time",
    "new_span_id",
    "new_trace_id",
    "parse_time",
]

SCHEMA_VERSION = 1


class EventType(str, Enum):
    """What kind of work an event records. The value is the wire name."""

    RUN = "run"
    AGENT = "agent"
    LLM_INVOKE = "llm_invoke"
    TOOL_CALL = "tool_call"
    CHAIN = "chain"
    RETRIEVAL = "retrieval"
    EMBEDDING = "embedding"
    DECISION = "decision"
    DATA_ACCESS = "data_access"
    API_CALL = "api_call"
    FILE_WRITE = "file_write"
    CUSTOM = "custom"

    def __str__(self) -> str:
        return self.value


class Status(str, Enum):
    """How a unit of work ended."""

    OK = "ok"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class ErrorKind(str, Enum):
    """Which layer an error belongs to, so that failures can be grouped across frameworks."""

    TOOL = "tool"
    MODEL = "model"
    RETRIEVAL = "retrieval"
    ORCHESTRATION = "orchestration"
    TIMEOUT = "timeout"
    GUARDRAIL = "guardrail"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


EVENT_TYPES = frozenset(t.value for t in EventType)
ERROR_KINDS = frozenset(k.value for k in ErrorKind)

# Step kinds of the AgentTracer vocabulary accepted wherever an event type is.
TYPE_ALIASES = {
    "plan": EventType.DECISION,
    "retrieve": EventType.RETRIEVAL,
    "tool": EventType.TOOL_CALL,
    "respond": EventType.LLM_INVOKE,
    "other": EventType.CUSTOM,
}


def coerce_type(value: EventType | str) -> EventType:
    """Return the :class:`EventType` named by ``value`` (a member, a wire name or an alias)."""
    if isinstance(value, EventType):
        return value
    alias = TYPE_ALIASES.get(value)
    if alias is not None:
        return alias
    try:
        return EventType(value)
    except ValueError:
        names = ", ".join(sorted(EVENT_TYPES | set(TYPE_ALIASES)))
        raise ValueError(f"unknown event type {value!r}; expected one of: {names}") from None


def _first_random_bits(bits: int) -> int:
    # `random` costs milliseconds to import: bind it on first use, not at `import sightline`.
    global _random_bits
    from random import getrandbits

    _random_bits = getrandbits
    return getrandbits(bits)


_random_bits = _first_random_bits


def new_trace_id() -> str:
    """32 lowercase hex characters, OpenTelemetry compatible (never all zeros).

    The first 12 are the creation time in milliseconds (as in UUIDv7), the other 20 random:
    W3C Trace Context asks for the right-most 7 bytes to be random, and these are 10. Time
    first makes a store's index on trace ids grow at one end instead of everywhere at once.
    """
    return f"{(time.time_ns() // 1_000_000) << 80 | _random_bits(80):032x}"


def new_span_id() -> str:
    """16 lowercase hex characters, OpenTelemetry compatible (never all zeros)."""
    return "%016x" % (_random_bits(64) or 1)


_second_cache: tuple[int, str] = (-1, "")


def format_time(ns: int) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-20T22:03:54.123456Z``."""
    global _second_cache
    seconds, rem = divmod(ns, 1_000_000_000)
    cached_seconds, stamp = _second_cache  # one tuple, swapped atomically between threads
    if cached_seconds != seconds:  # events come in bursts within a second: format it once
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, stamp)
    return f"{stamp}.{rem // 1000:06d}Z"


def parse_time(value: str) -> int:
    """Parse an RFC 3339 timestamp into nanoseconds since the epoch (UTC assumed if no offset)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    whole = int(parsed.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + parsed.microsecond * 1000


class Usage:
    """Token counts of one model call. ``total_tokens`` defaults to the sum of the others."""

    __slots__ = ("input_tokens", "output_tokens", "total_tokens")

    def __init__(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        if total_tokens is None and (input_tokens is not None or output_tokens is not None):
            total_tokens = (input_tokens or 0) + (output_tokens or 0)
        self.total_tokens = total_tokens

    def to_dict(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(data.get("input_tokens"), data.get("output_tokens"), data.get("total_tokens"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Usage):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"Usage(input_tokens={self.input_tokens}, output_tokens={self.output_tokens}, "
            f"total_tokens={self.total_tokens})"
        )


class ErrorInfo:
    """What went wrong: the exception type (or an error code), its message, the stack, a kind."""

    __slots__ = ("kind", "message", "stack", "type")

    def __init__(
        self,
        type: str,
        message: str = "",
        stack: str | None = None,
        kind: ErrorKind | str = ErrorKind.UNKNOWN,
    ) -> None:
        self.type = type
        self.message = message
        self.stack = stack
        self.kind = kind.value if isinstance(kind, ErrorKind) else kind

    @classmethod
    def from_exception(
        cls, exc: BaseException, kind: ErrorKind | str = ErrorKind.UNKNOWN
    ) -> ErrorInfo:
        """Describe ``exc``; the stack is formatted later, off the caller's thread."""
        info = _ErrorInfoWithExc(type(exc).__name__, _safe_str(exc), None, kind)
        info._exc = exc
        return info

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "stack": self.stack, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            data.get("type") or "Error",
            data.get("message") or "",
            data.get("stack"),
            data.get("kind") or "unknown",
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ErrorInfo):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ErrorInfo(type={self.type!r}, message={self.message!r}, kind={self.kind!r})"


class _ErrorInfoWithExc(ErrorInfo):
    """An ErrorInfo that keeps its exception until the stack is formatted in the background."""

    __slots__ = ("_exc",)

    _exc: BaseException | None


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class Event:
    """One finished unit of work. See ``ARCHITECTURE.md`` §3 for the meaning of each field.

    Example::

        event = Event(EventType.TOOL_CALL, "search", input={"q": "refund"})
        event.finish()
        client.track(event)
    """

    __slots__ = (
        "agent",
        "cost_usd",
        "end_ns",
        "error",
        "framework",
        "id",
        "input",
        "metadata",
        "model",
        "name",
        "output",
        "parent_span_id",
        "session_id",
        "span_id",
        "start_ns",
        "status",
        "tags",
        "trace_id",
        "type",
        "usage",
    )

    def __init__(
        self,
        type: EventType | str = EventType.CUSTOM,
        name: str = "",
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        status: Status | str = Status.OK,
        start_ns: int | None = None,
        end_ns: int | None = None,
        agent: str | None = None,
        session_id: str | None = None,
        framework: str | None = None,
        input: Any = None,
        output: Any = None,
        model: str | None = None,
        usage: Usage | None = None,
        cost_usd: float | None = None,
        error: ErrorInfo | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        id: str | None = None,
    ) -> None:
        self.id = id
        self.trace_id = trace_id or new_trace_id()
        self.span_id = span_id or new_span_id()
        self.parent_span_id = parent_span_id
        self.type = type if isinstance(type, EventType) else coerce_type(type)
        self.name = name
        self.status = status if isinstance(status, Status) else Status(status)
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.end_ns = end_ns
        self.agent = agent
        self.session_id = session_id
        self.framework = framework
        self.input = input
        self.output = output
        self.model = model
        self.usage = usage
        self.cost_usd = cost_usd
        self.error = error
        self.metadata = metadata if metadata is not None else {}
        self.tags = tags if tags is not None else []

    # -- convenience --------------------------------------------------------------------------

    def finish(self, end_ns: int | None = None) -> Event:
        """Stamp the end time (now, unless given) and return the event."""
        self.end_ns = end_ns if end_ns is not None else time.time_ns()
        return self

    @property
    def duration_ms(self) -> float:
        end = self.end_ns if self.end_ns is not None else self.start_ns
        return max(0, end - self.start_ns) / 1_000_000

    @property
    def start_time(self) -> str:
        return format_time(self.start_ns)

    @property
    def end_time(self) -> str:
        return format_time(self.end_ns if self.end_ns is not None else self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status is Status.ERROR

    def __repr__(self) -> str:
        parent = f" parent={self.parent_span_id}" if self.parent_span_id else ""
        return (
            f"<Event {self.type.value} {self.name!r} {self.status.value} "
            f"span={self.span_id}{parent}>"
        )

    # -- wire form ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON wire form (§3). Values must already be JSON-safe (the pipeline ensures it)."""
        error = self.error
        if error is not None and error.stack is None and getattr(error, "_exc", None) is not None:
            finalize_error(error)
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id or self.span_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "type": self.type.value,
            "name": self.name,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_ms": round(self.duration_ms, 3),
            "agent": self.agent,
            "session_id": self.session_id,
            "framework": self.framework,
            "input": self.input,
            "output": self.output,
            "model": self.model,
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "cost_usd": self.cost_usd,
            "error": error.to_dict() if error is not None else None,
            "metadata": self.metadata,
            "tags": self.tags,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Read the wire form back. Raises ``ValueError`` when ``data`` is not a valid event."""
        from sightline.schema import validate_event

        problems = validate_event(data)
        if problems:
            raise ValueError("invalid event: " + "; ".join(problems))
        start_ns = parse_time(data["start_time"])
        end_ns = parse_time(data["end_time"])
        usage = data.get("usage")
        error = data.get("error")
        event = cls(
            data["type"],
            data["name"],
            id=data["id"],
            trace_id=data["trace_id"],
            span_id=data["span_id"],
            parent_span_id=data.get("parent_span_id"),
            status=data["status"],
            start_ns=start_ns,
            end_ns=end_ns,
            agent=data.get("agent"),
            session_id=data.get("session_id"),
            framework=data.get("framework"),
            input=data.get("input"),
            output=data.get("output"),
            model=data.get("model"),
            usage=Usage.from_dict(usage) if usage else None,
            cost_usd=data.get("cost_usd"),
            error=ErrorInfo.from_dict(error) if error else None,
            metadata=dict(data.get("metadata") or {}),
            tags=list(data.get("tags") or []),
        )
        return event


def finalize_error(error: ErrorInfo, limit: int = 8192) -> None:
    """Format the stack of an error recorded from an exception (off the caller's thread)."""
    exc = getattr(error, "_exc", None)
    if exc is None:
        return
    try:
        import traceback

        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        stack = ""
    if len(stack) > limit:
        stack = "…[truncated]…" + stack[-limit:]
    error.stack = stack
    error._exc = None  # type: ignore[attr-defined]
