"""Lossless delivery against a real receiver process on 127.0.0.1.

The receiver (``tests/support/receiver.py``) runs as a separate process that the tests kill,
restart and script to refuse, delay, answer 429/500/401 or die mid-request; it records every
event id it accepted in a file, so ids are counted across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sightline
from sightline import Event, EventType
from sightline.exporters.http import DeliveryError, HttpExporter
from sightline.spool import SpoolDirectory, spool_path_for
from tests.support.receiver import Receiver, read_records

KEY = "sl_" + "k" * 40


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    with Receiver(tmp_path / "received.jsonl", api_key=KEY) as running:
        yield running


def make_client(endpoint: str, spool: Path, **options: Any) -> sightline.Client:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("handle_signals", False)
    options.setdefault("http_backoff_max", 0.3)
    options.setdefault("http_timeout", 5.0)
    return sightline.Client(endpoint=endpoint, api_key=KEY, spool_dir=str(spool), **options)


def track(client: sightline.Client, ids: list[str]) -> None:
    for event_id in ids:
        assert client.track(Event(EventType.CUSTOM, "step", id=event_id))


def http_of(client: sightline.Client) -> HttpExporter:
    [exporter] = client.exporters
    assert isinstance(exporter, HttpExporter)
    return exporter


def spooled_ids(spool_root: Path, endpoint: str) -> list[str]:
    """Every event id in a spool, oldest batch first; fails on any unreadable file."""
    spool = SpoolDirectory(spool_path_for(str(spool_root), endpoint))
    ids: list[str] = []
    for entry in spool.entries():
        for data in spool.read_events(entry):
            Event.from_dict(data)  # each spooled event is a valid wire-form event
            ids.append(data["id"])
    return ids


def run_child(code: str, **env: str) -> subprocess.Popen[str]:
    """A Python child process running ``code``, with ``env`` added to its environment."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=str(Path(__file__).resolve().parents[2]),
    )


# -- the wire ----------------------------------------------------------------------------------


def test_batches_reach_the_receiver_with_key_user_agent_and_gzip(
    receiver: Receiver, tmp_path: Path
) -> None:
    ids = [f"w-{n:04d}" for n in range(1200)]
    with make_client(receiver.url, tmp_path / "spool", batch_size=500) as client:
        track(client, ids)
        assert client.flush(30)
        stats = client.stats()
    assert set(receiver.accepted_ids()) == set(ids)
    records = receiver.records()
    assert all(r["agent"] == f"sightline-python/{sightline.__version__}" for r in records)
    assert all(r["gzip"] for r in records)
    assert max(r["n"] for r in records) <= 500
    assert len(records) >= 3 and len({r["peer"] for r in records}) == 1  # one kept-alive connection
    assert stats["sent"] == 1200 and stats["spooled"] == 0 and stats["failed"] == 0
    assert stats["exporters"]["http"]["state"] == "ok"


def test_an_invalid_api_key_is_an_error_at_init_and_nothing_is_sent(
    receiver: Receiver, tmp_path: Path
) -> None:
    for bad in ("sk_" + "k" * 40, "sl_short", "sl_" + "k" * 31, "sl_" + "k" * 39 + "!"):
        with pytest.raises(sightline.ConfigError, match="invalid Sightline API key"):
            sightline.Client(endpoint=receiver.url, api_key=bad, handle_signals=False)
    with pytest.raises(sightline.ConfigError, match="needs an API key"):
        sightline.Client(endpoint=receiver.url, handle_signals=False)
    assert receiver.records() == []


# -- statuses ----------------------------------------------------------------------------------


