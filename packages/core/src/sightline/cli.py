"""The ``sightline`` command: look at recorded runs from the terminal.

``runs``, ``show TRACE_ID``, ``tail``, ``stats`` and ``plugins`` read the embedded store
(``--db``, default ``SIGHTLINE_DB`` or ``./.sightline/sightline.db``); each listing accepts
``--json``. Plugins add subcommands through the ``sightline_cli`` hook.

The store is opened read-only, and nothing is created beside one this user cannot write. Such a
store (another user's ``.sightline/``) is read as a snapshot when no program records there, with
a one-line note on stderr: SQLite cannot, or must not, create its WAL index as this user, so what
is recorded meanwhile is not seen (``tail`` prints the ``--last`` events asked for and stops).
A failure the user can act on (no store, a file that is not one, a schema from a newer
Sightline, a malformed ``SIGHTLINE_*`` variable) is one line on stderr, ``sightline: error:
...``, and exit status 1; a malformed argument is argparse's usage message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TextIO

__all__ = ["CommandError", "CommandLine", "main"]

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure to report as ``sightline: error: <message>`` with exit status ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CommandLine:
    """The argument parser of ``sightline``, handed to plugins through ``sightline_cli``."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog="sightline",
            description="Look at what your AI agents did: runs, traces, live events, stats.",
        )
        from sightline import __version__

        self.parser.add_argument("--version", action="version", version=f"sightline {__version__}")
        self.subparsers = self.parser.add_subparsers(dest="command", metavar="COMMAND")
        self.handlers: dict[str, Handler] = {}
        # A SIGHTLINE_* variable that cannot be read keeps plugins from loading: said once, by
        # main(), as what the command runs allows (see there).
        self.config_error: Exception | None = None

    def command(self, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        """Add a subcommand; returns its parser so that arguments can be added to it."""
        parser = self.subparsers.add_parser(name, help=help, description=help)
        parser.set_defaults(_handler=handler)
        self.handlers[name] = handler
        return parser


def _db_arguments(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite store (default: $SIGHTLINE_DB or ./.sightline/sightline.db)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _open_store(args: argparse.Namespace, following: bool = False) -> Any:
    """The store, read-only: reading never writes to the file (no WAL switch, no migration)
    and never creates files beside one this user cannot write. A store read as a snapshot (see
    :class:`~sightline.store.SqliteStore`) is noted on stderr."""
    store = _open_store_readonly(args)
    if store.snapshot:
        print(_snapshot_note(store, following, getattr(args, "last", None)), file=sys.stderr)
    return store


def _open_store_readonly(args: argparse.Namespace) -> Any:
    from sightline.store import SchemaVersionError, SqliteStore, StoreError, open_store

    from_env = os.environ.get("SIGHTLINE_DB", "")
    if not from_env.strip():  # set to nothing (or spaces): not set, as for init()
        from_env = ""
    path = args.db or from_env or os.path.join(".sightline", "sightline.db")
    if not os.path.exists(path):
        raise CommandError(
            f"no store at {path}. Run an instrumented program first "
            "(sightline.init() records there by default) or pass --db PATH."
        )
    try:
        return open_store(path, readonly=True)
    except SchemaVersionError as exc:
        if exc.found > exc.supported:
            raise
        found, supported = exc.found, exc.supported
    # An older schema: upgrade it, as the next instrumented program to write there would.
    try:
        SqliteStore(path).close()
    except (sqlite3.Error, OSError, StoreError) as exc:
        raise CommandError(
            f"{path} has schema version {found}, older than this Sightline ({supported}), "
            f"and could not be upgraded: {exc}"
        ) from None
    return open_store(path, readonly=True)


def _snapshot_note(store: Any, following: bool, last: int | None = None) -> str:
    name = os.path.basename(getattr(store, "real_path", store.path))  # a link's target
    unseen = (
        f" (nor are the changes still in {name}-wal, {store.unseen_wal_bytes} bytes)"
        if store.unseen_wal_bytes
        else ""
    )
    note = f"sightline: note: {store.path} is read as a snapshot ({store.snapshot_reason}): "
    if not following:
        return note + "events recorded while this runs are not seen" + unseen
    if last:
        return (
            note + "new events cannot be followed, so tail prints what is there and stops" + unseen
        )
    # tail prints the events recorded after it starts, and --last N before them: here, none.
    return (
        note
        + "new events cannot be followed, so tail stops without printing any"
        + unseen
        + "; pass --last N to print the last N events"
    )


def parse_cursor(value: str) -> str:
    """A ``--cursor``: the ``next_cursor`` of a previous listing."""
    from sightline.store import decode_cursor

    try:
        decode_cursor(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid cursor {value!r}: pass the cursor a previous 'sightline runs' printed"
        ) from None
    return value


# -- formatting -------------------------------------------------------------------------------

_USE_COLOR = False

ID_CHARS = 16
"""Characters of a trace id that ``runs`` and ``tail`` print at least. Ids begin with their start
time in milliseconds (12 characters): Sightline's own ids of one millisecond differ in the next
4, but LangChain's (UUIDv7 with a counter) keep 23 characters equal, so ``runs`` prints more of
the ids it lists together when they share 16 (:func:`distinct_prefixes`)."""


def distinct_prefixes(ids: Sequence[str], at_least: int = ID_CHARS) -> list[str]:
    """Each id cut to the shortest prefix, of at least ``at_least`` characters, that no other id
    of ``ids`` begins with (in the same order)::

        >>> distinct_prefixes(["01a1fe367d5e72b884de1d42d9", "01a1fe367d5e72b884de1d4300"], 16)
        ['01a1fe367d5e72b884de1d42', '01a1fe367d5e72b884de1d43']
    """
    ordered = sorted(set(ids))
    widths: dict[str, int] = {}
    for index, trace_id in enumerate(ordered):
        shared = 0
        for neighbour in ordered[max(index - 1, 0) : index + 2]:
            if neighbour != trace_id:
                shared = max(shared, _shared_length(trace_id, neighbour))
        widths[trace_id] = max(at_least, shared + 1)
    return [trace_id[: widths[trace_id]] for trace_id in ids]


def _shared_length(first: str, second: str) -> int:
    """How many leading characters ``first`` and ``second`` have in common."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


# Control characters (C0, DEL, C1) in recorded text are printed escaped: an event name holding
# ESC [ 2 J must not clear the terminal, nor a newline break a tree line.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))}


def _safe(value: object) -> str:
    """Recorded text as it may be printed: control characters escaped (``\\x1b``)."""
    return str(value).translate(_CONTROL)


def _color(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _USE_COLOR else text


def _status(status: str) -> str:
    return _color(status, "31" if status == "error" else "32")


def format_duration(ms: float | None) -> str:
    """``850µs``, ``12ms``, ``1.23s``, ``2m05s``, ``5h00m``: a unit's text never shows the next
    unit's first value (no ``1000µs``, ``60.00s``)."""
    if ms is None:
        return "-"
    if round(ms * 1000) < 1000:
        return f"{ms * 1000:.0f}µs"
    if ms < 9.95:
        return f"{ms:.1f}ms"
    if round(ms) < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if round(seconds, 2) < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _cost(value: float | None) -> str:
    """Dollars with at least two significant digits: a call of a cheap model costs a few
    millionths ($0.000042), a run of many a few cents ($0.0152)."""
    if not value:
        return "-"
    if value >= 1:
        return f"${value:,.2f}"
    if value < 0.00000001:
        return "<$0.00000001"
    decimals = max(4, 1 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"


def _tokens(value: int | None) -> str:
    return f"{value:,}" if value else "-"


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    if not rows:
        return
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _visible_len(cell))
    out.write("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip() + "\n")
    for row in rows:
        cells = [cell + " " * (widths[i] - _visible_len(cell)) for i, cell in enumerate(row)]
        out.write("  ".join(cells).rstrip() + "\n")


_ANSI = re.compile(r"\033\[[0-9;]*m")


def _visible_len(text: str) -> int:
    """Columns ``text`` takes in a terminal: colour codes take none, wide characters (CJK,
    most emoji) two, combining marks none."""
    import unicodedata

    plain = _ANSI.sub("", text)
    if plain.isascii():
        return len(plain)
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in plain
    )


def _count(low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high``, or a usage error saying so."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value!r}: give a whole number from {low} to {high}")
        return number

    return parse


def _seconds(low: float) -> Any:
    """An argparse type: a finite number of seconds, at least ``low``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (number >= low and number != float("inf")):
            raise argparse.ArgumentTypeError(f"{value!r}: give a number of seconds, at least {low}")
        return number

    return parse


_MAX_NS = 2**63 - 1  # the store keeps times as signed 64-bit nanoseconds: up to 2262-04-11


def parse_since(value: str) -> int:
    """``30s``, ``15m``, ``2h``, ``7d`` ago, or an ISO timestamp → nanoseconds since the epoch.

    Nothing is recorded before 1970 (event times start at the epoch), so an earlier time
    (``300000d``, ``0001-01-01``) is the epoch: every run. A time after 2262-04-11, the last
    the store can hold, is a usage error.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        # Decimal, not float: a count of many digits is exact, never inf.
        ns = time.time_ns() - int(Decimal(match.group(1)) * unit * 1_000_000_000)
    else:
        from sightline.event import parse_time

        try:
            ns = parse_time(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid time {value!r}: use 30m, 2h, 7d or an ISO timestamp"
            ) from None
    if ns > _MAX_NS:
        raise argparse.ArgumentTypeError(
            f"invalid time {value!r}: after 2262-04-11, the last time Sightline can record"
        )
    return max(0, ns)


def _local_time(text: str) -> str:
    return text.replace("T", " ")[:19]


# -- commands ---------------------------------------------------------------------------------


_RUNS_LIMIT = 20  # runs listed when --limit is not given


def cmd_runs(args: argparse.Namespace) -> int:
    from sightline.store import TraceFilter

    store = _open_store(args)
    traces, cursor = store.list_traces(
        TraceFilter(
            agent=args.agent,
            status=args.status,
            type=args.type,
            since_ns=args.since,
            limit=args.limit,
            cursor=args.cursor,
        )
    )
    if args.json:
        print(json.dumps({"traces": traces, "next_cursor": cursor}, indent=2))
        return 0
    if not traces:
        print("No runs recorded yet" + (" matching those filters." if _filtered(args) else "."))
        return 0
    ids = distinct_prefixes([t["trace_id"] for t in traces])
    rows = [
        [
            ids[index],
            _clip(t["name"], 40),
            _clip(t["agent"], 30) if t["agent"] else "-",
            _status(t["status"]),
            _local_time(t["start_time"]),
            format_duration(t["duration_ms"]),
            str(t["event_count"]),
            str(t["error_count"]) if t["error_count"] else "-",
            _tokens(t["usage"]["total_tokens"]),
            _cost(t["cost_usd"]),
        ]
        for index, t in enumerate(traces)
    ]
    headers = ["TRACE", "NAME", "AGENT", "STATUS", "START (UTC)", "DURATION", "EVENTS", "ERRORS",
               "TOKENS", "COST"]  # fmt: skip
    _table(rows, headers, sys.stdout)
    if cursor:
        print(f"\nMore runs: {_next_page_command(args, cursor)}")
    return 0


def _next_page_command(args: argparse.Namespace, cursor: str) -> str:
    """The ``sightline runs`` that lists the next page: the same store and filters (a relative
    ``--since`` as the time it stood for, so that the listing does not shift) and the cursor."""
    from sightline.event import format_time

    words = ["sightline", "runs"]
    for option, value in (
        ("--db", args.db),
        ("--agent", args.agent),
        ("--status", args.status),
        ("--type", args.type),
        ("--since", format_time(args.since) if args.since is not None else None),
        ("--limit", str(args.limit) if args.limit != _RUNS_LIMIT else None),
    ):
        if value is not None:
            words += [option, value]
    words += ["--cursor", cursor]
    return " ".join(shlex.quote(word) for word in words)


def _filtered(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) for k in ("agent", "status", "type", "since"))


def _clip(text: object, width: int) -> str:
    """Recorded text made safe to print (:func:`_safe`) and cut to ``width`` characters."""
    text = _safe(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    if args.json and (args.depth is not None or args.limit is not None):
        raise CommandError(
            "--depth and --limit shape the tree; --json prints every event of the trace",
            exit_code=2,
        )
    store = _open_store(args)
    trace_id = args.trace_id
    if trace_id == "latest":
        latest, _ = store.list_traces()
        trace_id = latest[0]["trace_id"] if latest else ""
    trace = store.get_trace(trace_id)
    if trace is None:
        matches = store.matching_traces(trace_id) if trace_id else []
        if len(matches) > 1:
            shown = ", ".join(f"{m['trace_id']} ({_clip(m['name'], 30)})" for m in matches[:5])
            more = " and more" if len(matches) > 5 else ""
            raise CommandError(
                f"{_safe(args.trace_id)!r} matches {len(matches)} traces: {shown}{more}; give "
                "more of the id"
            )
        raise CommandError(f"no trace {_safe(args.trace_id)!r} in {store.path}")
    if args.json:
        print(json.dumps(trace, indent=2))
        return 0
    print(render_trace(trace, depth=args.depth, limit=args.limit), end="")
    return 0


def render_trace(trace: dict[str, Any], depth: int | None = None, limit: int | None = None) -> str:
    """The indented tree of one trace, as ``sightline show`` prints it.

    ``depth``: only events at most that deep (a root is at depth 0); below an event whose
    children are cut, one line says how many events its subtree hides. ``limit``: at most that
    many event lines, then one line saying how many were not shown and how to see them.
    """
    lines = []
    usage = trace.get("usage") or {}
    parts = [
        f"trace {trace['trace_id']}",
        _clip(trace["name"], 200),
        f"agent {_clip(trace['agent'], 100)}" if trace.get("agent") else None,
        _status(trace["status"]),
        format_duration(trace["duration_ms"]),
        f"{trace['event_count']} events",
        f"{_tokens(usage.get('total_tokens'))} tokens" if usage.get("total_tokens") else None,
        _cost(trace.get("cost_usd")) if trace.get("cost_usd") else None,
    ]
    lines.append(" · ".join(p for p in parts if p))
    events = trace["events"]
    ids = {e["span_id"] for e in events}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for event in events:
        parent = event.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(event)

    def describe(event: dict[str, Any], note: str = "") -> str:
        bits = [
            f"{_safe(event['type'])} {_color(_clip(event['name'], 200), '1')}{note}",
            format_duration(event.get("duration_ms")),
        ]
        if event.get("model"):
            bits.append(_clip(event["model"], 80))
        usage = event.get("usage") or {}
        if usage.get("input_tokens") is not None or usage.get("output_tokens") is not None:
            tokens = f"{usage.get('input_tokens') or 0}→{usage.get('output_tokens') or 0} tokens"
            metadata = event.get("metadata")
            details = metadata.get("usage_details") if isinstance(metadata, dict) else None
            cached = details.get("cache_read_tokens") if isinstance(details, dict) else None
            if type(cached) is int and cached > 0:
                tokens += f" ({cached} cached)"
            bits.append(tokens)
        if event.get("cost_usd"):
            bits.append(_cost(event["cost_usd"]))
        if event.get("status") == "error":
            error = event.get("error") or {}
            bits.append(_color("✗ " + _error_text(error, 80), "31"))
        return "  ".join(bits)

    # Events printed, or counted in a "more events below" line: each is accounted for once.
    shown: set[int] = set()
    printed = 0

    def hide_below(event: dict[str, Any]) -> int:
        """Account for every event under ``event`` not accounted for yet; how many there were."""
        hidden = 0
        pending = [event]
        while pending:
            for kid in children.get(pending.pop()["span_id"], []):
                if id(kid) not in shown:
                    shown.add(id(kid))
                    hidden += 1
                    pending.append(kid)
        return hidden

    def emit(root: dict[str, Any], note: str = "") -> bool:
        """Print the tree under ``root``; False once ``limit`` event lines are printed."""
        nonlocal printed
        # Iterative (a trace may nest thousands of levels); each event is printed once, so
        # that parent cycles and shared span ids in a damaged store cannot loop.
        stack: list[tuple[dict[str, Any], str, bool | None, str, int]] = [(root, "", None, note, 0)]
        while stack:
            event, prefix, last, mark, level = stack.pop()
            if id(event) in shown:
                continue
            if limit is not None and printed >= limit:
                return False
            shown.add(id(event))
            printed += 1
            branch = "" if last is None else ("└─ " if last else "├─ ")
            lines.append(prefix + branch + describe(event, mark))
            deeper = prefix + ("" if last is None else ("   " if last else "│  "))
            if depth is not None and level >= depth:
                hidden = hide_below(event)
                if hidden:
                    lines.append(deeper + "└─ " + _color(f"… {_more(hidden)} below", "2"))
                continue
            kids = [k for k in children.get(event["span_id"], []) if id(k) not in shown]
            for index in range(len(kids) - 1, -1, -1):
                stack.append((kids[index], deeper, index == len(kids) - 1, "", level + 1))
        return True

    complete = True
    for root in children.get(None, []):
        parent = root.get("parent_span_id")
        complete = emit(root, "  (parent not recorded)" if parent else "")
        if not complete:
            break
    for event in events if complete else ():  # not reached from a root: a parent cycle
        if id(event) not in shown and not emit(event, "  (in a parent cycle)"):
            break
    rest = len(events) - len(shown)
    if limit is not None and rest:
        lines.append(
            _color(
                f"… {_more(rest)} not shown (--limit {limit}): pass --limit "
                f"{limit + rest} to see them, or --json for every event",
                "2",
            )
        )
    return "\n".join(lines) + "\n"


def _more(count: int) -> str:
    return f"{count} more event" if count == 1 else f"{count} more events"


def cmd_tail(args: argparse.Namespace) -> int:
    store = _open_store(args, following=True)
    position = backlog_end = store.last_position()
    if args.last:
        position = max(0, position - args.last)
    elif args.timeout == 0 and not store.snapshot:
        # --timeout 0 prints what is there, all of it, and stops. (A snapshot, which tail cannot
        # follow, prints only the --last N asked for: the note on stderr says so.)
        position = 0
    timeout = 0.0 if store.snapshot else args.timeout  # a snapshot never changes
    deadline = time.monotonic() + timeout if timeout is not None else None
    if not args.json and timeout != 0:
        print(f"Following {store.path} (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            events, position = store.events_after(position)
            for event in events:
                if args.json:
                    print(json.dumps(event), flush=True)
                else:
                    print(_tail_line(event), flush=True)
            # Past the deadline, the backlog asked for is still printed whole (it comes in
            # pages of events_after's limit), then tail stops.
            if deadline is not None and time.monotonic() >= deadline:
                if position >= backlog_end or not events:
                    return 0
                continue
            if not events:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _tail_line(event: dict[str, Any]) -> str:
    extra = ""
    usage = event.get("usage") or {}
    if usage.get("total_tokens"):
        extra += f"  {usage['total_tokens']} tokens"
    if event.get("status") == "error":
        extra += "  " + _color("✗ " + _error_text(event.get("error") or {}, 60), "31")
    return (
        f"{_local_time(event['end_time'])}  {event['trace_id'][:ID_CHARS]}  "
        f"{_safe(event['type']):<11}  {_pad(_clip(event['name'], 40), 40)}  "
        f"{_status(event['status']):<5}  {format_duration(event.get('duration_ms')):>7}{extra}"
    )


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _visible_len(text))


def _error_text(error: dict[str, Any], width: int) -> str:
    """``kind Type: message`` of a recorded error, without a dangling colon when it has no
    message, control characters escaped."""
    head = f"{_safe(error.get('kind') or 'unknown')} {_safe(error.get('type') or 'Error')}"
    message = _clip(str(error.get("message") or "").replace("\n", " "), width)
    return f"{head}: {message}" if message else head


def cmd_stats(args: argparse.Namespace) -> int:
    store = _open_store(args)
    stats = store.stats(since_ns=args.since, agent=args.agent)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    latency = stats["latency_ms"]
    print(
        f"{stats['traces']} runs · {stats['events']} events · "
        f"{stats['failed_traces']} failed runs ({stats['error_rate'] * 100:.1f}%) · "
        f"{stats['error_events']} error events"
    )
    print(
        f"latency p50 {format_duration(latency['p50'])} · p95 {format_duration(latency['p95'])} · "
        f"tokens {_tokens(stats['total_tokens'])} "
        f"({_tokens(stats['input_tokens'])} in, {_tokens(stats['output_tokens'])} out) · "
        f"cost {_cost(stats['cost_usd'])}"
    )
    if stats["by_agent"]:
        print("\nBy agent")
        _table(
            [
                [
                    _clip(a["agent"], 40),
                    str(a["traces"]),
                    str(a["failed"]),
                    _tokens(a["total_tokens"]),
                    _cost(a["cost_usd"]),
                ]
                for a in stats["by_agent"]
            ],
            ["AGENT", "RUNS", "FAILED", "TOKENS", "COST"],
            sys.stdout,
        )
    if stats["by_model"]:
        print("\nBy model")
        _table(
            [
                [
                    _clip(m["model"], 40),
                    str(m["calls"]),
                    str(m["failed"]),
                    _tokens(m["input_tokens"]),
                    _tokens(m["output_tokens"]),
                    _cost(m["cost_usd"]),
                    format_duration(m["avg_ms"]),
                ]
                for m in stats["by_model"]
            ],
            ["MODEL", "CALLS", "FAILED", "IN", "OUT", "COST", "AVG"],
            sys.stdout,
        )
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    manager = _plugin_manager()
    infos = [info.to_dict() for info in manager.list()]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    rows = [
        [
            i["name"],
            i["distribution"] or "-",
            i["version"] or "-",
            _color(i["status"], "31" if i["status"] == "failed" else "0"),
            ", ".join(h.removeprefix("sightline_") for h in i["hooks"]) or "-",
        ]
        for i in infos
    ]
    _table(rows, ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"], sys.stdout)
    for info in infos:
        if info["error"]:
            print(f"\n{info['name']} failed: {info['error']}")
    return 0


_MANAGER: Any = None  # the plugin manager of this command (made once: a plugin that fails to
# import says so once, not once for the commands and again for `plugins`)


def _plugin_manager() -> Any:
    # The CLI sends nothing: a malformed SIGHTLINE_API_KEY must not hide the plugins.
    global _MANAGER
    if _MANAGER is None:
        from sightline.config import Config
        from sightline.plugins import get_plugin_manager

        _MANAGER = get_plugin_manager(Config.resolve(enabled=False))
    return _MANAGER


def build() -> CommandLine:
    """The full command line: built-in commands plus those added by plugins."""
    cli = CommandLine()
    runs = cli.command("runs", "list recent runs (traces), newest first", cmd_runs)
    _db_arguments(runs)
    runs.add_argument("--agent", help="only runs of this agent")
    runs.add_argument("--status", choices=["ok", "error"], help="only runs with this status")
    runs.add_argument("--type", help="only runs containing an event of this type (e.g. tool_call)")
    runs.add_argument("--since", type=parse_since, help="30m, 2h, 7d or an ISO timestamp")
    runs.add_argument(
        "--limit",
        type=_count(1, 1000),
        default=_RUNS_LIMIT,
        help=f"how many runs, 1 to 1000 (default {_RUNS_LIMIT})",
    )
    runs.add_argument("--cursor", type=parse_cursor, help="continue a previous listing")

    show = cli.command("show", "print the tree of one run", cmd_show)
    show.add_argument(
        "trace_id", help="trace id, a unique prefix of at least 4 characters, or 'latest'"
    )
    _db_arguments(show)
    show.add_argument(
        "--depth",
        type=_count(0, 10**9),
        default=None,
        help="only events at most N deep (0: the root); one line tells what each cut hides",
    )
    show.add_argument(
        "--limit",
        type=_count(1, 10**9),
        default=None,
        help="at most N event lines, then how many were left out (default: every event)",
    )

    tail = cli.command("tail", "follow new events as they are recorded", cmd_tail)
    _db_arguments(tail)
    tail.add_argument(
        "--last", type=_count(0, 10**9), default=0, help="start with the last N events"
    )
    tail.add_argument(
        "--interval", type=_seconds(0.01), default=0.5, help="poll interval in seconds"
    )
    tail.add_argument(
        "--timeout",
        type=_seconds(0.0),
        default=None,
        help="stop after this many seconds (0: print every event recorded so far, or the --last "
        "N, and stop)",
    )

    stats = cli.command("stats", "counts, error rate, latency, tokens and cost", cmd_stats)
    _db_arguments(stats)
    stats.add_argument("--since", type=parse_since, help="30m, 2h, 7d or an ISO timestamp")
    stats.add_argument("--agent", help="only this agent")

    plugins = cli.command("plugins", "list discovered plugins and their status", cmd_plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    try:
        from sightline import doctor

        doctor.register(cli)
    except ImportError:
        pass
    from sightline.errors import ConfigError

    try:
        _plugin_manager().call("sightline_cli", cli=cli)
    except ConfigError as exc:
        cli.config_error = exc  # main() says it, once
    except Exception as exc:  # a broken plugin must not break the built-in commands
        print(f"sightline: plugin commands unavailable: {exc}", file=sys.stderr)
    return cli


# Commands that report a configuration error themselves: `plugins` as its error, `doctor` as
# its failed "config" check. Any other command says once that plugin commands are unavailable.
_REPORT_CONFIG_ERRORS = {"plugins", "doctor"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sightline`` command."""
    global _USE_COLOR, _MANAGER
    _USE_COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    _MANAGER = None  # discovered anew for each command (main() may run more than once)
    from sightline.errors import ConfigError

    cli = build()
    try:
        args = cli.parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code and cli.config_error is not None:  # say why a plugin's command is missing
            _plugins_unavailable(cli.config_error)
        raise
    if cli.config_error is not None and args.command not in _REPORT_CONFIG_ERRORS:
        _plugins_unavailable(cli.config_error)
    handler = getattr(args, "_handler", None)
    if handler is None:
        cli.parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except BrokenPipeError:
        return 0
    except CommandError as exc:
        return _fail(str(exc), exc.exit_code)
    except ConfigError as exc:  # a malformed SIGHTLINE_* variable, for any command
        return _fail(str(exc), 1)
    except Exception as exc:
        from sightline.store import StoreError

        if isinstance(exc, StoreError):
            return _fail(str(exc), 1)
        if isinstance(exc, sqlite3.Error):
            # The file went bad after it opened (a corrupt page, a disk error...).
            return _fail(f"cannot read the store: {exc}", 1)
        raise


def _plugins_unavailable(error: Exception) -> None:
    print(f"sightline: plugin commands unavailable: {error}", file=sys.stderr)


def _fail(message: str, exit_code: int) -> int:
    print(f"sightline: error: {message}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
