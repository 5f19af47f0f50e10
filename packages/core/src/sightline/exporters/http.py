"""The ``http`` exporter: batches to a Sightline collector (``POST {endpoint}/api/v1/events``)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Sequence
from typing import Any

from sightline import __version__
from sightline.event import Event
from sightline.pipeline import ExportResult

__all__ = ["HttpExporter"]

logger = logging.getLogger("sightline")


class HttpExporter:
    """Posts ``{"events": [...]}`` with ``Authorization: Bearer <api_key>``; gzip over 1 KiB."""

    name = "http"

    def __init__(self, endpoint: str, api_key: str | None, *, timeout: float = 10.0) -> None:
        self.url = endpoint.rstrip("/") + "/api/v1/events"
        self.api_key = api_key
        self.timeout = timeout
        self._client: Any = None

    @classmethod
    def from_config(cls, config: Any) -> HttpExporter:
        if not config.endpoint:
            from sightline.errors import ConfigError

            raise ConfigError("the http exporter needs an endpoint (SIGHTLINE_ENDPOINT)")
        return cls(config.endpoint, config.api_key)

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"User-Agent": f"sightline-python/{__version__}"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.Client(timeout=self.timeout, headers=headers)
        return self._client

    def export(self, events: Sequence[Event]) -> ExportResult:
        body = json.dumps(
            {"events": [e.to_dict() for e in events]}, separators=(",", ":"), allow_nan=False
        ).encode()
        headers = {"Content-Type": "application/json"}
        if len(body) > 1024:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        response = self._http().post(self.url, content=body, headers=headers)
        if response.status_code >= 400:
            logger.error("sightline: collector answered %s to a batch", response.status_code)
            return ExportResult.FAILURE
        return ExportResult.SUCCESS

    def after_fork(self) -> None:
        self._client = None

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
