"""The client: the one object user code and integrations talk to.

``sightline.init()`` builds the global client; ``sightline.Client(...)`` builds an explicit one.
Every recording method is cheap, never blocks on I/O and never raises into the caller.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sightline.config import Config, require_bool
from sightline.errors import ConfigError
from sightline.event import (
    ErrorInfo,
    ErrorKind,
    Event,
    EventType,
    Status,
    Usage,
    coerce_type,
    new_span_id,
    new_trace_id,
)
from sightline.pipeline import log_safely, time_left, timeout_seconds
from sightline.span import (
    _PARENT_SOURCES,
    NOOP_SPAN,
    Span,
    current_span,
    framework_run_within,
)

if TYPE_CHECKING:
    from types import TracebackType

    from sightline.pipeline import Exporter, Pipeline
    from sightline.plugins import PluginManager

__all__ = ["AMBIENT", "AsyncClient", "Client", "get_client", "init", "shutdown"]


class _Ambient:
    def __repr__(self) -> str:
        return "AMBIENT"


AMBIENT: Any = _Ambient()
"""Default ``parent`` of :meth:`Client.start_span`: the ambient span of the current context."""

_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()
# Clients closed: at exit, their spans still open are counted (see _count_spans_of_closed_clients).
_CLOSED_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


class Client:
    """Records events and delivers them through a background pipeline to exporters.

    Arguments are those of :func:`sightline.init`; each falls back to its ``SIGHTLINE_*``
    environment variable, then to a default. An explicit client does not instrument frameworks
    unless ``instrument=True`` is passed. ``exporters`` is a list of names and exporter objects,
    a comma-separated string of names (``"sqlite,jsonl"``) or a single exporter object; the
    other list options (``redact_keys``, ``plugins``, ``disable_plugins``) likewise take a
    comma-separated string. Use it as a context manager to flush and close it::

        with sightline.Client(exporters=["jsonl"]) as client:
            client.log_event("tool_call", "search", input={"q": "refund"})
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        project: str | None = None,
        agent: str | None = None,
        db: str | None = None,
        instrument: bool = False,
        enabled: bool | None = None,
        exporters: Sequence[str | Exporter] | str | Exporter | None = None,
        capture_content: bool | None = None,
        plugins: Sequence[str] | str | None = None,
        **options: Any,
    ) -> None:
        config = Config.resolve(
            endpoint=endpoint,
            api_key=api_key,
            project=project,
            agent=agent,
            db=db,
            instrument=instrument,
            enabled=enabled,
            exporters=exporters,
            capture_content=capture_content,
            plugins=plugins,
            **options,
        )
        self._configure(config)

    @classmethod
    def _disabled(cls) -> Client:
        """A client that records nothing, built without reading ``SIGHTLINE_*`` variables: the
        one :func:`get_client` hands out before :func:`init`, which a malformed variable must
        not turn into an error raised by every instrumented call."""
        client = cls.__new__(cls)
        client._configure(Config(enabled=False))
        return client

    def _configure(self, config: Config) -> None:
        """Set the client up for ``config``, already resolved and checked."""
        self.config = config
        self.enabled = self.config.enabled
        self._warned: set[str] = set()  # what _warn_once() has logged at warning level
        self.agents: dict[str, dict[str, Any]] = {}
        self._closed = False  # close() has been called (it may still be running)
        self._close_lock = threading.RLock()
        self._close_changed = threading.Condition(self._close_lock)
        self._close_owner: threading.Thread | None = None  # the thread running close()
        self._close_completed = False
        self._close_result = True
        self._log_event_failed = False  # logged at error level once, then at debug level
        self._instrumented = False
        self._default_agent = self.config.agent
        self._pipeline: Pipeline | None = None  # None once closed: recording is refused
        self._closed_pipeline: Pipeline | None = None  # kept after close for stats()
        self._plugins: PluginManager | None = None
        if not self.enabled:
            return
        from sightline.pipeline import Pipeline
        from sightline.plugins import get_plugin_manager

        self._plugins = get_plugin_manager(self.config)
        exporter_list = self._build_exporters()
        self._pipeline = Pipeline(
            exporter_list,
            self._plugins.process_event,
            queue_size=self.config.queue_size,
            batch_size=self.config.batch_size,
            flush_interval=self.config.flush_interval,
        )
        _CLIENTS.add(self)
        _register_atexit()
        # Threads now, not with the first event: a program may end with its first events still
        # to come (a span or a stream left open, ended at exit), and at exit Python 3.12
        # refuses to start a thread.
        self._pipeline.start()
        from sightline.signals import install_signal_handler

        install_signal_handler(self, self.config.handle_signals)
        if self.config.instrument:
            self.instrument()

    # -- set-up -------------------------------------------------------------------------------

    @property
    def plugins(self) -> PluginManager:
        """This client's plugin manager (loads the plugins on first use when disabled)."""
        if self._plugins is None:
            from sightline.plugins import get_plugin_manager

            self._plugins = get_plugin_manager(self.config)
        return self._plugins

    def _build_exporters(self) -> list[tuple[str, Exporter]]:
        factories: dict[str, Any] = {}
        for offered in self.plugins.call("sightline_exporters", config=self.config):
            if isinstance(offered, dict):
                factories.update(offered)
        built: list[tuple[str, Exporter]] = []
        for item in self.config.exporter_names:
            if isinstance(item, str):
                factory = factories.get(item)
                if factory is None:
                    raise ConfigError(
                        f"unknown exporter {item!r}; available: {', '.join(sorted(factories))}"
                    )
                built.append((item, factory(self.config)))
            elif callable(getattr(item, "export", None)):
                built.append((getattr(item, "name", None) or type(item).__name__, item))
            else:
                raise ConfigError(
                    f"exporter {item!r} is neither a name nor an object with export()/shutdown()"
                )
        return built

    @property
    def exporters(self) -> list[Exporter]:
        """The exporter objects this client delivers to."""
        if self._pipeline is None:
            return []
        return [worker.exporter for worker in self._pipeline.exporters]

    def instrument(self, names: Iterable[str] | None = None) -> None:
        """Switch on global instrumentation of the installed integrations (all, or ``names``)."""
        if not self.enabled:
            return
        self._call_instrumentation("sightline_instrument", names, client=self)
        self._instrumented = True

    def uninstrument(self, names: Iterable[str] | None = None) -> None:
        """Reverse :meth:`instrument`."""
        if self._plugins is None:
            return
        self._call_instrumentation("sightline_uninstrument", names)
        self._instrumented = False

    def _call_instrumentation(self, hook: str, names: Iterable[str] | None, **kwargs: Any) -> None:
        if isinstance(names, str):  # instrument("langchain"): one name, not its letters
            names = [part.strip() for part in names.split(",") if part.strip()]
        wanted = set(names) if names is not None else None
        implementations = self.plugins.implementations(hook)
        if wanted and hook == "sightline_instrument":
            loaded = sorted({name for name, _ in implementations})
            for unknown in sorted(wanted.difference(loaded)):
                log_safely(
                    logging.WARNING,
                    "sightline: instrument(): no loaded integration is named %r, so nothing was "
                    "instrumented for it; loaded integrations: %s (`sightline plugins` lists "
                    "what is installed)",
                    unknown,
                    ", ".join(loaded) or "none",
                )
        for name, function in implementations:
            if wanted is not None and name not in wanted:
                continue
            try:
                function(**kwargs)
            except Exception as exc:
                log_safely(
                    logging.ERROR,
                    "sightline: plugin %r raised in %s and is disabled: %s",
                    name,
                    hook,
                    exc,
                )
                self.plugins.disable(name, exc)

    def register_agent(
        self, name: str, framework: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Declare an agent; stores that keep an agent registry (sqlite, http) record it."""
        if not self.enabled:
            return
        record = {"name": name, "framework": framework, "metadata": dict(metadata or {})}
        self.agents[name] = record
        if self._default_agent is None:
            self._default_agent = name
        if self._pipeline is not None:
            self._pipeline.call_exporters("register_agent", record)

    # -- recording ----------------------------------------------------------------------------

    def track(self, event: Event) -> bool:
        """Hand a finished event to the pipeline. Never blocks, never raises.

        Returns False when the event was not accepted (disabled, closed, or queue full: counted
        in :meth:`stats`). Anything but an :class:`Event` (``None``, a dict) is refused: counted
        in ``stats()["dropped"]`` and logged once at warning level.
        """
        pipeline = self._pipeline
        if pipeline is None:
            if self._closed and self.enabled:
                self._count_after_close()
            return False
        try:
            if event.__class__ is not Event and not isinstance(event, Event):
                self._refuse_track(pipeline, f"it was given {type(event).__name__}, not an Event")
                return False
            if event.end_ns is None:
                event.end_ns = time.time_ns()
            if event.agent is None:
                event.agent = self._default_agent
        except Exception as exc:  # an Event missing its fields (built with __new__)
            self._refuse_track(pipeline, f"the event could not be read ({type(exc).__name__})")
            return False
        return pipeline.submit(event)

    def _refuse_track(self, pipeline: Pipeline, why: str) -> None:
        pipeline.refused.add()
        self._warn_once(
            "track",
            "sightline: track() dropped an event: %s; counted in stats()['dropped'] (further "
            "ones are logged at debug level)",
            why,
        )

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        """Log ``message`` on the ``sightline`` logger at warning level the first time for
        ``topic`` on this client, at debug level after that: a misuse repeated in a loop is
        told once, not once per call. Never raises."""
        first = topic not in self._warned
        self._warned.add(topic)
        log_safely(logging.WARNING if first else logging.DEBUG, message, *args)

    def defer(self, record: tuple[Any, ...]) -> bool:
        """Queue a deferred record: the worker calls ``record[0](record)`` later, in order with
        the events tracked around it. Never blocks, never raises.

        For integrations whose callbacks fire on the application's thread: a callback queues
        what it was handed (with the time, and the ambient span if it matters) and the mapping
        to events runs on the background worker. The call there starts and ends spans as usual
        (giving ``start_ns`` / ``end_ns`` from the record); the events it ends are processed
        in the same pass. Returns False when not accepted (disabled, closed, queue full). A
        record is not an event (a framework run is often a start and an end record): those
        refused are counted in ``stats()["dropped_records"]``, not in ``dropped`` nor
        ``dropped_after_close``, which count events.
        """
        pipeline = self._pipeline
        if pipeline is None:
            closed = self._closed_pipeline
            if self._closed and self.enabled and closed is not None:
                closed.refuse_record()
            return False
        return pipeline.submit(record)

    def _count_after_close(self) -> None:
        """An event (a span that ends after close(), a log_event...) came too late: counted in
        stats()['dropped_after_close'] and logged once (by the pipeline, which counts those
        refused while close() was running)."""
        pipeline = self._closed_pipeline
        if pipeline is not None:
            pipeline.count_after_close()

    def start_span(
        self,
        name: str,
        type: EventType | str = EventType.CUSTOM,
        *,
        parent: Span | None = AMBIENT,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
        span_id: str | None = None,
        input: Any = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        agent: str | None = None,
        session_id: str | None = None,
        framework: str | None = None,
        model: str | None = None,
        start_ns: int | None = None,
    ) -> Span:
        """Start a span without making it the ambient one (integrations use this).

        ``parent`` is a :class:`Span`, ``None`` for a new trace, or by default the ambient span.
        ``trace_id`` / ``parent_span_id`` link to a span known only by its ids. ``agent`` and
        ``session_id`` are inherited from the parent when not given.
        """
        if self._pipeline is None:
            return NOOP_SPAN
        inherit = None
        if parent is AMBIENT:
            parent = current_span()
            if _PARENT_SOURCES and trace_id is None and parent_span_id is None:
                # A framework's run going on here (a LangChain tool, whose span its integration
                # makes later on the worker): the innermost of it and the ambient span is the
                # parent. Identity fields still come from the ambient span.
                run = framework_run_within(parent, self)
                if run is not None:
                    inherit, parent = parent, None
                    trace_id, parent_span_id = run[0], run[1]
        event = Event.__new__(Event)
        if parent is not None and parent.is_recording:
            parent_event = parent.event
            event.trace_id = parent_event.trace_id
            event.parent_span_id = parent_event.span_id
            event.agent = agent if agent is not None else parent_event.agent
            event.session_id = session_id if session_id is not None else parent_event.session_id
        else:
            event.trace_id = trace_id or new_trace_id()
            event.parent_span_id = parent_span_id
            if inherit is not None and inherit.is_recording:
                event.agent = agent if agent is not None else inherit.event.agent
                event.session_id = (
                    session_id if session_id is not None else inherit.event.session_id
                )
            else:
                event.agent = agent if agent is not None else self._default_agent
                event.session_id = session_id
        event.id = None
        event.span_id = span_id or new_span_id()
        event.type = type if type.__class__ is EventType else coerce_type(type)
        event.name = name
        event.status = Status.OK
        event.start_ns = start_ns if start_ns is not None else time.time_ns()
        event.end_ns = None
        event.framework = framework
        event.input = input
        event.output = None
        event.model = model
        event.usage = None
        event.cost_usd = None
        event.error = None
        event.metadata = metadata if metadata is not None else {}
        event.tags = tags if tags is not None else []
        return Span(self, event)

    def track_event(
        self, name: str, type: EventType | str = EventType.CUSTOM, **fields: Any
    ) -> Span:
        """A span for a block of work, made ambient inside ``with``::

        with client.track_event("summarize", type=EventType.LLM_INVOKE) as ev:
            ev.set_output(text); ev.set_usage(input_tokens=812, output_tokens=64)
        """
        return self.start_span(name, type, **fields)

    def trace(
        self,
        name: str,
        *,
        agent: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        input: Any = None,
    ) -> Span:
        """A ``run`` span: the root of a trace (or nested under the ambient span, if any)."""
        return self.start_span(
            name,
            EventType.RUN,
            agent=agent,
            session_id=session_id,
            tags=list(tags) if tags else None,
            metadata=metadata,
            input=input,
        )

    def log_event(
        self,
        type: EventType | str,
        name: str,
        input: Any = None,
        output: Any = None,
        metadata: dict[str, Any] | None = None,
        cost_usd: float | None = None,
        status: Status | str = Status.OK,
        *,
        model: str | None = None,
        usage: Usage | Mapping[str, Any] | None = None,
        error: ErrorInfo | BaseException | str | None = None,
        error_kind: ErrorKind | str | None = None,
        duration_ms: float | None = None,
        tags: list[str] | None = None,
        agent: str | None = None,
        session_id: str | None = None,
        framework: str | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> Event | None:
        """Record a finished piece of work in one call, under the ambient span.

        ``trace_id`` / ``parent_span_id`` put it under a span known only by its ids instead
        (integrations: a framework's run whose span is made later). Returns the event (or
        ``None`` when disabled).
        """
        pipeline = self._pipeline  # once: close() on another thread may clear it meanwhile
        if pipeline is None:
            if self._closed and self.enabled:
                self._count_after_close()
            return None
        try:
            end_ns = time.time_ns()
            start_ns = end_ns
            if duration_ms:
                try:
                    start_ns = end_ns - max(0, int(float(duration_ms) * 1_000_000))
                except (TypeError, ValueError, OverflowError):
                    pass  # unreadable: recorded as instantaneous rather than lost
            span = self.start_span(
                name, type, input=input, metadata=metadata, tags=tags, agent=agent,
                session_id=session_id, framework=framework, model=model, start_ns=start_ns,
                parent=AMBIENT if trace_id is None else None, trace_id=trace_id,
                parent_span_id=parent_span_id,
            )  # fmt: skip
            event = span.event
            event.output = output
            event.cost_usd = cost_usd
            event.status = status if isinstance(status, Status) else _status(status)
            if usage is not None and usage.__class__ is not Usage:
                usage = Usage.coerce(usage)  # a dict, OpenAI's names too; never raises
            event.usage = usage
            if error is not None:
                if isinstance(error, ErrorInfo):
                    event.error = error
                elif isinstance(error, BaseException):
                    span.set_error(error, kind=error_kind)
                else:
                    span.set_error(kind=error_kind, type="Error", message=str(error))
                event.status = Status.ERROR
            elif event.status is Status.ERROR:
                span.set_error(kind=error_kind, type="Error", message="")
            span.end(end_ns)
            return event
        except Exception as exc:
            pipeline.processor_errors.add()
            first, self._log_event_failed = not self._log_event_failed, True
            log_safely(
                logging.ERROR if first else logging.DEBUG,
                "sightline: log_event failed (%s); the event is dropped and counted in "
                "stats()['processor_errors']%s",
                exc.__class__.__name__,  # ``type`` is this method's parameter
                " (further failures are logged at debug level)" if first else "",
            )
            return None

    # -- delivery -----------------------------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Deliver everything tracked so far; True when it all reached the exporters in time.

        ``timeout`` is in seconds; ``None`` means no limit (as does ``float("inf")``), and a
        negative one is 0. Integrations whose framework records on threads of its own are
        waited for first (the ``sightline_flush`` hook), within the same ``timeout``.
        """
        seconds = timeout_seconds(timeout)
        pipeline = self._pipeline
        if pipeline is None:
            return True
        deadline = time.monotonic() + seconds
        if self._plugins is not None:
            self._plugins.call("sightline_flush", client=self, timeout=seconds)
        return pipeline.flush(time_left(deadline))

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, stop the background threads and shut the exporters down; True when every
        event reached the exporters in time. ``timeout`` is read as by :meth:`flush`: ``None``
        means no limit.

        Spans of this client still open in a ``with`` block of another thread or task (an
        agent loop on a daemon thread) are ended first, as errors of type ``Incomplete``, and
        delivered; one open around this call, or never entered, is counted in
        ``stats()["dropped_after_close"]`` when it ends.

        Idempotent: once a close has completed, a later call returns True at once. A call made
        while another thread is closing waits for that close, within its own ``timeout``, and
        returns its outcome (False if the wait times out). A close interrupted by
        ``KeyboardInterrupt`` is completed by the next call, or at interpreter exit.
        """
        return self._close(timeout)

    def _close(self, timeout: float | None, suspended: threading.Thread | None = None) -> bool:
        """:meth:`close`. ``suspended`` is a thread stopped under a signal handler (the
        SIGTERM handler's): a close it was running cannot progress, so it is taken over here,
        not waited for; so is one started by this same thread (an exporter's ``shutdown`` or
        a signal handler calling ``close`` again)."""
        seconds = timeout_seconds(timeout)
        deadline = time.monotonic() + seconds
        me = threading.current_thread()
        if not self._close_lock.acquire(timeout=seconds):
            return False
        try:
            self._closed = True
            waited = False
            while not self._close_completed:
                owner = self._close_owner
                if owner is None or owner is me or owner is suspended:
                    break
                remaining = time_left(deadline)
                if remaining <= 0:
                    return False
                waited = True
                self._close_changed.wait(remaining)
            else:
                return self._close_result if waited else True
            previous, self._close_owner = owner, me
        finally:
            self._close_lock.release()
        try:
            return self._run_close(deadline)
        finally:
            with self._close_lock:
                # A close that raised (KeyboardInterrupt) is left for the next caller to finish.
                self._close_owner = previous
                self._close_changed.notify_all()

    def _run_close(self, deadline: float) -> bool:
        """The steps of :meth:`close`; each may run again when an earlier run was cut short."""
        if self._instrumented:
            self.uninstrument()
        pipeline = self._pipeline
        result = True
        if pipeline is not None:
            # While the pipeline can still deliver them (see _end_spans_open_elsewhere).
            _end_spans_open_elsewhere(self, "still open when the client was closed")
            result = pipeline.close(time_left(deadline))
            self._closed_pipeline = pipeline
            self._pipeline = None
            _CLIENTS.discard(self)
            _CLOSED_CLIENTS.add(self)
        with self._close_lock:
            if not self._close_completed:
                self._close_completed = True
                self._close_result = result
        return result

    def stats(self) -> dict[str, Any]:
        """Counts of the pipeline: queued, processed, exported, dropped, filtered, failed...

        ``processor_errors`` counts the events a built-in processor failed on (dropped, so
        that nothing unredacted is exported), deferred records that failed and
        :meth:`log_event` calls that could not make an event;
        ``dropped_after_close`` the events recorded after :meth:`close` began; ``dropped`` the
        events refused because the queue was full, and what :meth:`track` refused for not being
        an :class:`Event`; ``dropped_records`` the deferred records (:meth:`defer`) refused
        because the queue was full or the client closed. The counts go on after ``close``: an
        export still running then is counted when it ends. A forked child counts its own
        events only (its counts start at 0).
        """
        pipeline = self._pipeline
        if pipeline is None:
            pipeline = self._closed_pipeline
        if pipeline is None:
            return dict(_EMPTY_STATS)
        return pipeline.stats()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [w.name for w in self._pipeline.exporters] if self._pipeline else []
        state = "disabled" if not self.enabled else ("closed" if self._closed else "open")
        return f"<sightline.Client {state} exporters={names}>"


def _status(value: Any) -> Status:
    """A status given as text, any case (``"OK"``, ``"Error"``); anything else is an error
    status, so that a wrong value shows rather than passes for success."""
    try:
        return Status(str(value).strip().lower())
    except Exception:
        return Status.ERROR


_EMPTY_STATS: dict[str, Any] = {
    "queued": 0, "processed": 0, "dropped": 0, "dropped_records": 0, "filtered": 0,
    "exported": 0, "failed": 0, "exporter_dropped": 0, "processor_errors": 0,
    "dropped_after_close": 0, "exporters": {},
    "sent": 0, "retried": 0, "spooled": 0, "evicted": 0,
}  # fmt: skip


class AsyncClient(Client):
    """The same surface as :class:`Client` for asyncio code: ``await flush()``, ``async with``.

    Recording methods are the same synchronous, non-blocking calls; only the methods that wait
    (``flush``, ``close``) are coroutines, run off the event loop.
    """

    async def flush(self, timeout: float | None = 5.0) -> bool:  # type: ignore[override]
        """:meth:`Client.flush`, awaited; ``None`` means no limit."""
        import asyncio

        timeout_seconds(timeout)  # a timeout that is not a number raises here, not in a thread
        return await asyncio.to_thread(Client.flush, self, timeout)

    async def close(self, timeout: float | None = 5.0) -> bool:  # type: ignore[override]
        """:meth:`Client.close`, awaited; ``None`` means no limit."""
        import asyncio

        timeout_seconds(timeout)
        return await asyncio.to_thread(Client.close, self, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __exit__(self, *exc: Any) -> None:
        Client.close(self)


# -- the global client ------------------------------------------------------------------------

_GLOBAL: Client | None = None
_GLOBAL_LOCK = threading.Lock()
_DISABLED: Client | None = None
_warned_no_init = False


def init(
    endpoint: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    agent: str | None = None,
    db: str | None = None,
    instrument: bool = True,
    enabled: bool | None = None,
    exporters: Sequence[str | Exporter] | str | Exporter | None = None,
    capture_content: bool | None = None,
    plugins: Sequence[str] | str | None = None,
    **options: Any,
) -> Client:
    """Build the global client, discover plugins and instrument every installed integration.

    With no arguments, events go to the embedded SQLite store ``./.sightline/sightline.db``.
    Calling ``init`` again replaces the global client (the old one is flushed and closed).
    Options are read as by :class:`Client`; a value that cannot work (``enabled="false"``,
    a string where ``True`` or ``False`` is wanted) raises :class:`ConfigError`.
    """
    global _GLOBAL
    require_bool("instrument", instrument)
    client = Client(
        endpoint=endpoint, api_key=api_key, project=project, agent=agent, db=db,
        instrument=False, enabled=enabled, exporters=exporters,
        capture_content=capture_content, plugins=plugins, **options,
    )  # fmt: skip
    with _GLOBAL_LOCK:
        previous, _GLOBAL = _GLOBAL, client
    if previous is not None:
        previous.close()
    if instrument:
        client.instrument()
    return client


def get_client() -> Client:
    """The global client; a disabled one (every call a no-op) until :func:`init` is called."""
    client = _GLOBAL
    if client is not None:
        return client
    return _disabled_client()


def _disabled_client() -> Client:
    global _DISABLED, _warned_no_init
    client = _DISABLED
    if client is None:
        with _GLOBAL_LOCK:
            if _DISABLED is None:
                _DISABLED = Client._disabled()
            client = _DISABLED
    if not _warned_no_init:
        _warned_no_init = True
        log_safely(logging.INFO, "sightline: init() has not been called; nothing is recorded")
    return client


def set_client(client: Client | None) -> Client | None:
    """Install ``client`` as the global client (or remove it); returns the previous one."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        previous, _GLOBAL = _GLOBAL, client
    return previous


def shutdown(timeout: float | None = 5.0) -> bool:
    """Flush and close the global client (``timeout`` as for :meth:`Client.close`)."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        client, _GLOBAL = _GLOBAL, None
    return client.close(timeout) if client is not None else True


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_close_all_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_prepare_multiprocessing_children)
        _close_at_multiprocessing_child_exit()


def _close_at_multiprocessing_child_exit() -> None:
    """In a process multiprocessing started (its first client made here, not inherited): have
    multiprocessing close our clients when the process ends. A ``fork`` or ``forkserver``
    child ends with ``os._exit``, which skips ``atexit``; multiprocessing's own exit hook
    (``util.Finalize``) still runs."""
    global _child_exit_hooked
    module = sys.modules.get("multiprocessing")
    if module is None or _child_exit_hooked:
        return
    try:
        if module.parent_process() is None:
            return
    except Exception:
        return
    _child_exit_hooked = True
    _close_clients_when_multiprocessing_child_exits(None)


_child_exit_hooked = False


_BEFORE_EXIT_CLOSE: list[Callable[[], object]] = []


def call_before_exit_close(hook: Callable[[], object]) -> None:
    """For integrations: run ``hook()`` at interpreter exit, before the clients are flushed and
    closed, to end the work a framework left open (a stream never read) so that its events are
    still delivered. Adding the same hook twice adds it once; a hook that raises is logged at
    debug level and the others still run."""
    if hook not in _BEFORE_EXIT_CLOSE:
        _BEFORE_EXIT_CLOSE.append(hook)
    _register_atexit()


# What the exit's flush and close of every client take at most, together (seconds).
_EXIT_TIMEOUT = 5.0


def _close_all_at_exit() -> None:
    for hook in list(_BEFORE_EXIT_CLOSE):
        try:
            hook()
        except Exception:
            log_safely(logging.DEBUG, "sightline: an exit hook failed", exc_info=True)
    # One deadline for the flush and the close: what the flush did not deliver in time (a
    # blocked exporter, a locked store) the close does not wait for again.
    deadline = time.monotonic() + _EXIT_TIMEOUT
    settle_then_end_open_spans("still open when the program exited", deadline)
    for client in list(_CLIENTS):
        try:
            Client.close(client, timeout=time_left(deadline))
        except Exception:
            log_safely(logging.ERROR, "sightline: failed to close a client at exit", exc_info=True)
    _count_spans_of_closed_clients()


def settle_then_end_open_spans(why: str, deadline: float) -> int:
    """At the end of the process: flush every open client first (until ``deadline``, a
    ``time.monotonic()`` value), so that work already finished but still queued (a framework
    run whose end callback the worker has not replayed yet) ends as it did, then
    :func:`end_open_spans`. Never raises."""
    for client in list(_CLIENTS):
        if client._pipeline is None:
            continue
        try:
            # The synchronous method, also for an AsyncClient (whose own is a coroutine).
            Client.flush(client, max(0.0, deadline - time.monotonic()))
        except Exception:
            log_safely(logging.DEBUG, "sightline: a flush at exit failed", exc_info=True)
    return end_open_spans(why)


def end_open_spans(why: str) -> int:
    """End the spans still open of every client not closed yet, as errors of type
    ``Incomplete`` (message ``why``, ``metadata["incomplete"] = True``; an error already set
    is kept), so that they are delivered and their children's parent is stored. Returns how
    many; logged once. Never raises.

    For the end of the process (exit, SIGTERM): the open spans are found by a scan of the
    objects the garbage collector tracks, so that starting a span registers nothing and no
    span is held alive. :meth:`Client.close` does the same for its own spans still open in
    another thread's or task's ``with`` block.
    """
    try:
        return _end_open_spans(why)
    except Exception:
        log_safely(logging.DEBUG, "sightline: ending the spans left open failed", exc_info=True)
        return 0


def _end_open_spans(why: str) -> int:
    clients = {client for client in list(_CLIENTS) if client._pipeline is not None}
    if not clients:
        return 0
    return _end_as_incomplete(_open_spans(clients), why)


def _open_spans(clients: set[Client]) -> list[Span]:
    """The spans of ``clients`` not ended yet, found by a scan of the objects the garbage
    collector tracks, so that starting a span registers nothing and no span is held alive."""
    import gc

    classes: set[type] = set()
    pending: list[type] = [Span]
    while pending:
        cls = pending.pop()
        if cls not in classes:
            classes.add(cls)
            pending.extend(cls.__subclasses__())
    return [
        obj
        for obj in gc.get_objects()
        if type(obj) in classes
        and getattr(obj, "_ended", True) is False
        and getattr(obj, "_client", None) in clients
    ]


def _end_as_incomplete(spans: list[Span], why: str) -> int:
    """End ``spans`` as errors of type ``Incomplete`` (see :func:`end_open_spans`)."""
    end_ns = time.time_ns()
    ended = 0
    for span in spans:
        try:
            if span.event.error is None:
                span.set_error(kind=ErrorKind.UNKNOWN, type="Incomplete", message=why)
            else:
                span.event.status = Status.ERROR
            span.set_metadata(incomplete=True)
        except Exception:
            pass  # recorded as it is rather than lost
        try:
            if not span.ended:
                span.end(max(end_ns, span.event.start_ns or 0))
                ended += 1
        except Exception:
            pass
    if ended:
        log_safely(
            logging.INFO,
            "sightline: %d spans %s were ended and recorded as errors of type 'Incomplete'",
            ended,
            why,
        )
    return ended


def _end_spans_open_elsewhere(client: Client, why: str) -> int:
    """At ``close()``: end, as :func:`end_open_spans` does at exit, the spans of ``client``
    still open in a ``with`` block of another thread or task (an agent loop on a daemon
    thread, a task still running), so that they are delivered rather than lost with the
    pipeline. Left to end by themselves (and then counted in ``dropped_after_close``): the
    spans open around this ``close()`` call in its own context (their blocks end right after
    it) and the spans never entered, which their code ends with ``end()``. Never raises."""
    try:
        spans = [span for span in _open_spans({client}) if span._token is not None]
        if not spans:
            return 0
        by_id = {span.event.span_id: span for span in spans}
        around: set[int] = set()  # the ambient span here and its ancestors, by identity
        span = current_span()
        while span is not None and id(span) not in around:
            around.add(id(span))
            parent_id = span.event.parent_span_id
            span = by_id.get(parent_id) if parent_id is not None else None
        return _end_as_incomplete([s for s in spans if id(s) not in around], why)
    except Exception:
        log_safely(logging.DEBUG, "sightline: ending the spans left open failed", exc_info=True)
        return 0


def _count_spans_of_closed_clients() -> None:
    """At exit: the spans of closed clients still open (never ended, or ended by no one yet)
    are counted in their client's ``dropped_after_close``, with its one warning, and are then
    ended without being recorded (the client has nowhere to deliver them). Never raises."""
    try:
        clients = {client for client in list(_CLOSED_CLIENTS) if client.enabled}
        if not clients:
            return
        for span in _open_spans(clients):
            if not span._ended:
                span._ended = True
                span._client._count_after_close()
    except Exception:
        log_safely(logging.DEBUG, "sightline: counting the spans left open failed", exc_info=True)


class _ForkMarker:
    """The object multiprocessing's after-fork registry holds (it only keeps weak references)."""


_FORK_MARKER = _ForkMarker()
_multiprocessing_prepared = False


def _prepare_multiprocessing_children() -> None:
    """Before a fork: if multiprocessing is in use, have its children close our clients.

    multiprocessing ends a forked child with ``os._exit``, which skips ``atexit``; its own exit
    hook (``util.Finalize``, run by ``Process._bootstrap``) is where the child can still flush.
    Finalizers registered before the fork are cleared in the child, so ours is registered there,
    by an after-fork callback.
    """
    global _multiprocessing_prepared
    util = sys.modules.get("multiprocessing.util")
    if util is None or _multiprocessing_prepared:
        return
    _multiprocessing_prepared = True
    util.register_after_fork(_FORK_MARKER, _close_clients_when_multiprocessing_child_exits)


def _close_clients_when_multiprocessing_child_exits(_marker: object) -> None:
    from multiprocessing import util

    util.Finalize(None, _close_all_at_exit, exitpriority=10)


def trace(
    name: str,
    *,
    agent: str | None = None,
    session_id: str | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    input: Any = None,
) -> Span:
    """A ``run`` span on the global client; use it as a (sync or async) context manager::

    with sightline.trace("support-ticket", agent="support-bot") as run:
        with run.step("tool", "search_kb") as step:
            step.add_metadata({"hits": 3})
    """
    return get_client().trace(
        name, agent=agent, session_id=session_id, tags=tags, metadata=metadata, input=input
    )


def instrument(names: Iterable[str] | None = None, client: Client | None = None) -> None:
    """Switch on global instrumentation of installed integrations (all, or those named)."""
    (client or get_client()).instrument(names)


def uninstrument(names: Iterable[str] | None = None) -> None:
    """Switch global instrumentation off again (all integrations, or those named)."""
    get_client().uninstrument(names)


def flush(timeout: float | None = 5.0) -> bool:
    """Flush the global client (``timeout`` as for :meth:`Client.flush`)."""
    return get_client().flush(timeout)
