"""A collector that misbehaves on purpose, served on 127.0.0.1: an answer that decompresses to
hundreds of megabytes, an answer that echoes the request's API key, an answer dripped a byte at
a time. The exporter reads at most ``REPLY_LIMIT`` decoded bytes of any answer, masks secrets in
what it quotes, and ends every request at its timeout; the spool's folders are private."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from sightline import Event, EventType
from sightline.exporters.http import (
    REPLY_LIMIT,
    DeliveryError,
    HttpExporter,
    _DeadlineBackend,
    _Watchdog,
)
from sightline.spool import SpoolDirectory, spool_path_for
from tests.support.loopback import serving

KEY = "sl_" + "h" * 40
OTHER_KEY = "sl_" + "o" * 40
BOMB_BYTES = 256 * 1024 * 1024


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes (about 1/1000 of that on the wire)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [deflate.compress(zeros) for _ in range(size >> 20)]
    parts.append(deflate.flush())
    return b"".join(parts)


class _Collector(BaseHTTPRequestHandler):
    """Reads each batch, then hands the request to ``answer``, the test's misbehaviour."""

    protocol_version = "HTTP/1.1"
    answer: Callable[[_Collector], None]
    requests: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append(self.headers.get("Authorization") or "")
        try:
            type(self).answer(self)
        except OSError:
            pass  # the client hung up, as it should on a hostile answer

    def reply(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drip(self, data: bytes, every: float) -> None:
        for n in range(len(data)):
            self.wfile.write(data[n : n + 1])
            self.wfile.flush()
            time.sleep(every)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Callable[[Callable[[_Collector], None]], int]]:
    """Serve a misbehaviour on 127.0.0.1 for the test: ``collector(answer)`` gives its port."""
    with contextlib.ExitStack() as servers:

        def serve(answer: Callable[[_Collector], None]) -> int:
            handler = type("Handler", (_Collector,), {"answer": answer, "requests": []})
            return servers.enter_context(serving(handler))

        yield serve


def exporter_for(port: int, tmp_path: Path, **options: Any) -> HttpExporter:
    return HttpExporter(f"http://127.0.0.1:{port}", KEY, spool_dir=str(tmp_path), **options)


def one_event() -> list[Event]:
    return [Event(EventType.TOOL_CALL, "lookup", id="ev-1").finish()]


def timed_export(
    port: int, tmp_path: Path, timeout: float | None = None
) -> tuple[float, dict[str, Any]]:
    """Export one event to the collector on ``port`` (with the exporter's default timeout unless
    ``timeout`` is given): the seconds it took, and the exporter's stats after it."""
    options = {} if timeout is None else {"timeout": timeout}
    exporter = exporter_for(port, tmp_path, **options)
    try:
        started = time.monotonic()
        exporter.export(one_event())
        took = time.monotonic() - started
        return took, exporter.stats()
    finally:
        exporter.shutdown()


# -- answers are read within a bound ------------------------------------------------------------


def test_a_gzip_bomb_answer_is_decoded_no_further_than_the_reply_limit(
    collector: Callable[..., int], tmp_path: Path
) -> None:
    bomb = gzip_bomb(BOMB_BYTES)
    port = collector(lambda h: h.reply(202, bomb, Content_Encoding="gzip"))
    exporter = exporter_for(port, tmp_path)
    try:
        exporter._http()  # the client's own set-up is not what is measured
        tracemalloc.start()
        try:
            exporter.export(one_event())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB held while reading the answer"
    assert stats["sent"] == 1 and stats["spooled"] == 0 and stats["failed"] == 0


def test_a_gzip_receipt_is_decoded_and_its_rejected_events_counted(
    collector: Callable[..., int], tmp_path: Path
) -> None:
    receipt = {"accepted": 0, "duplicate": 0, "rejected": 1, "errors": ["ev-1: bad type"]}
    body = gzip.compress(json.dumps(receipt).encode())
    port = collector(lambda h: h.reply(202, body, Content_Encoding="gzip"))
    _, stats = timed_export(port, tmp_path)
    assert stats["sent"] == 1 and stats["rejected_by_server"] == 1


