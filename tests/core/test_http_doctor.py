"""``sightline doctor``: endpoint reachability, key validity and the spool, against a receiver."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sightline.doctor import register, run_checks, run_doctor
from sightline.spool import SpoolDirectory, spool_path_for
from tests.support.receiver import Receiver, free_port

KEY = "sl_" + "d" * 40


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    with Receiver(tmp_path / "received.jsonl", api_key=KEY) as running:
        yield running


def _by_name(checks: list[Any]) -> dict[str, Any]:
    return {check.name: check for check in checks}


def test_a_reachable_endpoint_and_an_accepted_key_pass(receiver: Receiver, tmp_path: Path) -> None:
    checks = _by_name(
        run_checks(endpoint=receiver.url, api_key=KEY, spool_dir=str(tmp_path), environ={})
    )
    assert checks["endpoint"].status == "ok" and "reachable" in checks["endpoint"].message
    assert checks["api key"].status == "ok" and "accepted" in checks["api key"].message
    assert checks["spool"].status == "ok" and "empty" in checks["spool"].message
    assert KEY not in checks["api key"].message  # the key is never printed whole


def test_a_key_the_collector_rejects_fails(receiver: Receiver, tmp_path: Path) -> None:
    other = "sl_" + "x" * 40
    checks = _by_name(
        run_checks(endpoint=receiver.url, api_key=other, spool_dir=str(tmp_path), environ={})
    )
    assert checks["api key"].status == "fail"
    assert "rejected by the collector (401)" in checks["api key"].message


def test_a_malformed_key_fails_without_asking_the_collector(
    receiver: Receiver, tmp_path: Path
) -> None:
    checks = _by_name(
        run_checks(endpoint=receiver.url, api_key="sl_short", spool_dir=str(tmp_path), environ={})
    )
    assert checks["api key"].status == "fail"
    assert "invalid Sightline API key" in checks["api key"].message
    assert [r for r in receiver.records()] == []  # nothing was posted


def test_an_unreachable_endpoint_fails_and_the_key_is_not_verified(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    checks = _by_name(
        run_checks(endpoint=url, api_key=KEY, spool_dir=str(tmp_path), environ={}, timeout=2)
    )
    assert checks["endpoint"].status == "fail" and "unreachable" in checks["endpoint"].message
    assert checks["api key"].status == "warn" and "not verified" in checks["api key"].message


def test_credentials_in_the_endpoint_are_never_printed(receiver: Receiver, tmp_path: Path) -> None:
    secret = "Pr0xyPassw0rd"
    port = receiver.url.rsplit(":", 1)[1]
    for url in (
        f"http://svc:{secret}@127.0.0.1:{port}",
        f"http://svc:{secret}@127.0.0.1:{free_port()}",
    ):
        checks = run_checks(
            endpoint=url, api_key=KEY, spool_dir=str(tmp_path), environ={}, timeout=2
        )
        shown = json.dumps([(c.name, c.status, c.message, c.details) for c in checks], default=str)
        assert secret not in shown
        assert "svc:***@127.0.0.1" not in shown and "***@127.0.0.1" in shown


def test_the_spool_contents_are_reported(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spool = SpoolDirectory(spool_path_for(str(tmp_path), url), max_bytes=10_000)
    for n in range(3):
        spool.write(json.dumps({"events": [{"id": f"{n}-{i}"} for i in range(10)]}).encode(), 10)
    checks = _by_name(
        run_checks(
            endpoint=url,
            api_key=KEY,
            spool_dir=str(tmp_path),
            environ={"SIGHTLINE_SPOOL_MAX_BYTES": "10000"},
            timeout=1,
        )
    )
    check = checks["spool"]
    assert "3 batches, 30 events" in check.message and "oldest" in check.message
    assert check.details["files"] == 3 and check.details["events"] == 30


def test_a_nearly_full_or_corrupt_spool_is_a_warning(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spool = SpoolDirectory(spool_path_for(str(tmp_path), url), max_bytes=2_000)
    spool.write(b'{"events":[]}' + b" " * 1500, 1)
    [entry] = spool.entries()
    with open(entry.path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"!")
    check = _by_name(
        run_checks(
            endpoint=url,
            api_key=KEY,
            spool_dir=str(tmp_path),
            environ={"SIGHTLINE_SPOOL_MAX_BYTES": "2000"},
            timeout=1,
        )
    )["spool"]
    assert check.status == "warn"
    assert "nearly full" in check.message and "corrupt" in check.message


def test_without_an_endpoint_the_embedded_store_is_used(tmp_path: Path) -> None:
    checks = _by_name(run_checks(db=str(tmp_path / "s.db"), environ={}))
    assert checks["endpoint"].status == "ok" and "embedded store" in checks["endpoint"].message
    assert checks["api key"].status == "skip"


def test_the_handler_prints_one_line_per_check_and_returns_the_exit_code(
    receiver: Receiver, tmp_path: Path
) -> None:
    lines: list[str] = []
    args = argparse.Namespace(endpoint=receiver.url, api_key=KEY, spool_dir=str(tmp_path))
    assert run_doctor(args, out=lines.append) == 0
    assert [line.split()[1] for line in lines if line] == ["endpoint", "api", "spool"]
    lines.clear()
    args = argparse.Namespace(
        endpoint=receiver.url, api_key="sl_" + "z" * 40, spool_dir=str(tmp_path)
    )
    assert run_doctor(args, out=lines.append) == 1
    assert "found a problem" in lines[-1]


def test_json_output(receiver: Receiver, tmp_path: Path) -> None:
    lines: list[str] = []
    args = argparse.Namespace(
        endpoint=receiver.url, api_key=KEY, spool_dir=str(tmp_path), json=True
    )
    assert run_doctor(args, out=lines.append) == 0
    data = json.loads("\n".join(lines))
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == ["endpoint", "api key", "spool"]


def test_register_adds_the_command_and_tolerates_shared_options() -> None:
    class FakeCli:
        def __init__(self) -> None:
            self.parser = argparse.ArgumentParser()
            self.sub = self.parser.add_subparsers(dest="command")
            self.handlers: dict[str, Any] = {}

        def command(self, name: str, help: str, handler: Any) -> argparse.ArgumentParser:
            parser = self.sub.add_parser(name, help=help)
            parser.add_argument("--json", action="store_true")  # already defined by the CLI
            parser.set_defaults(_handler=handler)
            self.handlers[name] = handler
            return parser

    cli = FakeCli()
    register(cli)
    args = cli.parser.parse_args(["doctor", "--endpoint", "http://x", "--api-key", KEY, "--json"])
    assert args._handler is run_doctor
    assert (args.endpoint, args.api_key, args.json) == ("http://x", KEY, True)


def test_sightline_doctor_runs_from_the_command_line(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sightline.cli import main

    code = main(
        ["doctor", "--endpoint", receiver.url, "--api-key", KEY, "--spool-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reachable" in out and "accepted" in out


def test_an_endpoint_with_a_query_keeps_it_after_the_path(
    receiver: Receiver, tmp_path: Path
) -> None:
    checks = _by_name(
        run_checks(
            endpoint=receiver.url + "/?token=gw-secret",
            api_key=KEY,
            spool_dir=str(tmp_path),
            environ={},
        )
    )
    assert checks["endpoint"].status == "ok", checks["endpoint"].message
    assert checks["api key"].status == "ok", checks["api key"].message
    assert "gw-secret" not in json.dumps([(c.message, c.details) for c in checks.values()])


def test_the_embedded_store_is_checked_when_events_go_there(tmp_path: Path) -> None:
    import sqlite3

    from sightline.store import SqliteStore
    from sightline.store.sqlite import SCHEMA_VERSION

    def store_check(path: Path) -> Any:
        return _by_name(run_checks(db=str(path), environ={}))["store"]

    missing = store_check(tmp_path / "new" / "s.db")
    assert missing.status == "ok" and "will be created" in missing.message
    SqliteStore(str(tmp_path / "good.db")).close()
    good = store_check(tmp_path / "good.db")
    assert good.status == "ok" and "can write" in good.message
    (tmp_path / "notes.db").write_text("not a database, just notes\n" * 100)
    broken = store_check(tmp_path / "notes.db")
    assert broken.status == "fail" and "cannot be read" in broken.message
    newer = tmp_path / "newer.db"
    SqliteStore(str(newer)).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    ahead = store_check(newer)
    assert ahead.status == "fail" and "newer than this" in ahead.message
    # with an endpoint (and no sqlite exporter) the store is not the destination: no check
    assert "store" not in _by_name(
        run_checks(endpoint="http://127.0.0.1:9", api_key=KEY, db=str(newer), environ={}, timeout=1)
    )
