"""Edges of ``sightline`` that used to end in a traceback or a wrong answer: ``tail --timeout 0``
without ``--last``, a malformed ``SIGHTLINE_*`` variable, a ``--since`` out of range, the "More
runs" hint, a spool folder that is a file (for ``doctor`` and for the http exporter), and what
the log says when the spool is disabled. The CLI runs as a real subprocess, the exporter against
a port on 127.0.0.1 that nothing listens on."""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

import pytest

import sightline
from sightline.event import parse_time
from sightline.store import SqliteStore
from tests.core.test_cli import cli_env, sightline_cli, span
from tests.support.receiver import free_port

KEY = "sl_" + "h" * 40
MS = 1_000_000
HOUR = 3600 * 1000 * MS


def store_of_runs(path: Path, *runs: tuple[str, str, int]) -> str:
    """A store holding one run (with one tool call under it) per ``(name, agent, started_ns)``."""
    store = SqliteStore(str(path))
    events = []
    for number, (name, agent, start) in enumerate(runs):
        trace = f"{number + 1:02x}" * 16
        root = span(trace, name, "run", start=start, duration_ms=20, agent=agent)
        events += [
            span(trace, f"{name}-tool", "tool_call", parent=root, start=start + MS, duration_ms=5),
            root,
        ]
    store.insert_events(events)
    store.close()
    return str(path)


@pytest.fixture
def three_runs(tmp_path: Path) -> str:
    now = time.time_ns()
    return store_of_runs(
        tmp_path / "runs.db",
        ("first", "bot", now - 3 * HOUR),
        ("second", "bot", now - 2 * HOUR),
        ("third", "bot", now - 1 * HOUR),
    )


# -- tail --timeout 0 ----------------------------------------------------------------------------


