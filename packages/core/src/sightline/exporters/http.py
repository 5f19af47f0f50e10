"""The ``http`` exporter: batches to a Sightline collector, with retries and a durable spool.

``POST {endpoint}/api/v1/events`` with ``{"events": [...]}``, ``Authorization: Bearer <key>``,
``User-Agent: sightline-python/<version>``, gzip above a size threshold, one keep-alive
connection pool (httpx).

Delivery never happens on the caller's thread: :meth:`HttpExporter.export` runs on the
exporter's worker thread, and a second thread of the exporter (the *drainer*) delivers what
was spooled. The rules:

- 2xx: delivered.
- Network errors, timeouts, 5xx, 429 and any other status not listed below: the batch is
  written to the spool at once (a dropped keep-alive connection is first retried once,
  immediately) and the drainer retries it with exponential backoff and full jitter, capped
  (``Retry-After`` honoured on 429 and 503), for as long as the spool keeps it. The worker
  thread never sleeps on a failing endpoint, so batches behind it reach the disk promptly.
  While anything of ours is in the spool, or the endpoint is backing off, new batches go
  straight to the spool, behind the older ones, so order is kept.
- 400, 413, 422: the batch is rejected; never retried; logged once per status through the
  ``sightline`` logger, counted as ``failed`` and passed to ``on_error(error, events)``.
- An event that cannot be encoded as JSON at all is dropped, counted as ``failed`` and logged
  once; the rest of its batch goes on.
- 401, 403: the key is not accepted. Nothing more is sent by this process (no stream of
  failures); ``on_error`` is called once and the logger says it once. The events are **kept in
  the spool**, so a process started later with a valid key delivers them.

The spool is drained in order when the endpoint answers again, by this process or the next one
to start (the drainer starts at construction when the spool is not empty).

A request ends within ``timeout`` seconds, however slowly the collector answers (past it, the
request is a timeout, as above). Of an answer, at most ``REPLY_LIMIT`` bytes (64 KiB, once
decoded) are read: the status, ``Retry-After`` and the receipt's counts are what is used, and
what an error quotes of it has the API key and other bearer tokens or keys masked.

The exporter accounts for every event it is handed (``sent``, ``spooled`` or ``failed`` in
:meth:`HttpExporter.stats`), so :meth:`~HttpExporter.export` returns ``SUCCESS`` unless it
raised: the pipeline adds its own ``failed`` count to the exporter's, and nothing is counted
twice. Credentials in the endpoint (``user:password@``, query values) never appear in logs,
errors, stats or the spool's directory name: they are shown masked (``redact_url``). The
``user:password@`` is not sent either (httpx would make it a Basic ``Authorization`` header in
place of the key's Bearer one): it is left out of the URL posted to, with a warning, and an
endpoint holding it without an API key is a ``ConfigError``.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sightline import __version__
from sightline.capture import MASK, Sanitizer
from sightline.config import (
    endpoint_url,
    redact_url,
    redacted_endpoint_url,
    strip_userinfo,
    userinfo_ignored,
)
from sightline.errors import ConfigError, SightlineError
from sightline.event import Event
from sightline.jsonwire import dumps_bytes
from sightline.logs import log_safely
from sightline.pipeline import ExportResult
from sightline.spool import (
    SpoolDirectory,
    adopt_legacy_spool,
    decode_body,
    folder_obstacle,
    spool_path_for,
)
from sightline.threads import start_background_thread

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "NEVER_RETRIED",
    "REPLY_LIMIT",
    "DeliveryError",
    "HttpExporter",
    "RetryPolicy",
    "encode_batch",
]


DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
GZIP_THRESHOLD = 1024
NEVER_RETRIED = frozenset({400, 401, 403, 413, 422})
KEY_REJECTED = frozenset({401, 403})
TRUNCATED = "…[truncated]"
REPLY_LIMIT = 64 * 1024
"""The most of a collector's answer that is read, in bytes once decoded: enough for a receipt
or an error message, and never a body that decompresses to gigabytes."""
_WRITE_PIECE = 64 * 1024
_ENVELOPE_BYTES = len(b'{"events":[]}')
_REJECTED = re.compile(rb'"rejected"\s*:\s*(\d{1,9})')


class DeliveryError(SightlineError):
    """A batch could not be delivered to the collector.

    ``status`` is the HTTP status (``None`` for a network error), ``retryable`` says whether
    Sightline will try again, ``url`` is where it posted (credentials masked) and ``detail`` the
    start of the answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        url: str | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.url = url
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    """How the drainer retries a failing endpoint.

    After ``n`` consecutive failures the wait is drawn uniformly from
    ``[0, min(backoff_max, backoff_initial * 2**n)]`` ("full jitter"), unless the collector sent
    ``Retry-After`` with a 429 or 503, which is honoured (up to ``max_retry_after`` seconds).
    """

    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    max_retry_after: float = 600.0

    def backoff(self, attempt: int) -> float:
        """The jittered wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt, 32)))
        return random.uniform(0.0, ceiling)


@dataclass
class _Outcome:
    kind: str  # "ok" | "retry" | "reject" | "key"
    status: int | None = None
    error: DeliveryError | None = None
    retry_after: float | None = None
    dropped_connection: bool = False


@dataclass
class _Chunk:
    body: bytes  # uncompressed JSON request body
    events: Sequence[Event]


@dataclass
class _InFlight:
    body: bytes
    encoding: str
    count: int
    persisted: str | None = None


def encode_batch(
    events: Sequence[Event],
    max_events: int = 512,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    *,
    unencodable: list[tuple[Event, Exception]] | None = None,
) -> list[_Chunk]:
    """Split ``events`` into request bodies of at most ``max_events`` events and ``max_bytes``.

    An event larger than the byte limit on its own is truncated (its biggest fields first,
    marked with ``…[truncated]`` and ``metadata["sightline.truncated"] = true``), never dropped.
    An event that cannot be encoded at all raises, unless ``unencodable`` is given: then it is
    left out of the bodies and appended there with its error, and the others are encoded.
    """
    chunks: list[_Chunk] = []
    for start in range(0, len(events), max_events):
        group = events[start : start + max_events]
        try:
            # The common case: one dumps call for the whole group.
            body = _dumps({"events": [event.to_dict() for event in group]})
        except Exception:
            body = b""  # encoded one by one below, where a bad event stays alone
        if body and len(body) <= max_bytes:
            chunks.append(_Chunk(body, group))
        else:
            chunks.extend(_encode_by_size(group, max_events, max_bytes, unencodable))
    return chunks


def _encode_by_size(
    events: Sequence[Event],
    max_events: int,
    max_bytes: int,
    unencodable: list[tuple[Event, Exception]] | None,
) -> list[_Chunk]:
    limit = max(256, max_bytes - _ENVELOPE_BYTES)
    chunks: list[_Chunk] = []
    parts: list[bytes] = []
    members: list[Event] = []
    size = 0
    for event in events:
        try:
            encoded = _encode_event(event)
            if len(encoded) > limit:
                encoded = _fit(json.loads(encoded), limit)
        except Exception as exc:
            if unencodable is None:
                raise
            unencodable.append((event, exc))
            continue
        extra = len(encoded) + (1 if parts else 0)
        if parts and (len(parts) >= max_events or size + extra > limit):
            chunks.append(_Chunk(b'{"events":[' + b",".join(parts) + b"]}", members))
            parts, members, size = [], [], 0
            extra = len(encoded)
        parts.append(encoded)
        members.append(event)
        size += extra
    if parts:
        chunks.append(_Chunk(b'{"events":[' + b",".join(parts) + b"]}", members))
    return chunks


def _dumps(value: Any) -> bytes:
    # Values come out of the pipeline's sanitizer: strict JSON without cycles.
    return dumps_bytes(value)


def _encode_event(event: Event) -> bytes:
    try:
        return _dumps(event.to_dict())
    except (TypeError, ValueError, RecursionError):
        # The pipeline makes values JSON-safe; an event that bypassed it still gets through.
        from sightline.capture import Sanitizer

        return _dumps(Sanitizer()(event.to_dict()))


def _fit(data: dict[str, Any], limit: int) -> bytes:
    """Shrink the biggest content fields of one event until its JSON fits in ``limit`` bytes."""
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = data["metadata"] = {}
    metadata["sightline.truncated"] = True
    encoded = _dumps(data)
    for _ in range(12):
        if len(encoded) <= limit:
            return encoded
        sizes: dict[tuple[str, ...], int] = {}
        for key in ("input", "output"):
            if data.get(key) is not None:
                sizes[(key,)] = len(_dumps(data[key]))
        meta = {k: v for k, v in data["metadata"].items() if k != "sightline.truncated"}
        if meta:
            sizes[("metadata",)] = len(_dumps(meta))
        error = data.get("error")
        if isinstance(error, dict):
            for key in ("stack", "message"):
                if error.get(key):
                    sizes[("error", key)] = len(_dumps(error[key]))
        if data.get("tags"):
            sizes[("tags",)] = len(_dumps(data["tags"]))
        if not sizes:
            break
        path = max(sizes, key=lambda p: sizes[p])
        over = len(encoded) - limit
        room = max(0, sizes[path] - over - 2 * len(TRUNCATED) - 16)
        if path == ("input",) or path == ("output",):
            text = _dumps(data[path[0]]).decode()
            data[path[0]] = text[: room // 2] + TRUNCATED  # escaping can double the length
        elif path == ("metadata",):
            text = _dumps(meta).decode()
            data["metadata"] = {
                "sightline.truncated": True,
                "sightline.metadata": text[: room // 2] + TRUNCATED,
            }
        elif path == ("tags",):
            data["tags"] = []
        else:
            value = str(data["error"][path[1]])
            data["error"][path[1]] = value[: room // 2] + TRUNCATED
        encoded = _dumps(data)
    if len(encoded) > limit:
        for key in ("input", "output"):
            data[key] = None
        data["metadata"] = {"sightline.truncated": True}
        data["tags"] = []
        if isinstance(data.get("error"), dict):
            data["error"]["stack"] = None
            data["error"]["message"] = str(data["error"].get("message") or "")[:200]
        data["name"] = str(data.get("name", ""))[:200]
        encoded = _dumps(data)
    return encoded


def _retry_after(value: str | None, limit: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), limit)


class HttpExporter:
    """Delivers batches to a Sightline collector; what cannot be delivered now is spooled.

    Built by name from configuration (``exporters=["http"]``, or implied by ``endpoint=``)::

        sightline.init(endpoint="https://sightline.example.com", api_key="sl_...")

    or directly, to combine it with other exporters::

        HttpExporter("http://127.0.0.1:7878", "sl_...", spool_dir="/var/tmp/sightline")
    """

    name = "http"

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        *,
        timeout: float = 10.0,
        spool_dir: str | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        max_batch_events: int = 512,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        gzip_threshold: int = GZIP_THRESHOLD,
        retry: RetryPolicy | None = None,
        on_error: Callable[[BaseException, Sequence[Any]], None] | None = None,
        idle_check_interval: float = 5.0,
    ) -> None:
        if api_key is not None:
            from sightline.config import validate_api_key

            validate_api_key(api_key)
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint must be an http(s) URL, got {redact_url(endpoint)!r}")
        if strip_userinfo(endpoint)[1]:
            # httpx would turn user:password@ into Basic auth, replacing the key's Bearer header:
            # the URL posted to leaves them out (endpoint_url), and the key is required.
            if not api_key:
                raise ConfigError(
                    userinfo_ignored(endpoint) + ". Remove them from the URL and pass "
                    "api_key=... or set SIGHTLINE_API_KEY instead"
                )
            log_safely(
                logging.WARNING,
                "sightline: %s; remove them from the URL",
                userinfo_ignored(endpoint),
            )
        # As configured (credentials too): the spool's name leaves them out (spool_path_for).
        self.endpoint = endpoint.rstrip("/")
        self.url = endpoint_url(self.endpoint, "/api/v1/events")
        # What logs, errors and stats show: the URL without its credentials.
        self.shown_endpoint = redact_url(self.endpoint)
        self.shown_url = redacted_endpoint_url(self.endpoint, "/api/v1/events")
        self.api_key = api_key
        self.timeout = timeout
        self.max_batch_events = max(1, max_batch_events)
        self.max_batch_bytes = max(1024, max_batch_bytes)
        self.gzip_threshold = gzip_threshold
        self.retry = retry or RetryPolicy()
        self.on_error = on_error
        self.idle_check_interval = idle_check_interval
        if spool_dir is None:
            import os
            import tempfile

            spool_dir = os.path.join(tempfile.gettempdir(), "sightline-spool")
        adopt_legacy_spool(spool_dir, self.endpoint)  # batches spooled before an upgrade
        self.spool = SpoolDirectory(spool_path_for(spool_dir, self.endpoint), spool_max_bytes)
        if self.spool.enabled and (obstacle := folder_obstacle(self.spool.path)):
            # As for a store that cannot be written: said at once, and the events it costs are
            # counted as failed; the user's code goes on, and delivery works while the
            # collector answers.
            log_safely(
                logging.WARNING,
                "sightline: no spool can be kept in the spool_dir %s: %s. Batches the collector "
                "does not take at once are dropped and counted as failed; set SIGHTLINE_SPOOL_DIR "
                "(or spool_dir=) to a folder this user can write",
                spool_dir,
                obstacle,
            )
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.rejected_by_server = 0
        self.drained = 0
        self.requests = 0
        self._client: Any = None
        self._deadlines: _DeadlineBackend | None = None
        self._logged: set[Any] = set()
        self._reset_threads()
        if self.spool.entries():
            # A previous process left batches: deliver them first, before anything new.
            self._spooling = True
        # The drainer starts now: it delivers what an earlier process spooled, and opens the
        # HTTP client (imports, TLS context) off the path of the first batch.
        self._ensure_drainer()

    def _reset_threads(self) -> None:
        self._count_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._progress = threading.Condition()
        self._inflight_lock = threading.Lock()
        self._inflight: _InFlight | None = None
        self._spooling = False
        self._next_attempt = 0.0
        self._retry_after_until = 0.0
        self._failures = 0
        self._failure_total = 0
        self._outage_logged = False
        self._halted: DeliveryError | None = None
        self._urgent = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        self._last_scan = 0.0

    @classmethod
    def from_config(cls, config: Any) -> HttpExporter:
        """Build the exporter from a :class:`~sightline.Config`."""
        if not config.endpoint:
            raise ConfigError("the http exporter needs an endpoint (SIGHTLINE_ENDPOINT)")
        return cls(
            config.endpoint,
            config.api_key,
            timeout=getattr(config, "http_timeout", 10.0),
            spool_dir=config.resolved_spool_dir,
            spool_max_bytes=config.spool_max_bytes,
            max_batch_events=config.batch_size,
            max_batch_bytes=getattr(config, "http_max_batch_bytes", DEFAULT_MAX_BATCH_BYTES),
            retry=RetryPolicy(backoff_max=getattr(config, "http_backoff_max", 30.0)),
            on_error=config.on_error,
        )

    # -- the exporter protocol ----------------------------------------------------------------

    def export(self, events: Sequence[Event]) -> ExportResult:
        """Deliver ``events`` (on the exporter's worker thread), or spool them for later.

        Always ``SUCCESS``: an event that is not delivered or spooled (rejected by the
        collector, not encodable) is counted as ``failed`` by this exporter, not by the caller.
        """
        if not events:
            return ExportResult.SUCCESS
        self._ensure_drainer()
        for chunk in self._encode(events):
            body, encoding = self._compress(chunk.body)
            if self._spool_if_behind(body, encoding, chunk.events):
                continue
            self._deliver_inline(body, encoding, chunk.events)
        return ExportResult.SUCCESS

    def persist(self, events: Sequence[Event]) -> None:
        """Spool ``events`` without trying to send them.

        The pipeline calls it for batches this exporter will not get to in time: past the
        close deadline, or when its backlog is full. (A batch in flight is spooled by
        :meth:`shutdown`.)
        """
        for chunk in self._encode(events):
            body, encoding = self._compress(chunk.body)
            with self._state_lock:
                self._spooling = True
                self._spool(body, encoding, chunk.events)

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing of this process is left in the spool, or ``timeout`` passes.

        The drainer makes one attempt at once (skipping a backoff wait, though not a
        ``Retry-After``); if it fails, this returns ``False`` straight away: the batches are safe
        in the spool and will be delivered later.
        """
        deadline = time.monotonic() + timeout
        with self._progress:
            failures_before = self._failure_total
            if self._halted is not None:
                return False
            if not self._spooling and self._inflight is None:
                return True
            self._urgent = True
        self._ensure_drainer()
        self._wake.set()
        with self._progress:
            while True:
                if self._halted is not None or self._failure_total > failures_before:
                    return False
                if not self._spooling and self._inflight is None:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))

    def shutdown(self) -> None:
        """Stop the drainer; a batch still being sent is spooled so that exit loses nothing."""
        self._stop.set()
        self._wake.set()
        self._persist_inflight()
        drainer = self._drainer
        if drainer is not None and drainer is not threading.current_thread():
            drainer.join(2.0)
            if drainer.is_alive():
                return  # mid-request on a daemon thread; its claim is released at exit
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def after_fork(self) -> None:
        """In a forked child: fresh threads, locks and connections, and counts of its own from
        0 (as the pipeline's); the spool is shared."""
        self._client = None
        self._deadlines = None
        self._reset_threads()
        self.sent = self.retried = self.failed = self.rejected_by_server = 0
        self.drained = self.requests = 0
        self.spool.after_fork()

    def stats(self) -> dict[str, Any]:
        """Delivery counts (in events) and the state of the spool."""
        usage = self.spool.usage()
        if self._halted is not None:
            state = "key_rejected"
        elif time.monotonic() < self._next_attempt:
            state = "backing_off"
        elif self._spooling:
            state = "spooling"
        else:
            state = "ok"
        return {
            "sent": self.sent,
            "retried": self.retried,
            "spooled": self.spool.written_events,
            "evicted": self.spool.evicted_events,
            "failed": self.failed,
            "rejected_by_server": self.rejected_by_server,
            "drained": self.drained,
            "requests": self.requests,
            "state": state,
            "endpoint": self.shown_endpoint,
            "spool_dir": self.spool.path,
            "spool_files": usage.files,
            "spool_events": usage.events,
            "spool_bytes": usage.bytes,
            "spool_corrupt_files": self.spool.corrupt_files,
        }

    # -- sending ------------------------------------------------------------------------------

    def _encode(self, events: Sequence[Event]) -> list[_Chunk]:
        """Request bodies for ``events``; an event that cannot be encoded is dropped and counted."""
        unencodable: list[tuple[Event, Exception]] = []
        chunks = encode_batch(
            events, self.max_batch_events, self.max_batch_bytes, unencodable=unencodable
        )
        if unencodable:
            lost = [event for event, _ in unencodable]
            exc = unencodable[0][1]
            self._add(failed=len(lost))
            self._report(
                DeliveryError(
                    f"{len(lost)} event(s) of a batch could not be encoded as JSON and are "
                    f"dropped ({type(exc).__name__}: {str(exc)[:200]}); the rest of the batch "
                    "goes on",
                    url=self.shown_url,
                ),
                lost,
                key=("unencodable",),
            )
        return chunks

    def _shown(self, text: str) -> str:
        """``text`` (an error message that may quote the URL) with the credentials masked."""
        if self.shown_url == self.url and self.shown_endpoint == self.endpoint:
            return text
        text = text.replace(self.endpoint, self.shown_endpoint)
        authority = self.endpoint.partition("://")[2].partition("/")[0]
        if "@" in authority:
            text = text.replace(authority.rpartition("@")[0], "***")
        return text

    def _http(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is not None:
                return self._client
            import httpx

            headers = {
                "User-Agent": f"sightline-python/{__version__}",
                # The codings _read_reply decodes (with a bound) itself.
                "Accept-Encoding": "gzip, deflate",
            }
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            limits = httpx.Limits(max_connections=4, max_keepalive_connections=2)
            transport = self._transport(limits)
            self._deadlines = _DeadlineBackend.install(transport)
            if self._deadlines is None:
                # Another httpx than the one we know: each request gets a _Watchdog instead,
                # which can end only a connection of its own (no keep-alive).
                if "no-deadline-backend" not in self._logged:
                    self._logged.add("no-deadline-backend")
                    log_safely(
                        logging.WARNING,
                        "sightline: httpx %s has no connection pool where sightline expects "
                        "one; each request to the collector is ended at its timeout by a "
                        "watchdog instead, on a new connection (no keep-alive)",
                        getattr(httpx, "__version__", "?"),
                    )
                transport.close()
                limits = httpx.Limits(max_connections=4, max_keepalive_connections=0)
                transport = self._transport(limits)
            self._client = httpx.Client(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
                headers=headers,
                limits=limits,
                transport=transport,
            )
            return self._client

    def _transport(self, limits: Any) -> Any:
        import httpx

        # Headers and body go out in separate writes; without TCP_NODELAY the body's tail can
        # wait for a delayed ACK (~40 ms a request on keep-alive connections).
        return httpx.HTTPTransport(
            limits=limits,
            verify=self.url.startswith("https://"),  # no CA bundle to load for http://
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    def _compress(self, body: bytes) -> tuple[bytes, str]:
        if len(body) > self.gzip_threshold:
            return gzip.compress(body, compresslevel=3), "gzip"
        return body, "identity"

    def _post(self, body: bytes, encoding: str) -> _Outcome:
        """One request, over within ``timeout`` seconds, whatever the collector does.

        httpx's timeouts apply to each read and write, so a collector dripping its answer a byte
        at a time would hold the batch for as long as it liked: every connect, read and write of
        the request waits at most until its deadline (``_DeadlineBackend``), and the answer is
        read in pieces, checking the deadline between them. Of the answer, at most
        ``REPLY_LIMIT`` decoded bytes are read (``_read_reply``). Where that backend cannot be
        installed (another httpx), a ``_Watchdog`` ends the request's connection at the
        deadline instead.
        """
        headers = {"Content-Type": "application/json"}
        if encoding == "gzip":
            headers["Content-Encoding"] = "gzip"
        self._add(requests=1)
        deadline = time.monotonic() + self.timeout
        deadlines: _DeadlineBackend | None = None
        watchdog: _Watchdog | None = None
        try:
            client = self._http()
            deadlines = self._deadlines
            extensions = None
            if deadlines is not None:
                deadlines.local.deadline = deadline
            else:
                watchdog = _Watchdog(deadline, client)
                extensions = {"trace": watchdog.trace}
            with client.stream(
                "POST", self.url, content=body, headers=headers, extensions=extensions
            ) as response:
                status = response.status_code
                retry_after_header = response.headers.get("Retry-After")
                reply, complete = _read_reply(response, deadline)
        except Exception as exc:
            if watchdog is not None and watchdog.fired:  # what it closed raised: a timeout
                return self._failed(_DeadlinePassed("the deadline passed: the watchdog ended it"))
            return self._failed(exc)
        finally:
            if deadlines is not None:
                deadlines.local.deadline = None
            if watchdog is not None:
                watchdog.cancel()
                self._forget_client(watchdog)
        if 200 <= status < 300:
            self._read_receipt(reply, complete)
            return _Outcome("ok", status)
        return self._answered(status, reply, retry_after_header)

    def _forget_client(self, watchdog: _Watchdog) -> None:
        """After a watchdog closed the client it could not end otherwise: the next request
        opens a new one."""
        if watchdog.closed_client:
            with self._client_lock:
                if self._client is watchdog.client:
                    self._client = None

    def _failed(self, exc: Exception) -> _Outcome:
        """The outcome of a request that raised ``exc``: always retried."""
        import httpx

        if isinstance(exc, (httpx.TimeoutException, _DeadlinePassed)):
            reason = str(exc) or type(exc).__name__
            return _Outcome(
                "retry",
                error=DeliveryError(
                    self._shown(
                        f"timed out posting to {self.shown_url} (timeout {self.timeout:g} s): "
                        f"{reason}"
                    ),
                    retryable=True,
                    url=self.shown_url,
                ),
            )
        # httpx.TransportError and anything unexpected below it
        return _Outcome(
            "retry",
            error=DeliveryError(
                self._shown(f"could not reach {self.shown_url}: {type(exc).__name__}: {exc}"),
                retryable=True,
                url=self.shown_url,
            ),
            dropped_connection=isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)),
        )

    def _answered(self, status: int, reply: bytes, retry_after_header: str | None) -> _Outcome:
        """The outcome of an answer other than 2xx."""
        detail = self._excerpt(reply)
        if status in KEY_REJECTED:
            kind = "key"
        elif status in NEVER_RETRIED:
            kind = "reject"
        else:
            kind = "retry"
        retry_after = None
        if status in (429, 503):
            retry_after = _retry_after(retry_after_header, self.retry.max_retry_after)
        error = DeliveryError(
            f"the collector at {self.shown_url} answered {status}"
            + (f": {detail}" if detail else ""),
            status=status,
            retryable=kind == "retry",
            url=self.shown_url,
            detail=detail,
        )
        return _Outcome(kind, status, error, retry_after)

    def _read_receipt(self, reply: bytes, complete: bool) -> None:
        # 202 {"accepted": n, "duplicate": n, "rejected": n, "errors": [...]}: events the server
        # refused one by one are not retried (they would be refused again) but are counted.
        try:
            receipt = json.loads(reply)
            rejected = int(receipt.get("rejected") or 0)
            errors = str(receipt.get("errors"))
        except Exception:
            # A receipt longer than REPLY_LIMIT (a long list of errors) is cut: its count,
            # written before the list, is still read.
            found = None if complete else _REJECTED.search(reply)
            if found is None:
                return
            rejected = int(found.group(1))
            errors = f"(the receipt is longer than {REPLY_LIMIT} bytes; not shown)"
        if rejected > 0:
            self._add(rejected_by_server=rejected)
            self._log_once(
                ("server-rejected",),
                "sightline: the collector rejected %d event(s) of a batch: %s (counted as "
                "rejected_by_server in client.stats())",
                rejected,
                self._masked(errors)[:500],
            )

    def _excerpt(self, reply: bytes, limit: int = 300) -> str:
        """The start of an answer, for a log or an error: one line, secrets masked."""
        text = " ".join(reply.decode("utf-8", "replace").split())
        text = self._masked(text)
        return text[:limit] + ("…" if len(text) > limit else "")

    def _masked(self, text: str) -> str:
        """``text`` (from the collector) with the API key, bearer tokens and key-shaped strings
        masked: a collector, or a proxy before it, may echo the request's ``Authorization``."""
        if self.api_key:
            text = text.replace(self.api_key, MASK)
        return str(Sanitizer(max_string=REPLY_LIMIT)(text))

    def _deliver_inline(self, body: bytes, encoding: str, events: Sequence[Event]) -> bool:
        """Send one chunk now; spool it if that fails (False only when it was rejected)."""
        record = _InFlight(body, encoding, len(events))
        with self._inflight_lock:
            self._inflight = record
        outcome: _Outcome | None = None
        try:
            outcome = self._post(body, encoding)
            if outcome.kind == "retry" and outcome.dropped_connection and not self._stop.is_set():
                # A kept-alive connection the collector closed (say, it restarted): one fresh try.
                self._add(retried=len(events))
                outcome = self._post(body, encoding)
        finally:
            with self._inflight_lock:
                self._inflight = None
                persisted = record.persisted
        kind = outcome.kind if outcome is not None else "retry"
        if kind == "ok":
            self._delivered(len(events), drained=False)
            if persisted is not None:
                self._unspool(persisted)  # shutdown spooled a copy while this was in flight
            return True
        if kind == "reject":
            self._reject(outcome, events)
            if persisted is not None:
                self._unspool(persisted)
            return False
        if persisted is None:
            with self._state_lock:
                self._spooling = True
                self._spool(body, encoding, events)
        if kind == "key":
            self._halt(outcome, events)
        elif outcome is not None and not self._stop.is_set():
            self._schedule_retry(outcome)
        return True

    def _spool_if_behind(self, body: bytes, encoding: str, events: Sequence[Event]) -> bool:
        """Spool the chunk when it must go behind the spool (or the endpoint is failing)."""
        with self._state_lock:
            if (
                self._spooling
                or self._halted is not None
                or self._stop.is_set()
                or time.monotonic() < self._next_attempt
            ):
                self._spooling = True
                self._spool(body, encoding, events)
                self._wake.set()
                return True
        return False

    def _spool(self, body: bytes, encoding: str, events: Sequence[Any]) -> str | None:
        """Write one body to the spool; a batch that cannot be kept is counted and reported."""
        if not self.spool.enabled:
            self._add(failed=len(events))
            self._report(
                DeliveryError(
                    f"could not deliver {len(events)} events to {self.shown_url} and the spool "
                    "is disabled (spool_max_bytes=0); they are dropped",
                    url=self.shown_url,
                ),
                events,
                key=("spool-disabled",),
            )
            return None
        try:
            return self.spool.write(body, len(events), encoding)
        except OSError as exc:
            self._add(failed=len(events))
            self._report(
                DeliveryError(
                    f"could not write to the spool {self.spool.path}: "
                    f"{folder_obstacle(self.spool.path) or exc}; {len(events)} events are dropped",
                    url=self.shown_url,
                ),
                events,
                key=("spool-error", type(exc).__name__),
            )
            return None

    def _unspool(self, path: str) -> None:
        for entry in self.spool.entries():
            if entry.path == path:
                claimed = self.spool.claim(entry)
                if claimed is not None:
                    claimed.delete()
                    self.spool.written_events -= entry.events
                return

    def _persist_inflight(self) -> None:
        with self._inflight_lock:
            record = self._inflight
            if record is None or record.persisted is not None:
                return
            with self._state_lock:
                self._spooling = True
                path = self._spool(record.body, record.encoding, range(record.count))
            record.persisted = path or ""

    # -- outcomes -----------------------------------------------------------------------------

    def _add(self, **amounts: int) -> None:
        with self._count_lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def _delivered(self, count: int, *, drained: bool) -> None:
        self._add(sent=count, drained=count if drained else 0)
        with self._progress:
            recovered = self._failures > 0
            self._failures = 0
            self._next_attempt = 0.0
            self._retry_after_until = 0.0
        if recovered and self._outage_logged:
            self._outage_logged = False
            log_safely(logging.INFO, "sightline: the collector at %s answers again", self.shown_url)

    def _schedule_retry(self, outcome: _Outcome) -> None:
        with self._progress:
            self._failures += 1
            self._failure_total += 1
            if outcome.retry_after is not None:
                wait = outcome.retry_after
                self._retry_after_until = time.monotonic() + wait
            else:
                wait = self.retry.backoff(self._failures)
            self._next_attempt = time.monotonic() + wait
            self._spooling = True
            self._progress.notify_all()
        self._wake.set()
        if not self._outage_logged:
            self._outage_logged = True
            log_safely(logging.WARNING, "sightline: %s; %s", outcome.error, self._outage_plan())

    def _outage_plan(self) -> str:
        """What happens to batches while the collector does not take them, as a log says it."""
        dropped = (
            "so undelivered batches are dropped and counted as failed: this one, and those made "
            "before the collector is tried again (after a backoff)"
        )
        if not self.spool.enabled:
            return f"the spool is disabled (spool_max_bytes=0), {dropped}"
        obstacle = folder_obstacle(self.spool.path)
        if obstacle is not None:
            return f"the spool {self.spool.path} cannot be used ({obstacle}), {dropped}"
        return f"batches are kept in the spool {self.spool.path} and retried with backoff"

    def _reject(self, outcome: _Outcome, events: Sequence[Any]) -> None:
        self._add(failed=len(events))
        error = outcome.error or DeliveryError(
            "rejected", status=outcome.status, url=self.shown_url
        )
        self._report(error, events, key=("status", outcome.status))

    def _halt(self, outcome: _Outcome, events: Sequence[Any]) -> None:
        with self._progress:
            if self._halted is not None:
                return
            error = outcome.error or DeliveryError("key rejected", status=outcome.status)
            self._halted = error
            self._spooling = True
            self._progress.notify_all()
        if self.spool.enabled and folder_obstacle(self.spool.path) is None:
            kept = f"are kept in the spool {self.spool.path} for a process started with a valid key"
        else:
            kept = "cannot be spooled, so they are dropped and counted as failed"
        log_safely(
            logging.ERROR,
            "sightline: the collector at %s rejected the API key (%s). Nothing more is sent by "
            "this process; undelivered events %s (check the key with `sightline doctor`).",
            self.shown_url,
            outcome.status,
            kept,
        )
        self._call_on_error(error, events)

    def _report(self, error: DeliveryError, events: Sequence[Any], *, key: tuple[Any, ...]) -> None:
        self._log_once(
            key,
            "sightline: %s (not retried; later occurrences are counted as failed in "
            "client.stats())",
            error,
        )
        self._call_on_error(error, events)

    def _log_once(self, key: tuple[Any, ...], message: str, *args: Any) -> None:
        if key in self._logged:
            log_safely(logging.DEBUG, message, *args)
            return
        self._logged.add(key)
        log_safely(logging.ERROR, message, *args)

    def _call_on_error(self, error: BaseException, events: Sequence[Any]) -> None:
        callback = self.on_error
        if callback is None:
            return
        if isinstance(events, _LazyEvents):
            events = events.load()
        elif isinstance(events, range):
            events = []
        try:
            callback(error, list(events))
        except Exception:
            log_safely(logging.ERROR, "sightline: the on_error callback raised", exc_info=True)

    # -- the drainer --------------------------------------------------------------------------

    def _ensure_drainer(self) -> None:
        if self._drainer is not None or self._stop.is_set():
            return
        with self._state_lock:
            if self._drainer is not None:
                return
            self._drainer = start_background_thread(self._drain_loop, "sightline-http-drain")

    def _drain_loop(self) -> None:
        try:
            self._http()
            self.spool.remove_stale_temp_files()
        except Exception:
            log_safely(logging.DEBUG, "sightline: http exporter warm-up failed", exc_info=True)
        while not self._stop.is_set():
            wait = self._drain_wait()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            try:
                self._drain()
            except Exception:
                log_safely(
                    logging.ERROR,
                    "sightline: the http exporter's drainer failed; retrying",
                    exc_info=True,
                )
                with self._progress:
                    self._failure_total += 1
                    self._next_attempt = time.monotonic() + self.retry.backoff(self._failures)
                    self._progress.notify_all()

    def _drain_wait(self) -> float:
        now = time.monotonic()
        with self._progress:
            if self._halted is not None:
                return 3600.0
            if self._urgent:
                # A flush skips the backoff wait but not a Retry-After the collector asked for.
                return max(0.0, self._retry_after_until - now)
            if now < self._next_attempt:
                return self._next_attempt - now
            if self._spooling:
                return 0.0
        return max(0.0, self._last_scan + self.idle_check_interval - now)

    def _drain(self) -> None:
        """Deliver spooled batches oldest first until the spool is empty or an attempt fails."""
        with self._drain_lock:
            try:
                self._drain_entries()
            finally:
                self._last_scan = time.monotonic()
                with self._progress:
                    self._urgent = False
                    self._progress.notify_all()

    def _drain_entries(self) -> None:
        while not self._stop.is_set():
            entries = self.spool.entries()
            if not entries:
                with self._state_lock:
                    if not self.spool.entries():
                        self._set_spooling(False)
                        return
                continue
            claimed_any = False
            for entry in entries:
                if self._stop.is_set() or self._halted is not None:
                    return
                claimed = self.spool.claim(entry)
                if claimed is None:
                    continue  # another sender has it
                claimed_any = True
                try:
                    if self._failures:
                        self._add(retried=claimed.events)
                    outcome = self._post(claimed.body, claimed.encoding)
                    if outcome.kind == "ok":
                        claimed.delete()
                        self._delivered(claimed.events, drained=True)
                    elif outcome.kind == "reject":
                        events = _LazyEvents(claimed.body, claimed.encoding, claimed.events)
                        claimed.delete()
                        self._reject(outcome, events)
                    elif outcome.kind == "key":
                        events = _LazyEvents(claimed.body, claimed.encoding, claimed.events)
                        claimed.release()
                        self._halt(outcome, events)
                        return
                    else:
                        claimed.release()
                        self._schedule_retry(outcome)
                        return
                finally:
                    claimed.release()
                with self._progress:
                    self._progress.notify_all()
            if not claimed_any:
                # Everything left is being sent by other processes: nothing is ours to wait for.
                with self._state_lock:
                    self._set_spooling(False)
                return

    def _set_spooling(self, value: bool) -> None:
        with self._progress:
            self._spooling = value
            self._progress.notify_all()


