"""The LlamaIndex instrumentation handlers: one span handler and one event handler.

``SightlineSpanHandler`` turns the spans of LlamaIndex's instrumentation dispatcher into Sightline
spans: it keeps one entry per open LlamaIndex span (recorded or not) so that parents resolve
through the plumbing spans it does not record, and it removes the entry when the span exits or is
dropped. ``SightlineEventHandler`` completes those spans from the instrumentation events that
carry what a span's arguments do not: the messages and response of an LLM call, its token usage,
the end of a streamed answer.

Both read and write one process-wide table of open spans. LlamaIndex span ids are unique in the
process, and sharing the table is what makes a handler attached by hand and the one attached by
``sightline.init()`` never record the same work twice (the first to see a span records it; the
first to see it end finishes it).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextvars import ContextVar
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sightline.client import get_client
from sightline.logs import log_safely
from sightline.span import add_parent_source, current_span
from sightline_llamaindex._framework import (
    BaseEventHandler,
    BaseSpan,
    BaseSpanHandler,
    active_span_id,
)
from sightline_llamaindex.mapping import (
    RESPONSE_KINDS,
    STREAM_END_METHODS,
    Kind,
    ResponseShape,
    agent_tool_names,
    apply_llm_prompt,
    apply_llm_response,
    apply_llm_start,
    classify,
    family,
    finish_fields,
    merges_into,
    response_shape,
    span_prefix,
    start_event,
    start_step,
    step_kind,
    streamed_text,
    tool_step_name,
)

if TYPE_CHECKING:
    import inspect

    from sightline import Client, Span

__all__ = ["SightlineEventHandler", "SightlineSpanHandler"]


_RUN_KINDS = (Kind.AGENT, Kind.WORKFLOW)
# Kinds whose result names the tools a model asked for (``tool_calls``).
_NAMING_KINDS = (Kind.LLM, Kind.AGENT)
# Timeouts that do not subclass TimeoutError, by class name (importing them would load
# LlamaIndex's workflows package): a workflow or agent run out of time.
_TIMEOUT_ERRORS = frozenset(("WorkflowTimeoutError",))
# What a workflow step raises to suspend itself until an event arrives (``ctx.wait_for_event``):
# the step is run again, from its start, with that event.
WAITING = frozenset(("WaitingForEvent",))
_RUN_CANCELLED = "WorkflowCancelledByUser"


class _Call:
    """One Sightline span being filled from one or more LlamaIndex spans.

    Every open LlamaIndex span maps to a ``_Call``: its own when it is recorded (``owner_id`` is
    its id), its nearest recorded ancestor's when it is plumbing or a nested part of the same
    call (``achat`` calling ``chat``), or a marker holding the ambient Sightline span when it is
    an unrecorded root.
    """

    __slots__ = (
        "agent",
        "cancelled",
        "child_error",
        "container",
        "exited",
        "finished",
        "inner_error",
        "instance_id",
        "kind",
        "name",
        "owned",
        "owner_id",
        "parent",
        "partial",
        "reading",
        "response_seen",
        "span",
        "started",
        "stream_keys",
        "stream_ref",
        "tool_names",
        "tools",
        "wait_own_end",
        "waiting",
    )

    def __init__(
        self,
        span: Span | None,
        kind: int = Kind.TRANSPARENT,
        owner_id: str | None = None,
        owned: bool = False,
        instance_id: int = 0,
        parent: _Call | None = None,
        container: _Call | None = None,
    ) -> None:
        self.span = span
        self.kind = kind
        self.owner_id = owner_id
        self.owned = owned
        self.instance_id = instance_id
        self.parent = parent  # the recorded call this one is a child of
        self.container = container  # the entry of the LlamaIndex parent span, recorded or not
        self.name = span.event.name if owned and span is not None else ""
        self.exited = False
        self.finished = False
        self.started = False
        self.response_seen = False
        self.stream_keys: list[str] = []
        self.stream_ref: weakref.ref[Any] | None = None  # the stream its own span returned
        self.wait_own_end = False
        self.agent: str | None = None  # a run's: the agent its latest step ran for
        self.inner_error: BaseException | None = None
        self.child_error: tuple[BaseException, str] | None = None
        # LlamaIndex's ``SpanCancelledEvent`` for its span: the reason it gives
        self.cancelled: str | None = None
        # the ``WaitingForEvent`` a span of this call (or of a call inside it) was left with:
        # the attempt is suspended until the awaited event arrives, then run again
        self.waiting: BaseException | None = None
        # the streamed response being read when its span started (its work is the stream's)
        self.reading: _ResponseStream | None = None
        # an LLM call's: the latest chunk its stream yielded (the response so far), what it
        # ends with when the stream stops before its end event
        self.partial: Any = None
        # an agent run's: the tools its calls ran, as they ended (a run that does not return
        # has no final output listing them)
        self.tool_names: list[str] | None = None
        # with capture_content off only: the names of the application's tools this call knows
        # (an agent run's tools, those offered to an LLM call in it, those that ran in it), the
        # tool names a model in it may be recorded asking for (see _known_tools)
        self.tools: set[str] | None = None


_UNRECORDED_ROOT = _Call(None)


class _ResponseStream:
    """The calls that returned one streamed response, open until it has been read.

    A streaming query engine's ``synthesize`` and ``query`` return a ``StreamingResponse`` whose
    tokens (and often the LLM call making them) come only when ``response_gen`` is read; a chat
    engine's ``stream_chat`` returns a ``StreamingAgentChatResponse`` that a writer thread or
    task fills from the LLM stream. ``source`` is the object whose end ends them: the generator
    Sightline put in ``response_gen`` (``chunks`` are its tokens), or the chat response.
    """

    __slots__ = ("calls", "chunks", "finalizer", "key", "source")

    def __init__(self) -> None:
        self.key = 0
        self.source: Callable[[], Any] = _nothing
        self.calls: list[_Call] = []  # innermost first: synthesize, then query
        self.chunks: list[Any] = []
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def watching(self, source: Any) -> None:
        self.key = id(source)
        self.source = weakref.ref(source)


def _nothing() -> None:
    return None


class _OpenSpans:
    """Open LlamaIndex spans and unfinished LLM streams, shared by every Sightline handler.

    ``records`` maps each open LlamaIndex span id to its :class:`_Call`; ``streams`` maps the id
    of an LLM span that returned a stream to its call until the stream's end event arrives (or
    the stream is garbage-collected unconsumed); ``streaming`` maps an LLM object to its calls
    whose streams are not finished yet; ``responses`` maps the source of a streamed response
    (see :class:`_ResponseStream`) to the engine calls waiting for it. All are bounded.
    """

    MAX_OPEN = 100_000
    MAX_STREAMS = 10_000

    def __init__(self) -> None:
        self.records: dict[str, _Call] = {}
        self.streams: dict[str, _Call] = {}
        self.streaming: dict[int, list[_Call]] = {}
        self.responses: dict[int, _ResponseStream] = {}
        self.lock = threading.RLock()  # re-entrant: a stream finalizer may run inside a GC pass
        self._warned = False

    def drained(self) -> bool:
        """Nothing is open: no span, no stream."""
        return not self.records and not self.streams and not self.responses

    def add(self, span_id: str, call: _Call) -> None:
        records = self.records
        records[span_id] = call
        if len(records) > self.MAX_OPEN:
            self._evict_oldest_record()

    def _evict_oldest_record(self) -> None:
        with self.lock:
            try:
                span_id = next(iter(self.records))
            except StopIteration:
                return
            call = self.records.pop(span_id, None)
        self._warn_once("open LlamaIndex spans")
        if call is not None and call.owned and call.owner_id == span_id:
            self.finish(call, incomplete=True)

    def await_stream(self, call: _Call, span_id: str, stream: Any, announced: bool) -> None:
        """Keep ``call`` open until the end event of the stream LlamaIndex span ``span_id``
        returned (or until the stream object is collected without having been consumed).

        ``announced``: the span's method reports its stream's end itself (the ``chat`` and
        ``complete`` families do, through LlamaIndex's LLM callbacks). When the call's own span
        does, the call ends with that last end event, which carries the outermost response;
        otherwise with the first end event after its span exited.
        """
        with self.lock:
            if call.finished:
                return
            self.streams[span_id] = call
            call.stream_keys.append(span_id)
            if span_id == call.owner_id:
                call.wait_own_end = announced
                try:
                    call.stream_ref = weakref.ref(stream)
                except TypeError:  # not weak-referenceable: never joined by a lazy call
                    pass
                else:
                    self.streaming.setdefault(call.instance_id, []).append(call)
            oldest = None
            if len(self.streams) > self.MAX_STREAMS:
                oldest = self.streams.get(next(iter(self.streams)))
        if oldest is not None:
            self._warn_once("unconsumed LLM streams")
            self.finish(oldest, incomplete=True)
        try:
            finalizer = weakref.finalize(stream, self.stream_abandoned, span_id)
            finalizer.atexit = False
        except TypeError:  # not weak-referenceable: the end event or the bound will close it
            pass
        _end_open_at_exit_once()  # a stream still open at exit ends then, ``incomplete``

    def stream_done(self, span_id: str) -> _Call | None:
        """The stream of ``span_id`` ended; finish its call if its LlamaIndex span has exited."""
        with self.lock:
            call = self.streams.pop(span_id, None)
            if call is None:
                return None
            if span_id in call.stream_keys:
                call.stream_keys.remove(span_id)
            done = call.exited and (span_id == call.owner_id or not call.wait_own_end)
        if done:
            self.finish(call)
        return call

    def stream_abandoned(self, span_id: str) -> None:
        """Finalizer of a stream object: it was collected before its end event."""
        try:
            with self.lock:
                call = self.streams.get(span_id)
            if call is not None:  # complete if an end event brought its response already
                self.finish(call, incomplete=not call.response_seen)
                _release_if_drained(wait=False)  # after uninstrument(): the last one open
        except Exception:  # never raise from a finalizer
            pass

    def await_response(self, call: _Call, result: Any) -> bool:
        """Keep the query, synthesis or chat engine ``call`` open until the streamed response
        it returned has been read (True), or say it ends now (False: not a streamed response,
        or one already read).

        A ``StreamingResponse``'s ``response_gen`` is replaced by a generator that passes its
        tokens through and ends the calls with their text; the ``query`` returning the response
        its ``synthesize`` returned waits for the same generator. A chat engine's response ends
        when its writer's span (``write_response_to_history``) does.
        """
        try:
            shape = response_shape(result)
            if shape == ResponseShape.TOKENS:
                return self._watch_tokens(call, result)
            if shape == ResponseShape.CHAT:
                return self._await_writer(call, result)
        except Exception as exc:  # unreadable: the call ends now, as if not streamed
            log_safely(
                logging.DEBUG, "sightline: llamaindex could not follow a streamed response: %r", exc
            )
        return False

    def _watch_tokens(self, call: _Call, result: Any) -> bool:
        tokens = result.response_gen
        if tokens is None or getattr(result, "response_txt", None) is not None:
            return False
        with self.lock:
            record = self.responses.get(id(tokens))
            if record is not None and record.source() is tokens:
                record.calls.append(call)
                return True
        code = getattr(tokens, "gi_code", None) or getattr(tokens, "ag_code", None)
        if code is _WATCH_CODE or code is _WATCH_ASYNC_CODE:
            return False  # a watched stream already read to its end
        if hasattr(tokens, "__anext__"):
            watch: Callable[[Any, _ResponseStream], Any] = _watch_async
        elif hasattr(tokens, "__next__"):
            watch = _watch
        else:
            return False
        record = _ResponseStream()
        watcher = watch(tokens, record)
        record.watching(watcher)
        record.calls.append(call)
        result.response_gen = watcher
        self._add_response(record)
        return True

    def _await_writer(self, call: _Call, result: Any) -> bool:
        # The writer may have started (a thread) or even finished before the engine's span
        # exits: it sets ``is_done`` or ``exception`` before its own span exits, and its exit
        # looks for the record under the lock this check holds.
        with self.lock:
            error = result.exception
            if error is not None:  # the writer failed already: the engine fails with it
                self.fail(call, error)
                return False
            if result.is_done:  # written already: the engine ends now, with the whole text
                text = getattr(result, "response", None)
                if isinstance(text, str) and call.span is not None:
                    call.span.set_output(text)
                return False
            if (
                getattr(result, "write_response_to_history_thread", None) is None
                and getattr(result, "awrite_response_to_history_task", None) is None
            ):
                return False  # no writer: read by the caller straight from the LLM stream
            record = self.responses.get(id(result))
            if record is None or record.source() is not result:
                record = _ResponseStream()
                record.watching(result)
                record.calls.append(call)
                self._add_response(record)
            else:
                record.calls.append(call)
            return True

    def _add_response(self, record: _ResponseStream) -> None:
        source = record.source()
        if source is None:
            return
        with self.lock:
            self.responses[record.key] = record
            oldest = None
            if len(self.responses) > self.MAX_STREAMS:
                oldest = self.responses.get(next(iter(self.responses)))
        try:
            record.finalizer = weakref.finalize(source, self.response_abandoned, record)
            record.finalizer.atexit = False
        except TypeError:  # not weak-referenceable: its end or the bound will close it
            pass
        _end_open_at_exit_once()
        if oldest is not None:
            self._warn_once("unread streamed responses")
            self.end_response(oldest, incomplete=True)

    def end_response(
        self,
        record: _ResponseStream,
        text: str | None = None,
        error: BaseException | None = None,
        closed_early: bool = False,
        incomplete: bool = False,
        release: bool = False,
        try_release: bool = False,
    ) -> None:
        """The streamed response of ``record`` ended: finish its calls (once), innermost first,
        with its text (``text``, else the tokens read).

        ``release``: called from the reader's code (not from a finalizer, which may run while
        ``uninstrument()`` holds its lock): handlers left draining may leave now.
        ``try_release``: called from a finalizer or a generator being closed (perhaps by a
        collection): they leave now only if that lock is free.
        """
        try:
            with self.lock:
                if self.responses.get(record.key) is not record:
                    return
                del self.responses[record.key]
            finalizer = record.finalizer
            if finalizer is not None:
                record.finalizer = None
                finalizer.detach()
            if text is None and (record.chunks or not incomplete):
                text = streamed_text(record.chunks)
            record.chunks = []
            for call in record.calls:
                span = call.span
                if span is not None:
                    if text is not None:
                        span.set_output(text)
                    if closed_early:
                        span.set_metadata(stream_closed_early=True)
                if error is not None:
                    self.fail(call, error)
                self.finish(call, incomplete=incomplete)
            if release or try_release:
                _release_if_drained(wait=release)
        except Exception as exc:  # called from the reader's code: never raise into it
            log_safely(
                logging.DEBUG, "sightline: llamaindex could not end a streamed response: %r", exc
            )

    def response_written(self, instance: Any, error: BaseException | None) -> None:
        """The span of a method of ``instance`` ended: if it is the writer of a chat response
        an engine call waits for, that call ends, with the response's text or ``error``."""
        with self.lock:  # consistent with the engine's check of its writer (_await_writer)
            record = self.responses.get(id(instance))
        if record is None or record.source() is not instance:
            return
        text = getattr(instance, "response", None)
        self.end_response(record, text if isinstance(text, str) else None, error, release=True)

    def end_all_at_exit(self) -> None:
        """The process exits: end what is still open, as ``incomplete`` (a streamed LLM call
        with what it received, a streamed response with the text read so far), while the
        clients that record them are still open."""
        with self.lock:
            streams = list(dict.fromkeys(self.streams.values()))
            responses = list(self.responses.values())
        for call in streams:
            self.finish(call, incomplete=True)
        for record in responses:
            text = None
            if not record.chunks:  # a chat response: the text its writer kept so far
                source = record.source()
                written = getattr(source, "response", None)
                if isinstance(written, str) and written:
                    text = written
            self.end_response(record, text, incomplete=True)

    def response_abandoned(self, record: _ResponseStream) -> None:
        """Finalizer of a response's source: collected before the response was read to its end
        (dropped half-read: closed early; never read: incomplete). A generator's weak
        references are cleared before it is closed: this comes first."""
        if record.chunks:
            self.end_response(record, closed_early=True, try_release=True)
        else:
            self.end_response(record, incomplete=True, try_release=True)

    def fail(self, call: _Call, err: BaseException | None) -> None:
        """Record the exception a recorded LlamaIndex span was dropped with."""
        span = call.span
        if span is None:
            return
        kind = None
        child = call.child_error
        if child is not None and err is not None and child[0] is err:
            kind = child[1]  # the failure of a child, propagating: keep the child's kind
        if kind is None and err is not None and type(err).__name__ in _TIMEOUT_ERRORS:
            kind = "timeout"
        if err is None:
            span.set_error(kind=kind, type="SpanDropped", message="")
        else:
            span.set_error(err, kind=kind)
        error = span.event.error
        parent = call.parent
        if parent is not None and err is not None and error is not None:
            parent.child_error = (err, error.kind)

    def finish(self, call: _Call, incomplete: bool = False) -> None:
        """End the call's Sightline span (once) and forget its streams.

        A streamed LLM call that ends without its stream's end event (closed or dropped
        half-read, failed or cancelled midway, open at exit) ends with the response it had
        received: the latest chunk's. An agent run that did not return ends with the tools its
        calls ran (``tool_calls``)."""
        partial = None
        if call.kind == Kind.LLM:  # its stream's end may race its span's exit: serialize
            with self.lock:
                if call.finished:
                    return
                call.finished = True
                partial, call.partial = call.partial, None
                for key in call.stream_keys:
                    self.streams.pop(key, None)
                call.stream_keys = []
                readers = self.streaming.get(call.instance_id)
                if readers is not None and call in readers:
                    readers.remove(call)
                    if not readers:
                        del self.streaming[call.instance_id]
                call.stream_ref = None
        elif call.finished:  # other calls end once, from their own span's exit or drop
            return
        else:
            call.finished = True
        call.inner_error = None
        call.child_error = None
        span = call.span
        if span is None:
            return
        if partial is not None and not call.response_seen:  # formatted once, at its end
            apply_llm_response(span, partial, _known_tools(call))
        if call.kind == Kind.TOOL_STEP:
            _ran_in_run(call)
        elif call.tool_names is not None:  # a run that did not return (failed, cancelled...)
            span.set_metadata(tool_calls=call.tool_names)
            call.tool_names = None
        if incomplete:
            span.set_metadata(incomplete=True)
        span.end()

    def _warn_once(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            log_safely(
                logging.WARNING, "sightline: too many %s; closing the oldest as incomplete", what
            )


def _ran_in_run(call: _Call) -> None:
    """The tool call ``call`` (a ``call_tool`` step) ended: the agent run it is a step of
    lists it among the tools it ran (used unless the run returns its own list)."""
    run = call.parent
    if run is None or run.kind != Kind.AGENT or run.finished or not call.name:
        return
    name = call.span.event.name if call.span is not None else call.name  # unknown_tool too
    names = run.tool_names
    if names is None:
        run.tool_names = [name]
    elif len(names) < _MAX_TOOL_NAMES:
        names.append(name)


# A run's tools, listed as they end: bounded, however long the run.
_MAX_TOOL_NAMES = 1_000

OPEN_SPANS = _OpenSpans()

# The streamed response whose watched generator is running in this context (between its
# resumption and its next token): what an LLM call made now is reading for.
_READING: ContextVar[_ResponseStream | None] = ContextVar(
    "sightline_llamaindex_reading", default=None
)

_exit_hook_registered = False


def _end_open_at_exit_once() -> None:
    """Register, once, the exit hook that ends the responses and streams left open, run
    before Sightline flushes and closes its clients at exit."""
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    from sightline.client import call_before_exit_close

    call_before_exit_close(_end_open_at_exit)


def _end_open_at_exit() -> None:
    try:
        OPEN_SPANS.end_all_at_exit()
    except Exception as exc:  # never raise at exit
        log_safely(
            logging.DEBUG, "sightline: llamaindex could not end open streams at exit: %r", exc
        )


def _watch(tokens: Iterator[Any], record: _ResponseStream) -> Iterator[Any]:
    """``response_gen`` of a watched ``StreamingResponse``: its tokens, passed through."""
    chunks = record.chunks
    iterator = iter(tokens)
    try:
        while True:
            mark = _READING.set(record)
            try:
                token = next(iterator)
            except StopIteration:
                break
            finally:
                _unmark(mark)
            chunks.append(token)
            yield token
    except GeneratorExit:  # the reader stopped (or dropped it half-read)
        OPEN_SPANS.end_response(record, closed_early=True, try_release=True)
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
        raise
    except BaseException as exc:
        OPEN_SPANS.end_response(record, error=exc, release=True)
        raise
    OPEN_SPANS.end_response(record, release=True)


async def _watch_async(tokens: AsyncIterator[Any], record: _ResponseStream) -> AsyncIterator[Any]:
    """``response_gen`` of a watched ``AsyncStreamingResponse``: its tokens, passed through."""
    chunks = record.chunks
    iterator = tokens.__aiter__()
    try:
        while True:
            mark = _READING.set(record)
            try:
                token = await iterator.__anext__()
            except StopAsyncIteration:
                break
            finally:
                _unmark(mark)
            chunks.append(token)
            yield token
    except GeneratorExit:  # the inner stream is left to its own finalizer: no await here
        OPEN_SPANS.end_response(record, closed_early=True, try_release=True)
        raise
    except BaseException as exc:
        OPEN_SPANS.end_response(record, error=exc, release=True)
        raise
    OPEN_SPANS.end_response(record, release=True)


def _unmark(mark: Any) -> None:
    try:
        _READING.reset(mark)
    except ValueError:  # resumed in another context than the one it was marked in
        _READING.set(None)


_WATCH_CODE = _watch.__code__
_WATCH_ASYNC_CODE = _watch_async.__code__


def _span_parent() -> tuple[str, str, int, Any] | None:
    """``(trace id, span id, start time, client)`` of the recorded call whose LlamaIndex span is running
    here: the dispatcher keeps the active span's id in a context variable, and an open span's
    entry names the call it belongs to (its own, or its nearest recorded ancestor's). Lets a
    ``@monitor`` function called by a tool, or a ``trace()`` in a workflow step, nest under it;
    the Sightline span of a recorded call is made at once, so its ids are known here."""
    span_id = active_span_id.get()
    if span_id is None:
        return None
    call = OPEN_SPANS.records.get(span_id)
    if call is None or not call.owned or call.finished:
        return None  # an unrecorded root's entry holds the ambient span: nothing to add
    span = call.span
    if span is None or not span.is_recording:
        return None
    event = span.event
    return event.trace_id, event.span_id, event.start_ns, span.client


add_parent_source(_span_parent)


def running_agent() -> str | None:
    """The agent of the recorded call whose LlamaIndex span is running here (the policies'
    context, and the decision event, name it)."""
    span_id = active_span_id.get()
    call = OPEN_SPANS.records.get(span_id) if span_id is not None else None
    span = call.span if call is not None else None
    return span.event.agent if span is not None else None


def record_tool_arguments(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """A governance policy replaced the arguments of tool ``name``, about to run in the
    LlamaIndex span active here: its recorded tool call shows those it runs with (the
    originals are what the policy wanted kept out)."""
    span_id = active_span_id.get()
    call = OPEN_SPANS.records.get(span_id) if span_id is not None else None
    if call is None or not call.owned or call.finished or call.name != name:
        return
    span = call.span
    if span is None:
        return
    if call.kind == Kind.TOOL_STEP:
        span.set_input(dict(kwargs))
    elif call.kind == Kind.TOOL:
        span.set_input({"args": list(args), "kwargs": dict(kwargs)} if args else dict(kwargs))


class SightlineSpanHandler(BaseSpanHandler[BaseSpan]):
    """Records LlamaIndex spans as Sightline events (agent, LLM, tool, retrieval, ...).

    Attach it to a dispatcher, with a :class:`SightlineEventHandler`::

        from llama_index.core.instrumentation import get_dispatcher
        from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler

        dispatcher = get_dispatcher()
        dispatcher.add_span_handler(SightlineSpanHandler())
        dispatcher.add_event_handler(SightlineEventHandler())

    ``client``: the Sightline client to report to; by default the global one, looked up when a
    span starts. ``sightline.init()`` does all of this for the root dispatcher.
    """

    client: Any | None = Field(default=None, exclude=True)
    # Set by ``uninstrument()``: record nothing new, only finish what is still open.
    draining: bool = Field(default=False, exclude=True)

    def __init__(self, client: Client | None = None) -> None:
        super().__init__()
        self.client = client
        # Dispatcher.shutdown() drops every span listed in ``open_spans``: list ours there.
        self.open_spans = OPEN_SPANS.records  # type: ignore[assignment]

    @classmethod
    def class_name(cls) -> str:
        return "SightlineSpanHandler"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A LlamaIndex span started: record it, or remember where its children attach."""
        try:
            if self.draining:
                return
            records = OPEN_SPANS.records
            if id_ in records:  # another Sightline handler up the dispatcher chain has it
                return
            client = self.client or get_client()
            if not client.enabled:
                return
            parent = records.get(parent_id) if parent_id is not None else None
            being_read = _READING.get()
            if being_read is not None:
                # Work done while a streamed response is read (the LLM call of a streaming
                # query engine) runs in the reader's context, after the engine's span exited:
                # it belongs to the engine, unless its parent span started inside the stream.
                waiting = _waiting_call(being_read)
                if waiting is None:
                    being_read = None
                elif parent is None or not parent.owned or parent.reading is not being_read:
                    parent = waiting
            prefix = span_prefix(id_)
            method = prefix.rpartition(".")[2]
            if instance is not None:
                kind = classify(type(instance), method)
            elif (
                parent is not None
                and parent.kind in _RUN_KINDS
                and parent.owner_id == parent_id
                and parent.owned
            ):
                # A workflow step: the most frequent span of an agent run, on a short path.
                arguments = _arguments(bound_args)
                kind = step_kind(method, arguments)
                if kind == Kind.STEP:
                    span = start_step(client, parent.span, method, arguments, parent.agent)
                    # An AgentWorkflow's events name the agent they are for, but not all of
                    # them (ToolCall, ToolCallResult): the run remembers the latest.
                    parent.agent = span.event.agent
                    call = _Call(span, kind, id_, True, 0, parent, parent)
                    call.reading = being_read
                    OPEN_SPANS.add(id_, call)
                    return
            else:
                kind = Kind.TRANSPARENT
            if kind == Kind.TRANSPARENT:
                if parent is None:
                    ambient = current_span()
                    parent = _UNRECORDED_ROOT if ambient is None else _Call(ambient)
                OPEN_SPANS.add(id_, parent)
                return
            if kind == Kind.LLM:
                # A lazy stream (CustomLLM.astream_chat) makes its LLM call while it is read,
                # in the reader's context: that call belongs to the stream's.
                readers = OPEN_SPANS.streaming.get(id(instance))
                if readers:
                    reading = _stream_being_read(readers)
                    if reading is not None:
                        OPEN_SPANS.add(id_, reading)
                        return
            if parent is not None and parent.owned:
                if merges_into(parent.kind, parent.name, parent.instance_id, kind, instance):
                    if parent.kind == Kind.TOOL_STEP and kind == Kind.TOOL:
                        _tool_ran(parent)
                    OPEN_SPANS.add(id_, parent)
                    return
                parent_span = parent.span
            else:
                parent_span = parent.span if parent is not None else current_span()
            if being_read is None and parent is not None:
                parent_span = _innermost(parent_span)
            arguments = _arguments(bound_args)
            agent = parent.agent if parent is not None else None
            private = not client.config.capture_content
            tools = None
            if private and kind == Kind.TOOL_STEP:
                tools = _tools_known_to(parent)
            span = start_event(
                client, kind, parent_span, prefix, method, instance, arguments, agent, tools
            )
            owner = parent if parent is not None and parent.owned else None
            call = _Call(span, kind, id_, True, id(instance), owner, parent)
            call.reading = being_read
            if kind == Kind.TOOL_STEP:
                call.name = tool_step_name(arguments) or call.name  # as the model asked
            elif private and kind == Kind.AGENT:
                call.tools = agent_tool_names(instance)
            OPEN_SPANS.add(id_, call)
        except Exception as exc:
            log_safely(
                logging.DEBUG, "sightline: llamaindex span_enter failed for %s: %r", id_, exc
            )

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        """A LlamaIndex span returned: finish its Sightline span (or wait for its stream)."""
        try:
            call = OPEN_SPANS.records.pop(id_, None)
            if instance is not None and response_shape(instance) == ResponseShape.CHAT:
                OPEN_SPANS.response_written(instance, None)
            if self.draining:
                _release_if_drained()
            if call is None or not call.owned or call.finished:
                return
            stream = call.kind == Kind.LLM and isinstance(
                result, (GeneratorType, AsyncGeneratorType)
            )
            if call.owner_id != id_:
                if stream and instance is not None and _kind_of(instance, id_) == Kind.LLM:
                    OPEN_SPANS.await_stream(call, id_, result, _announces_end(id_))
                return
            span = call.span
            if call.kind == Kind.STEP and span is not None:  # the short path of steps
                if result is not None:
                    span.set_metadata(output_event=type(result).__name__)
                elif _unfinished(call):
                    _end_unfinished(call)
                call.exited = call.finished = True
                span.end()
                return
            if span is not None:
                finish_fields(
                    span,
                    call.kind,
                    instance,
                    result,
                    call.started,
                    call.response_seen,
                    call.inner_error,
                    _known_tools(call) if call.kind in _NAMING_KINDS else None,
                )
                if result is None and _unfinished(call):
                    _end_unfinished(call)
                elif call.kind == Kind.AGENT and result is not None:
                    call.tool_names = None  # a run that returned lists its own tool calls
            call.exited = True
            if stream:
                OPEN_SPANS.await_stream(call, id_, result, _announces_end(id_))
            elif call.stream_keys:
                pass
            elif call.kind not in RESPONSE_KINDS or not OPEN_SPANS.await_response(call, result):
                OPEN_SPANS.finish(call)
        except Exception as exc:
            log_safely(logging.DEBUG, "sightline: llamaindex span_exit failed for %s: %r", id_, exc)

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        """A LlamaIndex span raised: record the error on its Sightline span and finish it."""
        try:
            call = OPEN_SPANS.records.pop(id_, None)
            if instance is not None and response_shape(instance) == ResponseShape.CHAT:
                OPEN_SPANS.response_written(instance, err)
            if self.draining:
                _release_if_drained()
            if call is None or not call.owned or call.finished:
                return
            if err is not None and type(err).__name__ in WAITING:
                # Not a failure: the workflow step running this waits for an event (human in
                # the loop) and will run again, from the start, when it arrives.
                call.waiting = err
                if call.owner_id == id_:
                    call.exited = True
                    _end_unfinished(call)
                    if call.parent is not None:
                        call.parent.waiting = err
                    OPEN_SPANS.finish(call)
                return
            if call.owner_id != id_:
                if (
                    err is not None
                    and instance is not None
                    and family(_kind_of(instance, id_)) == family(call.kind)
                ):
                    call.inner_error = err
                return
            call.exited = True
            OPEN_SPANS.fail(call, err)
            OPEN_SPANS.finish(call)
        except Exception as exc:
            log_safely(logging.DEBUG, "sightline: llamaindex span_drop failed for %s: %r", id_, exc)

    # The base class routes span_enter/exit/drop through these; ours are overridden above.
    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


_MAX_FRAMES = 512


def _innermost(parent_span: Span | None) -> Span | None:
    """The Sightline parent of a LlamaIndex call whose LlamaIndex parent is ``parent_span``'s:
    the ambient Sightline span instead when it was opened inside that call (your
    ``sightline.trace()`` in a tool or a workflow step: same trace, started after the call),
    else ``parent_span``. Code runs inside the latest of the two: contexts nest."""
    ambient = current_span()
    if ambient is None or ambient is parent_span:
        return parent_span
    if parent_span is None:  # an unrecorded root that had no ambient span when it started
        return ambient
    if (
        ambient.is_recording
        and ambient.event.trace_id == parent_span.event.trace_id
        and ambient.event.start_ns >= parent_span.event.start_ns
    ):
        return ambient
    return parent_span


def _end_unfinished(call: _Call) -> None:
    """Mark a call that returned without finishing its work: cancelled (an error of kind
    ``orchestration``), or suspended waiting for an event (``ok``, metadata ``waiting``)."""
    span = call.span
    if span is None:
        return
    if call.cancelled is not None:
        # The run raises WorkflowCancelledByUser to the caller; a step is cancelled as a task.
        error_type = _RUN_CANCELLED if call.kind in _RUN_KINDS else "CancelledError"
        span.set_error(kind="orchestration", type=error_type, message=call.cancelled)
        return
    span.set_metadata(waiting=True)
    awaited = getattr(getattr(call.waiting, "add", None), "event_type", None)
    name = getattr(awaited, "__name__", None)
    if isinstance(name, str):
        span.set_metadata(waiting_for=name)


def _unfinished(call: _Call) -> bool:
    """True when a call that returned ``None`` did not finish: cancelled, or a workflow step
    suspended until an event arrives (``call.waiting`` is then that ``WaitingForEvent``)."""
    return call.cancelled is not None or call.waiting is not None


def step_waiting(exc: BaseException) -> None:
    """``ctx.wait_for_event`` raised ``exc`` (a ``WaitingForEvent``) in the LlamaIndex span
    active here: the step running it is suspended, and LlamaIndex's step runner catches the
    exception before the step's span ends (as if the step had returned nothing). Called by the
    wrapper :mod:`sightline_llamaindex.patches` puts on ``Context.wait_for_event``."""
    span_id = active_span_id.get()
    call = OPEN_SPANS.records.get(span_id) if span_id is not None else None
    if call is not None and call.owned and not call.finished:
        call.waiting = exc


def _stream_being_read(readers: list[_Call]) -> _Call | None:
    """The call, among ``readers``, whose stream is executing in the caller's frames.

    A lazy stream makes its LLM call from inside the stream while it is read: the stream's frame
    is then one of the caller's. Frames, unlike the dispatcher's parent span, tell the stream of
    this reader from another unfinished stream of the same LLM object (concurrent requests on a
    shared LLM, a stream left half-read before another call).
    """
    candidates = []
    for call in tuple(readers):
        ref = call.stream_ref
        stream = ref() if ref is not None else None
        if stream is not None and not call.finished:
            candidates.append((stream, call))
    return _reading(candidates, sys._getframe(1))


def _waiting_call(record: _ResponseStream) -> _Call | None:
    """The innermost call still waiting for the streamed response ``record`` (the
    ``synthesize`` whose tokens an LLM call made while it is read makes), if it is open."""
    calls = record.calls
    if not calls or OPEN_SPANS.responses.get(record.key) is not record:
        return None
    return calls[0]


def _reading(candidates: Iterable[tuple[Any, _Call]], caller: Any) -> _Call | None:
    """The call of the first of ``candidates`` (``(generator, call)``) whose generator's frame
    is ``caller`` or one of the frames that called it."""
    frames: dict[int, _Call] = {}
    held = []  # keeps the frames alive (and their ids unique) during the walk
    for stream, call in candidates:
        frame = getattr(stream, "gi_frame", None) or getattr(stream, "ag_frame", None)
        if frame is not None:
            held.append(frame)
            frames[id(frame)] = call
    if not frames:
        return None
    for _ in range(_MAX_FRAMES):
        if caller is None:
            break
        reading = frames.get(id(caller))
        if reading is not None:
            return reading
        caller = caller.f_back
    return None


def _private(call: _Call) -> bool:
    """Whether ``call`` is recorded with ``capture_content`` off."""
    span = call.span
    return span is not None and span.is_recording and not span.client.config.capture_content


def _known_tools(call: _Call) -> set[str] | None:
    """With ``capture_content`` off, the names of the application's tools known to ``call``
    (see :func:`_tools_known_to`); ``None`` when content is captured (names are kept)."""
    return _tools_known_to(call) if _private(call) else None


def _tools_known_to(call: _Call | None) -> set[str]:
    """The names of the application's tools that ``call`` and the calls it is in know (see
    ``_Call.tools``): a tool name a model asked for in it that is none of them was made up
    (model output)."""
    known: set[str] = set()
    while call is not None:
        if call.tools:
            known.update(call.tools)
        call = call.parent
    return known


def _learn_tools(call: _Call | None, names: Iterable[str]) -> None:
    """Note the names of the application's tools ``names`` on ``call`` and the calls it is in
    (see ``_Call.tools``)."""
    names = [name for name in names if isinstance(name, str)]
    while call is not None:
        if call.tools is None:
            call.tools = set(names)
        else:
            call.tools.update(names)
        call = call.parent


def _tool_ran(step: _Call) -> None:
    """A tool of the name the ``call_tool`` step ``step`` was asked for runs in it: a tool of
    the application's, whose name the step may have (with ``capture_content`` off, a name no
    tool known to the run had is ``unknown_tool`` until then)."""
    span = step.span
    if span is None or not span.is_recording or span.event.name == step.name:
        return
    span.event.name = step.name
    _learn_tools(step.parent, (step.name,))


def _arguments(bound_args: Any) -> dict[str, Any]:
    arguments = getattr(bound_args, "arguments", None)
    return arguments if isinstance(arguments, dict) else {}


def _announces_end(span_id: str) -> bool:
    return span_prefix(span_id).rpartition(".")[2] in STREAM_END_METHODS


def _kind_of(instance: Any, span_id: str) -> int:
    return classify(type(instance), span_prefix(span_id).rpartition(".")[2])


# -- instrumentation events -----------------------------------------------------------------


def _on_chat_start(call: _Call, event: Any, span_id: str) -> None:
    if call.kind == Kind.LLM and call.span is not None:
        call.started = True
        apply_llm_start(call.span, event.messages, event.additional_kwargs, event.model_dict)
        offered = call.span.event.metadata.get("tools")
        if offered and _private(call):
            _learn_tools(call, offered)  # the names of the tools the application offers


def _on_completion_start(call: _Call, event: Any, span_id: str) -> None:
    if call.kind == Kind.LLM and call.span is not None:
        call.started = True
        apply_llm_prompt(call.span, event.prompt, event.model_dict)


def _on_llm_end(call: _Call, event: Any, span_id: str) -> None:
    if call.kind != Kind.LLM or call.span is None:
        return
    response = event.response
    if response is not None:
        call.response_seen = True
        apply_llm_response(call.span, response, _known_tools(call))
    OPEN_SPANS.stream_done(span_id)


def _on_structured_start(call: _Call, event: Any, span_id: str) -> None:
    if call.kind == Kind.LLM and call.span is not None:
        output_cls = getattr(event, "output_cls", None)
        call.span.set_metadata(output_cls=getattr(output_cls, "__name__", None))


def _on_structured_end(call: _Call, event: Any, span_id: str) -> None:
    if call.kind == Kind.LLM and call.span is not None:
        call.response_seen = True
        call.span.set_output(event.output)
        OPEN_SPANS.stream_done(span_id)  # a structured stream ends with its final object


def _structured_stream_read() -> _Call | None:
    """The streamed structured prediction (``stream_structured_predict``...) whose stream is
    executing in the caller's frames: its start and end events are sent from inside the stream,
    under whatever span the reader is in."""
    with OPEN_SPANS.lock:
        calls = [call for calls in OPEN_SPANS.streaming.values() for call in calls]
    return _stream_being_read(calls) if calls else None


def _on_exception(call: _Call, event: Any, span_id: str) -> None:
    # LlamaIndex reports the failure of a stream, after its span has exited, with this event.
    if span_id not in OPEN_SPANS.streams or call.span is None:
        return
    exc = getattr(event, "exception", None)
    if isinstance(exc, GeneratorExit):  # the consumer stopped reading: not a failure
        call.span.set_metadata(stream_closed_early=True)
    elif isinstance(exc, BaseException):
        call.span.set_error(exc)
        error = call.span.event.error
        parent = call.parent
        if parent is not None and error is not None:
            # Whatever reads the stream (an engine's streamed response, an agent's step) fails
            # with this same exception when it propagates: it keeps the stream's kind.
            parent.child_error = (exc, error.kind)
    OPEN_SPANS.stream_done(span_id)


def _on_progress(call: _Call, event: Any, span_id: str) -> None:
    # A chunk of a stream: the handler keeps it on its call on a short path of its own (see
    # ``SightlineEventHandler.handle``); this route only names the events that take it.
    call.partial = event.response


def _on_cancelled(call: _Call, event: Any, span_id: str) -> None:
    # A run stopped by ``handler.cancel_run()`` (reason "workflow cancelled by user"), or a step
    # cancelled with it: LlamaIndex then exits the span normally, with no result.
    if call.owner_id == span_id:
        reason = getattr(event, "reason", None)
        call.cancelled = reason if isinstance(reason, str) and reason else "cancelled"


_Route = Callable[[_Call, Any, str], None]

_ROUTE_BY_NAME: dict[str, _Route] = {
    "LLMChatStartEvent": _on_chat_start,
    "LLMCompletionStartEvent": _on_completion_start,
    "LLMChatEndEvent": _on_llm_end,
    "LLMCompletionEndEvent": _on_llm_end,
    "LLMChatInProgressEvent": _on_progress,
    "LLMCompletionInProgressEvent": _on_progress,
    "LLMStructuredPredictStartEvent": _on_structured_start,
    "LLMStructuredPredictEndEvent": _on_structured_end,
    "ExceptionEvent": _on_exception,
    "SpanCancelledEvent": _on_cancelled,
}
# Routes of the events a stream sends while it is read (not under its own span).
_FROM_STREAM = frozenset((_on_structured_start, _on_structured_end))
_ROUTES: dict[type, _Route | None] = {}
_UNSEEN: Any = object()


def _route_of(cls: type) -> _Route | None:
    route = None
    for base in cls.__mro__:
        route = _ROUTE_BY_NAME.get(base.__name__)
        if route is not None:
            break
    _ROUTES[cls] = route
    return route


class SightlineEventHandler(BaseEventHandler):
    """Completes the spans a :class:`SightlineSpanHandler` records from LlamaIndex events.

    It reads LLM messages, responses and token usage (``LLMChatStartEvent``/``EndEvent``...)
    and closes streamed LLM calls when their stream ends; of each chunk of a stream
    (``LLMChatInProgressEvent``...) it keeps a reference to the latest only, what a stream that
    stops before its end ends with. Events of spans that no Sightline
    span handler recorded are ignored.
    """

    # Set by ``uninstrument()``: only finish what is still open.
    draining: bool = Field(default=False, exclude=True)

    @classmethod
    def class_name(cls) -> str:
        return "SightlineEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        """Apply one instrumentation event; cheap for the events it does not use."""
        try:
            cls = type(event)
            route = _ROUTES.get(cls, _UNSEEN)
            if route is _UNSEEN:
                route = _route_of(cls)
            if route is None:
                return
            if route is _on_progress:
                # Every chunk of every stream comes here: keep the latest (a reference) on the
                # stream's call, to end it with if the stream stops before its end event.
                call = OPEN_SPANS.streams.get(event.span_id)
                if call is not None:
                    call.partial = event.response
                return
            span_id = event.span_id
            call = None
            if span_id is not None:
                call = OPEN_SPANS.records.get(span_id) or OPEN_SPANS.streams.get(span_id)
            if route in _FROM_STREAM and (call is None or call.kind != Kind.LLM):
                call = _structured_stream_read()
                if call is None or call.owner_id is None:
                    return
                span_id = call.owner_id
            if call is None or span_id is None or not call.owned or call.finished:
                return
            route(call, event, span_id)
            if self.draining:
                _release_if_drained()
        except Exception as exc:
            log_safely(logging.DEBUG, "sightline: llamaindex event handler failed: %r", exc)


def _release_if_drained(wait: bool = True) -> None:
    """After ``uninstrument()``: the handlers leave once the last open span or stream ended."""
    if OPEN_SPANS.drained():
        from sightline_llamaindex.instrumentation import release_drained

        release_drained(wait)