def test_a_receipt_longer_than_the_reply_limit_still_counts_its_rejected_events(
    collector: Callable[..., int], tmp_path: Path
) -> None:
    errors = [f"ev-{n}: {'x' * 200}" for n in range(2 * REPLY_LIMIT // 200)]
    receipt = {"accepted": 0, "duplicate": 0, "rejected": 7, "errors": errors}
    body = json.dumps(receipt).encode()
    assert len(body) > REPLY_LIMIT
    port = collector(lambda h: h.reply(202, body, Content_Type="application/json"))
    _, stats = timed_export(port, tmp_path)
    assert stats["sent"] == 1 and stats["rejected_by_server"] == 7


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_a_deflate_receipt_is_read_with_or_without_its_zlib_header(
    collector: Callable[..., int], tmp_path: Path, wbits: int
) -> None:
    receipt = {"accepted": 0, "duplicate": 0, "rejected": 1, "errors": ["ev-1: bad type"]}
    deflate = zlib.compressobj(wbits=wbits)
    body = deflate.compress(json.dumps(receipt).encode()) + deflate.flush()
    port = collector(lambda h: h.reply(202, body, Content_Encoding="deflate"))
    _, stats = timed_export(port, tmp_path)
    assert stats["sent"] == 1 and stats["rejected_by_server"] == 1


# -- secrets in answers are masked --------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401])
def test_an_answer_echoing_the_api_key_is_masked_in_logs_errors_and_on_error(
    collector: Callable[..., int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    def echo(handler: _Collector) -> None:
        text = f"invalid credentials: {handler.requests[-1]}; try {OTHER_KEY}"
        handler.reply(status, text.encode())

    port = collector(echo)
    reported: list[BaseException] = []

    def on_error(error: BaseException, events: Sequence[Any]) -> None:
        reported.append(error)

    with caplog.at_level(logging.DEBUG, logger="sightline"):
        exporter = exporter_for(port, tmp_path, on_error=on_error)
        try:
            exporter.export(one_event())
        finally:
            exporter.shutdown()
    [error] = reported
    assert isinstance(error, DeliveryError) and error.status == status
    assert error.detail == "invalid credentials: Bearer [REDACTED]; try [REDACTED]"
    for text in (caplog.text, str(error), repr(error.args)):
        assert KEY not in text and OTHER_KEY not in text
    if status == 400:  # a rejected batch is logged with the answer; a rejected key without
        assert "invalid credentials: Bearer [REDACTED]" in caplog.text


# -- one request never outlasts the timeout ----------------------------------------------------


def test_an_answer_dripped_a_byte_at_a_time_is_cut_at_the_timeout_and_the_batch_spooled(
    collector: Callable[..., int], tmp_path: Path
) -> None:
    def trickle(handler: _Collector) -> None:
        handler.send_response(202)
        handler.send_header("Content-Length", "40")
        handler.end_headers()
        handler.wfile.flush()
        handler.drip(b" " * 40, every=0.2)  # each read is quick: only a deadline ends it

    port = collector(trickle)
    took, stats = timed_export(port, tmp_path, timeout=1.0)
    assert took < 2.5, f"the request took {took:.1f} s with a 1 s timeout"
    assert stats["sent"] == 0 and stats["spooled"] == 1


def test_a_status_line_dripped_a_byte_at_a_time_is_cut_at_the_timeout_too(
    collector: Callable[..., int], tmp_path: Path
) -> None:
    def trickle(handler: _Collector) -> None:
        handler.drip(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", every=0.2)

    port = collector(trickle)
    took, stats = timed_export(port, tmp_path, timeout=1.0)
    assert took < 2.5, f"the request took {took:.1f} s with a 1 s timeout"
    assert stats["sent"] == 0 and stats["spooled"] == 1


def test_the_deadline_backend_is_installed_under_the_httpx_we_are_locked_to(
    tmp_path: Path,
) -> None:
    # It goes in through a private attribute of httpx: an upgrade that moves it fails here.
    exporter = exporter_for(9, tmp_path)
    try:
        client = exporter._http()
        assert isinstance(exporter._deadlines, _DeadlineBackend)
        assert client._transport._pool._network_backend is exporter._deadlines
    finally:
        exporter.shutdown()


@pytest.fixture
def no_deadline_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """An httpx whose connection pool is not where the exporter expects it."""
    monkeypatch.setattr(_DeadlineBackend, "install", classmethod(lambda cls, transport: None))


def test_without_the_deadline_backend_a_dripped_status_line_is_still_cut_at_the_timeout(
    no_deadline_backend: None,
    collector: Callable[..., int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def trickle(handler: _Collector) -> None:
        handler.drip(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", every=0.2)

    port = collector(trickle)
    with caplog.at_level(logging.WARNING, logger="sightline"):
        exporter = exporter_for(port, tmp_path, timeout=1.0)
        try:
            started = time.monotonic()
            exporter.export(one_event())
            took = time.monotonic() - started
            stats = exporter.stats()
            assert exporter._deadlines is None
        finally:
            exporter.shutdown()
    assert took < 2.5, f"the request took {took:.1f} s with a 1 s timeout"
    assert stats["sent"] == 0 and stats["spooled"] == 1
    warnings = [r for r in caplog.records if "by a watchdog instead" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]


def test_a_watchdog_told_of_no_connection_closes_the_client_and_the_next_request_opens_one(
    no_deadline_backend: None,
    collector: Callable[..., int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An httpcore that no longer traces its connections: the watchdog closes the whole client.
    monkeypatch.setattr(_Watchdog, "trace", lambda self, name, info: None)
    answers = iter(["drip"])

    def answer(handler: _Collector) -> None:
        if next(answers, "reply") == "drip":
            handler.drip(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", every=0.2)
        else:
            handler.reply(202, b'{"accepted": 1}')

    port = collector(answer)
    exporter = exporter_for(port, tmp_path, timeout=1.0)
    try:
        first = exporter._http()
        started = time.monotonic()
        cut = exporter._post(b'{"events": []}', "identity")
        took = time.monotonic() - started
        delivered = exporter._post(b'{"events": []}', "identity")
        assert exporter._client is not first
    finally:
        exporter.shutdown()
    assert took < 2.5, f"the request took {took:.1f} s with a 1 s timeout"
    assert cut.kind == "retry" and "deadline passed" in str(cut.error)
    assert delivered.kind == "ok"


def test_without_the_deadline_backend_batches_are_still_delivered(
    no_deadline_backend: None, collector: Callable[..., int], tmp_path: Path
) -> None:
    port = collector(lambda h: h.reply(202, b'{"accepted": 1}'))
    exporter = exporter_for(port, tmp_path, timeout=1.0)
    try:
        for _ in range(3):
            exporter.export(one_event())
        time.sleep(1.2)  # past every request's deadline: a watchdog left running would show
        exporter.export(one_event())
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert stats["sent"] == 4 and stats["spooled"] == 0 and stats["failed"] == 0


# -- the spool's folders ------------------------------------------------------------------------


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_every_folder_the_spool_creates_is_private(usual_umask: None, tmp_path: Path) -> None:
    base = tmp_path / "made-by-sightline" / "spool"
    endpoint_folder = Path(spool_path_for(str(base), "http://127.0.0.1:7878"))
    SpoolDirectory(str(endpoint_folder)).write(b'{"events":[{}]}', events=1)
    for folder in (base.parent, base, endpoint_folder, endpoint_folder / "corrupt"):
        assert mode(folder) == 0o700, folder


def test_a_spool_dir_the_user_made_keeps_its_mode(usual_umask: None, tmp_path: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    base.chmod(0o755)
    endpoint_folder = Path(spool_path_for(str(base), "http://127.0.0.1:7878"))
    SpoolDirectory(str(endpoint_folder)).write(b'{"events":[{}]}', events=1)
    assert mode(base) == 0o755
    assert mode(endpoint_folder) == 0o700 and mode(endpoint_folder / "corrupt") == 0o700