def test_tail_timeout_0_prints_every_recorded_event_and_stops(three_runs, tmp_path):
    result = sightline_cli("tail", "--timeout", "0", "--db", three_runs, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")  # not "Following ...": it does not follow
    assert [line.split()[3:6] for line in result.stdout.splitlines()] == [
        ["tool_call", "first-tool", "ok"],
        ["run", "first", "ok"],
        ["tool_call", "second-tool", "ok"],
        ["run", "second", "ok"],
        ["tool_call", "third-tool", "ok"],
        ["run", "third", "ok"],
    ]


def test_tail_timeout_0_json_prints_every_recorded_event_and_stops(three_runs, tmp_path):
    result = sightline_cli("tail", "--timeout", "0", "--json", "--db", three_runs, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == [
        "first-tool", "first", "second-tool", "second", "third-tool", "third",
    ]  # fmt: skip


def test_tail_timeout_0_prints_a_backlog_of_several_pages_whole(tmp_path):
    now = time.time_ns()
    database = store_of_runs(tmp_path / "big.db", *((f"r{n}", "bot", now + n) for n in range(600)))
    result = sightline_cli("tail", "--timeout", "0", "--json", "--db", database, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert len(names) == 1200 and names[-2:] == ["r599-tool", "r599"]


def test_tail_timeout_0_with_last_still_prints_only_the_last_events(three_runs, tmp_path):
    result = sightline_cli(
        "tail", "--timeout", "0", "--last", "2", "--json", "--db", three_runs, cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == [
        "third-tool",
        "third",
    ]


# -- a malformed SIGHTLINE_* variable ------------------------------------------------------------


def malformed_env(tmp_path: Path) -> dict[str, str]:
    return {**cli_env(tmp_path), "SIGHTLINE_QUEUE_SIZE": "abc"}


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_plugins_with_a_malformed_variable_is_one_error_line_and_exit_1(tmp_path, json_flag):
    result = sightline_cli("plugins", *json_flag, cwd=tmp_path, env=malformed_env(tmp_path))
    assert (result.returncode, result.stdout) == (1, "")
    [line] = result.stderr.splitlines()
    assert line.startswith("sightline: error: ") and "SIGHTLINE_QUEUE_SIZE" in line, line


def test_reading_runs_with_a_malformed_variable_works_and_says_plugins_are_unavailable(
    three_runs, tmp_path
):
    result = sightline_cli(
        "runs", "--json", "--db", three_runs, cwd=tmp_path, env=malformed_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)["traces"]] == ["third", "second", "first"]
    [line] = result.stderr.splitlines()
    assert line.startswith("sightline: plugin commands unavailable: ")
    assert "SIGHTLINE_QUEUE_SIZE" in line


def test_doctor_with_a_malformed_variable_reports_it_as_its_config_check_only(tmp_path):
    result = sightline_cli("doctor", cwd=tmp_path, env=malformed_env(tmp_path))
    assert (result.returncode, result.stderr) == (1, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✗ config  ") and "SIGHTLINE_QUEUE_SIZE" in lines[0]
    assert lines[1:] == ["", "sightline doctor found a problem (exit code 1)."]


# -- --since out of range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "since", ["300000d", "0001-01-01", "1969-07-20T20:17:00Z", "9" * 400 + "w"]
)
def test_runs_since_before_1970_lists_every_run(three_runs, tmp_path, since):
    result = sightline_cli("runs", "--since", since, "--json", "--db", three_runs, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert [t["name"] for t in json.loads(result.stdout)["traces"]] == ["third", "second", "first"]


def test_stats_since_before_1970_counts_every_run(three_runs, tmp_path):
    result = sightline_cli(
        "stats", "--since", "300000d", "--json", "--db", three_runs, cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (0, "")
    stats = json.loads(result.stdout)
    assert (stats["traces"], stats["events"]) == (3, 6)


@pytest.mark.parametrize("command", ["runs", "stats"])
def test_a_since_after_2262_is_a_usage_error(three_runs, tmp_path, command):
    result = sightline_cli(command, "--since", "9999-12-31", "--db", three_runs, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        f"sightline {command}: error: argument --since: invalid time '9999-12-31': after "
        "2262-04-11, the last time Sightline can record"
    )


# -- the "More runs" hint ------------------------------------------------------------------------


def test_the_more_runs_hint_repeats_the_store_and_the_filters_and_continues_the_listing(tmp_path):
    now = time.time_ns()
    folder = tmp_path / "a folder"
    folder.mkdir()
    database = store_of_runs(
        folder / "it's.db",
        ("old-support", "support bot", now - 3 * HOUR),
        ("support-1", "support bot", now - 30 * 60 * 1000 * MS),
        ("other-1", "other", now - 20 * 60 * 1000 * MS),
        ("support-2", "support bot", now - 10 * 60 * 1000 * MS),
        ("support-3", "support bot", now - 5 * 60 * 1000 * MS),
        ("other-2", "other", now - 1 * 60 * 1000 * MS),
    )
    before = time.time_ns()
    first = sightline_cli(
        "runs", "--db", database, "--agent", "support bot", "--status", "ok", "--type",
        "tool_call", "--since", "1h", "--limit", "2", cwd=tmp_path,
    )  # fmt: skip
    after = time.time_ns()
    assert first.returncode == 0, first.stderr
    assert [line.split()[1] for line in first.stdout.splitlines()[1:3]] == [
        "support-3",
        "support-2",
    ]
    hint = first.stdout.splitlines()[-1]
    assert hint.startswith("More runs: ")
    words = shlex.split(hint.removeprefix("More runs: "))
    since, cursor = words[11], words[15]
    assert words == [
        "sightline", "runs", "--db", database, "--agent", "support bot", "--status", "ok",
        "--type", "tool_call", "--since", since, "--limit", "2", "--cursor", cursor,
    ]  # fmt: skip
    assert hint.removeprefix("More runs: ") == " ".join(shlex.quote(word) for word in words)
    # A relative --since is given as the time it stood for, so the next page does not shift.
    assert before - HOUR - 1000 <= parse_time(since) <= after - HOUR
    rest = sightline_cli(*words[1:], "--json", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert [t["name"] for t in json.loads(rest.stdout)["traces"]] == ["support-1"]


def test_the_more_runs_hint_without_filters_is_only_the_cursor(three_runs, tmp_path):
    env = {**cli_env(tmp_path), "SIGHTLINE_DB": three_runs}
    first = sightline_cli("runs", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr  # 3 runs: no hint at the default limit
    assert not first.stdout.splitlines()[-1].startswith("More runs")
    paged = sightline_cli("runs", "--limit", "1", cwd=tmp_path, env=env)
    cursor = paged.stdout.splitlines()[-1].rsplit(" ", 1)[1]
    assert paged.stdout.splitlines()[-1] == f"More runs: sightline runs --limit 1 --cursor {cursor}"


# -- a spool folder that is a file ---------------------------------------------------------------


def test_doctor_fails_the_spool_check_when_the_spool_dir_is_a_file(tmp_path):
    base = tmp_path.resolve()
    spool_file = base / "spool-file"
    spool_file.write_text("not a folder")
    env = {**cli_env(tmp_path), "SIGHTLINE_SPOOL_DIR": str(spool_file)}
    result = sightline_cli("doctor", cwd=tmp_path, env=env)
    assert (result.returncode, result.stderr) == (1, "")
    db = base / ".sightline" / "sightline.db"
    assert result.stdout.splitlines() == [
        f"✓ endpoint  none configured: events go to the embedded store {db}",
        "- api key   not needed for the embedded store",
        f"✓ store     {db} will be created when events are recorded",
        f"✗ spool     none can be kept in {spool_file}: {spool_file} is not a folder; set "
        "SIGHTLINE_SPOOL_DIR (or --spool-dir) to a folder this user can write",
        "",
        "sightline doctor found a problem (exit code 1).",
    ]


def test_doctor_fails_the_store_and_spool_checks_when_the_db_is_under_a_file(tmp_path):
    base = tmp_path.resolve()
    (base / "a-file").write_text("not a folder")
    db = base / "a-file" / "x.db"
    result = sightline_cli("doctor", "--db", str(db), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        f"✓ endpoint  none configured: events go to the embedded store {db}",
        "- api key   not needed for the embedded store",
        f"✗ store     {db} cannot be created: {base / 'a-file'} is not a folder",
        f"✗ spool     none can be kept in {base / 'a-file' / 'spool'}: {base / 'a-file'} is not "
        "a folder; set SIGHTLINE_SPOOL_DIR (or --spool-dir) to a folder this user can write",
        "",
        "sightline doctor found a problem (exit code 1).",
    ]


def test_init_with_a_spool_dir_that_is_a_file_warns_and_counts_what_it_cannot_keep(
    tmp_path, caplog
):
    spool_file = tmp_path / "spool-file"
    spool_file.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="sightline"):
        client = sightline.init(
            endpoint=f"http://127.0.0.1:{free_port()}",
            api_key=KEY,
            spool_dir=str(spool_file),
            handle_signals=False,
            http_backoff_max=0.2,
        )
        for number in range(3):
            client.log_event("custom", f"event-{number}")
        client.close(5)
    stats = client.stats()
    assert (stats["failed"], stats["spooled"], stats["sent"]) == (3, 0, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        f"sightline: no spool can be kept in the spool_dir {spool_file}: {spool_file} is not a "
        "folder. Batches the collector does not take at once are dropped and counted as failed; "
        "set SIGHTLINE_SPOOL_DIR (or spool_dir=) to a folder this user can write"
    )
    assert not any("are kept in the spool" in message for message in messages)


# -- the log when the spool is disabled ----------------------------------------------------------


def test_with_the_spool_disabled_an_outage_is_logged_as_dropping_batches(tmp_path, caplog):
    endpoint = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="sightline"):
        client = sightline.Client(
            endpoint=endpoint,
            api_key=KEY,
            spool_dir=str(tmp_path / "spool"),
            spool_max_bytes=0,
            handle_signals=False,
            http_backoff_max=0.2,
        )
        for number in range(5):
            client.log_event("custom", f"event-{number}")
        client.close(5)
    stats = client.stats()
    assert (stats["failed"], stats["spooled"], stats["sent"]) == (5, 0, 0)
    messages = [r.getMessage() for r in caplog.records]
    [outage] = [m for m in messages if m.startswith(f"sightline: could not reach {endpoint}")]
    assert outage.endswith(
        "; the spool is disabled (spool_max_bytes=0), so undelivered batches are dropped and "
        "counted as failed: this one, and those made before the collector is tried again (after "
        "a backoff)"
    )
    assert not any("are kept in the spool" in message for message in messages)
    assert not (tmp_path / "spool").exists()
