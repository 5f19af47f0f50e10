"""``sightline show`` of a huge trace: ``--depth N`` cuts the tree below depth N, saying how many
events each cut hides, and ``--limit N`` prints at most N event lines, then how many were left
out and how to see them. Without either, every event is printed, as before."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sightline.cli import render_trace
from sightline.store import SqliteStore
from tests.core.test_cli import sightline_cli, span

BIG = "b1" * 16
CHAINS = 99
TOOLS = 100  # per chain: 1 run + 99 chains + 99 * 100 tools = 10,000 events
DEEP = "d2" * 16


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A trace of 10,000 events (a run, 99 chains under it, 100 tool calls under each) and a
    chain nested 1,500 levels deep."""
    path = tmp_path_factory.mktemp("large") / "large.db"
    now = time.time_ns()
    run = span(BIG, "big-run", "run", start=now, duration_ms=60_000, agent="bulk")
    events = [run]
    for c in range(CHAINS):
        chain = span(BIG, f"chain-{c}", "chain", parent=run, start=now + c * 10_000, duration_ms=5)
        events.append(chain)
        events.extend(
            span(
                BIG,
                f"tool-{c}-{t}",
                "tool_call",
                parent=chain,
                start=now + c * 10_000 + t + 1,
                duration_ms=1,
            )
            for t in range(TOOLS)
        )
    deep = [span(DEEP, "level-0", "run", start=now, duration_ms=1)]
    for level in range(1, 1500):
        deep.append(span(DEEP, f"level-{level}", "chain", parent=deep[-1], start=now + level,
                         duration_ms=1))  # fmt: skip
    store = SqliteStore(str(path))
    store.insert_events(events)
    store.insert_events(deep)
    store.close()
    assert len(events) == 10_000
    return str(path)


