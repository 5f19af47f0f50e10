"""Build the span tree from CrewAI events that arrive on several threads, in any order.

``crewai_event_bus`` runs synchronous handlers on a thread pool, so the handler of an end event
can run before the handler of its start, and a child's before its parent's. CrewAI links events
by id: ``parent_event_id`` names the enclosing scope, ``started_event_id`` the start an end event
closes. :class:`SpanTree` keeps a map from CrewAI event id to span; an event whose parent (or
start) has not been seen yet waits until it arrives, then everything that waited on it is
replayed in ``emission_sequence`` order. An event still waiting after ``wait_seconds`` (its
parent was emitted before instrumentation began, or by a class nobody listens to) is recorded
anyway, under the ambient span of its emitter.

A kickoff that ends by an exception CrewAI does not catch (``asyncio`` cancellation, a
``KeyboardInterrupt``, any other ``BaseException``) emits no end event: :meth:`SpanTree.abort`
ends what is still open under its root, as errors. Nothing stays open for ever: spans still open
at :meth:`SpanTree.close`, or forgotten to keep memory bounded, are ended as errors of type
``Incomplete``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from sightline import ErrorKind, Span
from sightline.client import get_client
from sightline_crewai.mapping import END, FRAMEWORK, POINT, RULES, CrewEventRule, event_time_ns

__all__ = ["SpanTree", "span_id_of"]

logger = logging.getLogger("sightline")

_MAX_REMEMBERED = 1024  # aborted kickoffs waiting to be applied, tool rejections seen
_MAX_DEPTH = 256  # a parent chain longer than this is not followed (it would be a cycle)

# For each start class, the attributes that identify it to an end event lacking started_event_id.
_PAIR_KEYS: dict[str, tuple[str, ...]] = {}
for _rule in RULES.values():
    if _rule.phase == END and _rule.start and _rule.pair:
        _PAIR_KEYS[_rule.start] = tuple(dict.fromkeys(_PAIR_KEYS.get(_rule.start, ()) + _rule.pair))


def span_id_of(event_id: Any) -> str | None:
    """The Sightline span id of the span a CrewAI start event opens: the low 64 bits of its
    ``event_id`` (a UUID4 string), so that code running inside a tool knows it before CrewAI's
    handler pool has recorded the tool's start. ``None`` for an id that is not a UUID string."""
    if event_id.__class__ is not str or len(event_id) != 36 or event_id[23] != "-":
        return None
    try:
        low = int(event_id[19:23] + event_id[24:], 16)
    except ValueError:
        return None
    return "%016x" % (low or 1)


class _Item:
    """One received event with what is needed to record it later, on any thread."""

    __slots__ = ("agent", "ambient", "client", "event", "kind", "rule", "session_id", "source")

    def __init__(
        self,
        kind: str,
        rule: CrewEventRule,
        event: Any,
        source: Any,
        ambient: Span | None,
        client: Any,
        agent: str | None,
        session_id: str | None,
    ) -> None:
        self.kind = kind
        self.rule = rule
        self.event = event
        self.source = source
        self.ambient = ambient
        self.client = client
        self.agent = agent
        self.session_id = session_id

    @property
    def event_id(self) -> str | None:
        return getattr(self.event, "event_id", None)

    @property
    def seq(self) -> int:
        seq = getattr(self.event, "emission_sequence", None)
        return seq if isinstance(seq, int) else 0


class _Node:
    """A CrewAI start event seen: its span (``None`` for a scope) and the span children use."""

    __slots__ = ("aborted", "anchor", "ended", "keys", "kind", "parent", "seq", "span")

    def __init__(
        self,
        kind: str,
        span: Span | None,
        anchor: Span | None,
        seq: int,
        keys: tuple[Any, ...],
        parent: str | None,
    ) -> None:
        self.kind = kind
        self.span = span
        self.anchor = anchor
        self.seq = seq
        self.keys = keys
        self.parent = parent  # the CrewAI event id of the enclosing node, if it was seen
        self.ended = span is None
        self.aborted = False  # in a kickoff that ended without its end event


