"""``sightline runs`` prints each trace id long enough to tell the listed runs apart: LangChain's
root runs take their trace id from LangChain's UUIDv7 run id, whose counter keeps the first 23
characters equal for runs started in the same millisecond (``chain.batch``), so 16 characters
printed the same id on several rows."""

from __future__ import annotations

import time

from sightline.event import Event
from sightline.store import SqliteStore
from tests.core.test_cli import sightline_cli

MS = 1_000_000
NOW = time.time_ns()
# Two LangChain root runs of one `chain.batch` (same millisecond, counter in the next bits)...
FIRST = "01a1fe367d5e72b884de1d42d91bbf28"
SECOND = "01a1fe367d5e72b884de1d4300e30b00"
# ...and one run of its own.
ALONE = "01a1fe366f3b712486601e7d97adea47"


def run(trace_id: str, name: str, start: int) -> Event:
    return Event("chain", name, trace_id=trace_id, start_ns=start, end_ns=start + MS)


def make_store(tmp_path):
    path = tmp_path / "batch.db"
    store = SqliteStore(str(path))
    store.insert_events(
        [
            run(FIRST, "first", NOW - 3 * MS),
            run(SECOND, "second", NOW - 2 * MS),
            run(ALONE, "alone", NOW - 1 * MS),
        ]
    )
    store.close()
    return path


def test_runs_prints_ids_that_tell_runs_of_the_same_millisecond_apart(tmp_path):
    db = make_store(tmp_path)
    result = sightline_cli("runs", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first_words = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert first_words == {
        "first": FIRST[:24],
        "second": SECOND[:24],
        "alone": ALONE[:16],
    }


def test_each_printed_id_shows_its_own_run(tmp_path):
    db = make_store(tmp_path)
    for trace_id in (FIRST[:24], SECOND[:24]):
        result = sightline_cli("show", trace_id, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