def show(database: str, cwd: Path, *args: str) -> list[str]:
    result = sightline_cli("show", *args, "--db", database, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_depth_0_prints_the_root_and_one_line_counting_everything_below_it(database, tmp_path):
    lines = show(database, tmp_path, BIG, "--depth", "0")
    assert lines[0].startswith(f"trace {BIG} · big-run · agent bulk · ok")
    assert "10000 events" in lines[0]
    assert lines[1:] == ["run big-run  1m00s", "└─ … 9999 more events below"]


def test_depth_1_collapses_each_chain_into_one_line_with_its_count(database, tmp_path):
    lines = show(database, tmp_path, BIG, "--depth", "1")
    expected = ["run big-run  1m00s"]
    for c in range(CHAINS):
        last = c == CHAINS - 1
        expected.append(("└─ " if last else "├─ ") + f"chain chain-{c}  5.0ms")
        expected.append(("   " if last else "│  ") + "└─ … 100 more events below")
    assert lines[1:] == expected


def test_limit_prints_n_event_lines_of_the_full_tree_then_how_to_see_the_rest(database, tmp_path):
    full = show(database, tmp_path, BIG)
    assert len(full) == 1 + 10_000  # the default is unchanged: every event
    lines = show(database, tmp_path, BIG, "--limit", "25")
    assert lines[:-1] == full[: 1 + 25]
    assert lines[-1] == (
        "… 9975 more events not shown (--limit 25): pass --limit 10000 to see them, "
        "or --json for every event"
    )


def test_a_limit_the_trace_fits_in_prints_it_whole_with_no_note(database, tmp_path):
    assert show(database, tmp_path, BIG, "--limit", "10000") == show(database, tmp_path, BIG)


def test_depth_and_limit_together_count_lines_of_events_not_lines_of_notes(database, tmp_path):
    lines = show(database, tmp_path, BIG, "--depth", "1", "--limit", "3")
    assert lines[1:] == [
        "run big-run  1m00s",
        "├─ chain chain-0  5.0ms",
        "│  └─ … 100 more events below",
        "├─ chain chain-1  5.0ms",
        "│  └─ … 100 more events below",
        "… 9797 more events not shown (--limit 3): pass --limit 9800 to see them, "
        "or --json for every event",
    ]


def test_a_deep_chain_is_cut_without_recursion(database, tmp_path):
    lines = show(database, tmp_path, DEEP, "--depth", "2")
    assert lines[1:] == [
        "run level-0  1.0ms",
        "└─ chain level-1  1.0ms",
        "   └─ chain level-2  1.0ms",
        "      └─ … 1497 more events below",
    ]
    limited = show(database, tmp_path, DEEP, "--limit", "1499")
    assert limited[-2].lstrip(" └─").startswith("chain level-1498")
    assert limited[-1].startswith("… 1 more event not shown (--limit 1499): pass --limit 1500")


@pytest.mark.parametrize(
    "args",
    [
        ["--limit", "0"],
        ["--limit", "-5"],
        ["--limit", "ten"],
        ["--limit", "2.5"],
        ["--depth", "-1"],
        ["--depth", "deep"],
        ["--depth", ""],
    ],
)
def test_values_out_of_range_are_usage_errors(database, tmp_path, args):
    result = sightline_cli("show", BIG, *args, "--db", database, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"argument {args[0]}: {args[1]!r}: give a whole number from" in result.stderr
    assert "Traceback" not in result.stderr


def test_depth_or_limit_with_json_is_a_usage_error(database, tmp_path):
    for args in (["--depth", "1"], ["--limit", "5"]):
        result = sightline_cli("show", BIG, "--json", *args, "--db", database, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            "sightline: error: --depth and --limit shape the tree; --json prints every event "
            "of the trace\n"
        )


def test_a_cut_in_a_damaged_trace_keeps_its_marks_and_hides_each_event_once():
    root: dict[str, Any] = {"span_id": "r", "parent_span_id": None, "type": "run", "name": "root"}
    kid = {"span_id": "k", "parent_span_id": "r", "type": "tool_call", "name": "kid\x1b[2J"}
    orphan = {"span_id": "o", "parent_span_id": "gone", "type": "chain", "name": "orphan"}
    under_orphan = {"span_id": "u", "parent_span_id": "o", "type": "tool_call", "name": "u"}
    first = {"span_id": "a", "parent_span_id": "b", "type": "chain", "name": "cycle-a"}
    second = {"span_id": "b", "parent_span_id": "a", "type": "chain", "name": "cycle-b"}
    itself = {"span_id": "s", "parent_span_id": "s", "type": "chain", "name": "self-parent"}
    events = [root, kid, orphan, under_orphan, first, second, itself]
    for event in events:
        event.update(status="ok", duration_ms=1.0)
    trace = {"trace_id": "t", "name": "damaged", "status": "ok", "duration_ms": 1.0,
             "event_count": len(events), "events": events}  # fmt: skip
    assert render_trace(trace, depth=0).splitlines()[1:] == [
        "run root  1.0ms",
        "└─ … 1 more event below",
        "chain orphan  (parent not recorded)  1.0ms",
        "└─ … 1 more event below",
        "chain cycle-a  (in a parent cycle)  1.0ms",
        "└─ … 1 more event below",
        "chain self-parent  (in a parent cycle)  1.0ms",
    ]
    assert render_trace(trace, depth=1, limit=2).splitlines()[1:] == [
        "run root  1.0ms",
        "└─ tool_call kid\\x1b[2J  1.0ms",
        "… 5 more events not shown (--limit 2): pass --limit 7 to see them, "
        "or --json for every event",
    ]


def test_tail_with_timeout_0_prints_a_backlog_of_several_pages_whole(database, tmp_path):
    result = sightline_cli(
        "tail", "--last", "1200", "--timeout", "0", "--db", database, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1200  # events_after pages 500 at a time: all three pages are printed
    assert lines[-1].split()[3] == "chain" and lines[-1].split()[4] == "level-1499"
