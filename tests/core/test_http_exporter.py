"""The http exporter's parts: batch encoding and truncation, backoff, Retry-After, config, and
the pipeline's hand-over of undelivered events to an exporter that can persist them."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from sightline import ConfigError, Event, EventType
from sightline.config import Config
from sightline.exporters.http import (
    TRUNCATED,
    HttpExporter,
    RetryPolicy,
    _retry_after,
    encode_batch,
)
from sightline.pipeline import ExportResult, Pipeline
from sightline.spool import spool_path_for

KEY = "sl_" + "e" * 40


def _event(n: int, **fields: Any) -> Event:
    event = Event(EventType.TOOL_CALL, f"tool-{n}", id=f"ev-{n}", **fields)
    return event.finish()


def _decode(body: bytes) -> list[dict[str, Any]]:
    return list(json.loads(body)["events"])


# -- encoding ----------------------------------------------------------------------------------


def test_batches_are_bounded_in_events() -> None:
    chunks = encode_batch([_event(n) for n in range(25)], max_events=10)
    assert [len(c.events) for c in chunks] == [10, 10, 5]
    assert [e["id"] for c in chunks for e in _decode(c.body)] == [f"ev-{n}" for n in range(25)]


def test_batches_are_bounded_in_bytes() -> None:
    events = [_event(n, input={"text": "x" * 900}) for n in range(40)]
    chunks = encode_batch(events, max_events=512, max_bytes=8_000)
    assert len(chunks) > 1
    assert all(len(c.body) <= 8_000 for c in chunks)
    assert sum(len(c.events) for c in chunks) == 40


def test_an_event_over_the_byte_limit_is_truncated_and_marked_not_dropped() -> None:
    big = _event(1, input={"document": "y" * 50_000}, metadata={"k": "v"})
    big.output = ["z" * 30_000]
    [chunk] = encode_batch([big], max_bytes=4_096)
    assert len(chunk.body) <= 4_096
    [data] = _decode(chunk.body)
    assert data["id"] == "ev-1" and data["name"] == "tool-1"
    assert data["metadata"]["sightline.truncated"] is True
    assert isinstance(data["input"], str) and data["input"].endswith(TRUNCATED)
    assert Event.from_dict(data).id == "ev-1"  # still a valid event


def test_a_huge_error_stack_is_truncated_too() -> None:
    from sightline.event import ErrorInfo

    event = _event(2, error=ErrorInfo("Boom", "m" * 10, stack="s" * 40_000, kind="tool"))
    [chunk] = encode_batch([event], max_bytes=2_048)
    [data] = _decode(chunk.body)
    assert len(chunk.body) <= 2_048
    assert data["error"]["type"] == "Boom" and data["error"]["kind"] == "tool"
    assert data["error"]["stack"].endswith(TRUNCATED)


def test_small_bodies_are_sent_plain_and_large_ones_gzip(tmp_path: Path) -> None:
    exporter = HttpExporter("http://127.0.0.1:9", KEY, spool_dir=str(tmp_path))
    assert exporter._compress(b"{}") == (b"{}", "identity")
    body = json.dumps({"events": [{"id": str(n)} for n in range(200)]}).encode()
    compressed, encoding = exporter._compress(body)
    assert encoding == "gzip" and gzip.decompress(compressed) == body
    exporter.shutdown()


# -- retry policy ------------------------------------------------------------------------------


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=2.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (60, 2.0)]:
        waits = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.7 and min(waits) < ceiling * 0.3  # spread, not fixed


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert _retry_after("2", 600) == 2.0
    assert _retry_after(" 0.5 ", 600) == 0.5
    assert _retry_after("-3", 600) == 0.0
    assert _retry_after("99999", 600) == 600
    assert _retry_after("soon", 600) is None
    assert _retry_after(None, 600) is None
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    parsed = _retry_after(when, 600)
    assert parsed is not None and 25 <= parsed <= 31


# -- construction and configuration ------------------------------------------------------------


def test_the_exporter_refuses_a_malformed_key_or_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid Sightline API key"):
        HttpExporter("http://127.0.0.1:9", "not-a-key", spool_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="http"):
        HttpExporter("127.0.0.1:9", KEY, spool_dir=str(tmp_path))


def test_from_config_uses_the_delivery_settings(tmp_path: Path) -> None:
    config = Config.resolve(
        {
            "SIGHTLINE_ENDPOINT": "http://127.0.0.1:9/",
            "SIGHTLINE_API_KEY": KEY,
            "SIGHTLINE_SPOOL_DIR": str(tmp_path),
            "SIGHTLINE_SPOOL_MAX_BYTES": "123456",
            "SIGHTLINE_HTTP_TIMEOUT": "2.5",
            "SIGHTLINE_HTTP_BACKOFF_MAX": "7",
            "SIGHTLINE_HTTP_MAX_BATCH_BYTES": "65536",
            "SIGHTLINE_BATCH_SIZE": "64",
            "SIGHTLINE_HANDLE_SIGNALS": "false",
        }
    )
    assert config.handle_signals is False
    exporter = HttpExporter.from_config(config)
    assert exporter.url == "http://127.0.0.1:9/api/v1/events"
    assert exporter.timeout == 2.5 and exporter.retry.backoff_max == 7.0
    assert exporter.max_batch_bytes == 65536 and exporter.max_batch_events == 64
    assert exporter.spool.max_bytes == 123456
    assert exporter.spool.path == spool_path_for(str(tmp_path), "http://127.0.0.1:9")
    exporter.shutdown()


def test_the_default_spool_is_beside_the_embedded_store(tmp_path: Path) -> None:
    config = Config.resolve(
        {}, endpoint="http://127.0.0.1:9", api_key=KEY, db=str(tmp_path / "x" / "s.db")
    )
    exporter = HttpExporter.from_config(config)
    assert exporter.spool.path.startswith(str(tmp_path / "x" / "spool"))
    exporter.shutdown()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGHTLINE_HTTP_TIMEOUT", "0"),
        ("SIGHTLINE_HTTP_BACKOFF_MAX", "-1"),
        ("SIGHTLINE_HTTP_MAX_BATCH_BYTES", "10"),
        ("SIGHTLINE_SPOOL_MAX_BYTES", "-5"),
        ("SIGHTLINE_HTTP_TIMEOUT", "soon"),
    ],
)
def test_unusable_delivery_settings_are_config_errors(variable: str, value: str) -> None:
    with pytest.raises(ConfigError):
        Config.resolve({variable: value})


def test_a_spool_disabled_by_size_zero_drops_and_reports_undeliverable_batches(
    tmp_path: Path,
) -> None:
    errors: list[tuple[BaseException, list[Any]]] = []
    exporter = HttpExporter(
        "http://127.0.0.1:9",  # nothing listens on the discard port
        KEY,
        spool_dir=str(tmp_path),
        spool_max_bytes=0,
        on_error=lambda error, events: errors.append((error, list(events))),
    )
    try:
        assert exporter.export([_event(n) for n in range(3)]) is ExportResult.SUCCESS
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert stats["failed"] == 3 and stats["spooled"] == 0
    [(error, events)] = errors
    assert "spool is disabled" in str(error) and len(events) == 3


def test_an_on_error_callback_that_raises_is_contained(tmp_path: Path) -> None:
    def explode(error: BaseException, events: Sequence[Any]) -> None:
        raise RuntimeError("user bug")

    exporter = HttpExporter(
        "http://127.0.0.1:9", KEY, spool_dir=str(tmp_path), spool_max_bytes=0, on_error=explode
    )
    try:
        exporter.export([_event(1)])
    finally:
        exporter.shutdown()
    assert exporter.stats()["failed"] == 1


# -- the pipeline hands undelivered events over to persist() -----------------------------------


class _SlowPersistingExporter:
    """Blocks in export() until released; records what it is asked to persist."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported: list[str] = []
        self.persisted: list[str] = []

    def export(self, events: Sequence[Event]) -> ExportResult:
        self.release.wait(10)
        self.exported += [e.id or "" for e in events]
        return ExportResult.SUCCESS

    def persist(self, events: Sequence[Event]) -> None:
        self.persisted += [e.id or "" for e in events]

    def shutdown(self) -> None:
        self.release.set()


