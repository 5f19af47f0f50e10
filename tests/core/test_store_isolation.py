"""One bad event never costs its batch, and a locked store never holds ``close()`` up
(ARCHITECTURE.md §5, §7): the embedded store, its exporter and the jsonl exporter, driven
directly with Event objects (bypassing the processors that would repair the values) against
real files."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from typing import Any

import pytest

import sightline
from sightline.event import Event, Usage
from sightline.exporters.jsonl import JsonlExporter
from sightline.exporters.sqlite import SqliteExporter
from sightline.pipeline import ExportResult
from sightline.store import SqliteStore

TRACE = "0123456789abcdef" * 2
BASE_NS = 1_773_480_000_000_000_000
MS = 1_000_000


def tool(name: str, index: int, **fields: Any) -> Event:
    start = BASE_NS + index * MS
    return Event("tool_call", name, trace_id=TRACE, start_ns=start, end_ns=start + MS, **fields)


def batch_around(poison: Event) -> list[Event]:
    """Five good events, the poison, five good events."""
    before = [tool(f"good-{i}", i, input={"i": i}) for i in range(5)]
    after = [tool(f"good-{i}", i, input={"i": i}) for i in range(5, 10)]
    return [*before, poison, *after]


POISONS = {
    "token count beyond 64 bits": lambda: tool("poison", 99, usage=Usage(2**64, 1)),
    "int too long to print": lambda: tool("poison", 99, input={"n": 10**5000}),
}


def stored_names(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM events ORDER BY start_ns")]
    finally:
        conn.close()


# -- the store -----------------------------------------------------------------------------------


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_the_store_keeps_the_good_events_of_a_batch_with_one_bad_event(tmp_path, poison):
    store = SqliteStore(str(tmp_path / "store.db"))
    rejected: list[BaseException] = []
    try:
        assert store.insert_events(batch_around(poison()), rejected=rejected) == 10
        summary = store.get_trace(TRACE)
    finally:
        store.close()
    assert len(rejected) == 1
    assert stored_names(str(tmp_path / "store.db")) == [f"good-{i}" for i in range(10)]
    assert summary is not None
    assert summary["event_count"] == 10


def test_a_rejected_event_among_duplicates_leaves_only_the_new_ones_stored(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    first = [tool("a", 1), tool("b", 2)]
    poison = POISONS["token count beyond 64 bits"]()
    rejected: list[BaseException] = []
    try:
        assert store.insert_events(first) == 2
        assert store.insert_events([*first, poison, tool("c", 3)], rejected=rejected) == 1
        summary = store.get_trace(TRACE)
    finally:
        store.close()
    assert [type(e) for e in rejected] == [OverflowError]
    assert stored_names(str(tmp_path / "store.db")) == ["a", "b", "c"]
    assert summary is not None
    assert summary["event_count"] == 3


def test_a_malformed_wire_event_is_rejected_alone(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    good = tool("good", 1).to_dict()
    malformed = tool("malformed", 2).to_dict()
    del malformed["start_time"]
    rejected: list[BaseException] = []
    try:
        assert store.insert_events([malformed, good], rejected=rejected) == 1
    finally:
        store.close()
    assert [type(e) for e in rejected] == [KeyError]
    assert stored_names(str(tmp_path / "store.db")) == ["good"]


def test_token_counts_summed_beyond_64_bits_stop_at_the_limit_of_the_trace_summary(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    half = 2**62 + 1  # each fits; their sum does not
    try:
        stored = store.insert_events(
            [tool("first", 1, usage=Usage(half, 0)), tool("second", 2, usage=Usage(half, 0))]
        )
        summary = store.get_trace(TRACE)
    finally:
        store.close()
    assert stored == 2
    assert summary is not None
    assert summary["usage"]["input_tokens"] == 2**63 - 1


# -- the exporters -------------------------------------------------------------------------------


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_the_sqlite_exporter_counts_and_logs_once_a_rejected_event(tmp_path, caplog, poison):
    path = str(tmp_path / "store.db")
    exporter = SqliteExporter(path)
    with caplog.at_level(logging.ERROR, logger="sightline"):
        try:
            assert exporter.export(batch_around(poison())) is ExportResult.SUCCESS
            assert exporter.export([poison()]) is ExportResult.SUCCESS
            stats = exporter.stats()
        finally:
            exporter.shutdown()
    assert (stats["inserted"], stats["duplicates"], stats["rejected"]) == (10, 0, 2)
    assert stored_names(path) == [f"good-{i}" for i in range(10)]
    [record] = [r for r in caplog.records if "cannot hold" in r.getMessage()]
    message = record.getMessage()
    assert "1 event(s) of a batch" in message
    assert "poison" not in message and "good-" not in message


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_a_rejected_event_is_counted_as_failed_in_client_stats(tmp_path, poison):
    path = str(tmp_path / "store.db")
    exporter = SqliteExporter(path)
    client = sightline.Client(exporters=[exporter])
    try:
        exporter.export(batch_around(poison()))
        stats = client.stats()
    finally:
        client.close()
    assert stats["exporters"]["sqlite"]["rejected"] == 1
    assert stats["failed"] == 1


def test_the_jsonl_exporter_writes_the_good_events_of_a_batch_with_one_bad_event(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    exporter = JsonlExporter(str(path))
    poison = POISONS["int too long to print"]
    with caplog.at_level(logging.ERROR, logger="sightline"):
        try:
            assert exporter.export(batch_around(poison())) is ExportResult.SUCCESS
            assert exporter.export([poison()]) is ExportResult.SUCCESS
            stats = exporter.stats()
        finally:
            exporter.shutdown()
    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert names == [f"good-{i}" for i in range(10)]
    assert stats["rejected"] == 2
    [record] = [r for r in caplog.records if "cannot be written as JSON" in r.getMessage()]
    assert "poison" not in record.getMessage()


# -- a store locked by another connection --------------------------------------------------------


@pytest.fixture
def locked_db(tmp_path):
    """A store in WAL mode, and a second connection holding its write lock until released."""
    path = str(tmp_path / "locked.db")
    SqliteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    yield path, holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def test_close_returns_by_its_timeout_while_another_connection_holds_the_lock(locked_db):
    path, _holder = locked_db
    client = sightline.Client(db=path, flush_interval=0.05)
    client.log_event("tool_call", "waiting")
    time.sleep(0.3)  # the exporter is now waiting for the lock
    started = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - started < 1.0 + 3
    stats = client.stats()
    assert stats["exported"] == 0
    assert stats["failed"] + stats.get("abandoned", 0) == 1


def test_store_close_does_not_wait_for_a_writer_waiting_on_the_lock(locked_db):
    path, holder = locked_db
    store = SqliteStore(path)  # SQLite waits up to 30 s for the lock
    outcome: list[BaseException | int] = []

    def write() -> None:
        try:
            outcome.append(store.insert_events([tool("late", 1)]))
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)  # the writer holds the store's lock, waiting for the file's
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 3
    holder.execute("ROLLBACK")
    writer.join(30)
    # The writer got the lock once released and finished; the connection closed behind it.
    assert outcome == [1]
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.count_events()


def test_the_sqlite_exporter_writes_a_batch_once_the_lock_is_released(locked_db):
    path, holder = locked_db
    exporter = SqliteExporter(path)
    threading.Timer(0.6, holder.execute, args=("ROLLBACK",)).start()
    try:
        assert exporter.export([tool("patient", 1)]) is ExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert stored_names(path) == ["patient"]
