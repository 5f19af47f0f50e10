"""Spans: units of work in progress. A span becomes one :class:`~sightline.Event` when it ends.

The ambient span lives in a :class:`contextvars.ContextVar`, so parent/child links are right across
asyncio tasks and across threads started with a copied context.
"""

from __future__ import annotations

import builtins
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from sightline.event import ErrorInfo, ErrorKind, Event, EventType, Status, Usage, coerce_type

if TYPE_CHECKING:
    from types import TracebackType

    from sightline.client import Client

__all__ = [
    "NOOP_SPAN",
    "Span",
    "add_parent_source",
    "current_span",
    "default_error_kind",
    "ends_in_failure",
    "framework_parent",
    "framework_run_within",
    "remove_parent_source",
    "use_span",
]

_time_ns = time.time_ns
_CURRENT: ContextVar[Span | None] = ContextVar("sightline_current_span", default=None)
_MISSING = Token.MISSING
# Bound once: near the recursion limit even an enum member's lookup may be one call too many.
_STATUS_ERROR = Status.ERROR
_KIND_UNKNOWN = ErrorKind.UNKNOWN.value
_new_object = object.__new__

ParentSource = Callable[[], "tuple[str, str, int, Any] | None"]
_PARENT_SOURCES: list[ParentSource] = []


def add_parent_source(source: ParentSource) -> None:
    """For integrations: let spans started inside a framework's unit of work nest under it
    when its span is made later, away from the application's thread (a ``@monitor`` function
    called by a LangChain tool).

    ``source()`` returns ``(trace_id, span_id, start_ns, client)`` of the framework's run going
    on in this context, ``client`` being the :class:`~sightline.Client` that records it, or
    ``None``. A span started with the ambient parent, by that same client, nests under that run
    when there is no ambient Sightline span, or when the run started after the ambient span did
    (it runs inside it); it still takes ``agent`` and ``session_id`` from the ambient span. A
    span of another client does not: its parent would never reach that client's exporters. A source
    is asked at every such start: it must be cheap, and may raise (it is then ignored). Adding
    the same source twice adds it once.
    """
    if source not in _PARENT_SOURCES:
        _PARENT_SOURCES.append(source)


def remove_parent_source(source: ParentSource) -> None:
    """Undo :func:`add_parent_source`; a source not added is ignored."""
    if source in _PARENT_SOURCES:
        _PARENT_SOURCES.remove(source)


def framework_run_within(ambient: Span | None, client: Client) -> tuple[str, str, int, Any] | None:
    """The framework run going on here that ``client`` records (see :func:`framework_parent`)
    when it is nearer than the ambient span ``ambient``: there is no recording ambient span, or
    the run started after it (it runs inside it). ``None`` otherwise: the ambient span is the
    parent."""
    for source in _PARENT_SOURCES:  # framework_parent(), inline: asked at every span start
        try:
            run = source()
        except Exception:
            continue
        if run is not None and run[3] is client:
            if ambient is None or not ambient.is_recording or run[2] > ambient.event.start_ns:
                return run
            return None
    return None


def framework_parent() -> tuple[str, str, int, Any] | None:
    """``(trace_id, span_id, start_ns, client)`` of the framework run this code runs in, from
    the first parent source that knows one (see :func:`add_parent_source`), or ``None``."""
    for source in _PARENT_SOURCES:
        try:
            ids = source()
        except Exception:
            continue
        if ids is not None:
            return ids
    return None


def current_span() -> Span | None:
    """The ambient span of this context (thread or task), or ``None``."""
    return _CURRENT.get()


