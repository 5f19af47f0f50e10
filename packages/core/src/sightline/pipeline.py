"""The pipeline: caller thread → bounded queue → background worker → processors → batches →
exporters, each exporter on its own thread so that a slow or failing one never blocks the caller
or the others.

``submit`` is O(1) on the caller's thread: one length check and one ``deque.append`` (atomic under
the GIL); no serialization, no I/O, no lock. A full queue drops the event and counts it.
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from sightline.event import Event
from sightline.logs import log_safely
from sightline.threads import start_background_thread


class ProcessingFailed(Exception):
    """Raised by the processing step when a built-in processor failed on an event (already
    logged): the pipeline drops the event, which may be unredacted, and counts it in
    ``processor_errors``."""


__all__ = ["ExportResult", "Exporter", "Pipeline", "time_left", "timeout_seconds"]

# The longest wait threading accepts (about 292 years): "no limit" in practice.
_MAX_WAIT = threading.TIMEOUT_MAX


def timeout_seconds(timeout: float | None) -> float:
    """A ``timeout`` of ``flush()`` / ``close()`` as the seconds to wait: ``None`` means no
    limit, a value longer than ``threading.TIMEOUT_MAX`` (``float("inf")``) is that maximum, and a
    negative one (or NaN) is 0, an immediate check::

        >>> timeout_seconds(None) == timeout_seconds(float("inf")) == threading.TIMEOUT_MAX
        True
        >>> timeout_seconds(-1)
        0.0

    Raises ``TypeError`` for a value that is not a number (``"5"``).
    """
    if timeout is None:
        return _MAX_WAIT
    if not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"timeout must be a number of seconds, or None for no limit; got {timeout!r}"
        )
    seconds = float(timeout)
    if not seconds > 0:  # negative, zero or NaN
        return 0.0
    return min(seconds, _MAX_WAIT)


def time_left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``time.monotonic()`` value), as threading's waits take
    them: never negative, never more than ``threading.TIMEOUT_MAX``."""
    return min(max(0.0, deadline - time.monotonic()), _MAX_WAIT)


class ExportResult(Enum):
    """What an exporter reports for one batch."""

    SUCCESS = "success"
    FAILURE = "failure"


@runtime_checkable
class Exporter(Protocol):
    """Anything with ``export(events) -> ExportResult`` and ``shutdown()``.

    An exporter may also offer ``force_flush(timeout) -> bool`` (called by ``Client.flush``),
    ``stats() -> dict`` (merged into ``Client.stats()``) and ``after_fork()``.

    The pipeline counts, per exporter, the events of batches ``export`` took (``exported``),
    failed (raised or returned ``FAILURE``: ``failed``), dropped from a full backlog
    (``dropped``) and abandoned at close (``abandoned``). An exporter's own ``stats()`` never
    replaces these: a count it reports under one of these names is *added* to the pipeline's
    (so an exporter counts there only what it lost after ``export`` returned ``SUCCESS``);
    another value under such a name is shown as ``exporter_<name>``.
    """

    def export(self, events: Sequence[Event]) -> ExportResult: ...

    def shutdown(self) -> None: ...


