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

Memory: a span that has ended is forgotten at once (its node keeps only the ids a late child
needs, :class:`_Anchor`), and the nodes of a finished kickoff are dropped ``wait_seconds`` after
its root ended (long enough for the handlers CrewAI's pool still runs for it).

Token usage of a ``run``: the sum of the LLM calls made inside the kickoff (nested crews
included), taken from their own events, so that a crew or LLM object used for several kickoffs,
even concurrent ones, reports each kickoff's own tokens. The run's end waits (at most
``wait_seconds``) for the calls still open under it and for events still waiting for a parent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from sightline import ErrorKind, EventType, Span
from sightline.client import get_client
from sightline.logs import log_safely
from sightline_crewai.mapping import (
    END,
    FRAMEWORK,
    POINT,
    RULES,
    UNEXPORTED_RULES,
    CrewEventRule,
    event_time_ns,
)

__all__ = ["SpanTree", "span_id_of"]


_MAX_REMEMBERED = 1024  # aborted kickoffs waiting to be applied, tool rejections seen
_MAX_DEPTH = 256  # a parent chain longer than this is not followed (it would be a cycle)

# For each start class, the attributes that identify it to an end event lacking started_event_id.
_PAIR_KEYS: dict[str, tuple[str, ...]] = {}
for _rule in (*RULES.values(), *UNEXPORTED_RULES.values()):
    if _rule.phase == END and _rule.start and _rule.pair:
        _PAIR_KEYS[_rule.start] = tuple(dict.fromkeys(_PAIR_KEYS.get(_rule.start, ()) + _rule.pair))

_FLOW_START, _METHOD_START = "FlowStartedEvent", "MethodExecutionStartedEvent"


def _pair_keys(start_kind: str, event: Any, source: Any) -> tuple[Any, ...]:
    """What identifies a start of ``start_kind`` for the end that closes it: the start's (or
    the end's) pair attributes; for a flow method also the flow (the event's source), so that
    two runs of the same flow class going on at once never close each other's methods."""
    keys = tuple(getattr(event, key, None) for key in _PAIR_KEYS.get(start_kind, ()))
    return (*keys, id(source)) if start_kind == _METHOD_START else keys


# Why an item waits (see SpanTree._waiting).
_ORPHAN, _EARLY_END, _DEFERRED_END = 0, 1, 2


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


class _Anchor:
    """What a child needs of the span it nests in: ids, identity fields, start time, client.

    Nodes keep this rather than the span, so that a span's payload (messages, outputs) is not
    retained once it has ended."""

    __slots__ = ("agent", "client", "session_id", "span_id", "start_ns", "trace_id")

    def __init__(self, span: Span) -> None:
        event = span.event
        self.trace_id: str = event.trace_id
        self.span_id: str = event.span_id
        self.agent: str | None = event.agent
        self.session_id: str | None = event.session_id
        self.start_ns: int = event.start_ns
        self.client: Any = span.client

    @classmethod
    def of(cls, span: Span | None) -> _Anchor | None:
        return cls(span) if span is not None and span.is_recording else None


class _Tally:
    """The token usage of the LLM calls made inside one kickoff, and how many of its calls (and
    nested kickoffs) are still open."""

    __slots__ = ("input", "node", "open", "outer", "output", "pending", "total")

    def __init__(self, node: _Node, outer: _Tally | None) -> None:
        self.node = node
        self.outer = outer
        self.open = 0
        self.input: int | None = None
        self.output: int | None = None
        self.total: int | None = None
        self.pending: _Item | None = None  # the kickoff's end, waiting for its open calls

    def add(self, usage: Any) -> None:
        if usage is None:
            return
        self.input = _plus(self.input, usage.input_tokens)
        self.output = _plus(self.output, usage.output_tokens)
        self.total = _plus(self.total, usage.total_tokens)


def _plus(total: int | None, count: Any) -> int | None:
    return total if not isinstance(count, int) else (total or 0) + count


class _Node:
    """A CrewAI start event seen: its span while open (``None`` for a scope, and once ended)
    and the anchor its children attach to."""

    __slots__ = (
        "aborted", "anchor", "counts_in", "ended", "event_id", "keys", "kind", "parent", "root",
        "scope", "seq", "span", "tally",
    )  # fmt: skip

    def __init__(
        self,
        event_id: str,
        kind: str,
        span: Span | None,
        anchor: _Anchor | None,
        seq: int,
        keys: tuple[Any, ...],
        parent: str | None,
    ) -> None:
        self.event_id = event_id
        self.kind = kind
        self.span = span
        self.anchor = anchor
        self.seq = seq
        self.keys = keys
        self.parent = parent  # the CrewAI event id of the enclosing node, if it was seen
        self.scope = span is None
        self.ended = span is None
        self.aborted = False  # in a kickoff that ended without its end event
        self.root: str | None = None  # the node whose end lets this one be forgotten
        self.tally: _Tally | None = None  # the usage of the kickoff this node is in
        self.counts_in: _Tally | None = None  # the tally waiting for this node to end


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
        # id(item) -> (deadline, why, item), oldest first (every deadline is now + wait_seconds)
        self._waiting: OrderedDict[int, tuple[float, int, _Item]] = OrderedDict()
        # kickoffs whose end waits for the calls still open in them
        self._deferred: list[_Tally] = []
        # root event id -> event ids of the nodes forgotten when it has ended
        self._members: dict[str, list[str]] = {}
        self._retiring: deque[tuple[float, str]] = deque()  # (when, root event id)
        # kickoffs that ended without their end event: (root event id, exception, when)
        self._aborts: deque[tuple[str, BaseException, int]] = deque(maxlen=_MAX_REMEMBERED)
        # (parent event id, tool name) -> emission sequence of the latest rejected tool call
        self._rejections: OrderedDict[tuple[Any, Any], int] = OrderedDict()
        # start event id -> the input its span ran with, told before the start arrived
        self._inputs: OrderedDict[str, Any] = OrderedDict()
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
            if rule.as_emitted is not None:
                event = rule.as_emitted(event)
            item = _Item(kind, rule, event, source, ambient, client, agent, session_id)
            with self._lock:
                if (rule.rejection or rule.repeats_rejection) and self._repeated(item):
                    return
                if rule.phase == END:
                    self._end(item)
                else:
                    self._start(item)
                if self._deferred:
                    self._settle()
                if self._waiting or self._retiring:
                    now = time.monotonic()
                    self._expire(now)
                    self._retire(now)
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
        pending_type = ""
        for event_id, event_type in reversed(stack):
            node = nodes.get(event_id)
            if node is None:
                if pending is None:
                    if event_type not in recorded:
                        continue  # a scope not recorded yet: look further out
                    pending, pending_type = span_id_of(event_id), event_type
                    if pending is None:
                        return None
                continue
            if node.aborted and pending is not None:
                # A scope an interrupted kickoff left on the stack, under the innermost start
                # (not recorded yet): that start belongs where it will be recorded (_start).
                live = self._live_ancestor(node, pending_type == "method_execution_started")
                if live is None:
                    return None
                node = live
            elif node.aborted or (not node.scope and node.ended):
                return None  # a stale scope left on the stack by an interrupted kickoff
            anchor = node.anchor
            if anchor is None:
                return None
            return anchor.trace_id, pending or anchor.span_id, anchor.start_ns, anchor.client
        return None

    def settle(self) -> None:
        """Do what waits for time to pass: record the events that waited ``wait_seconds``, end
        the kickoffs whose end waited, forget the kickoffs that ended. Never raises."""
        try:
            with self._lock:
                now = time.monotonic()
                self._expire(now)
                self._settle()
                self._retire(now)
        except Exception:
            self._report("settling failed")

    def replace_input(self, event_id: str, value: Any) -> None:
        """The work CrewAI's start event ``event_id`` opened ran with ``value`` (a governance
        policy replaced a tool's arguments): record that as the span's input, now or when the
        start arrives. Never raises."""
        try:
            with self._lock:
                node = self._nodes.get(event_id)
                if node is not None:
                    if node.span is not None:
                        node.span.set_input(value)
                    return
                self._inputs[event_id] = value
                while len(self._inputs) > _MAX_REMEMBERED:
                    self._inputs.popitem(last=False)
        except Exception:
            self._report("replaced arguments not recorded")

    def agent_within(self, stack: tuple[tuple[str, str], ...]) -> str | None:
        """The ``agent`` of the innermost recorded span among CrewAI's scopes ``stack`` (event
        id and type pairs, outermost first), or ``None``. Reads without the lock."""
        nodes = self._nodes
        for event_id, _ in reversed(stack):
            node = nodes.get(event_id)
            if node is not None and node.anchor is not None and node.anchor.agent:
                return node.anchor.agent
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
            return sum(1 for node in self._nodes.values() if node.span is not None)

    def close(self) -> None:
        """Flush, end what aborted kickoffs left open, then end the spans still open (errors
        of type ``Incomplete``) and forget everything."""
        self.flush()
        self.apply_aborts()
        try:
            with self._lock:
                for node in list(self._nodes.values()):
                    self._end_incomplete(node, "still open when Sightline stopped recording CrewAI")
                self._nodes.clear()
                self._members.clear()
                self._retiring.clear()
                self._deferred.clear()
                self._rejections.clear()
                self._inputs.clear()
        except Exception:
            self._report("close failed")

    def _apply_aborts_within(self, flow: _Node) -> None:
        """Apply the aborts reported for work nested in ``flow`` (not ``flow`` itself)."""
        kept = []
        for entry in self._aborts:
            root = self._nodes.get(entry[0])
            if root is not None and root is not flow and self._descends(root, flow.event_id):
                self._end_under(*entry)
            else:
                kept.append(entry)
        if len(kept) != len(self._aborts):
            self._aborts.clear()
            self._aborts.extend(kept)

    def _end_under(self, root_id: str, error: BaseException, at: int) -> None:
        under = [node for node in self._nodes.values() if self._descends(node, root_id)]
        for node in under:
            node.aborted = True
        open_under = [node for node in under if node.span is not None]
        if not open_under:
            return
        message = str(error) or f"the kickoff ended by {type(error).__name__}"
        log_safely(
            logging.DEBUG,
            "sightline: crewai: a kickoff ended by %s; %d spans ended as errors",
            type(error).__name__,
            len(open_under),
        )
        for node in open_under:
            span = node.span
            if span is None:  # ended meanwhile (a deferred kickoff whose last call ended)
                continue
            node.ended = True
            span.set_error(kind=ErrorKind.ORCHESTRATION, type=type(error).__name__, message=message)
            span.set_metadata(incomplete=True)
            span.end(max(at, span.event.start_ns or 0))
            # Aborted nodes stay (ids only): CrewAI leaves their scopes on the thread's stack,
            # and what starts in them later must be told apart as new work.
            self._released(node, None, retire=False)

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

    def _end_incomplete(self, node: _Node, why: str) -> None:
        span = node.span
        if span is None:
            return
        node.ended = True
        span.set_error(kind=ErrorKind.UNKNOWN, type="Incomplete", message=why)
        span.set_metadata(incomplete=True)
        span.end()
        self._released(node, None, retire=False)

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
        log_safely(level, "sightline: crewai: %s", what, exc_info=True)

    # -- starts and points --------------------------------------------------------------------

    def _start(self, item: _Item) -> None:
        parent_id = getattr(item.event, "parent_event_id", None)
        if parent_id is None:
            self._open(item, item.ambient)
            return
        node = self._nodes.get(parent_id)
        if node is None:
            self._orphans.setdefault(parent_id, []).append(item)
            self._wait(item, _ORPHAN)
            return
        if node.aborted:
            # CrewAI leaves an interrupted kickoff's scopes on the stack of the thread or task it
            # ran in: what starts there later is not part of the kickoff that ended. It belongs
            # to the nearest enclosing scope still going on (a flow whose method timed a crew
            # out goes on), else it is new work.
            live = self._live_ancestor(node, item.kind == _METHOD_START)
            if live is None:
                self._open(item, item.ambient)
                return
            node = live
        anchor = node.anchor
        ambient = item.ambient
        if (
            ambient is not None
            and anchor is not None
            and ambient.is_recording
            and ambient.client is anchor.client
            and ambient.event.trace_id == anchor.trace_id
            and ambient.event.start_ns >= anchor.start_ns
        ):
            # A Sightline span opened inside the CrewAI scope (a `with sightline.trace()` in a
            # flow method or a tool) and current where this started: the innermost wins, as for
            # spans opened inside a CrewAI scope (SpanTree.run_parent).
            self._open(item, ambient, node)
            return
        self._open(item, anchor, node)

    def _live_ancestor(self, node: _Node, method: bool) -> _Node | None:
        """The nearest enclosing node of the aborted ``node`` that is still going on (neither
        interrupted nor ended), or ``None``, for a start nested in ``node``'s scope (``method``:
        a flow method's start). A flow method nests in its flow only: the method whose scope an
        interrupted kickoff left on the stack has ended by the time the next method starts,
        even when its end has not been handled yet. Reads the nodes without the lock."""
        parent = node.parent
        for _ in range(_MAX_DEPTH):
            if parent is None:
                return None
            above = self._nodes.get(parent)
            if above is None:
                return None
            if not (above.aborted or above.ended or (method and above.kind == _METHOD_START)):
                return above
            parent = above.parent
        return None

    def _open(
        self, item: _Item, parent: Span | _Anchor | None, parent_node: _Node | None = None
    ) -> None:
        rule, event = item.rule, item.event
        start_ns = event_time_ns(event)
        event_id = item.event_id
        parent_id = parent_node.event_id if parent_node is not None else None
        if rule.event_type is None:  # a scope: children attach to what it is nested in
            if event_id is None:
                return
            anchor = parent if isinstance(parent, _Anchor) or parent is None else _Anchor.of(parent)
            node = _Node(event_id, item.kind, None, anchor, item.seq, (), parent_id)
        else:
            span = self._start_span(item, rule, parent, start_ns, span_id=span_id_of(event_id))
            if rule.phase == POINT or event_id is None:
                span.end(start_ns)
                return
            if self._inputs and event_id in self._inputs:
                span.set_input(self._inputs.pop(event_id))
            keys = _pair_keys(item.kind, event, item.source)
            node = _Node(event_id, item.kind, span, _Anchor.of(span), item.seq, keys, parent_id)
        self._adopt(node, parent_node, rule)
        self._nodes[event_id] = node
        # Children first, then this node's own end (if it came early): a kickoff's end then
        # finds its calls already open, and waits for them.
        children = self._orphans.pop(event_id, None)
        if children:
            children.sort(key=lambda child: child.seq)
            for child in children:
                self._waiting.pop(id(child), None)
                self._start(child)
        end = self._early_ends.pop((event_id, item.kind), None)
        if end is not None:
            self._waiting.pop(id(end), None)
            self._close(node, end)
        if self._early_ends:
            self._misnamed_ends(event_id, item.kind)

    def _misnamed_ends(self, event_id: str, kind: str) -> None:
        """The ends that came early naming the start ``event_id``, which is of another kind: a
        stale scope CrewAI named (a method's end after its crew timed out names the crew's
        executor flow). As in :meth:`_end`, each closes the start of its own kind found by its
        pair keys, or nothing."""
        misnamed = [key for key in self._early_ends if key[0] == event_id and key[1] != kind]
        for key in misnamed:
            end = self._early_ends[key]
            start_id = self._pair(end)
            node = self._nodes.get(start_id) if start_id else None
            if node is not None:  # else it waits (for its own start) as it did
                del self._early_ends[key]
                self._waiting.pop(id(end), None)
                self._close(node, end)

    def _adopt(self, node: _Node, parent: _Node | None, rule: CrewEventRule) -> None:
        """Place a new node in its kickoff: what forgets it, which usage it adds to."""
        outer = parent.tally if parent is not None else None
        node.tally = outer
        if rule.event_type is EventType.RUN:
            node.tally = _Tally(node, outer)
            node.counts_in = outer
        elif rule.event_type is EventType.LLM_INVOKE:
            node.counts_in = outer
        if node.counts_in is not None:
            node.counts_in.open += 1
        root = parent.root if parent is not None else None
        if root is None and not node.scope:
            root = node.event_id
        node.root = root
        if root is not None:
            self._members.setdefault(root, []).append(node.event_id)

    def _start_span(
        self,
        item: _Item,
        rule: CrewEventRule,
        parent: Span | _Anchor | None,
        start_ns: int | None,
        *,
        fill: bool = True,
        span_id: str | None = None,
    ) -> Span:
        event, source = item.event, item.source
        namer = rule.name
        if rule.private_name is not None and not _captures_content(item.client):
            namer = rule.private_name
        try:
            name = namer(event, source) if namer else item.kind
        except Exception:
            name = item.kind
        agent = item.agent
        if agent is None and rule.agent is not None:
            try:
                agent = rule.agent(event, source)
            except Exception:
                agent = None
        span: Span
        if isinstance(parent, _Anchor):
            span = item.client.start_span(
                name, rule.event_type, parent=None, trace_id=parent.trace_id,
                parent_span_id=parent.span_id, framework=FRAMEWORK,
                agent=agent if agent is not None else parent.agent,
                session_id=item.session_id if item.session_id is not None else parent.session_id,
                start_ns=start_ns, span_id=span_id,
            )  # fmt: skip
        else:
            span = item.client.start_span(
                name, rule.event_type, parent=parent, framework=FRAMEWORK, agent=agent,
                session_id=item.session_id, start_ns=start_ns, span_id=span_id,
            )  # fmt: skip
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
                log_safely(
                    logging.DEBUG, "sightline: crewai: %s closes nothing open; ignored", item.kind
                )
                return
        if node is not None:
            self._close(node, item)
        elif start_id:
            self._early_ends[(start_id, item.rule.start)] = item
            self._wait(item, _EARLY_END)
        else:
            self._record_unpaired(item)

    def _close(self, node: _Node, item: _Item) -> None:
        if node.ended or node.span is None or node.kind != item.rule.start:
            return
        node.ended = True
        tally = node.tally
        if tally is not None and tally.node is node and self._blocked(tally, item):
            # A kickoff's end before the end of a call made in it (CrewAI's pool runs handlers
            # concurrently), or while events emitted before it wait: wait for them.
            tally.pending = item
            self._deferred.append(tally)
            self._wait(item, _DEFERRED_END)
            return
        self._finish(node, item)

    def _finish(self, node: _Node, item: _Item) -> None:
        """Fill and end the span of ``node`` with its end event ``item``."""
        span = node.span
        if span is None:
            return
        if item.rule.fill is not None:
            item.rule.fill(span, item.event, item.source)
        tally = node.tally
        if tally is not None and tally.node is node:
            tally.pending = None
            if tally.input is not None or tally.output is not None or tally.total is not None:
                span.set_usage(tally.input, tally.output, tally.total)
        if self._aborts and node.kind == _FLOW_START:
            # CrewAI drains its bus before a flow's end: the methods it cancelled in this run
            # (an or_ race's losers) have been reported by now; end them before their flow.
            self._apply_aborts_within(node)
        usage = span.event.usage
        span.end(event_time_ns(item.event))
        self._released(node, usage)

    def _released(self, node: _Node, usage: Any, *, retire: bool = True) -> None:
        """``node``'s span has ended: forget it (its anchor stays for late children), count its
        usage in its kickoff, and let the kickoff's own end go once nothing in it is open."""
        node.span = None
        counts_in, node.counts_in = node.counts_in, None
        if retire and node.root == node.event_id:
            self._retiring.append((time.monotonic() + self.wait_seconds, node.event_id))
        if counts_in is None:
            return
        counts_in.add(usage)
        counts_in.open -= 1

    def _blocked(self, tally: _Tally, end: _Item) -> bool:
        """Whether a kickoff's end must wait: a call (or nested kickoff) in it is open, or an
        event emitted before its end waits for its parent or its start (it may be one of its
        calls)."""
        if tally.open > 0:
            return True
        seq = end.seq
        for items in self._orphans.values():
            for waiting in items:
                if not seq or waiting.seq < seq:
                    return True
        for waiting in self._early_ends.values():
            if waiting is not end and (not seq or waiting.seq < seq):
                return True
        return False

    def _settle(self) -> None:
        """End the kickoffs whose end waited and need not any more."""
        while self._deferred:
            ready = [
                tally
                for tally in self._deferred
                if tally.pending is None or not self._blocked(tally, tally.pending)
            ]
            if not ready:
                return
            self._deferred = [tally for tally in self._deferred if tally not in ready]
            for tally in ready:
                item = tally.pending
                if item is not None:
                    self._waiting.pop(id(item), None)
                    self._finish(tally.node, item)
            # Ending a nested kickoff may let its outer one go: look again.

    def _pair(self, item: _Item) -> str | None:
        """The start an end event closes when CrewAI did not say: the latest open start of the
        right class, with the same identifying attributes, emitted before it."""
        start_kind = item.rule.start
        if start_kind is None:
            return None
        wanted = _pair_keys(start_kind, item.event, item.source)
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
        if start_rule is not None and start_rule.choose is not None:
            start_rule = start_rule.choose(item.event, item.source)  # a flow's: a user's or not
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
        if start_rule.event_type is EventType.LLM_INVOKE and node is not None and node.tally:
            node.tally.add(span.event.usage)
        span.end(end_ns)

    # -- waiting --------------------------------------------------------------------------------

    def _wait(self, item: _Item, why: int) -> None:
        self._waiting[id(item)] = (time.monotonic() + self.wait_seconds, why, item)

    def _expire(self, now: float) -> None:
        """Record the events that waited too long (or all of them, for ``now=inf``)."""
        waiting = self._waiting
        while waiting:
            key = next(iter(waiting))
            deadline, why, item = waiting[key]
            if deadline > now:
                break
            del waiting[key]
            if why == _DEFERRED_END:
                self._expire_deferred(item)
            elif why == _EARLY_END:
                start_id = getattr(item.event, "started_event_id", None)
                key2 = (str(start_id), item.rule.start)
                if start_id and self._early_ends.get(key2) is item:
                    del self._early_ends[key2]
                    self._expire_early_end(item, known=start_id in self._nodes)
            else:
                self._expire_orphan(item)
        if self._deferred:
            self._settle()

    def _expire_early_end(self, item: _Item, *, known: bool) -> None:
        """An end that waited too long for the start it names: CrewAI may have named a stale
        scope (a method's end after its crew timed out names the crew's executor flow, which
        may be forgotten by now, or seen as a start of another kind: ``known``). A flow
        method's end closes its own open start, found by its flow and names (see
        :func:`_pair_keys`); else an end whose named start never arrived is recorded from what
        it knows, one that named a start of another kind is dropped."""
        start_id = self._pair(item) if item.rule.start == _METHOD_START else None
        node = self._nodes.get(start_id) if start_id else None
        if node is not None:
            self._close(node, item)
        elif not known:
            self._record_unpaired(item)

    def _expire_orphan(self, item: _Item) -> None:
        parent_id: str | None = getattr(item.event, "parent_event_id", None)
        siblings = self._orphans.get(parent_id) if parent_id else None
        if parent_id is None or not siblings or item not in siblings:
            return
        siblings.remove(item)
        if not siblings:
            del self._orphans[parent_id]
        log_safely(
            logging.DEBUG,
            "sightline: crewai: parent of %s never arrived; recorded under the ambient span",
            item.kind,
        )
        self._open(item, item.ambient)

    def _expire_deferred(self, item: _Item) -> None:
        """A kickoff's end waited too long for its calls: end it with the usage known."""
        for tally in self._deferred:
            if tally.pending is item:
                self._deferred.remove(tally)
                self._finish(tally.node, item)
                return

    def _retire(self, now: float) -> None:
        """Forget the nodes of the kickoffs that ended ``wait_seconds`` ago (those still open
        are looked at again later)."""
        retiring = self._retiring
        while retiring and retiring[0][0] <= now:
            _, root = retiring.popleft()
            members = self._members.pop(root, None)
            if not members:
                continue
            # Interrupted work stays (ids only) while its stale scopes may still be on a
            # thread's stack: for ever for a kickoff interrupted itself, until the end of the
            # run for a method or kickoff interrupted inside a run that went on (a flow).
            root_node = self._nodes.get(root)
            keep_aborted = root_node is None or root_node.aborted
            kept = []
            for event_id in members:
                node = self._nodes.get(event_id)
                if node is None:
                    continue
                if node.span is None and not (node.aborted and keep_aborted):
                    del self._nodes[event_id]
                else:
                    kept.append(event_id)
            if kept:
                self._members[root] = kept
                retiring.append((now + self.wait_seconds, root))

    def _evict(self) -> None:
        """Forget the oldest finished nodes (late children of them then wait, then attach to
        the ambient span); open ones too if that is not enough, so memory stays bounded: those
        are ended first, as errors of type ``Incomplete``, so that they are exported."""
        target = self.max_nodes * 3 // 4
        excess = len(self._nodes) - target
        for event_id in [key for key, node in self._nodes.items() if node.span is None][:excess]:
            self._forget(event_id)
        excess = len(self._nodes) - target
        if excess > 0:
            if not self._warned_full:
                self._warned_full = True
                log_safely(
                    logging.WARNING,
                    "sightline: crewai: more than %d spans open; the oldest are ended as "
                    "incomplete and forgotten",
                    self.max_nodes,
                )
            for event_id in list(self._nodes)[:excess]:
                self._end_incomplete(
                    self._forget(event_id),
                    f"forgotten while open: more than {self.max_nodes} CrewAI spans were open",
                )

    def _forget(self, event_id: str) -> _Node:
        node = self._nodes.pop(event_id)
        if node.root == event_id:
            self._members.pop(event_id, None)
        return node


def _captures_content(client: Any) -> bool:
    try:
        return bool(client.config.capture_content)
    except Exception:
        return False
