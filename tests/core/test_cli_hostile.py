"""``sightline`` on hostile or damaged data: recorded text never drives the terminal, any tree
prints (deep, cyclic, orphaned), ids that are not unique say so, and small edges of the CLI."""

from __future__ import annotations

import time

from sightline.cli import _visible_len, format_duration, render_trace
from sightline.event import ErrorInfo, Event
from sightline.store import SqliteStore
from tests.core.test_cli import sightline_cli, span


def store_with(tmp_path, *events: Event) -> str:
    path = tmp_path / "events.db"
    store = SqliteStore(str(path))
    store.insert_events(list(events))
    store.close()
    return str(path)


def test_control_characters_in_recorded_text_are_printed_escaped(tmp_path):
    now = time.time_ns()
    trace = "ee" * 16
    root = span(trace, "clear\x1b[2J\x1b[Hscreen", "run", start=now, duration_ms=5,
                agent="bot\x07", status="error",
                error=ErrorInfo("Boom", "line one\nline two \x1b]0;pwned\x07", kind="tool"))  # fmt: skip
    child = span(trace, "two\nlines", "tool_call", parent=root, start=now, duration_ms=1,
                 model="m\x1b[31m")  # fmt: skip
    database = store_with(tmp_path, root, child)
    outputs = [
        sightline_cli("runs", "--db", database, cwd=tmp_path),
        sightline_cli("show", trace, "--db", database, cwd=tmp_path),
        sightline_cli("stats", "--db", database, cwd=tmp_path),
        sightline_cli("tail", "--last", "5", "--timeout", "0", "--db", database, cwd=tmp_path),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    shown = outputs[1].stdout
    assert "run clear\\x1b[2J\\x1b[Hscreen" in shown
    assert "two\\x0alines" in shown and len(shown.splitlines()) == 3
    assert "tool Boom: line one line two \\x1b]0;pwned\\x07" in shown
    assert len(outputs[3].stdout.splitlines()) == 2  # --timeout 0: the backlog, then stop


def test_a_deep_tree_a_parent_cycle_and_orphans_all_print(tmp_path):
    now = time.time_ns()
    deep = "d1" * 16
    chain = [span(deep, "level-0", "run", start=now, duration_ms=1)]
    for level in range(1, 1500):
        chain.append(span(deep, f"level-{level}", "chain", parent=chain[-1], start=now + level,
                          duration_ms=1))  # fmt: skip
    database = store_with(tmp_path, *chain)
    result = sightline_cli("show", deep, "--db", database, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + 1500 and lines[-1].lstrip(" └─").startswith("chain level-1499")

    root = {"span_id": "r", "parent_span_id": None, "type": "run", "name": "root"}
    orphan = {"span_id": "o", "parent_span_id": "gone", "type": "tool_call", "name": "orphan"}
    first = {"span_id": "a", "parent_span_id": "b", "type": "chain", "name": "cycle-a"}
    second = {"span_id": "b", "parent_span_id": "a", "type": "chain", "name": "cycle-b"}
    itself = {"span_id": "s", "parent_span_id": "s", "type": "chain", "name": "self-parent"}
    events = [root, orphan, first, second, itself]
    for event in events:
        event.update(status="ok", duration_ms=1.0)
    text = render_trace({"trace_id": "t", "name": "damaged", "status": "ok", "duration_ms": 1.0,
                         "event_count": 5, "events": events})  # fmt: skip
    assert text.splitlines()[1:] == [
        "run root  1.0ms",
        "tool_call orphan  (parent not recorded)  1.0ms",
        "chain cycle-a  (in a parent cycle)  1.0ms",
        "└─ chain cycle-b  1.0ms",
        "chain self-parent  (in a parent cycle)  1.0ms",
    ]


def test_an_id_prefix_of_several_traces_lists_them_and_any_case_works(tmp_path):
    now = time.time_ns()
    first, second = "0123456789ab" + "0" * 20, "0123456789ab" + "f" * 20
    database = store_with(
        tmp_path,
        span(first, "first-run", "run", start=now, duration_ms=1),
        span(second, "second-run", "run", start=now, duration_ms=1),
    )
    ambiguous = sightline_cli("show", "0123456789ab", "--db", database, cwd=tmp_path)
    assert ambiguous.returncode == 1
    assert f"matches 2 traces: {first} (first-run), {second} (second-run)" in ambiguous.stderr
    upper = sightline_cli("show", "0123456789ABF", "--db", database, cwd=tmp_path)
    assert upper.returncode == 0 and "second-run" in upper.stdout
    listed = sightline_cli("runs", "--db", database, cwd=tmp_path)
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:]} == {
        first[:16],
        second[:16],
    }


def test_an_error_without_a_message_has_no_dangling_colon(tmp_path):
    now = time.time_ns()
    trace = "aa" * 16
    database = store_with(
        tmp_path,
        span(
            trace,
            "quiet",
            "run",
            start=now,
            duration_ms=1,
            status="error",
            error=ErrorInfo("RuntimeError", "", kind="orchestration"),
        ),
    )
    shown = sightline_cli("show", trace, "--db", database, cwd=tmp_path).stdout
    assert shown.splitlines()[1].endswith("✗ orchestration RuntimeError")


def test_wide_characters_take_two_columns():
    assert _visible_len("数据🚀") == 6 and _visible_len("abc") == 3 and _visible_len("é") == 1


def test_durations_never_show_the_next_units_first_value():
    cases = {0.0004: "0µs", 0.9996: "1.0ms", 9.97: "10ms", 999.6: "1.00s", 59_999: "1m00s",
             125_000: "2m05s", 3_599_600: "1h00m", 5 * 3_600_000: "5h00m", None: "-"}  # fmt: skip
    assert {ms: format_duration(ms) for ms in cases} == cases


def test_counts_and_seconds_out_of_range_are_usage_errors(tmp_path):
    database = store_with(
        tmp_path, span("ab" * 16, "r", "run", start=time.time_ns(), duration_ms=1)
    )
    for args in (["runs", "--limit", "0"], ["runs", "--limit", "-3"], ["runs", "--limit", "5000"],
                 ["tail", "--timeout", "-1"], ["tail", "--interval", "nan"]):  # fmt: skip
        result = sightline_cli(*args, "--db", database, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "give a" in result.stderr and "Traceback" not in result.stderr
    assert sightline_cli("runs", "--limit", "1000", "--db", database, cwd=tmp_path).returncode == 0