def test_401_stops_sending_at_once_calls_on_error_once_and_keeps_the_events(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.set_mode("401")
    calls: list[tuple[BaseException, list[Any]]] = []
    client = make_client(
        receiver.url, tmp_path / "spool", batch_size=100,
        on_error=lambda error, events: calls.append((error, list(events))),
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="sightline"):
        for round_ in range(3):
            track(client, [f"a{round_}-{n}" for n in range(100)])
            client.flush(5)
        time.sleep(0.5)
        stats = client.stats()
        client.close()
    assert len(receiver.records()) == 1  # one request; no retries, no stream of failures
    [(error, events)] = calls
    assert isinstance(error, DeliveryError) and error.status == 401 and not error.retryable
    assert [e.id for e in events] == [f"a0-{n}" for n in range(100)]
    assert len([r for r in caplog.records if "rejected the API key" in r.getMessage()]) == 1
    assert stats["exporters"]["http"]["state"] == "key_rejected"
    assert stats["spooled"] == 300 and stats["sent"] == 0
    # Kept in the spool: a process with a key the collector accepts delivers them.
    receiver.set_mode("ok")
    with make_client(receiver.url, tmp_path / "spool") as fixed:
        assert fixed.flush(10)
    assert len(receiver.accepted_ids()) == 300


def test_429_with_retry_after_2_waits_about_2_seconds(receiver: Receiver, tmp_path: Path) -> None:
    receiver.set_mode("429:2,ok")
    with make_client(receiver.url, tmp_path / "spool") as client:
        track(client, [f"r{n}" for n in range(10)])
        assert receiver.wait_for_ids(10, timeout=15)
        stats = client.stats()
    first, second = receiver.records()[:2]
    assert first["status"] == 429 and second["status"] == 202
    waited = second["t"] - first["t"]
    assert 1.9 <= waited <= 3.5, waited
    assert stats["retried"] == 10 and stats["spooled"] == 10


def test_503_with_retry_after_is_honoured_too(receiver: Receiver, tmp_path: Path) -> None:
    receiver.set_mode("503:1,ok")
    with make_client(receiver.url, tmp_path / "spool") as client:
        track(client, ["s1", "s2"])
        assert receiver.wait_for_ids(2, timeout=15)
    first, second = receiver.records()[:2]
    assert 0.9 <= second["t"] - first["t"] <= 2.5


def test_5xx_answers_are_retried_with_backoff_until_delivered(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.set_mode("3*500,502,ok")
    with make_client(receiver.url, tmp_path / "spool") as client:
        track(client, [f"f{n}" for n in range(50)])
        assert receiver.wait_for_ids(50, timeout=20)
        stats = client.stats()
    statuses = [r["status"] for r in receiver.records()]
    assert statuses[:5] == [500, 500, 500, 502, 202]
    assert receiver.accepted_ids() == Counter({f"f{n}": 1 for n in range(50)})
    assert stats["retried"] >= 4 * 50 - 50 and stats["failed"] == 0


def test_refused_connections_are_retried_until_delivered(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.set_mode("3*refuse,ok")
    with make_client(receiver.url, tmp_path / "spool") as client:
        track(client, [f"rf{n}" for n in range(40)])
        assert receiver.wait_for_ids(40, timeout=20)
        assert client.flush(10)
    steps = [r["step"] for r in receiver.records()]
    assert steps[:4] == ["refuse", "refuse", "refuse", "ok"]
    assert receiver.accepted_ids() == Counter({f"rf{n}": 1 for n in range(40)})


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_rejected_batch_is_never_retried_and_reported_once(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    receiver.set_mode(f"{status},{status},ok")
    calls: list[tuple[BaseException, list[Any]]] = []
    with caplog.at_level(logging.ERROR, logger="sightline"), make_client(
        receiver.url, tmp_path / "spool",
        on_error=lambda error, events: calls.append((error, list(events))),
    ) as client:  # fmt: skip
        for batch in ("x", "y", "z"):
            track(client, [f"{batch}{n}" for n in range(20)])
            assert client.flush(10) is True
        stats = client.stats()
    assert [r["status"] for r in receiver.records()] == [status, status, 202]
    assert set(receiver.accepted_ids()) == {f"z{n}" for n in range(20)}
    assert [(e.status, [ev.id for ev in events][:1]) for e, events in calls] == [  # type: ignore[attr-defined]
        (status, ["x0"]),
        (status, ["y0"]),
    ]
    assert stats["failed"] == 40 and stats["spooled"] == 0
    logged = [r for r in caplog.records if f"answered {status}" in r.getMessage()]
    assert len(logged) == 1


def test_a_receiver_dying_mid_request_costs_at_most_a_duplicate_of_that_batch(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.set_mode("die")
    with make_client(receiver.url, tmp_path / "spool") as client:
        track(client, [f"d{n}" for n in range(30)])
        deadline = time.monotonic() + 10
        while receiver.running and time.monotonic() < deadline:
            time.sleep(0.02)
        receiver.kill()
        receiver.start(mode="ok")
        assert receiver.wait_for_ids(30, timeout=15)
        assert client.flush(10)
    counts = receiver.accepted_ids()
    assert set(counts) == {f"d{n}" for n in range(30)}
    lost_answers = receiver.unanswered_requests()
    assert len(lost_answers) == 1  # the batch the receiver died on
    assert sum(counts.values()) - len(counts) == 30  # re-sent once, and only that batch


# -- the spool ---------------------------------------------------------------------------------


def test_while_the_endpoint_is_down_batches_are_spooled_then_drained_in_order(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.kill()
    ids = [f"o{n:03d}" for n in range(250)]
    with make_client(receiver.url, tmp_path / "spool", batch_size=50) as client:
        for start in range(0, 250, 50):
            track(client, ids[start : start + 50])
            client.flush(5)
        assert client.flush(1) is False  # not delivered: kept in the spool
        stats = client.stats()
        assert stats["spooled"] == 250 and stats["sent"] == 0
        assert spooled_ids(tmp_path / "spool", receiver.url) == ids
        receiver.start()
        assert client.flush(15) is True
        stats = client.stats()
    delivered = [i for r in receiver.records() for i in r.get("ids", ())]
    assert delivered == ids  # in order, once each
    assert stats["sent"] == 250 and stats["exporters"]["http"]["drained"] == 250
    assert spooled_ids(tmp_path / "spool", receiver.url) == []


def test_new_batches_wait_behind_the_spool(receiver: Receiver, tmp_path: Path) -> None:
    receiver.kill()
    with make_client(receiver.url, tmp_path / "spool", batch_size=20) as client:
        track(client, [f"old{n}" for n in range(20)])
        client.flush(2)
        receiver.start(mode="delay:0.3")
        track(client, [f"new{n}" for n in range(20)])
        assert client.flush(15)
    delivered = [i for r in receiver.records() for i in r.get("ids", ())]
    assert delivered == [f"old{n}" for n in range(20)] + [f"new{n}" for n in range(20)]


def test_close_with_the_endpoint_down_spools_everything_and_the_next_client_delivers_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.kill()
    ids = [f"c{n}" for n in range(3000)]
    client = make_client(receiver.url, tmp_path / "spool")
    track(client, ids)
    started = time.monotonic()
    assert client.close(timeout=3) is False
    assert time.monotonic() - started < 5
    stats = client.stats()
    assert stats["spooled"] == 3000 and stats["dropped"] == 0 and stats["failed"] == 0
    assert sorted(spooled_ids(tmp_path / "spool", receiver.url)) == sorted(ids)
    receiver.start()
    with make_client(receiver.url, tmp_path / "spool") as later:
        assert later.flush(20)
    assert receiver.accepted_ids() == Counter(dict.fromkeys(ids, 1))


def test_close_spools_what_is_still_in_flight_or_queued_after_the_deadline(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.set_mode("hang")
    ids = [f"h{n:04d}" for n in range(2000)]
    client = make_client(receiver.url, tmp_path / "spool", http_timeout=30, batch_size=200)
    track(client, ids)
    time.sleep(0.3)  # the first batch is now stuck in a request that never gets an answer
    started = time.monotonic()
    client.close(timeout=1.0)
    assert time.monotonic() - started < 5
    assert sorted(spooled_ids(tmp_path / "spool", receiver.url)) == ids
    receiver.restart(mode="ok")
    with make_client(receiver.url, tmp_path / "spool") as later:
        assert later.flush(20)
    assert receiver.accepted_ids() == Counter(dict.fromkeys(ids, 1))


def test_the_spool_is_bounded_in_bytes_and_evictions_are_counted(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.kill()
    with make_client(
        receiver.url, tmp_path / "spool", spool_max_bytes=40_000, batch_size=100
    ) as client:
        spool = http_of(client).spool
        for start in range(0, 3000, 100):
            track(client, [f"b{n}" for n in range(start, start + 100)])
            client.flush(2)
        stats = client.stats()
    usage = spool.usage()
    assert usage.bytes <= 40_000
    assert stats["evicted"] > 0
    assert stats["evicted"] + usage.events == 3000 == stats["spooled"]
    kept = [int(i[1:]) for i in spooled_ids(tmp_path / "spool", receiver.url)]
    assert kept == sorted(kept) and kept[-1] == 2999  # oldest evicted first; the newest kept


def test_several_processes_sharing_a_spool_neither_lose_nor_double_send(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.kill()
    ids = [f"m{n:05d}" for n in range(6000)]
    with make_client(receiver.url, tmp_path / "spool", batch_size=100) as client:
        for start in range(0, len(ids), 100):
            track(client, ids[start : start + 100])
            client.flush(2)
    assert len(spooled_ids(tmp_path / "spool", receiver.url)) == 6000
    receiver.start()
    code = f"""
        import sightline
        client = sightline.Client(endpoint={receiver.url!r}, api_key={KEY!r},
                                  spool_dir={str(tmp_path / "spool")!r}, handle_signals=False)
        print(client.flush(30), flush=True)
        client.close()
    """
    children = [run_child(code) for _ in range(3)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    counts = receiver.accepted_ids()
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert len({r["pid"] for r in receiver.records()}) == 1  # one receiver process
    assert spooled_ids(tmp_path / "spool", receiver.url) == []


def test_an_event_over_the_byte_limit_is_truncated_not_dropped(
    receiver: Receiver, tmp_path: Path
) -> None:
    with make_client(
        receiver.url, tmp_path / "spool", http_max_batch_bytes=16_384, max_string=1_000_000
    ) as client:
        client.log_event("tool_call", "huge", input={"blob": "x" * 200_000})
        client.log_event("tool_call", "small", input={"q": "refund"})
        assert client.flush(10)
        stats = client.stats()
    assert len(receiver.accepted_ids()) == 2
    assert stats["sent"] == 2 and stats["failed"] == 0


def test_stats_report_sent_retried_spooled_evicted_and_failed(
    receiver: Receiver, tmp_path: Path
) -> None:
    with make_client(receiver.url, tmp_path / "spool") as client:
        stats = client.stats()
    for key in ("sent", "retried", "spooled", "evicted", "failed"):
        assert stats[key] == 0
    http = stats["exporters"]["http"]
    assert http["spool_dir"] == spool_path_for(str(tmp_path / "spool"), receiver.url)
    assert {"spool_files", "spool_events", "spool_bytes", "state", "drained"} <= set(http)


# -- the done-when scenarios -------------------------------------------------------------------


def test_soak_100k_events_from_4_threads_while_the_receiver_is_killed_three_times(
    receiver: Receiver, tmp_path: Path
) -> None:
    total, threads = 100_000, 4
    client = make_client(receiver.url, tmp_path / "spool", http_backoff_max=0.5)
    started = time.monotonic()

    def produce(worker: int) -> None:
        share = total // threads
        for start in range(0, share, 500):
            for n in range(start, start + 500):
                client.track(Event(EventType.CUSTOM, "step", id=f"t{worker}-{n:06d}"))
            time.sleep(0.02)  # spread tracking over a few seconds, across the restarts

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
    for producer in producers:
        producer.start()
    kills = []
    for _ in range(3):
        time.sleep(0.6)
        receiver.kill()
        kills.append(time.monotonic() - started)
        time.sleep(0.4)
        receiver.start()
    for producer in producers:
        producer.join()
    assert client.flush(90), client.stats()
    stats = client.stats()
    client.close()
    elapsed = time.monotonic() - started

    counts = receiver.accepted_ids()
    expected = {f"t{w}-{n:06d}" for w in range(threads) for n in range(total // threads)}
    assert set(counts) == expected  # every id arrived
    duplicates = sum(counts.values()) - len(counts)
    # A duplicate is only ever a re-send of a batch whose answer was lost in a kill: the request
    # that first carried it was never answered, or was the last one a killed receiver served.
    records = receiver.records()
    answered = {(r["pid"], r["req"]) for r in read_records(receiver.record) if r.get("answered")}
    last_of_pid: dict[int, int] = {}
    for record in records:
        last_of_pid[record["pid"]] = max(last_of_pid.get(record["pid"], 0), record["req"])
    first_carrier: dict[str, tuple[int, int]] = {}
    for record in records:
        for event_id in record.get("ids", ()):
            first_carrier.setdefault(event_id, (record["pid"], record["req"]))
    for event_id, count in counts.items():
        if count > 1:
            pid, req = first_carrier[event_id]
            assert (pid, req) not in answered or req >= last_of_pid[pid] - 1, event_id
    assert stats["dropped"] == 0 and stats["exporter_dropped"] == 0
    assert stats["failed"] == 0 and stats["evicted"] == 0
    print(
        f"\nsoak: {total} events, {threads} threads, receiver killed at "
        f"{', '.join(f'{k:.1f}s' for k in kills)}; delivered all in {elapsed:.1f}s; "
        f"{duplicates} duplicates (re-sent batches whose answer was lost); "
        f"{stats['spooled']} events went through the spool; {stats['retried']} retried"
    )
    assert elapsed < 110


def test_sigterm_before_the_receiver_is_up_spools_and_a_later_process_delivers_all(
    tmp_path: Path,
) -> None:
    receiver = Receiver(tmp_path / "received.jsonl", api_key=KEY)  # not started yet
    spool = tmp_path / "spool"
    child = run_child(
        f"""
        import time, sightline
        from sightline import Event, EventType
        client = sightline.init(endpoint={receiver.url!r}, api_key={KEY!r},
                                spool_dir={str(spool)!r}, instrument=False, handle_signals=True)
        for n in range(10_000):
            client.track(Event(EventType.CUSTOM, "step", id=f"term-{{n:05d}}"))
        print("tracked", flush=True)
        # Short sleeps: a signal landing between the last check and the start of one long
        # sleep would only be handled when it ends (CPython's time.sleep has that race).
        for _ in range(2400):
            time.sleep(0.05)
        """
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "tracked"
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM  # chained to the default: ended by the signal
    assert len(spooled_ids(spool, receiver.url)) == 10_000

    with receiver:
        later = run_child(
            f"""
            import sightline
            client = sightline.init(endpoint={receiver.url!r}, api_key={KEY!r},
                                    spool_dir={str(spool)!r}, instrument=False)
            print(client.flush(30), flush=True)
            sightline.shutdown()
            """
        )
        out, err = later.communicate(timeout=60)
        assert later.returncode == 0, err
        assert out.strip() == "True"
        counts = receiver.accepted_ids()
    assert counts == Counter({f"term-{n:05d}": 1 for n in range(10_000)})
    assert spooled_ids(spool, receiver.url) == []


@pytest.mark.parametrize("receiver_up", [False, True], ids=["receiver-down", "receiver-up"])
def test_sigkill_loses_at_most_the_last_flush_interval_and_leaves_a_readable_spool(
    tmp_path: Path, receiver_up: bool
) -> None:
    flush_interval = 0.25
    slack = 0.5  # processing, one fsync and scheduling on a busy 2-core machine
    receiver = Receiver(tmp_path / "received.jsonl", api_key=KEY)
    if receiver_up:
        receiver.start()
    spool = tmp_path / "spool"
    child = run_child(
        f"""
        import sys, time, sightline
        from sightline import Event, EventType
        client = sightline.Client(endpoint={receiver.url!r}, api_key={KEY!r},
                                  spool_dir={str(spool)!r}, flush_interval={flush_interval},
                                  handle_signals=False)
        n = 0
        while True:
            for _ in range(20):
                client.track(Event(EventType.CUSTOM, "step", id=f"k-{{n:07d}}"))
                n += 1
            sys.stdout.write(f"{{n}} {{time.time()}}\\n")
            sys.stdout.flush()
            time.sleep(0.01)
        """
    )
    assert child.stdout is not None
    progress: list[tuple[int, float]] = []
    started = time.time()
    while time.time() - started < 2.5:
        line = child.stdout.readline()
        count, when = line.split()
        progress.append((int(count), float(when)))
    killed_at = time.time()
    child.kill()
    rest, _ = child.communicate(timeout=10)
    for line in rest.splitlines():
        count, when = line.split()
        progress.append((int(count), float(when)))
    try:
        found = set(spooled_ids(spool, receiver.url))  # raises on any corrupt file
        found |= set(receiver.accepted_ids())
    finally:
        receiver.kill()
    corrupt = Path(spool_path_for(str(spool), receiver.url)) / "corrupt"
    assert not corrupt.exists() or not os.listdir(corrupt)

    tracked = progress[-1][0]
    missing = [n for n in range(tracked) if f"k-{n:07d}" not in found]
    window = flush_interval + slack
    for n in missing:
        tracked_by = next(when for count, when in progress if count > n)
        assert tracked_by >= killed_at - window, (n, killed_at - tracked_by)
    oldest = max((killed_at - next(w for c, w in progress if c > n) for n in missing), default=0)
    print(
        f"\nSIGKILL ({'receiver up' if receiver_up else 'receiver down'}): {tracked} tracked, "
        f"{len(missing)} missing, all tracked within the last {oldest:.2f}s "
        f"(flush interval {flush_interval}s)"
    )


def test_a_spooled_batch_the_collector_rejects_is_reported_with_its_events(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.kill()
    calls: list[tuple[BaseException, list[Any]]] = []
    with make_client(
        receiver.url, tmp_path / "spool", batch_size=10,
        on_error=lambda error, events: calls.append((error, list(events))),
    ) as client:  # fmt: skip
        for batch in ("p", "q"):
            track(client, [f"{batch}{n}" for n in range(10)])
            client.flush(2)
        receiver.start(mode="422,ok")
        assert client.flush(15)
        stats = client.stats()
    [(error, events)] = calls
    assert isinstance(error, DeliveryError) and error.status == 422
    assert [e.id for e in events] == [f"p{n}" for n in range(10)]  # read back from the spool
    assert set(receiver.accepted_ids()) == {f"q{n}" for n in range(10)}
    assert stats["failed"] == 10 and stats["sent"] == 10


def test_a_running_process_delivers_batches_another_process_left_in_the_spool(
    receiver: Receiver, tmp_path: Path
) -> None:
    exporter = HttpExporter(
        receiver.url, KEY, spool_dir=str(tmp_path / "spool"), idle_check_interval=0.2
    )
    try:
        body = (
            b'{"events":['
            + b",".join(
                json.dumps(Event(EventType.CUSTOM, "x", id=f"left-{n}").finish().to_dict()).encode()
                for n in range(5)
            )
            + b"]}"
        )
        exporter.spool.write(body, events=5)  # as a crashed neighbour would have left it
        assert receiver.wait_for_ids(5, timeout=10)
    finally:
        exporter.shutdown()
    assert exporter.stats()["drained"] == 5


def test_a_forked_child_delivers_with_its_own_connection_and_threads(
    receiver: Receiver, tmp_path: Path
) -> None:
    child = run_child(
        f"""
        import os, sightline
        from sightline import Event, EventType
        client = sightline.Client(endpoint={receiver.url!r}, api_key={KEY!r},
                                  spool_dir={str(tmp_path / "spool")!r}, handle_signals=False,
                                  flush_interval=0.05)
        for n in range(100):
            client.track(Event(EventType.CUSTOM, "step", id=f"parent-{{n}}"))
        client.flush(10)
        pid = os.fork()
        who = "child" if pid == 0 else "parent2"
        for n in range(100):
            client.track(Event(EventType.CUSTOM, "step", id=f"{{who}}-{{n}}"))
        ok = client.flush(10)
        client.close()
        if pid == 0:
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print(ok, os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    out, err = child.communicate(timeout=60)
    assert out.split() == ["True", "0"], err
    counts = receiver.accepted_ids()
    expected = {f"{who}-{n}" for who in ("parent", "parent2", "child") for n in range(100)}
    assert counts == Counter(dict.fromkeys(expected, 1))


def test_a_query_in_the_endpoint_goes_after_the_ingest_path(receiver: Any, tmp_path: Path) -> None:
    from sightline.config import endpoint_url

    assert endpoint_url("https://gw.example/sl/?token=a&v=1#x", "/api/v1/events") == (
        "https://gw.example/sl/api/v1/events?token=a&v=1"
    )
    client = make_client(receiver.url + "?token=gw-secret", tmp_path / "spool")
    try:
        track(client, ["q1", "q2"])
        assert client.flush(10)
        assert receiver.wait_for_ids(2)
    finally:
        client.close(5)
    assert set(receiver.accepted_ids()) == {"q1", "q2"}
    assert {r.get("query") for r in receiver.records() if r.get("n")} == {"token=gw-secret"}
    assert client.stats()["exported"] == 2
