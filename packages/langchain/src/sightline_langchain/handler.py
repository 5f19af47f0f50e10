"""``SightlineCallbackHandler``: LangChain runs as Sightline events.

Each LangChain run (chain, chat model, LLM, tool, retriever) becomes one span, ended when the run
ends; parent links follow LangChain's ``run_id`` / ``parent_run_id``.

The work is split in two halves:

- the callbacks, on the application's thread, only queue what LangChain handed them, with the
  time and the ambient Sightline span (:meth:`sightline.Client.defer`): a tuple and a deque
  append, with a copy two levels deep of a dict or list input/output so that the application
  reusing it afterwards (appending to a history list...) does not change what is recorded;
- the background worker replays them, in order, through the methods named after the callbacks
  without ``on`` (``_chain_start``...): names, kinds, messages, usage, parent links, spans.

Open runs live in one map shared by every handler instance and touched by the worker alone,
which is what lets an explicit handler and the global one (:func:`sightline_langchain.instrument`)
see the same run without recording it twice: the first Sightline handler to see a run records
it, any other one only joins it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config

from sightline.capture import KEPT_ITEMS, bounded_copy
from sightline.client import Client, get_client
from sightline.errors import ToolDenied
from sightline.event import ErrorKind, EventType, Usage
from sightline.logs import log_safely
from sightline.span import Span, add_parent_source, current_span
from sightline_langchain import governance, mapping
from sightline_langchain.mapping import AGENT_NAMES, INTERNAL_TAG_PREFIXES

__all__ = ["FRAMEWORK", "SightlineCallbackHandler"]


FRAMEWORK = "langchain"
"""The ``framework`` field of every event this package emits."""

MAX_OPEN_RUNS = 10_000
"""Runs kept open at once; beyond it the oldest is ended (marked ``unfinished``) and forgotten.

