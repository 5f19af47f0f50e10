"""Every event is accounted for: an exporter's own counts never hide the pipeline's, an event the
http exporter cannot encode costs only itself, events given up at close are counted, credentials
in the endpoint never show, and settings that would stop the worker are refused up front."""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import sightline
from sightline import ConfigError, Event, EventType
from sightline.exporters.http import HttpExporter
from sightline.pipeline import ExportResult, Pipeline
from sightline.spool import SpoolDirectory, spool_path_for
from tests.support.loopback import serving
from tests.support.receiver import Receiver

KEY = "sl_" + "d" * 40
PASSWORD = "Pr0xyPassw0rd"


class _Unencodable(Event):
    """An event no encoder can write, whatever the cause (here: its wire form cannot be built)."""

    def to_dict(self) -> dict[str, Any]:
        raise ValueError("this event cannot be encoded")


def _event(name: str) -> Event:
    return Event(EventType.TOOL_CALL, name, id=name).finish()


def _unencodable(name: str) -> Event:
    return _Unencodable(EventType.TOOL_CALL, name, id=name).finish()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "received.jsonl", api_key=KEY) as running:
        yield running


class _Recorder(BaseHTTPRequestHandler):
    """Accepts every batch; keeps the path, the Authorization header and the event ids."""

    requests: list[tuple[str, str, list[str]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        ids = [event["id"] for event in json.loads(body)["events"]]
        self.requests.append((self.path, self.headers.get("Authorization", ""), ids))
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"accepted": len(ids)}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[tuple[str, str, list[str]]]]]:
    requests: list[tuple[str, str, list[str]]] = []
    with serving(type("Handler", (_Recorder,), {"requests": requests})) as port:
        yield port, requests


# -- an exporter's own counts add to the pipeline's --------------------------------------------


class _RaisingWithStats:
    """Raises on every batch and reports its own (zero) failed count, as the http exporter does."""

    def export(self, events: Sequence[Event]) -> ExportResult:
        raise RuntimeError("down")

    def stats(self) -> dict[str, Any]:
        return {"failed": 0, "dropped": 2, "state": "down", "pending_batches": "n/a"}

    def shutdown(self) -> None:
        pass


def test_an_exporters_own_counts_add_to_the_pipelines_and_never_replace_them() -> None:
    with sightline.Client(exporters=[_RaisingWithStats()], handle_signals=False) as client:
        for n in range(7):
            client.track(_event(f"e{n}"))
        client.flush(5)
        stats = client.stats()
    [mine] = stats["exporters"].values()
    assert (mine["failed"], mine["dropped"], mine["state"]) == (7, 2, "down")
    assert (mine["pending_batches"], mine["exporter_pending_batches"]) == (0, "n/a")
    assert (stats["failed"], stats["exporter_dropped"]) == (7, 2)


# -- the http exporter: one event that cannot be encoded costs only itself ---------------------