class use_span:
    """Make ``span`` the ambient span inside a ``with`` block without ending it.

    For integrations that run a unit of work in several steps, such as one ``__anext__`` of an
    async generator at a time: each step is entered and left in the same context, and the span
    is ended separately with :meth:`Span.end`::

        with use_span(span):
            item = await agen.__anext__()
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._token: Token[Span | None] | None = None

    def __enter__(self) -> Span | None:
        self._token = _CURRENT.set(self._span)
        return self._span

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                _CURRENT.reset(token)
            except ValueError:  # left in another context than entered
                pass


_KIND_BY_TYPE = {
    EventType.TOOL_CALL: ErrorKind.TOOL,
    EventType.LLM_INVOKE: ErrorKind.MODEL,
    EventType.EMBEDDING: ErrorKind.MODEL,
    EventType.RETRIEVAL: ErrorKind.RETRIEVAL,
    EventType.AGENT: ErrorKind.ORCHESTRATION,
    EventType.CHAIN: ErrorKind.ORCHESTRATION,
    EventType.RUN: ErrorKind.ORCHESTRATION,
}


def default_error_kind(event_type: EventType, exc: BaseException | None = None) -> ErrorKind:
    """The error kind implied by what failed: timeouts are ``timeout``, a tool's error ``tool``...

    An exception that is not an :class:`Exception` stops the work from outside rather than
    failing in it, so it is not put on the span's layer: a cancelled task
    (``asyncio.CancelledError``) is ``orchestration`` (its caller cancelled it), anything else
    (``KeyboardInterrupt``, a non-zero ``SystemExit``...) ``unknown``.
    """
    if exc is not None:
        if isinstance(exc, TimeoutError):
            return ErrorKind.TIMEOUT
        if not isinstance(exc, Exception):
            asyncio = sys.modules.get("asyncio")  # not imported: no task can be cancelled
            if asyncio is not None and isinstance(exc, asyncio.CancelledError):
                return ErrorKind.ORCHESTRATION
            return ErrorKind.UNKNOWN
    from sightline.errors import ToolDenied

    if isinstance(exc, ToolDenied):
        return ErrorKind.GUARDRAIL
    return _KIND_BY_TYPE.get(event_type, ErrorKind.UNKNOWN)


def ends_in_failure(exc: BaseException) -> bool:
    """Whether ``exc`` leaving a unit of work means that the work failed.

    Not for ``GeneratorExit`` (the consumer of a generator stopped early: what was produced
    was produced), nor for ``SystemExit`` with code ``0`` or ``None`` (the program finished
    successfully). The rule of a span's ``with`` block; ``@monitor`` records a generator
    closed early the same way.
    """
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, GeneratorExit):
        return False
    if isinstance(exc, SystemExit):
        code = exc.code
        return not (code is None or (isinstance(code, int) and code == 0))
    return True


def _tag_text(tag: object) -> str:
    """A tag as text: ``str(tag)`` (a str subclass's own text), or a marker if that fails.

    ``type(tag)``, not ``isinstance``: a proxy whose ``__class__`` raises (werkzeug's unbound
    ``LocalProxy``) makes ``isinstance`` raise too."""
    if issubclass(type(tag), str):
        return str.__str__(tag)
    try:
        text = str(tag)
    except Exception:
        return f"<unprintable {type(tag).__name__}>"
    return str.__str__(text) if type(text) is str else f"<unprintable {type(tag).__name__}>"


class Span:
    """A unit of work in progress; use it as a context manager, or call :meth:`end`.

    Example::

        with sightline.trace("support-ticket", agent="support-bot") as run:
            with run.step("tool", "search_kb") as step:
                step.add_metadata({"hits": 3})
    """

    __slots__ = ("_client", "_ended", "_token", "event")

    def __init__(self, client: Client, event: Event) -> None:
        self._client = client
        self.event = event
        # The token of the one `with` block the span is in, or, when it is entered again
        # before it is left (`with span: with span:`), the tokens of every block, innermost last.
        self._token: Token[Span | None] | list[Token[Span | None]] | None = None
        self._ended = False

    # -- identity -----------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self.event.trace_id

    @property
    def span_id(self) -> str:
        return self.event.span_id

    @property
    def parent_span_id(self) -> str | None:
        return self.event.parent_span_id

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def type(self) -> EventType:
        return self.event.type

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def is_recording(self) -> bool:
        """False for the no-op span handed out when Sightline is disabled."""
        return True

    @property
    def client(self) -> Client:
        """The client this span reports to."""
        return self._client

    # -- filling in ---------------------------------------------------------------------------

    def set_input(self, value: Any) -> Span:
        self.event.input = value
        return self

    def set_output(self, value: Any) -> Span:
        self.event.output = value
        return self

    def set_model(self, model: str | None) -> Span:
        self.event.model = model
        return self

    def set_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
    ) -> Span:
        """Token counts of a model call; ``total_tokens`` defaults to their sum."""
        self.event.usage = Usage(input_tokens, output_tokens, total_tokens)
        return self

    def set_cost(self, cost_usd: float | None) -> Span:
        self.event.cost_usd = cost_usd
        return self

    def set_metadata(self, metadata: Mapping[str, Any] | None = None, **values: Any) -> Span:
        """Merge keys into the event's metadata: those of ``metadata`` (a dict or another
        mapping), then the keyword arguments. Never raises: ``metadata`` that is not a mapping
        (a string, a list) is ignored, and logged once at warning level::

            span.set_metadata({"hits": 3}, source="kb")
        """
        if metadata is not None:
            if metadata.__class__ is dict or isinstance(metadata, Mapping):
                self._merge_metadata(metadata)
            else:
                self._client._warn_once(
                    "set_metadata",
                    "sightline: set_metadata() takes a mapping (a dict), not %s; it is ignored "
                    "(further ones are logged at debug level)",
                    type(metadata).__name__,
                )
        if values:
            self._merge_metadata(values)
        return self

    def _merge_metadata(self, values: Mapping[str, Any]) -> None:
        try:
            self.event.metadata.update(values)
            return
        except Exception:  # metadata set to something odd, or a mapping that cannot be read
            pass
        current = self.event.metadata
        merged: dict[str, Any] = {}
        for source in (current, values):
            try:
                if isinstance(source, Mapping):
                    merged.update(source)
            except Exception:
                pass  # that one is lost, not the span
        self.event.metadata = merged

    add_metadata = set_metadata

    def add_tags(self, *tags: str) -> Span:
        """Add tags not there yet; a tag that is not a string is recorded as ``str(tag)``."""
        try:
            existing = self.event.tags
            for tag in tags:
                if type(tag) is not str:
                    tag = _tag_text(tag)
                if tag not in existing:
                    existing.append(tag)
        except Exception:  # tags set to something odd, or an odd tag in them
            self._merge_tags(tags)
        return self

    def _merge_tags(self, tags: tuple[object, ...]) -> None:
        """add_tags the slow way: every tag made a string first, then merged."""
        current = self.event.tags
        try:
            if isinstance(current, str):
                old: list[object] = [current]
            else:
                old = list(current) if current is not None else []
        except Exception:
            old = []
        merged: list[str] = []
        for tag in (*old, *tags):
            text = tag if type(tag) is str else _tag_text(tag)
            if text not in merged:
                merged.append(text)
        self.event.tags = merged

    def set_status(self, status: Status | str) -> Span:
        """Set the span's status (``"ok"``, ``"error"`` or a :class:`Status`). Never raises:
        another value is ignored, and logged once at warning level."""
        if isinstance(status, Status):
            self.event.status = status
            return self
        try:
            self.event.status = Status(status)
        except ValueError:
            self._client._warn_once(
                "set_status",
                "sightline: set_status() takes one of %s, not %r; it is ignored "
                "(further ones are logged at debug level)",
                ", ".join(repr(member.value) for member in Status),
                status,
            )
        return self

    def set_error(
        self,
        exc: BaseException | None = None,
        *,
        kind: ErrorKind | str | None = None,
        type: str | None = None,
        message: str | None = None,
    ) -> Span:
        """Mark the span failed, from an exception or from an error code and message."""
        if kind is None:
            kind = default_error_kind(self.event.type, exc)
        if exc is not None:
            info = ErrorInfo.from_exception(exc, kind)
            if type is not None:
                info.type = type
            if message is not None:
                info.message = message
        else:
            info = ErrorInfo(type or "Error", message or "", None, kind)
        self.event.error = info
        self.event.status = Status.ERROR
        return self

    def record_failure(self, kind: ErrorKind | str, code: str, message: str = "") -> Span:
        """Record a failure that is not an exception: ``error = {kind, type: code, message}``."""
        return self.set_error(kind=kind, type=code, message=message)

    # -- children -----------------------------------------------------------------------------

    def step(self, type: EventType | str, name: str, **fields: Any) -> Span:
        """A child span of this one. ``type`` is an EventType, its value, or a step alias
        (``plan``, ``retrieve``, ``tool``, ``respond``, ``other``)."""
        return self._client.start_span(name, coerce_type(type), parent=self, **fields)

    def child(self, name: str, type: EventType | str = EventType.CUSTOM, **fields: Any) -> Span:
        """A child span with explicit parent (no context change); used by integrations."""
        return self._client.start_span(name, coerce_type(type), parent=self, **fields)

    # -- ending -------------------------------------------------------------------------------

    def end(self, end_ns: int | None = None) -> None:
        """Stamp the end time and hand the event to the client. Only the first call counts."""
        if self._ended:
            return
        self._ended = True
        self.event.end_ns = end_ns if end_ns is not None else time.time_ns()
        self._client.track(self.event)

    def __enter__(self) -> Span:
        token = _CURRENT.set(self)
        if self._token is None:
            self._token = token
        else:  # entered again before being left
            self._push_token(token)
        return self

    def __exit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever fails in here (near the recursion limit any call may), the span ends, is
        # tracked and leaves the context, and the exception leaving the block stays the user's.
        event = self.event
        if exc is not None and event.error is None:
            try:
                self._record_exit(exc)
            except Exception:  # not even called: the recursion limit
                pass
        try:
            if not self._ended:  # end(), inlined: this is every span's hot path
                self._ended = True
                event.end_ns = _time_ns()
                self._client.track(event)
        except Exception:  # track() never raises, but at the recursion limit no call succeeds
            pass
        finally:
            token = self._token
            if token is not None:
                if type(token) is list:  # not isinstance: this runs at every span's end
                    self._leave_nested(token)
                else:
                    self._token = None
                    try:
                        _CURRENT.reset(token)  # type: ignore[arg-type]
                    except ValueError:  # exited in another context than entered
                        _leave_elsewhere(self, token)  # type: ignore[arg-type]

    def _record_exit(self, exc: BaseException) -> None:
        """Record the exception leaving the span's block, unless it is no failure
        (:func:`ends_in_failure`): a generator closed early, a successful ``sys.exit()``.

        Never raises: when recording fails (a RecursionError near the limit), what could be
        kept is kept: the status, then the exception's type."""
        event = self.event
        try:
            if not ends_in_failure(exc):
                return
            event.status = _STATUS_ERROR  # first: whatever fails next, the span failed
            self.set_error(exc)
        except Exception:
            event.status = _STATUS_ERROR  # at the recursion limit the exception is one
            try:
                info = _new_object(ErrorInfo)  # no __init__: one Python call less
                info.type = type(exc).__name__
                info.message = ""
                info.stack = None
                info.kind = _KIND_UNKNOWN
                event.error = info
            except Exception:
                pass

    def _push_token(self, token: Token[Span | None]) -> None:
        held = self._token
        if isinstance(held, list):
            held.append(token)
        elif held is not None:
            self._token = [held, token]

    def _leave_nested(self, tokens: list[Token[Span | None]]) -> None:
        """Leave one of the blocks of a span entered more than once: the innermost one entered
        in this context (the blocks of one context are left innermost first). Never raises."""
        try:
            for index in range(len(tokens) - 1, -1, -1):
                try:
                    _CURRENT.reset(tokens[index])
                except ValueError:  # a block of another context (entered in two tasks)
                    continue
                del tokens[index]
                break
            else:
                _leave_elsewhere(self, tokens.pop())
        except Exception:  # the recursion limit
            pass
        if len(tokens) == 1:
            self._token = tokens[0]
        elif not tokens:
            self._token = None

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: builtins.type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<Span {self.event.type.value} {self.event.name!r} span={self.event.span_id}>"


