"""The ``sightline`` command (ARCHITECTURE.md §7, §9), run as a real subprocess against a real
SQLite store: runs, show, tail, stats, plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import entry_points

import pytest

from sightline.event import ErrorInfo, Event, Usage, format_time
from sightline.store import SqliteStore

MS = 1_000_000
MINUTE = 60 * 1000 * MS
NOW = time.time_ns()


def cli_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env["NO_COLOR"] = "1"
    env["HOME"] = str(tmp_path)
    return env


def sightline_cli(
    *args: str, cwd, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sightline.cli", *args],
        cwd=cwd,
        env=env or cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=60,
    )


def span(
    trace_id, name, type, *, parent=None, start, duration_ms, status="ok", agent=None, **fields
):
    return Event(
        type,
        name,
        trace_id=trace_id,
        parent_span_id=parent.span_id if parent is not None else None,
        status=status,
        start_ns=start,
        end_ns=start + int(duration_ms * MS),
        agent=agent or (parent.agent if parent is not None else None),
        **fields,
    )


SUPPORT = "5e" * 16
NIGHTLY = "0b" * 16
QUICK = "c4" * 16


@pytest.fixture
def db(tmp_path):
    """Three runs: support-ticket (10 min ago, 6 events), nightly-report (2 days ago, failed),
    quick-check (5 min ago)."""
    path = tmp_path / "cli.db"
    store = SqliteStore(str(path))
    start = NOW - 10 * MINUTE
    run = span(SUPPORT, "support-ticket", "run", start=start, duration_ms=1500, agent="support-bot")
    compose = span(SUPPORT, "compose", "chain", parent=run, start=start + 400 * MS, duration_ms=800)
    store.insert_events([
        span(SUPPORT, "plan", "decision", parent=run, start=start + 1 * MS, duration_ms=5),
        span(SUPPORT, "search_kb", "tool_call", parent=run, start=start + 10 * MS, duration_ms=200,
             status="error", error=ErrorInfo("TimeoutError", "search_kb timed out", kind="tool")),
        span(SUPPORT, "search_kb", "tool_call", parent=run, start=start + 220 * MS, duration_ms=120),
        span(SUPPORT, "answer", "llm_invoke", parent=compose, start=start + 410 * MS,
             duration_ms=750, model="gpt-4o-mini", usage=Usage(812, 64), cost_usd=0.004),
        compose,
        run,
    ])  # fmt: skip
    nightly_start = NOW - 2 * 24 * 60 * MINUTE
    nightly = span(NIGHTLY, "nightly-report", "run", start=nightly_start, duration_ms=3000,
                   agent="reporter", status="error",
                   error=ErrorInfo("timeout", "report took too long", kind="timeout"))  # fmt: skip
    store.insert_events([nightly])
    quick = span(
        QUICK, "quick-check", "run", start=NOW - 5 * MINUTE, duration_ms=50, agent="support-bot"
    )
    store.insert_events([
        span(QUICK, "lookup", "retrieval", parent=quick, start=NOW - 5 * MINUTE + MS, duration_ms=20),
        quick,
    ])  # fmt: skip
    store.close()
    return path


def run_names(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [t["name"] for t in json.loads(result.stdout)["traces"]]


# -- runs ----------------------------------------------------------------------------------------


def test_runs_prints_a_table_with_aligned_columns_newest_first(db, tmp_path):
    result = sightline_cli("runs", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = ["TRACE", "NAME", "AGENT", "STATUS", "START (UTC)", "DURATION", "EVENTS", "ERRORS",
               "TOKENS", "COST"]  # fmt: skip
    starts = [header.index(c) for c in columns]
    assert starts == sorted(starts)
    expected = [
        [QUICK[:16], "quick-check", "support-bot", "ok", format_time(NOW - 5 * MINUTE).replace("T", " ")[:19], "50ms", "2", "-", "-", "-"],
        [SUPPORT[:16], "support-ticket", "support-bot", "ok", None, "1.50s", "6", "1", "876", "$0.0040"],
        [NIGHTLY[:16], "nightly-report", "reporter", "error", None, "3.00s", "1", "1", "-", "-"],
    ]  # fmt: skip
    assert len(rows) == 3
    for row, cells in zip(rows, expected, strict=True):
        for start, cell in zip(starts, cells, strict=True):
            if cell is not None:
                assert row[start:].startswith(cell + " ") or row[start:] == cell, (row, cell)


def test_runs_json_parses_into_traces_and_a_cursor(db, tmp_path):
    result = sightline_cli("runs", "--db", str(db), "--json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["next_cursor"] is None
    support = next(t for t in data["traces"] if t["name"] == "support-ticket")
    assert support == {
        "trace_id": SUPPORT,
        "name": "support-ticket",
        "agent": "support-bot",
        "session_id": None,
        "status": "ok",
        "start_time": format_time(NOW - 10 * MINUTE),
        "end_time": format_time(NOW - 10 * MINUTE + 1500 * MS),
        "duration_ms": 1500.0,
        "event_count": 6,
        "error_count": 1,
        "usage": {"input_tokens": 812, "output_tokens": 64, "total_tokens": 876},
        "cost_usd": 0.004,
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--agent", "support-bot"], ["quick-check", "support-ticket"]),
        (["--status", "error"], ["nightly-report"]),
        (["--type", "retrieval"], ["quick-check"]),
        (["--type", "tool_call"], ["support-ticket"]),
        (["--since", "1h"], ["quick-check", "support-ticket"]),
        (["--since", "7m"], ["quick-check"]),
        (["--limit", "2"], ["quick-check", "support-ticket"]),
        (["--agent", "support-bot", "--type", "tool_call"], ["support-ticket"]),
    ],
)
def test_runs_filters(db, tmp_path, args, expected):
    assert (
        run_names(sightline_cli("runs", "--db", str(db), "--json", *args, cwd=tmp_path)) == expected
    )


def test_runs_limit_prints_how_to_continue_and_the_cursor_continues(db, tmp_path):
    first = sightline_cli("runs", "--db", str(db), "--limit", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    hint = first.stdout.strip().splitlines()[-1]
    assert hint.startswith(f"More runs: sightline runs --db {db} --limit 2 --cursor ")
    cursor = hint.rsplit(" ", 1)[1]
    rest = sightline_cli("runs", "--db", str(db), "--json", "--cursor", cursor, cwd=tmp_path)
    assert run_names(rest) == ["nightly-report"]


def test_runs_says_when_nothing_matches(db, tmp_path):
    result = sightline_cli("runs", "--db", str(db), "--agent", "nobody", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "No runs recorded yet matching those filters.",
    )


def test_runs_reads_the_store_named_by_sightline_db(db, tmp_path):
    env = cli_env(tmp_path)
    env["SIGHTLINE_DB"] = str(db)
    assert len(run_names(sightline_cli("runs", "--json", cwd=tmp_path, env=env))) == 3


# -- show ----------------------------------------------------------------------------------------


EXPECTED_TREE = [
    f"trace {SUPPORT} · support-ticket · agent support-bot · ok · 1.50s · 6 events · 876 tokens · $0.0040",
    "run support-ticket  1.50s",
    "├─ decision plan  5.0ms",
    "├─ tool_call search_kb  200ms  ✗ tool TimeoutError: search_kb timed out",
    "├─ tool_call search_kb  120ms",
    "└─ chain compose  800ms",
    "   └─ llm_invoke answer  750ms  gpt-4o-mini  812→64 tokens  $0.0040",
]


def test_show_prints_the_trace_as_an_indented_tree(db, tmp_path):
    result = sightline_cli("show", SUPPORT, "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED_TREE


def test_show_accepts_a_unique_prefix(db, tmp_path):
    result = sightline_cli("show", SUPPORT[:8], "--db", str(db), cwd=tmp_path)
    assert result.stdout.splitlines() == EXPECTED_TREE


def test_show_latest_prints_the_newest_trace(db, tmp_path):
    result = sightline_cli("show", "latest", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["run quick-check  50ms", "└─ retrieval lookup  20ms"]


def test_show_prints_the_error_of_a_failed_run(db, tmp_path):
    result = sightline_cli("show", NIGHTLY, "--db", str(db), cwd=tmp_path)
    assert result.stdout.splitlines()[1] == (
        "run nightly-report  3.00s  ✗ timeout timeout: report took too long"
    )


def test_show_json_holds_the_summary_and_every_event(db, tmp_path):
    result = sightline_cli("show", SUPPORT, "--db", str(db), "--json", cwd=tmp_path)
    trace = json.loads(result.stdout)
    assert trace["trace_id"] == SUPPORT
    assert [e["name"] for e in trace["events"]] == [
        "support-ticket", "plan", "search_kb", "search_kb", "compose", "answer",
    ]  # fmt: skip


def test_show_of_an_unknown_trace_exits_1(db, tmp_path):
    result = sightline_cli("show", "deadbeef", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no trace 'deadbeef'" in result.stderr


# -- tail ----------------------------------------------------------------------------------------


def test_tail_prints_events_written_while_it_runs(db, tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sightline.cli",
            "tail",
            "--db",
            str(db),
            "--timeout",
            "1.5",
            "--interval",
            "0.05",
        ],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr.readline().startswith(f"Following {db}")
        now = time.time_ns()
        live = "1f" * 16
        root = span(live, "live-run", "run", start=now, duration_ms=30)
        store = SqliteStore(str(db))
        store.insert_events([
            span(live, "live-tool", "tool_call", parent=root, start=now, duration_ms=12,
                 status="error", error=ErrorInfo("KeyError", "'sku'", kind="tool")),
            root,
        ])  # fmt: skip
        store.close()
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[2:] == [
        live[:16],
        "tool_call",
        "live-tool",
        "error",
        "12ms",
        "✗",
        "tool",
        "KeyError:",
        "'sku'",
    ]
    assert lines[1].split()[2:] == [live[:16], "run", "live-run", "ok", "30ms"]


def test_tail_last_prints_the_most_recent_events_as_json(db, tmp_path):
    result = sightline_cli(
        "tail",
        "--db",
        str(db),
        "--last",
        "2",
        "--timeout",
        "0.1",
        "--interval",
        "0.05",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == [
        "lookup",
        "quick-check",
    ]


# -- stats ---------------------------------------------------------------------------------------


def test_stats_json_numbers_are_exact(db, tmp_path):
    result = sightline_cli("stats", "--db", str(db), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert {k: v for k, v in stats.items() if k not in ("by_agent", "by_model")} == {
        "traces": 3,
        "events": 9,
        "failed_traces": 1,
        "error_events": 2,
        "error_rate": 1 / 3,
        "latency_ms": {"p50": 1500.0, "p95": 3000.0},
        "input_tokens": 812,
        "output_tokens": 64,
        "total_tokens": 876,
        "cost_usd": 0.004,
    }
    assert sorted((a["agent"], a["traces"], a["failed"]) for a in stats["by_agent"]) == [
        ("reporter", 1, 1),
        ("support-bot", 2, 0),
    ]
    assert stats["by_model"] == [
        {"model": "gpt-4o-mini", "calls": 1, "failed": 0, "input_tokens": 812,
         "output_tokens": 64, "total_tokens": 876, "cost_usd": 0.004, "avg_ms": 750.0},
    ]  # fmt: skip


def test_stats_since_and_agent_narrow_the_numbers(db, tmp_path):
    result = sightline_cli(
        "stats", "--db", str(db), "--json", "--since", "1d", "--agent", "support-bot", cwd=tmp_path
    )
    stats = json.loads(result.stdout)
    assert (stats["traces"], stats["events"], stats["failed_traces"]) == (2, 8, 0)


def test_stats_prints_a_summary_and_tables(db, tmp_path):
    result = sightline_cli("stats", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "3 runs · 9 events · 1 failed runs (33.3%) · 2 error events"
    assert lines[1] == "latency p50 1.50s · p95 3.00s · tokens 876 (812 in, 64 out) · cost $0.0040"
    assert "By agent" in lines and "By model" in lines
    assert any(line.split()[:2] == ["gpt-4o-mini", "1"] for line in lines)


# -- plugins -------------------------------------------------------------------------------------


def test_plugins_json_lists_builtin_plugins_and_installed_entry_points(tmp_path):
    result = sightline_cli("plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for name, hook in [
        ("builtin-exporters", "sightline_exporters"),
        ("builtin-redaction", "sightline_process_event"),
        ("builtin-sampling", "sightline_process_event"),
    ]:
        assert plugins[name]["status"] == "builtin"
        assert plugins[name]["hooks"] == [hook]
    installed = list(entry_points(group="sightline"))
    assert installed, "the workspace installs the adapters' entry points"
    for entry_point in installed:
        listed = plugins[entry_point.name]
        assert listed["distribution"] == entry_point.dist.name
        assert listed["version"] == entry_point.dist.version
        assert listed["status"] in ("ok", "failed", "disabled")
        assert (listed["error"] is not None) == (listed["status"] == "failed")


def test_plugins_table_has_its_headers(tmp_path):
    result = sightline_cli("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == [
        "NAME",
        "DISTRIBUTION",
        "VERSION",
        "STATUS",
        "HOOKS",
    ]


def test_sightline_disable_plugins_is_shown_as_disabled(tmp_path):
    installed = [ep.name for ep in entry_points(group="sightline")]
    if not installed:
        pytest.skip("no entry-point plugin installed")
    env = cli_env(tmp_path)
    env["SIGHTLINE_DISABLE_PLUGINS"] = installed[0]
    result = sightline_cli("plugins", "--json", cwd=tmp_path, env=env)
    statuses = {p["name"]: p["status"] for p in json.loads(result.stdout)}
    assert statuses[installed[0]] == "disabled"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["runs", "stats", "tail", "show latest"])
def test_a_missing_store_gives_a_clear_message_and_a_non_zero_exit(tmp_path, command):
    missing = tmp_path / "nowhere" / "missing.db"
    result = sightline_cli(*command.split(), "--db", str(missing), cwd=tmp_path)
    assert result.returncode != 0
    assert f"no store at {missing}" in result.stderr
    assert "--db PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()


def test_the_default_store_is_dot_sightline_in_the_working_directory(tmp_path):
    result = sightline_cli("runs", cwd=tmp_path)
    assert result.returncode != 0
    assert "no store at .sightline/sightline.db" in result.stderr


def test_version_prints_the_package_version(tmp_path):
    import sightline

    result = sightline_cli("--version", cwd=tmp_path)
    assert result.stdout.strip() == f"sightline {sightline.__version__}"