def test_an_event_the_http_exporter_cannot_encode_is_dropped_counted_and_the_rest_delivered(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[tuple[BaseException, list[Any]]] = []
    exporter = HttpExporter(
        receiver.url,
        KEY,
        spool_dir=str(tmp_path / "spool"),
        on_error=lambda error, events: reported.append((error, list(events))),
    )
    good = [_event(f"good-{n}") for n in range(10)]
    try:
        with caplog.at_level(logging.ERROR, logger="sightline"):
            first = exporter.export([*good[:5], _unencodable("bad-1"), *good[5:]])
            second = exporter.export([_unencodable("bad-2"), _event("good-10")])
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert first is second is ExportResult.SUCCESS
    assert sorted(receiver.accepted_ids()) == sorted([f"good-{n}" for n in range(11)])
    assert (stats["sent"], stats["failed"], stats["spooled"]) == (11, 2, 0)
    assert [[e.id for e in events] for _, events in reported] == [["bad-1"], ["bad-2"]]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert "1 event(s) of a batch could not be encoded as JSON" in logged[0]
    assert "ValueError: this event cannot be encoded" in logged[0]


def test_a_batch_with_an_unencodable_event_is_counted_in_client_stats_not_lost_silently(
    receiver: Receiver, tmp_path: Path
) -> None:
    with sightline.Client(
        endpoint=receiver.url,
        api_key=KEY,
        spool_dir=str(tmp_path / "spool"),
        flush_interval=0.05,
        handle_signals=False,
    ) as client:
        for n in range(5):
            client.track(_event(f"good-{n}"))
        client.track(_unencodable("bad"))
        for n in range(5, 10):
            client.track(_event(f"good-{n}"))
        assert client.flush(10) is True
        stats = client.stats()
    assert sorted(receiver.accepted_ids()) == sorted(f"good-{n}" for n in range(10))
    assert (stats["exported"], stats["sent"], stats["failed"], stats["spooled"]) == (11, 10, 1, 0)
    assert stats["exporters"]["http"]["failed"] == 1


def test_persisting_a_batch_with_an_unencodable_event_spools_the_others(tmp_path: Path) -> None:
    exporter = HttpExporter("http://127.0.0.1:9", KEY, spool_dir=str(tmp_path))
    try:
        exporter.persist([_event("a"), _unencodable("bad"), _event("b")])
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    spool = SpoolDirectory(spool_path_for(str(tmp_path), "http://127.0.0.1:9"))
    assert [e["id"] for entry in spool.entries() for e in spool.read_events(entry)] == ["a", "b"]
    assert (stats["spooled"], stats["failed"]) == (2, 1)


# -- events abandoned at close -----------------------------------------------------------------


class _Hung:
    """An exporter whose export() blocks until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.exported: list[str] = []

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.gate.wait(30)
        self.exported += [e.id or "" for e in events]
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _three_batches_behind_a_hung_exporter(exporter: _Hung) -> Pipeline:
    pipeline = Pipeline([("hung", exporter)], lambda event: True, flush_interval=0.02)
    for n in range(3):
        pipeline.submit(_event(f"e{n}"))
        time.sleep(0.15)  # separate batches: one in export(), two queued behind it
    return pipeline


def test_events_abandoned_at_close_by_a_hung_exporter_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = _Hung()
    pipeline = _three_batches_behind_a_hung_exporter(exporter)
    try:
        with caplog.at_level(logging.WARNING, logger="sightline"):
            assert pipeline.close(timeout=0.5) is False
            assert pipeline.close(timeout=0.5) is True  # idempotent: nothing counted twice
        stats = pipeline.stats()
    finally:
        exporter.gate.set()
    assert (stats["abandoned"], stats["exported"], stats["failed"]) == (3, 0, 0)
    assert stats["exporters"]["hung"]["abandoned"] == 3
    assert stats["exporters"]["hung"]["pending_batches"] == 0
    warnings = [r.getMessage() for r in caplog.records if "abandoned" in r.getMessage()]
    assert warnings == [
        "sightline: exporter 'hung' did not finish by the close deadline; 3 events it had not "
        "exported are abandoned (counted as 'abandoned' in client.stats())"
    ]


def test_a_batch_abandoned_at_close_that_export_finishes_later_counts_as_exported() -> None:
    exporter = _Hung()
    pipeline = _three_batches_behind_a_hung_exporter(exporter)
    assert pipeline.close(timeout=0.5) is False
    exporter.gate.set()
    deadline = time.monotonic() + 5
    while pipeline.stats()["exported"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the two abandoned batches must not be exported after close
    stats = pipeline.stats()
    assert exporter.exported == ["e0"]
    assert (stats["exported"], stats["abandoned"]) == (1, 2)


# -- credentials in the endpoint -----------------------------------------------------------------


def test_credentials_in_the_endpoint_stay_out_of_logs_stats_and_the_spool_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    with caplog.at_level(logging.DEBUG, logger="sightline"):
        client = sightline.Client(
            endpoint=f"http://svc:{PASSWORD}@127.0.0.1:9",  # nothing listens on the discard port
            api_key=KEY,
            spool_dir=str(spool),
            http_timeout=1,
            handle_signals=False,
        )
        client.log_event("tool_call", "t")
        client.flush(3)
        stats = client.stats()
        client.close(2)
    assert PASSWORD not in caplog.text
    assert "http://***@127.0.0.1:9/api/v1/events" in caplog.text
    assert PASSWORD not in repr(stats)
    assert stats["exporters"]["http"]["endpoint"] == "http://***@127.0.0.1:9"
    assert stats["spooled"] == 1
    assert os.listdir(spool) == ["127_0_0_1_9-59b7003c"]  # the name without credentials


def test_requests_go_to_the_real_url_with_the_api_key_not_the_userinfo(
    tmp_path: Path, recorder: tuple[int, list[tuple[str, str, list[str]]]]
) -> None:
    port, requests = recorder
    with sightline.Client(
        endpoint=f"http://svc:{PASSWORD}@127.0.0.1:{port}/",
        api_key=KEY,
        spool_dir=str(tmp_path / "spool"),
        handle_signals=False,
    ) as client:
        client.log_event("tool_call", "t")
        assert client.flush(5) is True
        stats = client.stats()
    # The contract's Bearer key; the userinfo would have made httpx send Basic auth instead.
    assert [(path, auth, len(ids)) for path, auth, ids in requests] == [
        ("/api/v1/events", f"Bearer {KEY}", 1)
    ]
    assert stats["sent"] == 1
    assert stats["exporters"]["http"]["endpoint"] == f"http://***@127.0.0.1:{port}"
    assert PASSWORD.lower() not in stats["exporters"]["http"]["spool_dir"].lower()


def test_the_spool_directory_ignores_credentials_and_keeps_its_name_without_them(
    tmp_path: Path,
) -> None:
    plain = spool_path_for(str(tmp_path), "http://127.0.0.1:7878")
    assert os.path.basename(plain) == "127_0_0_1_7878-347c4583"  # unchanged: old spools found
    assert spool_path_for(str(tmp_path), f"http://svc:{PASSWORD}@127.0.0.1:7878/") == plain
    with_query = spool_path_for(str(tmp_path), "http://127.0.0.1:7878?token=s3cr3t")
    assert "s3cr3t" not in with_query


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://collector.example.com", "https://collector.example.com"),
        ("http://127.0.0.1:7878/api/v1/events", "http://127.0.0.1:7878/api/v1/events"),
        ("http://svc:pw@host:1/x", "http://***@host:1/x"),
        ("https://user@host", "https://***@host"),
        ("https://h/p?token=abc&mode=1&flag", "https://h/p?token=***&mode=***&***"),
        ("https://h/p#access_token=abc", "https://h/p#***"),
        ("collector.example.com/?token=sl_secret", "collector.example.com/?token=***"),
        ("a:b@host?k=v", "***@host?k=***"),
    ],
)
def test_redact_url_masks_userinfo_and_query_values(url: str, shown: str) -> None:
    from sightline.config import redact_url

    assert redact_url(url) == shown


def test_a_malformed_endpoint_is_not_echoed_with_its_secrets() -> None:
    secret = "sl_SECRETSECRETSECRETSECRETSECRET12"
    with pytest.raises(ConfigError) as raised:
        sightline.Client(endpoint=f"collector.example.com/?token={secret}", api_key=KEY)
    assert secret not in str(raised.value)
    assert "'collector.example.com/?token=***'" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        HttpExporter(f"svc:{PASSWORD}@collector.example.com", KEY)
    assert PASSWORD not in str(raised.value)
    assert "'***@collector.example.com'" in str(raised.value)


# -- numeric settings must be finite -----------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SIGHTLINE_FLUSH_INTERVAL", "inf"),
        ("SIGHTLINE_FLUSH_INTERVAL", "nan"),
        ("SIGHTLINE_FLUSH_INTERVAL", "1e300"),
        ("SIGHTLINE_HTTP_TIMEOUT", "inf"),
        ("SIGHTLINE_HTTP_TIMEOUT", "nan"),
        ("SIGHTLINE_HTTP_BACKOFF_MAX", "inf"),
        ("SIGHTLINE_HTTP_BACKOFF_MAX", "nan"),
    ],
)
def test_a_non_finite_or_huge_seconds_variable_raises_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as raised:
        sightline.Client(exporters=["memory"])
    assert f"(set by {variable})" in str(raised.value)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("flush_interval", float("inf"), "flush_interval must be a finite number, got inf"),
        ("flush_interval", float("nan"), "flush_interval must be a finite number, got nan"),
        ("http_timeout", float("-inf"), "http_timeout must be a finite number, got -inf"),
        ("flush_interval", "1", "flush_interval must be a number, got '1'"),
        ("queue_size", float("inf"), "queue_size must be a whole number, got inf"),
        ("batch_size", "10", "batch_size must be a whole number, got '10'"),
    ],
)
def test_a_non_finite_or_non_numeric_argument_raises_config_error(
    option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        sightline.Client(exporters=["memory"], **{option: value})
    assert str(raised.value) == message


def test_batches_spooled_under_the_old_directory_name_are_adopted(tmp_path: Path) -> None:
    from sightline.spool import _legacy_spool_path_for

    endpoint = f"http://svc:{PASSWORD}@127.0.0.1:9"
    old = _legacy_spool_path_for(str(tmp_path), endpoint)
    assert PASSWORD.lower() in os.path.basename(old)  # what earlier versions wrote on disk
    SpoolDirectory(old, 10**6).write(b'{"events": []}', 5)
    exporter = HttpExporter(endpoint, KEY, spool_dir=str(tmp_path))
    try:
        usage = exporter.spool.usage()
        assert (usage.files, usage.events) == (1, 5)
        assert not os.path.exists(old)
        assert all(PASSWORD.lower() not in name for name in os.listdir(tmp_path))
    finally:
        exporter.shutdown()