def _leave_elsewhere(span: Span, token: Token[Span | None]) -> None:
    """``span`` is left in another context than it was entered in (an async generator holding
    it, resumed by another task): that context's ambient span changes only if it is ``span``,
    and then to the span it was entered over. Never raises."""
    try:
        if _CURRENT.get() is span:
            parent = token.old_value
            _CURRENT.set(None if parent is _MISSING else parent)
    except Exception:  # the recursion limit
        pass


class _NoopSpan(Span):
    """The span handed out when Sightline is disabled: every call is a cheap no-op."""

    __slots__ = ()

    def __init__(self) -> None:
        self._ended = True
        self._token = None

    @property
    def is_recording(self) -> bool:
        return False

    @property
    def event(self) -> Event:  # type: ignore[override]
        return _NOOP_EVENT

    def set_input(self, value: Any) -> Span:
        return self

    set_output = set_input

    def set_model(self, model: str | None) -> Span:
        return self

    def set_usage(self, *args: Any, **kwargs: Any) -> Span:
        return self

    def set_cost(self, cost_usd: float | None) -> Span:
        return self

    def set_metadata(self, *args: Any, **kwargs: Any) -> Span:
        return self

    add_metadata = set_metadata

    def add_tags(self, *tags: str) -> Span:
        return self

    def set_status(self, status: Status | str) -> Span:
        return self

    def set_error(self, *args: Any, **kwargs: Any) -> Span:
        return self

    def record_failure(self, *args: Any, **kwargs: Any) -> Span:
        return self

    def step(self, *args: Any, **kwargs: Any) -> Span:
        return self

    def child(self, *args: Any, **kwargs: Any) -> Span:
        return self

    def end(self, end_ns: int | None = None) -> None:
        return None

    def __enter__(self) -> Span:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


_NOOP_EVENT = Event(EventType.CUSTOM, "noop", trace_id="0" * 32, span_id="0" * 16, start_ns=0)
NOOP_SPAN: Span = _NoopSpan()