class _Counter:
    """A counter several threads add to; the lock is taken only by writers on cold paths."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, amount: int = 1) -> int:
        """Add ``amount``; returns the new value (exact, even when threads add at once)."""
        with self._lock:
            self.value += amount
            return self.value


class ExporterWorker:
    """One exporter behind its own thread and a bounded queue of batches.

    At most ``max_pending`` events wait for one exporter; past that its oldest batch is dropped
    and counted (the other exporters are not held back). Small batches that queued up while the
    exporter was busy are coalesced, up to ``batch_size`` events, into one export call.
    """

    def __init__(self, name: str, exporter: Exporter, max_pending: int, batch_size: int) -> None:
        self.name = name
        self.exporter = exporter
        self.max_pending = max_pending
        self.batch_size = batch_size
        self._reset_counts()
        self._reset()

    def _reset_counts(self) -> None:
        # New objects, not zeroed ones: in a forked child, a counter's lock may have been taken
        # by a thread of the parent at the fork.
        self.exported = _Counter()
        self.failed = _Counter()
        self.dropped = _Counter()
        self.abandoned = _Counter()
        self._logged_failure = False
        self._logged_drop = False

    def _reset(self) -> None:
        self._batches: deque[Any] = deque()
        self._pending = 0
        self._overflow: list[list[Event]] = []
        self._cond = threading.Condition()
        self._busy = False
        self._inflight: list[Event] | None = None  # the batch export() is working on
        self._inflight_abandoned = False
        self._stopping = False
        self._shut_down = False  # exporter.shutdown() called (once)
        self._shut_down_on_exit = False  # close() ran on this exporter's own thread
        self._thread: threading.Thread | None = None

    def after_fork(self) -> None:
        """In a forked child: forget the parent's batches, thread and counts."""
        self._reset()
        self._reset_counts()
        hook = getattr(self.exporter, "after_fork", None)
        if callable(hook):
            try:
                hook()
            except Exception:
                log_safely(
                    logging.ERROR,
                    "sightline: exporter %r failed to reset after fork",
                    self.name,
                    exc_info=True,
                )

    def put(self, batch: list[Event] | Callable[[], object]) -> None:
        """Queue a batch (or a call to make on the exporter's thread, in order with batches)."""
        with self._cond:
            if self._shut_down:
                # Handed over after close() stopped this exporter: it will never get them.
                if not callable(batch):
                    self.abandoned.add(len(batch))
                return
            # First, so that a batch is taken only when there is a thread to export it.
            self._start_locked()
            if not callable(batch):
                self._pending += len(batch)
                while self._pending > self.max_pending:
                    self._drop_oldest()
            self._batches.append(batch)
            self._cond.notify()
        if self._overflow:
            self._persist_overflow()

    def start(self) -> None:
        """Start this exporter's thread, if it has none yet and is not shut down."""
        with self._cond:
            if not self._shut_down:
                self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = start_background_thread(self._run, f"sightline-export-{self.name}")

    def _persist_overflow(self) -> None:
        with self._cond:
            overflow, self._overflow = self._overflow, []
        for batch in overflow:
            if not self._persist(batch):
                self.dropped.add(len(batch))

    def _persist(self, batch: list[Event]) -> bool:
        """Hand events the exporter will not get to in time to its ``persist`` (the http spool)."""
        try:
            self.exporter.persist(batch)  # type: ignore[attr-defined]
        except Exception:
            log_safely(
                logging.ERROR,
                "sightline: exporter %r failed to persist a batch",
                self.name,
                exc_info=True,
            )
            return False
        return True

    def persist_pending(self) -> None:
        """After the close deadline: persist the batches still queued, if the exporter can."""
        if not callable(getattr(self.exporter, "persist", None)):
            return
        with self._cond:
            pending = [b for b in self._batches if not callable(b)]
            self._batches = deque(b for b in self._batches if callable(b))
            self._pending = 0
        for batch in pending:
            if not self._persist(batch):
                self.dropped.add(len(batch))

    def _abandon(self) -> None:
        """After the close deadline: count (and forget) what this exporter will never get to.

        The batch in flight is counted too; for an exporter with ``persist`` it is the
        exporter's to keep (the http spool takes it at shutdown), so only the others count it.
        """
        persists = callable(getattr(self.exporter, "persist", None))
        with self._cond:
            lost = sum(len(b) for b in self._batches if not callable(b))
            self._batches.clear()
            self._pending = 0
            if self._inflight is not None and not persists and not self._inflight_abandoned:
                self._inflight_abandoned = True
                lost += len(self._inflight)
        if lost:
            self.abandoned.add(lost)
            log_safely(
                logging.WARNING,
                "sightline: exporter %r did not finish by the close deadline; %d events it had "
                "not exported are abandoned (counted as 'abandoned' in client.stats())",
                self.name,
                lost,
            )

    def _drop_oldest(self) -> None:
        # Queued calls (register_agent...) are kept; the oldest batch of events goes.
        index = next(i for i, b in enumerate(self._batches) if not callable(b))
        lost = self._batches[index]
        del self._batches[index]
        self._pending -= len(lost)
        if callable(getattr(self.exporter, "persist", None)):
            self._overflow.append(lost)  # persisted by put(), outside the lock
            return
        self.dropped.add(len(lost))
        if not self._logged_drop:
            self._logged_drop = True
            log_safely(
                logging.WARNING,
                "sightline: exporter %r is falling behind; dropping its oldest events "
                "(counted in client.stats())",
                self.name,
            )

    def _take(self) -> Any:
        """The next call, or the next batches coalesced up to batch_size events."""
        first = self._batches.popleft()
        if callable(first):
            return first
        batch = first
        while self._batches and not callable(self._batches[0]):
            if len(batch) + len(self._batches[0]) > self.batch_size:
                break
            if batch is first:
                batch = list(first)
            batch.extend(self._batches.popleft())
        self._pending -= len(batch)
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._batches and not self._stopping:
                    self._cond.wait()
                if not self._batches and self._stopping:
                    break
                batch = self._take()
                self._busy = True
                if not callable(batch):
                    self._inflight = batch
            try:
                self._handle(batch)
            except Exception as exc:
                # Nothing in _handle should raise; if something does, this thread lives on
                # (it is the only one this exporter has) and the batch is counted as failed.
                if not callable(batch):
                    self.failed.add(len(batch))
                log_safely(
                    logging.ERROR,
                    "sightline: exporter %r: delivering a batch failed (%s); counted as failed",
                    self.name,
                    type(exc).__name__,
                )
            finally:
                with self._cond:
                    self._busy = False
                    self._inflight = None
                    self._cond.notify_all()
        if self._shut_down_on_exit:
            self._shutdown_exporter()

    def _handle(self, batch: list[Event] | Callable[[], object]) -> None:
        if not callable(batch):
            self._export(batch)
            return
        try:
            batch()
        except Exception:
            log_safely(
                logging.ERROR, "sightline: exporter %r task failed", self.name, exc_info=True
            )

    def _export(self, batch: list[Event]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception as exc:
            result = ExportResult.FAILURE
            if not self._logged_failure:
                self._logged_failure = True
                log_safely(
                    logging.ERROR,
                    "sightline: exporter %r raised %s: %s (further failures are counted in "
                    "client.stats())",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        with self._cond:
            self._inflight = None
            if self._inflight_abandoned:
                # close() gave up on this batch and counted it; export() returned after all.
                self._inflight_abandoned = False
                self.abandoned.add(-len(batch))
        if result is ExportResult.FAILURE or result is False:
            self.failed.add(len(batch))
        else:
            self.exported.add(len(batch))

    def wait_idle(self, deadline: float) -> bool:
        """Wait until every batch handed over has been exported, or the deadline passes.

        On this exporter's own thread (its ``export`` calling ``flush`` or ``close``) there is
        nothing to wait for: that thread is busy with the caller. True when no batch waits
        behind the one in hand.
        """
        if self._thread is threading.current_thread():
            with self._cond:
                return not self._batches
        with self._cond:
            while self._batches or self._busy:
                remaining = time_left(deadline)
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._shut_down:  # shutdown() has flushed it already
                return True
        flush = getattr(self.exporter, "force_flush", None)
        if callable(flush):
            try:
                return bool(flush(time_left(deadline)))
            except Exception:
                log_safely(
                    logging.ERROR,
                    "sightline: exporter %r failed to flush",
                    self.name,
                    exc_info=True,
                )
                return False
        return True

    def stop(self, deadline: float) -> None:
        """Let the thread export what it has (until ``deadline``), then shut the exporter down.

        Called again (a close that was interrupted, then resumed), it goes on where it was.
        On the exporter's own thread, the shutdown waits until that thread has exported the
        batches queued behind the one in hand.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is threading.current_thread():
            self._shut_down_on_exit = True
            return
        if thread is not None:
            thread.join(time_left(deadline))
            if thread.is_alive():
                self.persist_pending()
                self._abandon()
        self._shutdown_exporter()

    def _shutdown_exporter(self) -> None:
        with self._cond:
            if self._shut_down:
                return
            self._shut_down = True
        try:
            self.exporter.shutdown()
        except Exception:
            log_safely(
                logging.ERROR,
                "sightline: exporter %r failed to shut down",
                self.name,
                exc_info=True,
            )

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "exported": self.exported.value,
            "failed": self.failed.value,
            "dropped": self.dropped.value,
            "abandoned": self.abandoned.value,
            "pending_batches": len(self._batches),
        }
        extra = getattr(self.exporter, "stats", None)
        if callable(extra):
            try:
                for key, value in extra().items():
                    if key not in data:
                        data[key] = value
                    elif value.__class__ is int:
                        data[key] += value  # added, never replaced: see Exporter
                    else:
                        data[f"exporter_{key}"] = value
            except Exception:
                pass
        return data


class Pipeline:
    """Bounded queue, one background worker, processors, batching and isolated exporters."""

    def __init__(
        self,
        exporters: Sequence[tuple[str, Exporter]],
        process: Callable[[Event], bool],
        *,
        queue_size: int = 100_000,
        batch_size: int = 512,
        flush_interval: float = 1.0,
    ) -> None:
        self.capacity = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._process = process
        self.exporters = [
            ExporterWorker(name, exp, max(queue_size, batch_size), batch_size)
            for name, exp in exporters
        ]
        self._reset_counts()
        self._closed = False
        self._close_completed = False
        self._reset()
        _PIPELINES.add(self)

    def _reset_counts(self) -> None:
        # New objects, not zeroed ones: see ExporterWorker._reset_counts.
        self.tracked = 0  # approximate under concurrency; exact counts are below
        self.dropped = _Counter()  # events refused by the full queue
        self.refused = _Counter()  # not events (Client.track): counted as dropped in stats()
        self.dropped_records = _Counter()  # deferred records refused (full queue or closed)
        self.filtered = _Counter()
        self.processor_errors = _Counter()
        self.dropped_after_close = _Counter()
        self._processing_failure_logged = False
        self._worker_failure_logged = False
        self.processed = 0

    def _reset(self) -> None:
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._wake_sent = False
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._stopping = False
        self._worker_stopped = False  # the worker has returned: flush() must not wait for it
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pid = os.getpid()

    # -- caller's thread ----------------------------------------------------------------------

    def submit(self, event: Event | tuple[Any, ...]) -> bool:
        """Enqueue without blocking; False (and counted) when the queue is full or closed.

        Besides events, the queue takes deferred records (see :meth:`Client.defer`).
        """
        queue = self._queue
        if len(queue) >= self.capacity or self._closed:
            self._refuse(event)
            return False
        queue.append(event)
        if self._thread is None:
            self._start()
        if len(queue) >= self.batch_size and not self._wake_sent:
            # One wake-up per full batch: Event.set() takes a lock, too dear for every call.
            self._wake_sent = True
            self._wake.set()
        return True

    def _refuse(self, item: Event | tuple[Any, ...]) -> None:
        """Count, and now and then log, an event or a deferred record the queue did not take."""
        if item.__class__ is tuple:
            self.refuse_record()
            return
        if self._closed:
            self.count_after_close()
            return
        dropped = self.dropped.add()
        if dropped in (1, 1000, 100_000):
            log_safely(
                logging.WARNING,
                "sightline: event queue full (%d); %d events dropped so far",
                self.capacity,
                dropped,
            )

    def refuse_record(self) -> None:
        """A deferred record (:meth:`Client.defer`) the queue did not take (full, or closed):
        counted in stats()['dropped_records'], not with the events, and now and then logged."""
        refused = self.dropped_records.add()
        if refused in (1, 1000, 100_000):
            log_safely(
                logging.WARNING,
                "sightline: %s; %d deferred records of integrations refused so far (counted in "
                "client.stats()['dropped_records']); the events they were to make are missing",
                "the client is closed" if self._closed else f"event queue full ({self.capacity})",
                refused,
            )

    def count_after_close(self) -> None:
        """An event (a span that ends after close(), a log_event...) came too late: counted in
        stats()['dropped_after_close'] and logged once."""
        if self.dropped_after_close.add() == 1:
            log_safely(
                logging.WARNING,
                "sightline: an event was recorded after the client was closed (close() or "
                "shutdown() ran before its span ended); it is dropped, and such events are "
                "counted in client.stats()['dropped_after_close']",
            )

    def start(self) -> None:
        """Start the worker's and the exporters' threads now, not with the first event."""
        try:
            self._start()
        except Exception:  # no thread to be had: tried again with the first event
            log_safely(logging.DEBUG, "sightline: the background worker did not start")

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = start_background_thread(self._run, "sightline-worker")
            # The exporters' threads now too, not at their first batch: a program that ends
            # within the flush interval hands them that batch at exit, where Python 3.12
            # refuses to start a thread (in atexit functions).
            for worker in self.exporters:
                try:
                    worker.start()
                except Exception:  # no thread to be had: tried again with its first batch
                    log_safely(logging.DEBUG, "sightline: an exporter thread did not start")

    # -- worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        wake = self._wake
        while True:
            wake.wait(self.flush_interval)
            wake.clear()
            self._wake_sent = False
            # Take the waiters before draining: a flush registered after the drain emptied the
            # queue may have events enqueued after it, and must wait for the next drain.
            with self._flush_lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            try:
                self._drain(queue)
            except Exception as exc:
                self._worker_failed(exc)
                # The rest of the queue goes in the next pass, and the flush() calls waiting
                # for this one wait for that pass.
                with self._flush_lock:
                    self._flush_waiters[:0] = waiters
                wake.set()
                continue
            for waiter in waiters:
                waiter.set()
            if self._stopping and not queue:
                with self._flush_lock:
                    self._worker_stopped = True
                    waiters, self._flush_waiters = self._flush_waiters, []
                for waiter in waiters:
                    waiter.set()
                return

    def _worker_failed(self, exc: Exception) -> None:
        """A pass of the worker failed outside the steps guarded one by one: the worker lives
        on (it is the only one), the failure is counted in ``processor_errors`` and logged."""
        self.processor_errors.add()
        first, self._worker_failure_logged = not self._worker_failure_logged, True
        log_safely(
            logging.ERROR if first else logging.DEBUG,
            "sightline: the background worker failed (%s) and goes on; counted in processor_errors",
            type(exc).__name__,
        )

    def _drain(self, queue: deque[Any]) -> None:
        batch: list[Event] = []
        process = self._process
        size = self.batch_size
        while True:
            try:
                event = queue.popleft()
            except IndexError:
                break
            if event.__class__ is tuple:
                # A deferred record (Client.defer): its call runs here and the events it ends
                # come back through the queue, to be processed further down this same loop.
                self._replay(event)
                continue
            self.processed += 1
            try:
                keep = process(event)
            except Exception as exc:
                self._processing_failed(exc)
                continue
            if not keep:
                self.filtered.add()
                continue
            batch.append(event)
            if len(batch) >= size:
                self._dispatch(batch)
                batch = []
        if batch:
            self._dispatch(batch)

    def _processing_failed(self, exc: Exception) -> None:
        """Never export an event whose processing failed: it may not be redacted. Counted, and
        logged by type only (the message may quote the event)."""
        self.processor_errors.add()
        if not isinstance(exc, ProcessingFailed):  # that one is logged already
            first, self._processing_failure_logged = not self._processing_failure_logged, True
            log_safely(
                logging.ERROR if first else logging.DEBUG,
                "sightline: event processing failed (%s); the event is dropped and counted in "
                "processor_errors%s",
                type(exc).__name__,
                " (further failures are logged at debug level)" if first else "",
            )

    def _replay(self, record: tuple[Any, ...]) -> None:
        try:
            record[0](record)
        except Exception:
            self.processor_errors.add()
            log_safely(
                logging.ERROR,
                "sightline: a deferred record failed; its events may be incomplete",
                exc_info=True,
            )

    def _dispatch(self, batch: list[Event]) -> None:
        for worker in self.exporters:
            try:
                worker.put(batch)
            except Exception as exc:  # no thread to be had (interpreter exit): counted there
                worker.dropped.add(len(batch))
                log_safely(
                    logging.ERROR,
                    "sightline: could not hand %d events to exporter %r (%s); counted as dropped",
                    len(batch),
                    worker.name,
                    type(exc).__name__,
                )

    def call_exporters(self, method: str, *args: Any) -> None:
        """Call ``exporter.method(*args)`` on each exporter's own thread, where it exists."""
        for worker in self.exporters:
            function = getattr(worker.exporter, method, None)
            if callable(function):
                worker.put(functools.partial(function, *args))

    # -- control ------------------------------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Process everything queued so far and wait until every exporter has taken it.

        ``timeout`` is read by :func:`timeout_seconds`: ``None`` means no limit."""
        deadline = time.monotonic() + timeout_seconds(timeout)
        if self._thread is None and not self._queue:
            return self._wait_exporters(deadline)
        if self._thread is None:
            self._start()
        if self._thread is threading.current_thread():
            # Called from the worker itself (a processor, a deferred record): it cannot wait
            # for its own pass; what it has not taken yet is not flushed.
            return not self._queue and self._wait_exporters(deadline)
        done = threading.Event()
        with self._flush_lock:
            if self._worker_stopped:  # closed: nothing more is taken from the queue
                return not self._queue and self._wait_exporters(deadline)
            self._flush_waiters.append(done)
        self._wake.set()
        if not done.wait(time_left(deadline)):
            return False
        return self._wait_exporters(deadline)

    def _wait_exporters(self, deadline: float) -> bool:
        return all([worker.wait_idle(deadline) for worker in self.exporters])

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, stop the worker and shut every exporter down.

        Idempotent: once a close has completed, a later call returns True. A close that did
        not complete (interrupted by ``KeyboardInterrupt``) is taken up again by the next call.
        ``timeout`` is read by :func:`timeout_seconds`: ``None`` means no limit.
        """
        if self._close_completed:
            return True
        deadline = time.monotonic() + timeout_seconds(timeout)
        flushed = self.flush(time_left(deadline))
        self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(time_left(deadline))
        if not flushed:
            self._hand_over_leftovers(thread)
        for worker in self.exporters:
            worker.stop(deadline)
        self._close_completed = True
        return flushed

    def _hand_over_leftovers(self, thread: threading.Thread | None) -> None:
        """After the close deadline, events still queued are processed here and handed to the
        exporters, so that one with ``persist`` (the http spool) keeps them (see ``stop``)."""
        if not any(callable(getattr(w.exporter, "persist", None)) for w in self.exporters):
            return
        queued: list[Any] = []
        while True:
            try:
                queued.append(self._queue.popleft())
            except IndexError:
                break
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(1.0)  # let the worker dispatch the batch it is holding
        leftovers = [item for item in queued if item.__class__ is not tuple]
        records = [item for item in queued if item.__class__ is tuple]
        if records:
            # Deferred records end their events through submit(): let them in once more.
            closed, self._closed = self._closed, False
            try:
                for record in records:
                    self._replay(record)
            finally:
                self._closed = closed
            while self._queue:
                leftovers.append(self._queue.popleft())
        batch: list[Event] = []
        for event in leftovers:
            try:
                keep = self._process(event)
            except Exception as exc:
                self._processing_failed(exc)
                continue
            if keep:
                batch.append(event)
            else:
                self.filtered.add()
        for start in range(0, len(batch), self.batch_size):
            self._dispatch(batch[start : start + self.batch_size])

    def after_fork(self) -> None:
        """In a forked child: forget the parent's queue, threads and counts (the child's
        ``stats()`` count its own events); start afresh when used."""
        self._reset()
        self._reset_counts()
        for worker in self.exporters:
            worker.after_fork()

    def stats(self) -> dict[str, Any]:
        exporters = {worker.name: worker.stats() for worker in self.exporters}
        return {
            "queued": len(self._queue),
            "processed": self.processed,
            "dropped": self.dropped.value + self.refused.value,
            "dropped_records": self.dropped_records.value,
            "filtered": self.filtered.value,
            "exported": sum(s["exported"] for s in exporters.values()),
            "failed": sum(s["failed"] for s in exporters.values()),
            "exporter_dropped": sum(s["dropped"] for s in exporters.values()),
            "abandoned": sum(s["abandoned"] for s in exporters.values()),
            # Delivery counts of the exporters that report them (http).
            **{
                key: sum(s.get(key, 0) for s in exporters.values() if isinstance(s.get(key), int))
                for key in ("sent", "retried", "spooled", "evicted")
            },
            "processor_errors": self.processor_errors.value,
            "dropped_after_close": self.dropped_after_close.value,
            "exporters": exporters,
        }


_PIPELINES: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pipeline in list(_PIPELINES):
        if not pipeline._closed:
            pipeline.after_fork()
        else:  # a client the parent closed: nothing to restart, but its counts are the parent's
            pipeline._reset_counts()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