class _LazyEvents(Sequence[Any]):
    """The events of a spooled body, decoded only if ``on_error`` wants them."""

    def __init__(self, body: bytes, encoding: str, count: int) -> None:
        self.body = body
        self.encoding = encoding
        self.size = count

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        return self.load()[index]

    def load(self) -> list[Any]:
        try:
            dicts = decode_body(self.body, self.encoding)
        except Exception:
            return []
        events: list[Any] = []
        for data in dicts:
            try:
                events.append(Event.from_dict(data))
            except Exception:
                events.append(data)
        return events


_RAW_DEFLATE_HEAD = 1024  # bytes of a deflate answer kept until it decodes (see _read_reply)


class _DeadlinePassed(Exception):
    """The collector's answer was still coming in when the request's deadline passed."""


def _read_reply(response: Any, deadline: float, limit: int = REPLY_LIMIT) -> tuple[bytes, bool]:
    """The start of ``response``'s body, decoded, at most ``limit`` bytes, and whether that is
    all of it.

    The raw body is decoded here, gzip and deflate alike (deflate with its zlib header, as the
    RFC has it, or without, as some servers send it), never producing more than ``limit``
    bytes: httpx would decode each piece read whole, and a 1 MB gzip answer can decompress to
    gigabytes. An answer in any other coding is not read. The rest of a longer answer is left
    unread: closing the response then closes its connection. Raises ``_DeadlinePassed`` when the answer
    is still coming in at ``deadline``.
    """
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    inflate: Any = None
    if coding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)  # a gzip or zlib header, detected
    elif coding not in ("", "identity"):
        return b"", False
    # "deflate" is zlib data by the RFC, but some servers send raw deflate data (no header):
    # what came before the first decoded byte is kept to be read again that way.
    head = b"" if coding == "deflate" else None
    decoded = bytearray()
    raw_bytes = 0
    for raw in response.iter_raw():
        raw_bytes += len(raw)
        room = limit - len(decoded)
        if inflate is None:
            decoded += raw[:room]
        else:
            if head is not None:
                head += raw
            try:
                decoded += inflate.decompress(raw, room)
            except zlib.error:
                if head is None:
                    return bytes(decoded), False
                inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                try:
                    decoded += inflate.decompress(head, room)
                except zlib.error:
                    return bytes(decoded), False
                head = None
            if head is not None and (decoded or len(head) > _RAW_DEFLATE_HEAD):
                head = None  # decoding began (or 1 KiB gave nothing): no going back
        if len(decoded) >= limit or raw_bytes > 4 * limit:
            return bytes(decoded), False
        if time.monotonic() >= deadline:
            raise _DeadlinePassed(f"the answer was still coming in after {len(decoded)} bytes")
    return bytes(decoded), True