def _pipeline(exporter: Any, **options: Any) -> Pipeline:
    def process(event: Event) -> bool:
        return True

    return Pipeline([("slow", exporter)], process, **options)


def test_a_full_exporter_queue_persists_its_oldest_batch_instead_of_dropping_it() -> None:
    exporter = _SlowPersistingExporter()
    pipeline = _pipeline(exporter, queue_size=100, batch_size=50, flush_interval=0.02)
    try:
        for n in range(400):
            pipeline.submit(_event(n))
            if n % 50 == 49:
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while pipeline.stats()["queued"] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        stats = pipeline.stats()
        assert stats["exporter_dropped"] == 0 and stats["dropped"] == 0
        assert len(exporter.persisted) >= 100
    finally:
        exporter.release.set()
        pipeline.close(5)
    assert sorted(exporter.exported + exporter.persisted) == sorted(f"ev-{n}" for n in range(400))


def test_close_persists_what_was_not_delivered_by_the_deadline() -> None:
    exporter = _SlowPersistingExporter()
    pipeline = _pipeline(exporter, queue_size=10_000, batch_size=100, flush_interval=0.02)
    for n in range(1000):
        pipeline.submit(_event(n))
    time.sleep(0.2)
    started = time.monotonic()
    assert pipeline.close(timeout=0.5) is False
    assert time.monotonic() - started < 3
    # One batch was stuck in export() (shutdown releases it); everything else was persisted.
    assert len(exporter.persisted) >= 800
    deadline = time.monotonic() + 5
    while len(exporter.exported) + len(exporter.persisted) < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(exporter.exported + exporter.persisted) == sorted(f"ev-{n}" for n in range(1000))


def test_after_fork_gives_the_exporter_fresh_threads_and_connections(tmp_path: Path) -> None:
    exporter = HttpExporter("http://127.0.0.1:9", KEY, spool_dir=str(tmp_path))
    exporter._http()
    exporter.after_fork()
    assert exporter._client is None and exporter._drainer is None
    assert not exporter._spooling and exporter._inflight is None
    exporter.shutdown()


def test_an_event_that_bypassed_the_sanitizer_is_still_encoded_as_strict_json() -> None:
    loop: list[Any] = ["a"]
    loop.append(loop)
    event = _event(3, input={"score": float("nan"), "loop": loop})
    [chunk] = encode_batch([event, _event(4)])
    first, second = _decode(chunk.body)  # strict JSON: json.loads would accept NaN, so check:
    assert b"NaN" not in chunk.body
    assert first["id"] == "ev-3" and second["id"] == "ev-4"