class SpanTree:
    """CrewAI events in, Sightline spans out, whatever the order of arrival.

    ``client`` is the Sightline client to record to; ``None`` means the global client, looked up
    when each event arrives. Thread-safe; never raises.
    """

    def __init__(
        self, client: Any = None, *, wait_seconds: float = 5.0, max_nodes: int = 20_000
    ) -> None:
        self.client = client
        self.wait_seconds = wait_seconds
        self.max_nodes = max_nodes
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._orphans: dict[str, list[_Item]] = {}  # parent event id -> items waiting for it
        # (start event id, start class) -> the end that arrived first
        self._early_ends: dict[tuple[str, str | None], _Item] = {}
        self._waiting: deque[tuple[float, _Item]] = deque()
        # kickoffs that ended without their end event: (root event id, exception, when)
        self._aborts: deque[tuple[str, BaseException, int]] = deque(maxlen=_MAX_REMEMBERED)
        # (parent event id, tool name) -> emission sequence of the latest rejected tool call
        self._rejections: OrderedDict[tuple[Any, Any], int] = OrderedDict()
        self._warned_full = False
        self._warned_error = False

    # -- input ------------------------------------------------------------------------------------

    def receive(
        self,
        kind: str,
        rule: CrewEventRule,
        event: Any,
        source: Any = None,
        ambient: Span | None = None,
        *,
        agent: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Take one event (``kind`` is its class name). ``ambient`` is the Sightline span that was
        current where the event was emitted; the root of a CrewAI tree attaches under it."""
        try:
            client = self.client if self.client is not None else get_client()
            if not client.enabled:
                return
            if rule.choose is not None:
                chosen = rule.choose(event, source)
                if chosen is None:
                    return
                rule = chosen
            item = _Item(kind, rule, event, source, ambient, client, agent, session_id)
            with self._lock:
                if (rule.rejection or rule.repeats_rejection) and self._repeated(item):
                    return
                if rule.phase == END:
                    self._end(item)
                else:
                    self._start(item)
                if self._waiting:
                    self._expire(time.monotonic())
                if len(self._nodes) > self.max_nodes:
                    self._evict()
        except Exception:
            self._report(f"event {kind} not recorded")

    def run_parent(
        self, stack: tuple[tuple[str, str], ...], recorded: frozenset[str]
    ) -> tuple[str, str, int, Any] | None:
        """``(trace id, span id, start time, client)`` of the innermost CrewAI span open in the code
        whose scope stack (CrewAI's ``(event id, event type)`` pairs, outermost first) is
        ``stack``, or ``None``. ``recorded``: the event types that open a span.

        The handlers run on CrewAI's pool, so the innermost start (the tool being run) may not
        be recorded yet: its span id is known anyway (:func:`span_id_of`), its trace is that of
        the nearest start already recorded, and that start's time stands for its own (it is
        after any span that was ambient when the kickoff began, and before any span opened
        inside the tool, which is all the comparison with the ambient span needs). Reads the
        nodes without the lock (single dict reads), never raises.
        """
        nodes = self._nodes
        pending: str | None = None
        for event_id, event_type in reversed(stack):
            node = nodes.get(event_id)
            if node is None:
                if pending is None:
                    if event_type not in recorded:
                        continue  # a scope not recorded yet: look further out
                    pending = span_id_of(event_id)
                    if pending is None:
                        return None
                continue
            if node.aborted or (node.span is not None and node.ended):
                return None  # a stale scope left on the stack by an interrupted kickoff
            span = node.anchor
            if span is None or not span.is_recording:
                return None
            event = span.event
            return event.trace_id, pending or event.span_id, event.start_ns, span.client
        return None

    def pending(self) -> int:
        """How many events wait for a parent or a start."""
        with self._lock:
            return sum(len(items) for items in self._orphans.values()) + len(self._early_ends)

    def flush(self) -> None:
        """Record every waiting event now, with the best parent known."""
        try:
            with self._lock:
                self._expire(float("inf"))
        except Exception:
            self._report("flush failed")

    def abort(self, root_id: str, error: BaseException, at_ns: int | None = None) -> None:
        """The kickoff whose start event is ``root_id`` ended by ``error`` without emitting its
        end event. Remembered until :meth:`apply_aborts` (CrewAI's handlers for what it emitted
        before may still be running); never raises."""
        try:
            at = at_ns if at_ns is not None else time.time_ns()
            with self._lock:
                self._aborts.append((root_id, error, at))
        except Exception:
            self._report("abort not recorded")

    def apply_aborts(self) -> None:
        """End, as errors, the spans still open under every kickoff :meth:`abort` was told of."""
        try:
            with self._lock:
                while self._aborts:
                    root_id, error, at = self._aborts.popleft()
                    self._end_under(root_id, error, at)
        except Exception:
            self._report("ending an interrupted kickoff failed")

    def open_spans(self) -> int:
        """How many spans are open (started, not ended yet)."""
        with self._lock:
            return sum(1 for node in self._nodes.values() if not node.ended)

    def close(self) -> None:
        """Flush, end what aborted kickoffs left open, then end the spans still open (errors
        of type ``Incomplete``) and forget everything."""
        self.flush()
        self.apply_aborts()
        try:
            with self._lock:
                for node in self._nodes.values():
                    self._end_incomplete(node, "still open when Sightline stopped recording CrewAI")
                self._nodes.clear()
                self._rejections.clear()
        except Exception:
            self._report("close failed")

    def _end_under(self, root_id: str, error: BaseException, at: int) -> None:
        under = [node for node in self._nodes.values() if self._descends(node, root_id)]
        for node in under:
            node.aborted = True
        open_under = [node for node in under if not node.ended and node.span is not None]
        if not open_under:
            return
        message = str(error) or f"the kickoff ended by {type(error).__name__}"
        logger.debug(
            "sightline: crewai: a kickoff ended by %s; %d spans ended as errors",
            type(error).__name__,
            len(open_under),
        )
        for node in open_under:
            span = node.span
            if span is None:
                continue
            node.ended = True
            span.set_error(kind=ErrorKind.ORCHESTRATION, type=type(error).__name__, message=message)
            span.set_metadata(incomplete=True)
            span.end(max(at, span.event.start_ns or 0))

    def _descends(self, node: _Node, root_id: str) -> bool:
        """Whether ``node`` is the start ``root_id`` or nested in it."""
        if self._nodes.get(root_id) is node:
            return True
        parent = node.parent
        for _ in range(_MAX_DEPTH):
            if parent is None:
                return False
            if parent == root_id:
                return True
            above = self._nodes.get(parent)
            parent = above.parent if above is not None else None
        return False

    @staticmethod
    def _end_incomplete(node: _Node, why: str) -> None:
        if node.ended or node.span is None:
            return
        node.ended = True
        node.span.set_error(kind=ErrorKind.UNKNOWN, type="Incomplete", message=why)
        node.span.set_metadata(incomplete=True)
        node.span.end()

    def _repeated(self, item: _Item) -> bool:
        """Note a rejected tool call; for a rule that repeats one, whether it did."""
        key = (getattr(item.event, "parent_event_id", None), getattr(item.event, "tool_name", None))
        if item.rule.rejection:
            self._rejections[key] = max(item.seq, self._rejections.get(key, 0))
            self._rejections.move_to_end(key)
            while len(self._rejections) > _MAX_REMEMBERED:
                self._rejections.popitem(last=False)
            return False
        seen = self._rejections.get(key)
        if seen is not None and seen <= item.seq:
            del self._rejections[key]
            return True
        return False

    def _report(self, what: str) -> None:
        """Log a failure of Sightline's own: the first as a warning, the others quietly."""
        level = logging.DEBUG if self._warned_error else logging.WARNING
        self._warned_error = True
        logger.log(level, "sightline: crewai: %s", what, exc_info=True)

    # -- starts and points --------------------------------------------------------------------

    def _start(self, item: _Item) -> None:
        parent_id = getattr(item.event, "parent_event_id", None)
        if parent_id is None:
            self._open(item, item.ambient)
            return
        node = self._nodes.get(parent_id)
        if node is None:
            self._orphans.setdefault(parent_id, []).append(item)
            self._waiting.append((time.monotonic() + self.wait_seconds, item))
            return
        if node.aborted:
            # CrewAI leaves an interrupted kickoff's scopes on the thread's stack: what starts
            # there later is new work, not part of the kickoff that ended.
            self._open(item, item.ambient)
            return
        self._open(item, node.anchor, parent_id)

    def _open(self, item: _Item, parent: Span | None, parent_id: str | None = None) -> None:
        rule, event = item.rule, item.event
        start_ns = event_time_ns(event)
        event_id = item.event_id
        if rule.event_type is None:  # a scope: children attach to what it is nested in
            if event_id is not None:
                self._nodes[event_id] = _Node(item.kind, None, parent, item.seq, (), parent_id)
        else:
            span = self._start_span(item, rule, parent, start_ns, span_id=span_id_of(event_id))
            if rule.phase == POINT:
                span.end(start_ns)
                return
            if event_id is None:
                span.end(start_ns)
                return
            keys = tuple(getattr(event, key, None) for key in _PAIR_KEYS.get(item.kind, ()))
            self._nodes[event_id] = _Node(item.kind, span, span, item.seq, keys, parent_id)
        if event_id is None:
            return
        end = self._early_ends.pop((event_id, item.kind), None)
        if end is not None:
            self._close(self._nodes[event_id], end)
        children = self._orphans.pop(event_id, None)
        if children:
            children.sort(key=lambda child: child.seq)
            for child in children:
                self._start(child)

    def _start_span(
        self,
        item: _Item,
        rule: CrewEventRule,
        parent: Span | None,
        start_ns: int | None,
        *,
        fill: bool = True,
        span_id: str | None = None,
    ) -> Span:
        event, source = item.event, item.source
        try:
            name = rule.name(event, source) if rule.name else item.kind
        except Exception:
            name = item.kind
        agent = item.agent
        if agent is None and rule.agent is not None:
            try:
                agent = rule.agent(event, source)
            except Exception:
                agent = None
        span: Span = item.client.start_span(
            name,
            rule.event_type,
            parent=parent,
            framework=FRAMEWORK,
            agent=agent,
            session_id=item.session_id,
            start_ns=start_ns,
            span_id=span_id,
        )
        if fill and rule.fill is not None:
            rule.fill(span, event, source)
        return span

    # -- ends -----------------------------------------------------------------------------------

    def _end(self, item: _Item) -> None:
        start_id = getattr(item.event, "started_event_id", None) or self._pair(item)
        node = self._nodes.get(start_id) if start_id else None
        if node is not None and node.kind != item.rule.start:
            # CrewAI popped the wrong scope (it does after emitting a failure twice): find the
            # right start by kind, or drop the end rather than close someone else's span.
            start_id = self._pair(item)
            node = self._nodes.get(start_id) if start_id else None
            if node is None:
                logger.debug("sightline: crewai: %s closes nothing open; ignored", item.kind)
                return
        if node is not None:
            self._close(node, item)
        elif start_id:
            self._early_ends[(start_id, item.rule.start)] = item
            self._waiting.append((time.monotonic() + self.wait_seconds, item))
        else:
            self._record_unpaired(item)

    def _close(self, node: _Node, item: _Item) -> None:
        if node.ended or node.span is None or node.kind != item.rule.start:
            return
        node.ended = True
        if item.rule.fill is not None:
            item.rule.fill(node.span, item.event, item.source)
        node.span.end(event_time_ns(item.event))

    def _pair(self, item: _Item) -> str | None:
        """The start an end event closes when CrewAI did not say: the latest open start of the
        right class, with the same identifying attributes, emitted before it."""
        start_kind = item.rule.start
        if start_kind is None:
            return None
        wanted = tuple(getattr(item.event, key, None) for key in _PAIR_KEYS.get(start_kind, ()))
        seq = item.seq
        best: tuple[int, str] | None = None
        for event_id, node in self._nodes.items():
            if node.kind != start_kind or node.ended or node.keys != wanted:
                continue
            if seq and node.seq > seq:
                continue
            if best is None or node.seq >= best[0]:
                best = (node.seq, event_id)
        return best[1] if best else None

    def _record_unpaired(self, item: _Item) -> None:
        """An end whose start never arrived: one span from what the end event knows."""
        start_rule = RULES.get(item.rule.start or "")
        if start_rule is None or start_rule.event_type is None:
            return
        parent_id = getattr(item.event, "parent_event_id", None)
        node = self._nodes.get(parent_id) if parent_id else None
        parent = node.anchor if node is not None else item.ambient
        end_ns = event_time_ns(item.event)
        span = self._start_span(item, start_rule, parent, end_ns, fill=False)
        span.set_metadata(start_missing=True)
        if item.rule.fill is not None:
            item.rule.fill(span, item.event, item.source)
        span.end(end_ns)

    # -- waiting --------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Record the events that waited too long (or all of them, for ``now=inf``)."""
        while self._waiting and self._waiting[0][0] <= now:
            _, item = self._waiting.popleft()
            if item.rule.phase == END:
                start_id = getattr(item.event, "started_event_id", None)
                key = (str(start_id), item.rule.start)
                if start_id and self._early_ends.get(key) is item:
                    del self._early_ends[key]
                    if start_id not in self._nodes:  # else it named a start of another kind
                        self._record_unpaired(item)
                continue
            parent_id: str | None = getattr(item.event, "parent_event_id", None)
            waiting = self._orphans.get(parent_id) if parent_id else None
            if parent_id is None or not waiting or item not in waiting:
                continue
            waiting.remove(item)
            if not waiting:
                del self._orphans[parent_id]
            logger.debug(
                "sightline: crewai: parent of %s never arrived; recorded under the ambient span",
                item.kind,
            )
            self._open(item, item.ambient)

    def _evict(self) -> None:
        """Forget the oldest finished nodes (late children of them then wait, then attach to
        the ambient span); open ones too if that is not enough, so memory stays bounded: those
        are ended first, as errors of type ``Incomplete``, so that they are exported."""
        target = self.max_nodes * 3 // 4
        excess = len(self._nodes) - target
        for event_id in [key for key, node in self._nodes.items() if node.ended][:excess]:
            del self._nodes[event_id]
        excess = len(self._nodes) - target
        if excess > 0:
            if not self._warned_full:
                self._warned_full = True
                logger.warning(
                    "sightline: crewai: more than %d spans open; the oldest are ended as "
                    "incomplete and forgotten",
                    self.max_nodes,
                )
            for event_id in list(self._nodes)[:excess]:
                self._end_incomplete(
                    self._nodes.pop(event_id),
                    f"forgotten while open: more than {self.max_nodes} CrewAI spans were open",
                )