A run whose end never arrives (an abandoned stream) must not hold memory forever.
"""

MAX_FAILED_CHILDREN = 16
"""Failed children of one run whose (error, kind) are kept, so that an error passing through
the run keeps its kind (see ``_fail``)."""


class _Stream:
    """What streaming has shown of a model run so far (made at its first streamed chunk)."""

    __slots__ = (
        "deltas",
        "first_chunk_ns",
        "first_token_ns",
        "room",
        "text",
        "text_from",
        "tokens",
    )

    def __init__(self, room: int) -> None:
        self.first_token_ns = 0  # first chunk with content
        self.first_chunk_ns = 0  # first chunk of any kind (tool-call-only streams)
        self.tokens = 0  # on_llm_new_token calls with content
        self.deltas = 0  # on_stream_event content deltas (stream_events v3)
        # The text streamed so far: the output of a run ended before its model's end arrived
        # (see _close_children). Kept from one kind of callback, the first to bring text
        # (stream_events v3 may bring each piece twice), and only as far as the client records
        # a string (its max_string, and one character more for the sanitizer to mark the cut).
        self.text: list[str] = []
        self.text_from = 0  # _TOKENS or _DELTAS, once one brought text
        self.room = room  # characters of text still kept


_TOKENS, _DELTAS = 1, 2


class _Run:
    """An open LangChain run: its span and who records it."""

    __slots__ = (
        "children",
        "done",
        "failed",
        "joined",
        "lc_tags",
        "owner",
        "parent",
        "paused",
        "pinned",
        "span",
        "stream",
        "tools",
    )

    def __init__(self, span: Span, owner: SightlineCallbackHandler) -> None:
        self.span = span
        # Keys of the runs started under this one: those still open when it ends are ended
        # with it (LangChain sends no end for a tool or retriever cancelled mid-await).
        self.children: list[Any] | None = None
        # _PINNED_AGENT | _PINNED_SESSION: set by the run's own metadata, which wins over any
        # handler's settings.
        self.pinned = 0
        # The user's LangChain tags on the run (children inherit them: see chain_event_type).
        self.lc_tags: list[str] | None = None
        # The handler recording this run, until it has seen the run's end.
        self.owner: SightlineCallbackHandler | None = owner
        # Other Sightline handlers that saw the start too (explicit + global): rare, so lazy.
        self.joined: list[SightlineCallbackHandler] | None = None
        self.done = False
        self.stream: _Stream | None = None
        # (error, kind) of the children that failed (the last MAX_FAILED_CHILDREN): an error
        # passing through keeps its kind, whichever child raised it (with_fallbacks and
        # RunnableParallel re-raise the first).
        self.failed: list[tuple[BaseException, str]] | None = None
        # The open run this one started under, if Sightline records it.
        self.parent: _Run | None = None
        # (exception class name, interrupts or None) when a run inside this one paused at a
        # LangGraph interrupt(): the run is marked interrupted too when it ends (see _paused).
        self.paused: tuple[str, list[Any] | None] | None = None
        # With capture_content off only: the names of the application's tools known in this
        # run (bound to a model run in it, or run in it), which are the tool names a model run
        # inside may be recorded asking for (see _known_tools).
        self.tools: set[str] | None = None


# run_id → open run, shared by all handlers. Each operation on it is a single dict call, atomic
# under the GIL, so threads and event loops can use it without a lock; one run's callbacks
# arrive one after another, so a _Run is never changed by two threads at once. Keys are
# ``run_id.int``: hashing a UUID object runs Python code, hashing its int does not.
_RUNS: dict[Any, _Run] = {}

# Runs ended before LangChain ended them (their parent ended first, see _close_children, or
# evicted), remembered so that an end arriving after all is ignored rather than recorded a
# second time. Bounded: the oldest are forgotten, past as many as the open runs (every open run
# may be evicted at once, and each one's end may still come: at most MAX_OPEN_RUNS ints).
_CLOSED: dict[Any, None] = {}
_MAX_CLOSED = 1024  # at least; MAX_OPEN_RUNS when that is larger

_PINNED_AGENT = 1
_PINNED_SESSION = 2

# run key → (trace, start time) of the runs open now, kept on the application's thread so that
# a Sightline span started inside a run's code (a @monitor function called by a tool) can nest
# under the run, whose span the worker makes later (_run_parent). A run's span id is its run
# id's low 64 bits, and a root's trace id its run id (LangChain's are UUIDv7: time first, as
# Sightline's own): nothing is generated here. ``trace`` is the parent run's, the ambient
# span's trace id, or the root's run key. Set by start callbacks, removed by end callbacks; the
# worker removes those of runs LangChain never ends. Bounded like _RUNS.
_IDS: dict[Any, tuple[Any, int, Client]] = {}

# What a callback does with _IDS: nothing, choose the run's ids, or forget them.
_OTHER, _STARTS, _ENDS = 0, 1, 2


# The record being replayed: when its callback fired, the span ambient on the application's
# thread then, and the client the handler reported to then. Set by _replay under _REPLAY_LOCK:
# a client's worker is one thread, the lock only matters when the runs of one tree report to
# two clients (two workers).
_at = 0
_ambient: Span | None = None
_client: Client | None = None
_REPLAY_LOCK = threading.Lock()
_time_ns = time.time_ns
_current_span = current_span
_var_child_config = var_child_runnable_config
_LOW_64 = (1 << 64) - 1


def _replay(record: tuple[Any, ...]) -> None:
    """On the worker: run a queued callback's recording method (see ``Client.defer``).

    A record is ``(_replay, handler, method, kwargs, time_ns, ambient span, client, run key,
    parent run key, tags, metadata, *args)``.
    """
    global _at, _ambient, _client
    with _REPLAY_LOCK:
        _at = record[4]
        _ambient = record[5]
        _client = record[6]
        try:
            record[2](
                record[1],
                *record[11:],
                run_id=record[7],
                parent_run_id=record[8],
                tags=record[9],
                metadata=record[10],
                **record[3],
            )
        finally:
            _client = _ambient = None


_NO_KWARGS: dict[str, Any] = {}  # never changed: ``**`` unpacks it into a new dict


def _own(value: Any) -> Any:
    """A dict (a LangGraph state too) or list the application handed over, copied two levels
    deep, and a ``str`` subclass (LangChain's ``TextAccessor``) as a plain ``str`` (see the
    module doc).

    Two levels, because the usual reuse is one level down: a chat loop appending to the
    ``history`` list it passes in ``{"history": history, ...}``, an agent loop appending to
    ``state["messages"]``. Objects inside are kept as they are (messages are not edited). A
    container longer than what is recorded (500 items) is copied only that far.
    """
    cls = value.__class__
    if cls is dict or cls is list:
        copy = value.copy() if len(value) <= KEPT_ITEMS else bounded_copy(value)
    elif cls is str:
        return value
    elif isinstance(value, dict):
        copy = dict(value) if len(value) <= KEPT_ITEMS else bounded_copy(value)
    elif isinstance(value, str):
        return str.__str__(value)
    else:
        return value
    if copy.__class__ is dict:
        for key, item in copy.items():
            if item.__class__ is list or item.__class__ is dict:
                copy[key] = item.copy() if len(item) <= KEPT_ITEMS else bounded_copy(item)
    else:
        for index, item in enumerate(copy):
            if item.__class__ is list or item.__class__ is dict:
                copy[index] = item.copy() if len(item) <= KEPT_ITEMS else bounded_copy(item)
    return copy


def _run_key(run_id: Any) -> Any:
    return run_id.int if run_id.__class__ is UUID else run_id


def _queues_start(method: Callable[..., None]) -> Callable[..., None]:
    """An ``on_<run>_start`` callback that queues ``method`` with what LangChain handed over."""

    def callback(
        self: SightlineCallbackHandler,
        serialized: Any,
        value: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        self._defer(
            method, run_id, parent_run_id, tags, metadata, _STARTS, kwargs, serialized, _own(value)
        )

    callback.__name__ = callback.__qualname__ = "on" + method.__name__
    return callback


def _queues(method: Callable[..., None], ids: int = _ENDS) -> Callable[..., None]:
    """An ``on_<run>_end`` / ``on_<run>_error`` (or, with ``ids=_OTHER``, ``on_agent_action``)
    callback that queues ``method`` with what LangChain handed over."""

    def callback(
        self: SightlineCallbackHandler,
        value: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        self._defer(method, run_id, parent_run_id, None, None, ids, kwargs, _own(value))

    callback.__name__ = callback.__qualname__ = "on" + method.__name__
    return callback


class SightlineCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records every run as a Sightline event.

    Use it wherever LangChain takes callbacks, on sync and async paths alike::

        handler = SightlineCallbackHandler(agent="support-bot", session_id="ticket-42")
        chain.invoke(question, config={"callbacks": [handler]})
        await chain.ainvoke(question, config={"callbacks": [handler]})
        model = ChatOpenAI(callbacks=[handler])
        chain.with_config(callbacks=[handler]).stream(question)

    Arguments:
        client: the Sightline client to report to; ``None`` (the default) uses the global one
            (``sightline.get_client()``) at the time of each run.
        agent: the ``agent`` of every event (a run's ``sightline_agent`` metadata, or the
            ``name`` of a ``create_agent`` agent, wins).
        session_id: the ``session_id`` of every event (a run's ``sightline_session_id``
            metadata wins).
        tags: tags added to every event (with a run's ``sightline_tags`` and LangChain tags).

    The handler never raises into LangChain and never blocks: callbacks only read values and
    queue the finished event. With ``sightline.init()`` (or :func:`sightline_langchain.instrument`)
    no handler needs passing at all; passing one as well records nothing twice.
    """

    run_inline = True  # the callbacks never block: let async LangChain call them in place
    _raise_errors = False

    @property  # type: ignore[override]
    def raise_error(self) -> bool:
        """Whether LangChain re-raises what a callback raised: only a governance deny.

        LangChain reads this while it handles the exception a callback raised, so the exception
        is at hand: a :class:`sightline.ToolDenied` from ``on_tool_start`` is raised in the
        agent; anything else (the callbacks catch their own failures) is not, unless set True.
        """
        return self._raise_errors or isinstance(sys.exc_info()[1], ToolDenied)

    @raise_error.setter
    def raise_error(self, value: bool) -> None:
        self._raise_errors = bool(value)

    def __init__(
        self,
        client: Client | None = None,
        *,
        agent: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        self.client = client
        self.agent = agent
        self.session_id = session_id
        if isinstance(tags, str):  # one tag, not one per character
            tags = [tags]
        self.tags: list[str] | None = list(tags) if tags else None
        self.is_global = False  # True for the handler installed by instrument()

    def __repr__(self) -> str:
        kind = "global" if self.is_global else "explicit"
        return f"<SightlineCallbackHandler {kind} agent={self.agent!r}>"

    # -- callbacks: on the application's thread, queue what LangChain handed over -----------

    # Records wait in the queue until the worker's next pass: what they hold stays alive until
    # then, and every container alive counts towards Python's next garbage collection (which
    # LangChain alone, freeing all it allocates per invoke, hardly ever triggers). So a record
    # is one tuple, with run ids as ints (LangChain's UUID objects can go) and without what the
    # worker would ignore: the tags of an end, the empty metadata and the lone positional tag
    # ("seq:step:2") of a start. The ids and tags are bound as keyword parameters, in C, not
    # looked up in the keyword dict.

    def _defer(
        self,
        method: Any,
        run_id: Any,
        parent_run_id: Any,
        tags: Any,
        metadata: Any,
        ids: int,
        kwargs: dict[str, Any],
        *args: Any,
    ) -> None:
        """Queue ``method`` for the worker with what LangChain handed over (``tags`` and
        ``metadata`` only for the start of a run; ``None`` otherwise). ``ids`` says whether
        this callback starts a run (noted in _IDS), ends one, or neither."""
        try:
            client = self.client if self.client is not None else get_client()
            if tags and len(tags) == 1:
                tag = tags[0]
                if tag.__class__ is str and tag.startswith("seq:step:"):
                    tags = None
            key = run_id.int if run_id.__class__ is UUID else run_id
            parent_key = parent_run_id.int if parent_run_id.__class__ is UUID else parent_run_id
            ambient = _current_span()
            now = _time_ns()
            if ids == _STARTS:
                if key not in _IDS:
                    parent_key, trace = _placed(key, parent_key, client, ambient)
                    _IDS[key] = (trace, now, client)
                    if len(_IDS) > MAX_OPEN_RUNS:
                        _forget_oldest_ids()
            elif ids:
                _IDS.pop(key, None)
            client.defer(
                (
                    _replay,
                    self,
                    method,
                    kwargs,
                    now,
                    ambient,
                    client,
                    key,
                    parent_key,
                    tags or None,
                    metadata or None,
                    *args,
                )
            )
        except Exception:
            _callback_failed("on" + method.__name__)

    def on_tool_start(
        self,
        serialized: Any,
        input_str: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        # Without instrumentation, the policies are asked here (see governance.check_tool_start):
        # a deny raises ToolDenied before the tool runs; its run is recorded as failed.
        denied = None
        try:
            governance.check_tool_start(
                self.client if self.client is not None else get_client(),
                serialized,
                input_str,
                run_id,
                parent_run_id,
                kwargs,
            )
        except ToolDenied as exc:
            denied = exc
        self._defer(
            SightlineCallbackHandler._tool_start,
            run_id,
            parent_run_id,
            tags,
            metadata,
            _STARTS,
            kwargs,
            serialized,
            _own(input_str),
        )
        if denied is not None:
            self.on_tool_error(denied, run_id=run_id, parent_run_id=parent_run_id)
            raise denied

    def on_llm_new_token(self, token: Any, *, run_id: Any = None, **kwargs: Any) -> None:
        # Only whether the token had content counts: the chunk is not kept.
        self._defer(
            SightlineCallbackHandler._llm_new_token,
            run_id,
            None,
            None,
            None,
            _OTHER,
            _NO_KWARGS,
            token,
        )

    def on_stream_event(self, event: Any, *, run_id: Any = None, **kwargs: Any) -> None:
        self._defer(
            SightlineCallbackHandler._stream_event,
            run_id,
            None,
            None,
            None,
            _OTHER,
            _NO_KWARGS,
            event,
        )

    def on_llm_end(
        self,
        response: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        # Read now: agents change the message once the model returned (create_agent names it).
        self._defer(
            SightlineCallbackHandler._llm_end,
            run_id,
            parent_run_id,
            None,
            None,
            _ENDS,
            kwargs,
            _read_result(response),
        )

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        response = kwargs.pop("response", None)
        if response is not None:
            kwargs["outcome"] = _read_result(response)
        self._defer(
            SightlineCallbackHandler._llm_error,
            run_id,
            parent_run_id,
            None,
            None,
            _ENDS,
            kwargs,
            error,
        )

    def on_retry(
        self,
        retry_state: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        try:  # read now: the retrying library reuses its state object for the next attempt
            retry = mapping.retry_record(retry_state)
        except Exception:
            retry = None
        self._defer(
            SightlineCallbackHandler._retry,
            run_id,
            parent_run_id,
            None,
            None,
            _OTHER,
            kwargs,
            retry,
        )

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: Any = None,
        parent_run_id: Any = None,
        tags: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        self._defer(
            SightlineCallbackHandler._custom_event,
            run_id,
            parent_run_id,
            None,
            None,
            _OTHER,
            kwargs,
            name,
            _own(data),
        )

    # -- run bookkeeping (on the worker, as is everything below) -----------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        type: EventType,
        input: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        model: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> _Run | None:
        """Open the span of a run, or join the run when another Sightline handler records it."""
        runs = _RUNS
        key = run_id.int if run_id.__class__ is UUID else run_id  # inline _run_key: hot path
        existing = runs.get(key)
        if existing is not None:
            self._join(existing)
            return None
        client = _client or get_client()
        if parent_run_id is None:
            parent = None
            parent_span = _ambient
        else:
            parent = runs.get(
                parent_run_id.int if parent_run_id.__class__ is UUID else parent_run_id
            )
            if parent is None:
                parent_span = _ambient
            else:
                parent_span = parent.span
                if parent_span.client is not client:
                    # Recorded to another client (an explicit handler with a client of its own
                    # inside a globally traced chain, a refused tool call recorded to the global
                    # client): nested under it, this run would point at a parent its client
                    # never receives, and whether it did would depend on which client's worker
                    # came first. It starts a trace of its own, as _placed told _IDS (and
                    # governance) it would; it still ends with its parent (children below).
                    parent_span = _ambient

        agent = self.agent
        session_id = self.session_id
        event_tags = self.tags
        meta = None
        pinned = 0
        if metadata:
            # Each field guarded alone: a value that cannot be read (a str() that raises) loses
            # that field, not the run.
            try:
                value = metadata.get("sightline_agent") or metadata.get("lc_agent_name")
                if value and isinstance(value, str):
                    agent = value
                    pinned = _PINNED_AGENT
            except Exception:
                _callback_failed("reading metadata['sightline_agent']")
            try:
                value = metadata.get("sightline_session_id")
                if value:
                    session_id = value if value.__class__ is str else str(value)
                    pinned |= _PINNED_SESSION
            except Exception:
                _callback_failed("reading metadata['sightline_session_id']")
            try:
                value = metadata.get("sightline_tags")
                if value:
                    event_tags = _merge_tags(
                        event_tags, [value] if isinstance(value, str) else value
                    )
            except Exception:
                _callback_failed("reading metadata['sightline_tags']")
            meta = mapping.user_metadata(metadata)
        # Most runs carry one positional tag ("seq:step:2"): skip the general path for them.
        if tags and (
            len(tags) > 1
            or tags[0].__class__ is not str
            or not tags[0].startswith(INTERNAL_TAG_PREFIXES)
        ):
            lc_tags = mapping.user_tags(tags)
            if lc_tags:
                event_tags = _merge_tags(event_tags, lc_tags)
        else:
            lc_tags = None
        if event_tags is not None and event_tags is self.tags:
            event_tags = list(event_tags)  # the event owns its list
        if extra:
            if meta:
                meta.update(extra)
            else:
                meta = extra
        if key.__class__ is int:  # the ids _IDS promised (see there)
            trace_id: str | None = "%032x" % (key or 1)
            span_id: str | None = "%016x" % (key & _LOW_64 or 1)
        else:
            trace_id = span_id = None
        if meta is None and event_tags is None and agent is None and session_id is None:
            # Most runs: fewer keyword arguments to match.
            span = client.start_span(
                name,
                type,
                parent=parent_span,
                trace_id=trace_id,
                span_id=span_id,
                input=input,
                framework=FRAMEWORK,
                model=model,
                start_ns=_at,
            )
        else:
            span = client.start_span(
                name,
                type,
                parent=parent_span,
                trace_id=trace_id,
                span_id=span_id,
                input=input,
                metadata=meta,
                tags=event_tags,
                agent=agent,
                session_id=session_id,
                framework=FRAMEWORK,
                model=model,
                start_ns=_at,
            )
        if span.__class__ is not Span and not span.is_recording:
            return None
        runs[key] = record = _Run(span, self)
        if pinned:
            record.pinned = pinned
        if lc_tags:
            record.lc_tags = lc_tags
        if parent is not None:
            record.parent = parent
            if parent.children is None:
                parent.children = [key]
            else:
                parent.children.append(key)
        if len(runs) > MAX_OPEN_RUNS:
            _evict_oldest()
        return record

    def _join(self, record: _Run) -> None:
        """Another Sightline handler records this run: only say that this one saw it too.

        An explicit handler given to the run itself (a model's ``callbacks=[...]``) lends the
        run its ``agent``, ``session_id`` and ``tags`` when the handler recording it came from
        further out: the global handler, or a handler given to an enclosing run (LangChain
        calls the handlers inherited from the parent first). The nearest handler's settings
        win, as a run's own metadata wins over both (``pinned``).
        """
        if record.joined is None:
            record.joined = [self]
        else:
            record.joined.append(self)
        owner = record.owner
        if (
            owner is not None
            and owner is not self
            and not self.is_global
            and (
                owner.is_global or (_sees(record.parent, owner) and not _sees(record.parent, self))
            )
        ):
            event = record.span.event
            if self.agent is not None and not record.pinned & _PINNED_AGENT:
                event.agent = self.agent
            if self.session_id is not None and not record.pinned & _PINNED_SESSION:
                event.session_id = self.session_id
            if self.tags:
                event.tags = _merge_tags(event.tags, self.tags) or []

    def _finish(
        self, run_id: UUID, parent_run_id: UUID | None, type: EventType, name: Any, default: str
    ) -> _Run | None:
        """The run to finish, or ``None`` when this handler has nothing to do: another handler
        finished it, or this one never saw it start while another did. For a run no Sightline
        handler saw start, a best-effort event is made now."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # inline _run_key: hot path
        record = _RUNS.get(key)
        if record is None:
            if key in _CLOSED:
                return None  # already ended with its parent
            return self._unmatched(parent_run_id, type, name, default)
        if record.owner is self:
            record.owner = None
            if record.joined is None:
                del _RUNS[key]
        else:
            joined = record.joined
            if not joined or self not in joined:
                return None
            joined.remove(self)
            if record.owner is None and not joined:
                _RUNS.pop(key, None)
        if record.done:
            return None
        record.done = True
        return record

    def _unmatched(
        self, parent_run_id: UUID | None, type: EventType, name: Any, default: str
    ) -> _Run | None:
        client = _client or get_client()
        parent = _RUNS.get(_run_key(parent_run_id)) if parent_run_id is not None else None
        span = client.start_span(
            name if name and isinstance(name, str) else default,
            type,
            parent=parent.span if parent is not None else _ambient,
            metadata={"unmatched_run": True},
            tags=list(self.tags) if self.tags else None,
            agent=self.agent,
            session_id=self.session_id,
            framework=FRAMEWORK,
            start_ns=_at,
        )
        if not span.is_recording:
            return None
        record = _Run(span, self)
        record.done = True
        return record

    def _fail(self, record: _Run, error: BaseException, parent_run_id: UUID | None) -> None:
        """End a run that raised: ``status=error`` with the error's kind, then tell the parent.

        Control flow is no failure (see ``mapping.control_flow``): the run ends ``ok``, marked
        ``interrupted`` (a LangGraph pause, carried up to the root of the turn), ``handoff``
        (a ``Command`` to the parent graph) or ``unfinished`` (a stream the caller stopped).
        """
        span = record.span
        parent = record.parent
        if parent is None and parent_run_id is not None:
            parent = _RUNS.get(_run_key(parent_run_id))
        flow = mapping.control_flow(error, _capture_content())
        if flow is not None:
            span.event.metadata[flow[0]] = flow[1]
            if flow[0] == "interrupted" and parent is not None:
                _note_pause(parent, flow[1], mapping.graph_interrupts(error))
            if record.children is not None:
                _close_children(record, None)
            span.end(_at)
            return
        # An error that only passes through (a tool's error reaching the agent) keeps the kind
        # of the run it came from: a child's, or when streaming, a sibling's (the model's
        # error reaches the sequence through the parser that was reading the model's stream).
        kind = _failed_kind(record, error)
        if kind is None and parent is not None:
            kind = _failed_kind(parent, error)
        span.set_error(error, kind=kind)
        if parent is not None and span.event.error is not None:
            failed = parent.failed
            if failed is None:
                parent.failed = [(error, span.event.error.kind)]
            else:
                if len(failed) >= MAX_FAILED_CHILDREN:
                    del failed[0]
                failed.append((error, span.event.error.kind))
        if record.children is not None:
            _close_children(record, error)
        span.end(_at)

    # -- chains, agents, graphs ---------------------------------------------------------------

    def _chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            name = kwargs.get("name")
            if not name or name.__class__ is not str:
                name = mapping.run_name(serialized, name, "chain")
            first_tag = tags[0] if tags and len(tags) == 1 else None
            if (
                AGENT_NAMES.get(name) is False
                and not metadata
                and (
                    not tags
                    or (first_tag.__class__ is str and first_tag.startswith(INTERNAL_TAG_PREFIXES))
                )
            ):
                event_type = EventType.CHAIN  # the common case, without the call below
            else:
                parent = _RUNS.get(_run_key(parent_run_id)) if parent_run_id is not None else None
                event_type = mapping.chain_event_type(
                    name, tags, metadata, parent.lc_tags if parent is not None else None
                )
                if (
                    event_type is EventType.AGENT
                    and parent is not None
                    and parent.span.event.type is EventType.CHAIN
                    and mapping.is_graph_node(name, tags, metadata)
                ):
                    # Only a graph runs nodes: the parent is a graph used as a node or called
                    # inside one (a subgraph), which inherits that node's metadata.
                    parent.span.event.type = EventType.AGENT
            self._start(
                run_id,
                parent_run_id,
                name,
                event_type,
                mapping.compact_value(inputs),
                tags,
                metadata,
            )
        except Exception:
            _callback_failed("on_chain_start")

    def _chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        try:
            key = run_id.int if run_id.__class__ is UUID else run_id  # inline _run_key
            record = _RUNS.get(key)
            if record is not None and record.owner is self and record.joined is None:
                # The common case, inline: this handler alone records the run.
                _RUNS.pop(key, None)
                record.owner = None
                if record.done:
                    return
                record.done = True
            else:
                record = self._finish(
                    run_id, parent_run_id, EventType.CHAIN, kwargs.get("name"), "chain"
                )
                if record is None:
                    return
            event = record.span.event
            event.output = outputs if outputs.__class__ is str else mapping.compact_value(outputs)
            inputs = kwargs.get("inputs")
            if inputs is not None:  # streamed runs learn their input only at the end
                event.input = mapping.compact_value(inputs)
            if record.children is not None:
                if record.paused is not None:
                    _paused(record)
                if _close_children(record, None):
                    # A model inside was still streaming: the caller stopped reading this
                    # run's stream (a sync stream's end comes as an end, not GeneratorExit).
                    event.metadata["unfinished"] = True
            record.span.end(_at)
        except Exception:
            _callback_failed("on_chain_end")

    def _chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.CHAIN, kwargs.get("name"), "chain"
            )
            if record is None:
                return
            inputs = kwargs.get("inputs")
            if inputs is not None:
                record.span.event.input = mapping.compact_value(inputs)
            self._fail(record, error, parent_run_id)
        except Exception:
            _callback_failed("on_chain_error")

    def _agent_action(
        self, action: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """A legacy agent chose a tool: the run is an agent, the choice a ``decision`` event."""
        try:
            record = _RUNS.get(_run_key(run_id))
            if record is None or record.owner is not self:
                return
            span = record.span
            span.event.type = EventType.AGENT
            tool = getattr(action, "tool", None)
            if not isinstance(tool, str) or not tool:
                tool = "agent_action"
            elif not _capture_content() and tool not in _known_tools(record):
                tool = mapping.UNKNOWN_TOOL  # the model's choice names no tool of the agent
            decision = span.child(
                tool,
                EventType.DECISION,
                input=getattr(action, "tool_input", None),
                framework=FRAMEWORK,
                start_ns=_at,
            )
            log = getattr(action, "log", None)
            if log:
                decision.event.output = log
            decision.end(_at)
        except Exception:
            _callback_failed("on_agent_action")

    # -- chat models and LLMs -----------------------------------------------------------------

    def _chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            if len(messages) == 1:
                input = mapping.messages_to_dicts(messages[0])
            else:
                input = [mapping.messages_to_dicts(conversation) for conversation in messages]
            self._start_llm(serialized, input, run_id, parent_run_id, tags, metadata, kwargs)
        except Exception:
            _callback_failed("on_chat_model_start")

    def _llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            input = prompts[0] if len(prompts) == 1 else list(prompts)
            self._start_llm(serialized, input, run_id, parent_run_id, tags, metadata, kwargs)
        except Exception:
            _callback_failed("on_llm_start")

    def _start_llm(
        self,
        serialized: dict[str, Any] | None,
        input: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        params = kwargs.get("invocation_params")
        model, provider = mapping.llm_identity(serialized, params, metadata)
        record = self._start(
            run_id,
            parent_run_id,
            mapping.run_name(serialized, kwargs.get("name"), "llm"),
            EventType.LLM_INVOKE,
            input,
            tags,
            metadata,
            model=model,
            extra={"provider": provider} if provider else None,
        )
        if record is not None and params and not _capture_content():
            names = mapping.offered_tool_names(params)
            if names:
                record.tools = names
                _learn_tools(record.parent, names)

    def _llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            record = _RUNS.get(_run_key(run_id))
            if record is None or record.owner is not self:
                return
            stream = record.stream
            if stream is None:
                stream = record.stream = _new_stream()
            if token:
                if not stream.first_token_ns:
                    stream.first_token_ns = _at
                stream.tokens += 1
                if stream.room > 0 and stream.text_from != _DELTAS:
                    _keep_text(stream, token, _TOKENS)
            elif not stream.first_chunk_ns:
                stream.first_chunk_ns = _at
        except Exception:
            _callback_failed("on_llm_new_token")

    def _stream_event(
        self, event: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Streaming through ``stream_events(version="v3")``: content deltas count as tokens."""
        try:
            record = _RUNS.get(_run_key(run_id))
            if record is None or record.owner is not self:
                return
            stream = record.stream
            if stream is None:
                stream = record.stream = _new_stream()
            if event.get("event") == "content-block-delta":
                if not stream.first_token_ns:
                    stream.first_token_ns = _at
                stream.deltas += 1
                if stream.room > 0 and stream.text_from != _TOKENS:
                    delta = event.get("delta")
                    if delta.__class__ is dict and delta.get("type") == "text-delta":
                        _keep_text(stream, delta.get("text"), _DELTAS)
            elif not stream.first_chunk_ns:
                stream.first_chunk_ns = _at
        except Exception:
            _callback_failed("on_stream_event")

    def _llm_end(
        self,
        outcome: mapping.LLMOutcome,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            key = run_id.int if run_id.__class__ is UUID else run_id  # inline _run_key
            record = _RUNS.get(key)
            if record is not None and record.owner is self and record.joined is None:
                # The common case, inline: this handler alone records the run.
                _RUNS.pop(key, None)
                record.owner = None
                if record.done:
                    return
                record.done = True
            else:
                record = self._finish(
                    run_id, parent_run_id, EventType.LLM_INVOKE, kwargs.get("name"), "llm"
                )
                if record is None:
                    return
            _fill_llm_result(record, outcome)
            if record.children is not None:
                _close_children(record, None)
            record.span.end(_at)
        except Exception:
            _callback_failed("on_llm_end")

    def _llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.LLM_INVOKE, kwargs.get("name"), "llm"
            )
            if record is None:
                return
            outcome = kwargs.get("outcome")
            if outcome is not None:
                _fill_llm_result(record, outcome)
            else:
                _fill_streaming(record)
            self._fail(record, error, parent_run_id)
        except Exception:
            _callback_failed("on_llm_error")

    # -- tools --------------------------------------------------------------------------------

    def _tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            tool_call_id = kwargs.get("tool_call_id")
            name = mapping.run_name(serialized, kwargs.get("name"), "tool")
            record = self._start(
                run_id,
                parent_run_id,
                name,
                EventType.TOOL_CALL,
                mapping.tool_input(input_str, inputs),
                tags,
                metadata,
                extra={"tool_call_id": tool_call_id} if tool_call_id else None,
            )
            if record is not None and record.parent is not None and not _capture_content():
                _learn_tools(record.parent, (name,))  # a tool LangChain runs: the code's name
        except Exception:
            _callback_failed("on_tool_start")

    def _tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.TOOL_CALL, kwargs.get("name"), "tool"
            )
            if record is None:
                return
            span = record.span
            value, tool_call_id, error = mapping.tool_output(output)
            span.event.output = value
            if tool_call_id and "tool_call_id" not in span.event.metadata:
                span.event.metadata["tool_call_id"] = tool_call_id
            if error is not None:  # a handled tool error (handle_tool_error=True)
                span.set_error(kind=ErrorKind.TOOL, type="ToolError", message=error)
            if record.children is not None:
                if record.paused is not None:
                    _paused(record)
                _close_children(record, None)
            span.end(_at)
        except Exception:
            _callback_failed("on_tool_end")

    def _tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.TOOL_CALL, kwargs.get("name"), "tool"
            )
            if record is None:
                return
            tool_call_id = kwargs.get("tool_call_id")
            if tool_call_id and "tool_call_id" not in record.span.event.metadata:
                record.span.event.metadata["tool_call_id"] = tool_call_id
            self._fail(record, error, parent_run_id)
        except Exception:
            _callback_failed("on_tool_error")

    # -- retrievers ---------------------------------------------------------------------------

    def _retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start(
                run_id,
                parent_run_id,
                mapping.run_name(serialized, kwargs.get("name"), "retriever"),
                EventType.RETRIEVAL,
                query,
                tags,
                metadata,
            )
        except Exception:
            _callback_failed("on_retriever_start")

    def _retriever_end(
        self, documents: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.RETRIEVAL, kwargs.get("name"), "retriever"
            )
            if record is None:
                return
            count, summaries = mapping.documents_summary(documents)
            event = record.span.event
            event.output = summaries
            if count is not None:
                event.metadata["document_count"] = count
            if record.children is not None:
                _close_children(record, None)
            record.span.end(_at)
        except Exception:
            _callback_failed("on_retriever_end")

    def _retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            record = self._finish(
                run_id, parent_run_id, EventType.RETRIEVAL, kwargs.get("name"), "retriever"
            )
            if record is None:
                return
            self._fail(record, error, parent_run_id)
        except Exception:
            _callback_failed("on_retriever_error")

    # -- retries and custom events ------------------------------------------------------------

    def _retry(
        self, retry: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """A retry of a run (read by ``on_retry``) is appended to ``metadata["retries"]``."""
        try:
            record = _RUNS.get(_run_key(run_id))
            if record is None or record.owner is not self:
                return
            if retry and "error" in retry and not _capture_content():
                # The error's text often quotes the prompt: keep only its type, as the
                # processor does for error messages.
                retry["error"] = retry["error"].partition(":")[0]
            retries = record.span.event.metadata.setdefault("retries", [])
            retries.append(retry)
        except Exception:
            _callback_failed("on_retry")

    def _custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``dispatch_custom_event(name, data)`` becomes a ``custom`` event under its run."""
        try:
            record = _RUNS.get(_run_key(run_id))
            if record is not None and record.owner is not self and record.owner is not None:
                return  # the handler recording the run records its custom events
            client = _client or get_client()
            parent: Span | None
            if record is not None:
                # The run's agent, session and tags (its metadata or create_agent's name may
                # have set them): agent and session are inherited from the parent span.
                parent = record.span
                agent = session_id = None
                tags = list(parent.event.tags) if parent.event.tags else None
            else:
                parent = _ambient
                agent, session_id = self.agent, self.session_id
                tags = list(self.tags) if self.tags else None
            span = client.start_span(
                name if isinstance(name, str) and name else "custom_event",
                EventType.CUSTOM,
                parent=parent,
                input=data,
                tags=tags,
                framework=FRAMEWORK,
                agent=agent,
                session_id=session_id,
                start_ns=_at,
            )
            span.end(_at)
        except Exception:
            _callback_failed("on_custom_event")

    # -- the plain callbacks, each queueing its recording method (those reading something at
    # once are written out at the top) ---------------------------------------------------------

    on_chain_start = _queues_start(_chain_start)
    on_chain_end = _queues(_chain_end)
    on_chain_error = _queues(_chain_error)
    on_agent_action = _queues(_agent_action, _OTHER)
    on_chat_model_start = _queues_start(_chat_model_start)
    on_llm_start = _queues_start(_llm_start)
    on_tool_end = _queues(_tool_end)
    on_tool_error = _queues(_tool_error)
    on_retriever_start = _queues_start(_retriever_start)
    on_retriever_end = _queues(_retriever_end)
    on_retriever_error = _queues(_retriever_error)


def _forget_oldest_ids() -> None:
    try:
        del _IDS[next(iter(_IDS))]
    except (KeyError, RuntimeError, StopIteration):
        pass


def _running_run(
    config: Any, client: Client, ambient: Span | None
) -> tuple[Any, tuple[Any, int, Client]] | None:
    """``(run key, _IDS entry)`` of the run whose code is running here, for a run that
    LangChain starts without a parent, or ``None``.

    LangChain reports some runs started inside another one as roots: ``with_fallbacks``'
    ``invoke`` hands its runnables the caller's config instead of its child config, and a call
    given its own ``callbacks=[...]`` inside a run starts a new tree. The run is nested under
    the run whose code is running, as a Sightline span started there would be: when the same
    client records it and it is nearer than the ambient Sightline span (see ``_run_parent``).
    """
    try:
        run_id = getattr(config.get("callbacks"), "parent_run_id", None)
        if run_id is None:
            return None
        key = run_id.int if run_id.__class__ is UUID else run_id
        entry = _IDS.get(key)
        if entry is None or entry[2] is not client:
            return None
        if ambient is not None and ambient.is_recording and entry[1] <= ambient.event.start_ns:
            return None  # the run started before the ambient span: the span is nearer
        return key, entry
    except Exception:  # the run is then recorded as LangChain reported it
        return None


def _placed(key: Any, parent_key: Any, client: Client, ambient: Span | None) -> tuple[Any, Any]:
    """``(parent key, trace)`` of a run starting now: its parent's trace (a run LangChain lost
    the parent of takes the run going on, see _running_run), the ambient span's, or a trace of
    its own (its key). ``trace`` is a trace id or a run key (see _IDS).

    A parent recorded to another client gives no trace (see ``_start``): the run's span would
    point at a parent its client never receives."""
    if parent_key is not None:
        parent = _IDS.get(parent_key)
    else:
        config = _var_child_config.get()
        running = _running_run(config, client, ambient) if config else None
        if running is not None:  # LangChain lost the parent: see _running_run
            parent_key, parent = running
        else:
            parent = None
    if parent is not None and parent[2] is client:  # most runs: the parent's trace
        return parent_key, parent[0]
    if ambient is not None and ambient.is_recording:
        return parent_key, ambient.event.trace_id
    return parent_key, key


def _hex_ids(key: int, trace: Any) -> tuple[str, str]:
    """``(trace id, span id)`` of the run ``key`` whose _IDS trace is ``trace``."""
    return (
        trace if trace.__class__ is str else "%032x" % (trace or 1),
        "%016x" % (key & _LOW_64 or 1),
    )


def run_ids(run_id: Any, parent_run_id: Any, client: Client) -> tuple[str, str] | None:
    """``(trace id, span id)`` the run ``run_id`` has (or will have, starting now under
    ``parent_run_id``) when a Sightline handler records it: for governance, which asks about a
    tool run before its span exists. ``None`` for a run id that is not a UUID."""
    key = _run_key(run_id)
    if key.__class__ is not int:
        return None
    entry = _IDS.get(key)
    if entry is not None:
        return _hex_ids(key, entry[0])
    _, trace = _placed(key, _run_key(parent_run_id), client, _current_span())
    return _hex_ids(key, trace)


def _run_parent() -> tuple[str, str, int, Client] | None:
    """``(trace id, span id, start time, client)`` of the LangChain run whose code is running here, if
    a Sightline handler records it: LangChain keeps the config of the running run's children in
    a context variable, with the run's id as their parent's."""
    config = var_child_runnable_config.get()
    if not config:
        return None
    run_id = getattr(config.get("callbacks"), "parent_run_id", None)
    if run_id is None:
        return None
    key = run_id.int if run_id.__class__ is UUID else run_id
    entry = _IDS.get(key)
    if entry is None or key.__class__ is not int:
        return None
    return (*_hex_ids(key, entry[0]), entry[1], entry[2])


add_parent_source(_run_parent)


def _capture_content() -> bool:
    """Whether the client of the record being replayed keeps inputs and outputs."""
    return bool((_client or get_client()).config.capture_content)


def _read_result(response: Any) -> mapping.LLMOutcome:
    """``read_llm_result`` on the application's thread; an empty outcome if it fails."""
    try:
        return mapping.read_llm_result(response)
    except Exception:
        _callback_failed("on_llm_end")
        return mapping.LLMOutcome()


def _fill_llm_result(record: _Run, outcome: mapping.LLMOutcome) -> None:
    span = record.span
    event = span.event
    event.output = outcome.output
    if outcome.usage is not None:
        event.usage = Usage(*outcome.usage)
        details = mapping.usage_details(outcome)
        if details:
            event.metadata["usage_details"] = details
    if event.model is None:
        event.model = outcome.model
    if outcome.finish_reason:
        event.metadata["finish_reason"] = outcome.finish_reason
    calls = outcome.tool_calls
    if calls:
        if not _capture_content():
            calls = mapping.private_tool_names(calls, _known_tools(record))
        event.metadata["tool_calls"] = calls
    if record.stream is not None:
        _fill_streaming(record)


def _learn_tools(record: _Run | None, names: Any) -> None:
    """Note the names of the application's tools ``names`` on ``record`` and the open runs
    above it (see ``_Run.tools``)."""
    while record is not None:
        if record.tools is None:
            record.tools = set(names)
        else:
            record.tools.update(names)
        record = record.parent


def _known_tools(record: _Run) -> set[str]:
    """The names of the application's tools known to ``record`` and the runs above it: a tool
    name a model asked for in it that is not one of them was made up (model output)."""
    known: set[str] = set()
    run: _Run | None = record
    while run is not None:
        if run.tools:
            known.update(run.tools)
        run = run.parent
    return known


def _new_stream() -> _Stream:
    return _Stream((_client or get_client()).config.max_string + 1)


def _keep_text(stream: _Stream, text: Any, source: int) -> None:
    """Add a streamed piece of text to what ``stream`` keeps (see ``_Stream``)."""
    if text.__class__ is not str:
        return
    stream.text_from = source
    if len(text) > stream.room:
        text = text[: stream.room]
    stream.text.append(text)
    stream.room -= len(text)


def _fill_streaming(record: _Run) -> None:
    """The streaming metadata of a model run, and when its end gave no output (it was ended
    before its model's end came: see ``_close_children``), the text streamed so far."""
    stream = record.stream
    if stream is None:
        return
    first = stream.first_token_ns or stream.first_chunk_ns
    event = record.span.event
    event.metadata["ttft_ms"] = round((first - event.start_ns) / 1e6, 3)
    # A model streamed through stream_events(v3) may report both kinds: count one.
    event.metadata["streamed_tokens"] = stream.tokens or stream.deltas
    if event.output is None and stream.text:
        text = "".join(stream.text)
        event.output = (
            text if _is_text_prompt(event.input) else {"role": "assistant", "content": text}
        )


def _is_text_prompt(input: Any) -> bool:
    """Whether a model run's input is a text model's prompt (``on_llm_start``: a string, or a
    list of strings), not a chat model's messages: its output is then text, not a message."""
    return input.__class__ is str or (
        input.__class__ is list and bool(input) and input[0].__class__ is str
    )


def _sees(record: _Run | None, handler: SightlineCallbackHandler) -> bool:
    """Whether ``handler`` saw the run ``record`` start (it records it or joined it)."""
    if record is None:
        return False
    if record.owner is handler:
        return True
    joined = record.joined
    return joined is not None and handler in joined


def _merge_tags(first: list[str] | None, more: Any) -> list[str] | None:
    out = list(first) if first else []
    try:
        for tag in more:
            if tag not in out:
                out.append(tag if isinstance(tag, str) else str(tag))
    except Exception:
        pass
    return out or None


def _evict_oldest() -> None:
    try:
        key = next(iter(_RUNS))
        record = _RUNS.pop(key, None)
    except Exception:
        return
    _IDS.pop(key, None)
    if record is not None and not record.done:
        record.done = True
        _remember_closed(key)  # its end, if it ever comes, is not recorded a second time
        record.span.event.metadata["unfinished"] = True
        if record.stream is not None:
            _fill_streaming(record)
        record.span.end(_at)


def _remember_closed(key: Any) -> None:
    if len(_CLOSED) >= max(_MAX_CLOSED, MAX_OPEN_RUNS):
        _CLOSED.pop(next(iter(_CLOSED)), None)
    _CLOSED[key] = None


def _close_children(record: _Run, error: BaseException | None) -> bool:
    """End the runs started under ``record`` that are still open now that it ends; True when
    one of them was a model in the middle of streaming.

    LangChain sends no end or error for a tool, retriever or model whose ``ainvoke`` was
    cancelled (its ``except`` catches ``Exception`` only), nor, before their parent's end, for
    the runs of a sync stream the caller stopped reading: without this they would never be
    recorded and their entries never freed. Each is marked ``unfinished`` and, when the parent
    failed, carries the parent's error (the cancellation that went through both). A model keeps
    what it streamed so far, its text as its output (see ``_fill_streaming``): the end LangChain
    sends for it afterwards (a sync stream's, with the full reply and usage) is ignored, since
    the span was handed to the client when it ended and cannot be ended again.
    """
    children = record.children
    record.children = None
    streaming = False
    for key in children:  # type: ignore[union-attr]
        child = _RUNS.get(key)
        if child is None or child.done:
            continue
        del _RUNS[key]
        _IDS.pop(key, None)
        child.done = True
        child.owner = None
        _remember_closed(key)
        if child.children is not None and _close_children(child, error):
            streaming = True
        span = child.span
        span.event.metadata["unfinished"] = True
        if error is not None:
            span.set_error(error)
        if child.stream is not None:
            streaming = True
            _fill_streaming(child)
        span.end(_at)
    return streaming


def _failed_kind(record: _Run, error: BaseException) -> str | None:
    """The kind a child of ``record`` gave ``error`` when it failed with it, if one did."""
    failed = record.failed
    if failed is not None:
        for child_error, kind in reversed(failed):
            if child_error is error:
                return kind
    return None


def _paused(record: _Run) -> None:
    """A run ending while a run inside it paused at a LangGraph ``interrupt()``: the turn did
    not finish, it waits for input. Mark it ``interrupted`` and tell its parent, up to the root
    of the turn. The run that swallowed the interrupt (the graph that raised it, a child having
    failed with it) shows the interrupts in its output as the caller gets them: ``__interrupt__``.
    """
    name, interrupts = record.paused  # type: ignore[misc]
    event = record.span.event
    event.metadata["interrupted"] = name
    output = event.output
    if interrupts and output.__class__ is dict and "__interrupt__" not in output:
        event.output = {**output, "__interrupt__": interrupts}
    if record.parent is not None:
        _note_pause(record.parent, name, None)


def _note_pause(record: _Run, name: str, interrupts: list[Any] | None) -> None:
    """Note on ``record`` that a run inside it paused, with the interrupts of its children
    that raised them (parallel branches may each pause: the caller gets them all)."""
    paused = record.paused
    if paused is None:
        record.paused = (name, interrupts)
    elif interrupts:
        record.paused = (paused[0], (paused[1] or []) + interrupts)


_failed_callbacks: set[str] = set()


def _callback_failed(callback: str) -> None:
    """Log a failure inside a callback (once per callback at warning level), never raise."""
    if callback in _failed_callbacks:
        log_safely(
            logging.DEBUG,
            "sightline: LangChain %s failed; the event may be incomplete",
            callback,
            exc_info=True,
        )
        return
    _failed_callbacks.add(callback)
    log_safely(
        logging.WARNING,
        "sightline: LangChain %s failed; the event may be incomplete (further failures of this "
        "callback are logged at debug level)",
        callback,
        exc_info=True,
    )