class _DeadlineBackend:
    """httpcore's network backend, with a deadline for the request each thread is sending.

    httpx's timeouts apply to each connect, read and write, not to a request: a collector that
    sends its answer a byte at a time never trips them. The exporter sets ``local.deadline``
    around each request; a connect, read or write of that thread then waits at most until the
    deadline, and fails as a timeout of its kind once it has passed.
    """

    def __init__(self, inner: Any) -> None:
        import httpcore

        self.inner = inner
        self.local = threading.local()
        self.connect_timeout = httpcore.ConnectTimeout
        self.read_timeout = httpcore.ReadTimeout
        self.write_timeout = httpcore.WriteTimeout

    @classmethod
    def install(cls, transport: Any) -> _DeadlineBackend | None:
        """Put a deadline backend under the connection pool of an ``httpx.HTTPTransport``.

        It goes in through httpx's private ``transport._pool._network_backend`` (a test checks
        that the httpx we are locked to has it). ``None`` when the transport does not have
        that shape (another httpx version): the exporter then logs a warning once and bounds
        each request with a :class:`_Watchdog` instead, which closes the request's connection
        at the deadline.
        """
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if pool is None or not hasattr(inner, "connect_tcp"):
            return None
        backend = cls(inner)
        pool._network_backend = backend
        return backend

    def wait(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` shortened to what is left of this thread's deadline, if it has one."""
        deadline = getattr(self.local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **options: Any
    ) -> Any:
        timeout = self.wait(timeout, self.connect_timeout)
        return _DeadlineStream(self.inner.connect_tcp(host, port, timeout=timeout, **options), self)

    def connect_unix_socket(self, path: str, timeout: float | None = None, **options: Any) -> Any:
        timeout = self.wait(timeout, self.connect_timeout)
        return _DeadlineStream(
            self.inner.connect_unix_socket(path, timeout=timeout, **options), self
        )

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _Watchdog:
    """Ends one request at its deadline where no :class:`_DeadlineBackend` could be installed.

    It learns the request's connection from httpcore's ``trace`` request extension (public:
    ``connection.connect_tcp.complete`` hands over the new stream) and, at the deadline, shuts
    its socket down, which wakes a read or write blocked on it at once. The client it is used
    with keeps no connection alive, so that every request opens one of its own and the
    watchdog ends no other. Should no connection be traced, the whole client is closed
    instead (the exporter then opens a new one, see ``closed_client``).
    """

    def __init__(self, deadline: float, client: Any) -> None:
        self.client = client
        self.fired = False
        self.closed_client = False
        self._sockets: list[Any] = []
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: remember the socket of each connection opened."""
        if not name.endswith((".connect_tcp.complete", ".connect_unix_socket.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            late = self.fired
            self._sockets.append(sock)
        if late:  # the deadline passed while connecting
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sockets = list(self._sockets)
            self.closed_client = not sockets
        for sock in sockets:
            _shut(sock)
        if not sockets:
            try:
                self.client.close()
            except Exception:
                pass

    def cancel(self) -> None:
        """The request is over: the watchdog does nothing more (it may have fired already)."""
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shut(sock: Any) -> None:
    """Shut a socket down for reading and writing: a call blocked on it returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _DeadlineStream:
    """A connection's stream whose reads and writes end at the deadline of the request."""

    def __init__(self, inner: Any, backend: _DeadlineBackend) -> None:
        self.inner = inner
        self.backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self.inner.read(
            max_bytes, timeout=self.backend.wait(timeout, self.backend.read_timeout)
        )
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # In pieces, so that a collector reading the body slowly meets the deadline too.
        for piece in _pieces(buffer, _WRITE_PIECE):
            self.inner.write(piece, timeout=self.backend.wait(timeout, self.backend.write_timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        timeout = self.backend.wait(timeout, self.backend.connect_timeout)
        return _DeadlineStream(
            self.inner.start_tls(ssl_context, server_hostname=server_hostname, timeout=timeout),
            self.backend,
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


def _pieces(buffer: bytes, size: int) -> Iterator[bytes]:
    if len(buffer) <= size:
        yield buffer
        return
    for start in range(0, len(buffer), size):
        yield buffer[start : start + size]
