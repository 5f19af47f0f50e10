"""The event: one record per finished span, and its strict JSON wire form (schema_version 1).

An :class:`Event` is created when a unit of work starts, filled in while it runs and handed to the
client once when it ends. Processors may change it (``input``, ``output``, ``metadata`` and
``tags`` are plain mutable values) before it is exported; nothing changes it after.

Times are kept as integer nanoseconds since the epoch (``start_ns`` / ``end_ns``) so that the
caller's thread never formats a timestamp; the RFC 3339 strings of the wire form are computed by
:meth:`Event.to_dict`, off the caller's thread.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "SCHEMA_VERSION",
    "ErrorInfo",
    "ErrorKind",
    "Event",
    "EventType",
    "Status",
    "Usage",
    "coerce_count",
    "coerce_ns",
    "format_stack_without_messages",
    "format_time",
    "new_span_id",
    "new_trace_id",
    "parse_time",
    "strip_exception_messages",
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


_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


def parse_time(value: str) -> int:
    """Parse an RFC 3339 timestamp into nanoseconds since the epoch (UTC assumed if no offset)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # Python 3.10 only reads a fraction of 3 or 6 digits after a "."; RFC 3339 allows any
        # number: kept to the microsecond, as 3.11 does.
        fixed = _FRACTION.sub(lambda m: f"{m[1]}.{m[2][:6]:0<6}", text, count=1)
        if fixed == text:
            raise
        parsed = datetime.fromisoformat(fixed)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    whole = int(parsed.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + parsed.microsecond * 1000


_MAX_INT64 = 2**63 - 1


def coerce_count(value: object) -> int | None:
    """A token count as an ``int`` from 0 to 2**63-1, read from an int, a float or a numeric
    string; negative counts become 0; ``None`` when it is missing, unreadable or too large."""
    number = _to_int(value)
    if number is None:
        return None
    if number < 0:
        return 0
    return number if number <= _MAX_INT64 else None


def coerce_ns(value: object) -> int | None:
    """A time in nanoseconds since the epoch as an ``int`` (``time.time() * 1e9`` is a float),
    or ``None`` when it is not a number from 0 (1970) to the end of the signed 64-bit range."""
    number = _to_int(value)
    return number if number is not None and 0 <= number <= _MAX_INT64 else None


def _to_int(value: object) -> int | None:
    """``int(value)`` for numbers and numeric strings (``"12"``, ``"1.5e3"``); ``None`` for
    ``None``, booleans, NaN, infinities and anything else. Never raises."""
    if value is None or value is True or value is False:
        return None
    try:
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                return int(float(text))
        return int(value)  # type: ignore[call-overload]
    except Exception:
        return None


class Usage:
    """Token counts of one model call. ``total_tokens`` defaults to the sum of the others.

    Counts given as numeric strings or floats are read as integers; what cannot be read
    becomes ``None``. The constructor never raises.
    """

    __slots__ = ("input_tokens", "output_tokens", "total_tokens")

    def __init__(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
    ) -> None:
        if (
            (input_tokens is not None and type(input_tokens) is not int)
            or (output_tokens is not None and type(output_tokens) is not int)
            or (total_tokens is not None and type(total_tokens) is not int)
        ):
            input_tokens = coerce_count(input_tokens)
            output_tokens = coerce_count(output_tokens)
            total_tokens = coerce_count(total_tokens)
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        if total_tokens is None and (input_tokens is not None or output_tokens is not None):
            total_tokens = (input_tokens or 0) + (output_tokens or 0)
        self.total_tokens = total_tokens

    @classmethod
    def coerce(cls, value: object) -> Usage | None:
        """A :class:`Usage` read from ``value``: a Usage (returned as it is), a mapping or an
        object with token-count attributes, in our names (``input_tokens``,
        ``output_tokens``, ``total_tokens``) or OpenAI's (``prompt_tokens``,
        ``completion_tokens``). Other keys are ignored. ``None`` when nothing can be read;
        never raises.

        Example::

            Usage.coerce({"prompt_tokens": 12, "completion_tokens": 3})  # 12, 3, total 15
        """
        if isinstance(value, Usage):
            return value
        try:
            if isinstance(value, Mapping):
                counts = [value.get(name) for name in _USAGE_NAMES]
            elif value is None or isinstance(value, (str, bytes, int, float)):
                return None
            else:  # a record such as OpenAI's CompletionUsage
                counts = [getattr(value, name, None) for name in _USAGE_NAMES]
        except Exception:
            return None
        input_tokens = counts[0] if counts[0] is not None else counts[1]
        output_tokens = counts[2] if counts[2] is not None else counts[3]
        if input_tokens is None and output_tokens is None and counts[4] is None:
            return None
        return cls(input_tokens, output_tokens, counts[4])

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


_USAGE_NAMES = (
    "input_tokens",
    "prompt_tokens",
    "output_tokens",
    "completion_tokens",
    "total_tokens",
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


_FIRST_FRAMES = 64  # frames of each exception written first: most stacks need no more
_MIN_FRAME_CHARS = 24  # '  File "", line 1, in f\n': no frame is written shorter


def finalize_error(error: ErrorInfo, limit: int = 8192, *, messages: bool = True) -> None:
    """Format the stack of an error recorded from an exception (off the caller's thread),
    cut to its last ``limit`` characters.

    Only the last frames of each exception (the chained ones too) are formatted: those that
    can show in the last ``limit`` characters. An exception that went up through N spans is
    recorded by each of them with its whole traceback; formatting all of it every time would
    cost N² frames. The first try writes the last 64 frames of each exception; when that is
    shorter than ``limit`` while the exception has more frames, more are written, at most as
    many as could fit in ``limit`` characters, unless the ones written were mostly folded
    into ``[Previous line repeated N more times]`` (a recursion: more frames would fold too).
    A stack missing frames for these reasons starts with ``…[truncated]…``.

    With ``messages=False`` each exception line of the stack (the chained ones too) holds only
    the exception's type: see :func:`format_stack_without_messages`.
    """
    exc = getattr(error, "_exc", None)
    if exc is None:
        return
    try:
        stack = _format_stack_within(exc, limit, messages)
    except Exception:
        stack = ""
    if len(stack) > limit:
        stack = "…[truncated]…" + stack[-limit:]
    error.stack = stack
    error._exc = None  # type: ignore[attr-defined]


def _format_stack_within(exc: BaseException, limit: int, messages: bool) -> str:
    """The stack of ``exc``, its last frames only (see :func:`finalize_error`); it starts with
    ``…[truncated]…`` when frames of ``exc`` that could show in ``limit`` characters are left
    out."""
    most = max(limit // _MIN_FRAME_CHARS + 1, 1)  # more frames never fit in `limit` characters
    depth = _deepest_traceback(exc, most + 1)
    frames = min(_FIRST_FRAMES, most)
    while True:
        stack = _format_stack(exc, frames, messages)
        if len(stack) > limit or depth <= frames:
            return stack  # cut to its last `limit` characters: no frame left out shows
        # Shorter than the limit with frames left out: were the frames written mostly folded
        # into "[Previous line repeated N more times]", more of them would fold too.
        if frames >= most or len(stack) < frames * _MIN_FRAME_CHARS:
            return "…[truncated]…" + stack
        frames = min(most, max(frames * 2, frames * limit // max(len(stack), 1) + 8))


def _format_stack(exc: BaseException, frames: int, messages: bool) -> str:
    """The stack of ``exc`` with the last ``frames`` frames of each exception in it."""
    if messages:
        import traceback

        # Handed the tail of the traceback, not only a negative limit: with a negative limit
        # the traceback module still reads the position of every frame before keeping some.
        tail = _traceback_tail(exc.__traceback__, frames)
        return "".join(traceback.format_exception(type(exc), exc, tail, limit=-frames))
    return format_stack_without_messages(exc, frames=frames)


def _deepest_traceback(exc: BaseException, most: int) -> int:
    """The number of frames of the deepest traceback among ``exc`` and the exceptions it
    chains to, counted up to ``most``."""
    deepest = 0
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and deepest < most:
        seen.add(id(current))
        depth = 0
        tb = current.__traceback__
        while tb is not None and depth < most:
            depth += 1
            tb = tb.tb_next
        deepest = max(deepest, depth)
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return deepest


def _traceback_tail(tb: TracebackType | None, frames: int) -> TracebackType | None:
    """The entry of ``tb`` from which its last ``frames`` frames go on (all of ``tb`` when it
    has fewer)."""
    lead = tb
    for _ in range(frames):
        if lead is None:
            return tb
        lead = lead.tb_next
    while lead is not None and tb is not None:
        lead = lead.tb_next
        tb = tb.tb_next
    return tb


_CAUSE_LINE = "The above exception was the direct cause of the following exception:"
_CONTEXT_LINE = "During handling of the above exception, another exception occurred:"
_TRACEBACK_LINE = "Traceback (most recent call last):"
_GROUP_WIDTH = 15  # sub-exceptions shown per exception group, as in traceback
_GROUP_DEPTH = 10  # nested exception groups shown


def format_stack_without_messages(exc: BaseException, *, frames: int | None = None) -> str:
    """The stack of ``exc`` as :func:`traceback.format_exception` writes it, but with every
    exception line cut to the exception's type (``module.Name``): no message, no notes.

    Chained exceptions (``raise ... from``, an exception raised while handling another) and the
    sub-exceptions of an exception group are written the same way. Messages are where the
    prompt, a tool's input or a credential end up; frames and source lines are the program's.
    ``frames``: write only the last that many frames of each exception.
    """
    import traceback

    format_tb: Any = traceback.format_tb
    if frames is not None:
        count = frames

        def format_tb(tb: TracebackType) -> list[str]:
            return traceback.format_tb(_traceback_tail(tb, count))

    parts: list[str] = []
    _write_chain(exc, parts, format_tb, 0)
    return "".join(parts)


def _write_chain(exc: BaseException, parts: list[str], format_tb: Any, depth: int) -> None:
    # Newest first, each with the line linking it to the exception it chains to; written
    # oldest first, each link line just before the exception that carries it (as traceback).
    chain: list[tuple[str | None, BaseException]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__cause__ is not None:
            chain.append((_CAUSE_LINE, current))
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            chain.append((_CONTEXT_LINE, current))
            current = current.__context__
        else:
            chain.append((None, current))
            current = None
    if chain and current is not None:  # a cycle: the last link points back into the chain
        chain[-1] = (None, chain[-1][1])
    group = getattr(builtins, "BaseExceptionGroup", None)  # Python 3.11+
    for link, item in reversed(chain):
        if link is not None:
            parts.append(f"\n{link}\n\n")
        if item.__traceback__ is not None:
            parts.append(_TRACEBACK_LINE + "\n")
            parts.extend(format_tb(item.__traceback__))
        parts.append(_exception_name(type(item)) + "\n")
        if group is not None and isinstance(item, group):
            _write_group(item.exceptions, parts, format_tb, depth)


def _write_group(
    exceptions: tuple[BaseException, ...], parts: list[str], format_tb: Any, depth: int
) -> None:
    if depth >= _GROUP_DEPTH:
        parts.append("  | … (nested exception groups left out)\n")
        return
    shown = exceptions[:_GROUP_WIDTH]
    for index, sub in enumerate(shown, 1):
        inner: list[str] = []
        _write_chain(sub, inner, format_tb, depth + 1)
        parts.append(f"  +-- sub-exception {index} of {len(exceptions)} --\n")
        parts.extend("  | " + line + "\n" for line in "".join(inner).splitlines())
    if len(exceptions) > len(shown):
        parts.append(f"  +-- {len(exceptions) - len(shown)} more sub-exceptions --\n")


def _exception_name(cls: type) -> str:
    """The type as the last line of a traceback names it: ``ValueError``, ``pkg.mod.Error``."""
    name = getattr(cls, "__qualname__", None)
    if not isinstance(name, str):
        name = "Exception"
    module = getattr(cls, "__module__", None)
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    return name


def strip_exception_messages(stack: str) -> str:
    """A traceback given as text, with each exception line cut to the exception's type.

    For stacks recorded as text, where no exception object is left to format: frames
    (``File ...`` lines and their source lines), ``Traceback ...`` headers and the lines that
    chain exceptions are kept; an exception line keeps the type before its colon, and the
    lines after it (the rest of a multi-line message, notes) are dropped up to the next
    header. Text that is not a Python traceback is dropped.
    """
    out: list[str] = []
    in_message = False  # after an exception line: everything up to the next header goes
    in_frame = False  # after a "File" line: its indented source and caret lines
    for line in stack.splitlines():
        bare = line.strip()
        if bare == _TRACEBACK_LINE:
            out.append(_TRACEBACK_LINE)
            in_message = in_frame = False
            continue
        if bare in (_CAUSE_LINE, _CONTEXT_LINE):
            out.extend(("", bare, ""))
            in_message = in_frame = False
            continue
        if in_message or not bare:
            continue
        if line.startswith('  File "'):
            out.append(line)
            in_frame = True
            continue
        if in_frame and line.startswith("    "):
            out.append(line)
            continue
        in_frame = False
        in_message = True
        name = line.split(":", 1)[0].strip()
        if _is_dotted_name(name):
            out.append(name)
    return "\n".join(out) + "\n" if out else ""


def _is_dotted_name(text: str) -> bool:
    return 0 < len(text) <= 200 and all(part.isidentifier() for part in text.split("."))
