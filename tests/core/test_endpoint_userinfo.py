"""An endpoint holding ``user:password@`` (``https://svc:pw@collector/``): httpx would turn it
into Basic auth, replacing the API key's Bearer header. The credentials are left out of the URL
posted to, the key is sent, a warning says so (never with the password), and without a key it
is a ConfigError that says to set one. The exporter and ``sightline doctor`` agree."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import sightline
from sightline import ConfigError, Event, EventType
from sightline.config import Config, endpoint_url
from sightline.doctor import run_checks
from sightline.exporters.http import HttpExporter
from tests.support.loopback import serving

KEY = "sl_" + "u" * 40
PASSWORD = "S3cretPassw0rd"


@dataclass
class Seen:
    """One request the collector stand-in received."""

    method: str
    path: str
    authorization: str | None
    ids: list[str] = field(default_factory=list)


class _Collector(BaseHTTPRequestHandler):
    """Answers ``GET /health`` and accepts every batch, keeping each request's Authorization."""

    protocol_version = "HTTP/1.1"
    seen: list[Seen]

    def do_GET(self) -> None:
        self.seen.append(Seen("GET", self.path, self.headers.get("Authorization")))
        self._answer(200, {"status": "ok"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        ids = [event["id"] for event in json.loads(body or b"{}").get("events", [])]
        self.seen.append(Seen("POST", self.path, self.headers.get("Authorization"), ids))
        self._answer(202, {"accepted": len(ids), "duplicate": 0, "rejected": 0, "errors": []})

    def _answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[int, list[Seen]]]:
    """A collector stand-in on 127.0.0.1: its port and the requests it received."""
    seen: list[Seen] = []
    with serving(type("Handler", (_Collector,), {"seen": seen})) as port:
        yield port, seen


def with_userinfo(port: int) -> str:
    return f"http://svc:{PASSWORD}@127.0.0.1:{port}/"


def doctor_checks(port: int, tmp_path: Path, **options: Any) -> dict[str, Any]:
    """The checks of ``sightline doctor`` on the endpoint with userinfo on ``port``, by name."""
    checks = run_checks(
        endpoint=with_userinfo(port), spool_dir=str(tmp_path), environ={}, **options
    )
    return {c.name: c for c in checks}


def test_the_exporter_sends_the_bearer_key_not_basic_auth_from_the_userinfo(
    collector: tuple[int, list[Seen]], tmp_path: Path
) -> None:
    port, seen = collector
    with sightline.Client(
        endpoint=with_userinfo(port),
        api_key=KEY,
        spool_dir=str(tmp_path / "spool"),
        handle_signals=False,
    ) as client:
        assert client.track(Event(EventType.TOOL_CALL, "t", id="ev-1"))
        assert client.flush(5) is True
    assert [(s.method, s.path, s.authorization, s.ids) for s in seen] == [
        ("POST", "/api/v1/events", f"Bearer {KEY}", ["ev-1"])
    ]


def test_the_userinfo_is_left_out_of_the_url_posted_to(tmp_path: Path) -> None:
    assert endpoint_url(f"https://svc:{PASSWORD}@gw.example/sl/?token=t", "/api/v1/events") == (
        "https://gw.example/sl/api/v1/events?token=t"
    )
    exporter = HttpExporter(f"http://svc:{PASSWORD}@127.0.0.1:9", KEY, spool_dir=str(tmp_path))
    try:
        assert exporter.url == "http://127.0.0.1:9/api/v1/events"
        assert PASSWORD not in exporter.shown_url and PASSWORD not in repr(exporter.stats())
    finally:
        exporter.shutdown()


def test_a_warning_says_the_credentials_are_not_sent_without_the_password(
    collector: tuple[int, list[Seen]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = collector
    with caplog.at_level(logging.DEBUG, logger="sightline"):
        exporter = HttpExporter(with_userinfo(port), KEY, spool_dir=str(tmp_path))
        exporter.shutdown()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["sightline"]
    message = warnings[0].getMessage()
    assert f"'http://***@127.0.0.1:{port}/' holds credentials" in message
    assert "does not send" in message and "Bearer" in message
    assert PASSWORD not in caplog.text and "svc" not in caplog.text


def test_userinfo_without_an_api_key_is_a_config_error_that_says_to_set_the_key(
    tmp_path: Path,
) -> None:
    endpoint = f"https://svc:{PASSWORD}@collector.example"
    with pytest.raises(ConfigError) as from_client:
        sightline.Client(endpoint=endpoint, spool_dir=str(tmp_path), handle_signals=False)
    with pytest.raises(ConfigError) as from_exporter:
        HttpExporter(endpoint, None, spool_dir=str(tmp_path))
    with pytest.raises(ConfigError) as from_environment:
        Config.resolve({"SIGHTLINE_ENDPOINT": endpoint})
    for raised in (from_client, from_exporter, from_environment):
        message = str(raised.value)
        assert "'https://***@collector.example' holds credentials" in message
        assert "does not send" in message and "SIGHTLINE_API_KEY instead" in message
        assert PASSWORD not in message
    assert str(from_environment.value).endswith("(set by SIGHTLINE_ENDPOINT)")


def test_doctor_sends_the_bearer_key_and_warns_about_the_userinfo(
    collector: tuple[int, list[Seen]], tmp_path: Path
) -> None:
    port, seen = collector
    checks = doctor_checks(port, tmp_path, api_key=KEY)
    assert [(s.method, s.path, s.authorization) for s in seen] == [
        ("GET", "/health", None),
        ("POST", "/api/v1/events", f"Bearer {KEY}"),
    ]
    assert checks["endpoint"].status == "ok"
    key = checks["api key"]
    assert key.status == "warn"
    assert "is accepted by the collector" in key.message
    assert "holds credentials (user:password@), which Sightline does not send" in key.message
    shown = json.dumps([(c.message, c.details) for c in checks.values()])
    assert PASSWORD not in shown


def test_doctor_without_a_key_says_to_set_it_instead_of_the_userinfo(
    collector: tuple[int, list[Seen]], tmp_path: Path
) -> None:
    port, seen = collector
    checks = doctor_checks(port, tmp_path)
    key = checks["api key"]
    assert key.status == "fail"
    assert key.message.startswith(f"missing: the endpoint 'http://***@127.0.0.1:{port}/' holds")
    assert key.message.endswith("set SIGHTLINE_API_KEY / api_key= instead")
    assert [(s.method, s.authorization) for s in seen] == [("GET", None)]  # no Basic auth
