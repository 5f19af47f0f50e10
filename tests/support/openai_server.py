"""A scripted, offline, OpenAI-compatible HTTP server for the test suite.

The server speaks just enough of the OpenAI REST API for the ``openai`` SDK
(sync, async, streaming) and the frameworks built on it -- crewAI's native
OpenAI provider, autogen-ext's ``OpenAIChatCompletionClient``, LangChain's and
LlamaIndex's OpenAI integrations -- to run end to end against ``127.0.0.1``:

* ``POST /v1/chat/completions`` -- answered from a script of :class:`Reply`
  objects (one per request, in order), then from an optional ``responder``
  callable; streaming (``"stream": true``) is served as SSE
  ``chat.completion.chunk`` events, with a trailing usage chunk when the
  request sets ``stream_options.include_usage``.
* ``POST /v1/embeddings`` -- deterministic unit vectors derived from the input
  text (``float`` or ``base64`` encoding, as the SDK asks).
* ``GET /v1/models`` and ``GET /v1/models/<id>``.

Usage::

    from tests.support.openai_server import Reply, ScriptedOpenAIServer

    with ScriptedOpenAIServer([
        Reply.tool_call("add", {"a": 1, "b": 2}, call_id="call_1"),
        Reply.text("Final Answer: 3", prompt_tokens=42, completion_tokens=7),
    ]) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        assert len(srv.requests) == 2

:func:`tool_then_answer` builds a responder for the common "call one tool,
then answer" loop, in both native function-calling and ReAct text form.

When neither the script nor a responder has a reply left, the server answers
HTTP 500 with an ``error.type == "script_exhausted"`` body, records the message
in :attr:`ScriptedOpenAIServer.errors` and never hangs. Every error response
carries ``x-should-retry: false`` (unless :attr:`Reply.retryable` is set), which
the ``openai`` SDK obeys, so an error reply consumes exactly one script entry.

Stdlib only. Connections are HTTP/1.1 keep-alive: fixed responses carry
``Content-Length``, streams use chunked transfer encoding, ``TCP_NODELAY`` is on.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import socket
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedOpenAIServer",
    "ToolCall",
    "tool_then_answer",
]

#: Model reported when neither the request, the reply nor the server names one.
DEFAULT_MODEL = "gpt-4o-mini"
#: Fixed ``created`` timestamp, so responses are deterministic.
CREATED = 1_700_000_000
_SYSTEM_FINGERPRINT = "fp_scripted"

JSONDict = dict[str, Any]


# --------------------------------------------------------------------------- #
# Script entries
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ToolCall:
    """One function call the scripted model makes.

    Attributes:
        name: Function (tool) name.
        arguments: Arguments, as a mapping (JSON-encoded on the wire) or as a
            raw string sent verbatim (use that to script malformed JSON).
        call_id: The ``tool_calls[].id``; ``None`` lets the server assign
            ``call_<n>`` from a per-server counter.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON string OpenAI puts on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


ToolCallSpec = ToolCall | tuple[str, Mapping[str, Any] | str] | tuple[str, Any, str]


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one ``/v1/chat/completions`` request.

    Build it with :meth:`text`, :meth:`tool_call`, :meth:`parallel_tool_calls`
    or :meth:`http_error`; every factory accepts the other fields as keyword
    overrides.

    Attributes:
        content: Assistant text (may accompany tool calls; ``None`` -> ``null``).
        tool_calls: Function calls of the assistant message.
        finish_reason: Defaults to ``"tool_calls"`` when there are tool calls,
            else ``"stop"``.
        model: ``model`` field of the response; defaults to the server's
            ``model`` argument, else the request's ``model``.
        prompt_tokens: ``usage.prompt_tokens``.
        completion_tokens: ``usage.completion_tokens``.
        cached_tokens: ``usage.prompt_tokens_details.cached_tokens``.
        reasoning_tokens: ``usage.completion_tokens_details.reasoning_tokens``.
        status: HTTP status; ``>= 400`` answers :attr:`error_body` instead.
        error_body: JSON body of an error response (default: an OpenAI-style
            ``{"error": {...}}`` built from the status).
        retryable: For errors, send ``x-should-retry: true`` instead of
            ``false`` (the ``openai`` SDK then retries, consuming one more
            script entry per retry).
        retry_after_ms: For errors, send ``retry-after-ms`` (the ``openai``
            SDK waits that long before retrying; ``1`` makes retries instant).
        delay_s: Seconds to sleep before answering (before the first byte).
        chunk_delay_s: Seconds to sleep between streamed SSE events.
    """

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    status: int = 200
    error_body: Mapping[str, Any] | None = None
    retryable: bool = False
    retry_after_ms: int | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0

    # -- factories ---------------------------------------------------------- #

    @classmethod
    def text(cls, content: str, **overrides: Any) -> Reply:
        """A plain assistant text answer, e.g. ``Reply.text("Final Answer: 42")``."""
        return cls(content=content, **overrides)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        call_id: str | None = None,
        content: str | None = None,
        **overrides: Any,
    ) -> Reply:
        """An assistant message with a single function call."""
        call = ToolCall(name, {} if arguments is None else arguments, call_id)
        return cls(content=content, tool_calls=(call,), **overrides)

    @classmethod
    def parallel_tool_calls(
        cls, *calls: ToolCallSpec, content: str | None = None, **overrides: Any
    ) -> Reply:
        """An assistant message with several function calls.

        Each call is a :class:`ToolCall`, a ``(name, arguments)`` pair or a
        ``(name, arguments, call_id)`` triple.
        """
        if not calls:
            raise ValueError("parallel_tool_calls() needs at least one call")
        return cls(content=content, tool_calls=tuple(_to_tool_call(c) for c in calls), **overrides)

    @classmethod
    def http_error(
        cls,
        status: int = 500,
        message: str | None = None,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        **overrides: Any,
    ) -> Reply:
        """An HTTP error answer with an OpenAI-style ``{"error": {...}}`` body."""
        if status < 400:
            raise ValueError(f"http_error() needs a status >= 400, got {status}")
        body = _error_body(
            status,
            message or f"Scripted error {status}",
            error_type=error_type,
            code=code,
            param=param,
        )
        return cls(status=status, error_body=body, **overrides)

    # -- derived values ----------------------------------------------------- #

    @property
    def is_error(self) -> bool:
        """Whether this reply answers an HTTP error."""
        return self.status >= 400

    @property
    def effective_finish_reason(self) -> str:
        """``finish_reason`` as sent: explicit, else ``tool_calls``/``stop``."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> JSONDict:
        """The ``usage`` object sent with this reply."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


#: A callable answering a chat-completions request body with a reply (a bare
#: string is shorthand for :meth:`Reply.text`).
Responder = Callable[[JSONDict], Reply | str]


def tool_then_answer(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    answer: str = "done",
    *,
    call_id: str | None = None,
    **overrides: Any,
) -> Callable[[JSONDict], Reply]:
    """A responder for "call tool ``name`` once, then answer ``answer``".

    It works for both ways agent frameworks drive tools:

    * native function calling (the request has ``tools``): a
      :meth:`Reply.tool_call` until the conversation holds a ``role: "tool"``
      message, then ``Reply.text(answer)``;
    * ReAct text (no ``tools``; crewAI without function calling): a
      ``Thought/Action/Action Input`` text until an assistant message holds
      ``Observation:``, then ``"Thought: ...\nFinal Answer: <answer>"``.

    ``overrides`` (usage numbers, ``model`` ...) apply to every reply.
    """
    args: Mapping[str, Any] = arguments or {}

    def respond(request: JSONDict) -> Reply:
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        if any(m.get("role") == "tool" for m in messages):
            return Reply.text(answer, **overrides)
        if any(
            m.get("role") == "assistant" and "Observation:" in str(m.get("content") or "")
            for m in messages
        ):
            return Reply.text(
                f"Thought: I now know the final answer\nFinal Answer: {answer}", **overrides
            )
        if request.get("tools"):
            return Reply.tool_call(name, args, call_id=call_id, **overrides)
        return Reply.text(
            f"Thought: I should use the {name} tool\nAction: {name}\n"
            f"Action Input: {json.dumps(dict(args))}",
            **overrides,
        )

    return respond


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server received (any endpoint)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: JSONDict | None
    #: ``(host, port)`` of the client socket; equal ports mean a reused connection.
    client: tuple[str, int]


def _to_tool_call(spec: ToolCallSpec) -> ToolCall:
    """Normalise a :data:`ToolCallSpec` into a :class:`ToolCall`."""
    if isinstance(spec, ToolCall):
        return spec
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        return ToolCall(*spec)
    raise TypeError(f"not a tool call spec: {spec!r}")


def _error_body(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> JSONDict:
    """An OpenAI-style error body."""
    if error_type is None:
        if status >= 500:
            error_type = "server_error"
        elif status == 429:
            error_type = "requests"
        else:
            error_type = "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _split(text: str, pieces: int) -> list[str]:
    """Split ``text`` into at most ``pieces`` non-empty consecutive parts."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------- #
# HTTP plumbing
# --------------------------------------------------------------------------- #


class _ClientGone(Exception):
    """The client closed the connection while we were writing."""


class _HTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that knows its :class:`ScriptedOpenAIServer`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: ScriptedOpenAIServer, host: str) -> None:
        self.owner = owner
        super().__init__((host, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`ScriptedOpenAIServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "ScriptedOpenAI/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    #: Idle keep-alive connections are dropped after this many seconds.
    timeout = 30
    server: _HTTPServer

    # -- connection tracking ------------------------------------------------ #

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def handle(self) -> None:
        """Serve keep-alive requests; a client hanging up is not an error.

        (The ``openai`` SDK closes a streamed response right after ``[DONE]``,
        before reading the final chunk, so resets after streams are normal.)
        """
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # -- verbs -------------------------------------------------------------- #

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        try:
            raw = self._read_body()
            body: JSONDict | None = None
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError as exc:
                    owner._record(self, method, None)
                    self._send_error(400, f"Request body is not valid JSON: {exc}")
                    return
                body = parsed if isinstance(parsed, dict) else {"_json": parsed}
            owner._handle(self, method, body)
        except _ClientGone:
            self.close_connection = True

    # -- request/response helpers (used by the owner) ------------------------ #

    def _read_body(self) -> bytes:
        """Read the request body (``Content-Length`` or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    @property
    def route(self) -> str:
        """The request path without query string, trailing slash and ``/v1``."""
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/v1" or path.startswith("/v1/"):
            path = path[3:] or "/"
        return path

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as exc:
            raise _ClientGone() from exc

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a complete JSON response with ``Content-Length``."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{self.server.owner._next_id()}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError as exc:
            raise _ClientGone() from exc
        self._write(data)

    def _send_error(
        self, status: int, message: str, *, error_type: str | None = None, record: bool = True
    ) -> None:
        """Send an OpenAI-style error (never retryable) and record it."""
        if record:
            self.server.owner._record_error(f"{self.command} {self.path}: {status} {message}")
        self._send_json(
            status,
            _error_body(status, message, error_type=error_type),
            {"x-should-retry": "false"},
        )

    def _start_stream(self) -> None:
        """Send the headers of a chunked ``text/event-stream`` response."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{self.server.owner._next_id()}")
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError as exc:
            raise _ClientGone() from exc

    def _send_event(self, data: str, *, last: bool = False) -> None:
        """Send one SSE ``data:`` event as one HTTP chunk.

        With ``last``, the terminating zero-length chunk goes in the same write.
        """
        payload = f"data: {data}\n\n".encode()
        frame = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        self._write(frame + b"0\r\n\r\n" if last else frame)


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class ScriptedOpenAIServer:
    """An OpenAI-compatible server on ``127.0.0.1`` answering from a script.

    The server binds an ephemeral port and starts serving (daemon thread) as
    soon as it is constructed; use it as a context manager or call
    :meth:`close`.

    Each ``/v1/chat/completions`` request takes the next :class:`Reply` of the
    script; when the script is empty, ``responder(request_json)`` is asked (if
    given); otherwise the request gets a 500 ``script_exhausted`` error, which
    is also appended to :attr:`errors`.

    Args:
        replies: The initial script (a ``str`` item is shorthand for
            :meth:`Reply.text`).
        responder: Fallback called with the request JSON once the script is
            empty; for frameworks whose number of LLM calls is not fixed.
        model: Model name reported in every response (unless a reply sets
            its own) and listed by ``/v1/models``; ``None`` echoes the
            request's ``model``.
        embedding_dim: Default length of ``/v1/embeddings`` vectors (a
            request's ``dimensions`` overrides it).
        host: Interface to bind; keep the default for offline tests.
    """

    def __init__(
        self,
        replies: Iterable[Reply | str] | None = None,
        *,
        responder: Responder | None = None,
        model: str | None = None,
        embedding_dim: int = 8,
        host: str = "127.0.0.1",
    ) -> None:
        self._lock = threading.Condition()
        self._script: deque[Reply] = deque()
        self._responder = responder
        self._model = model
        self.embedding_dim = embedding_dim
        self._requests: list[JSONDict] = []
        self._embedding_requests: list[JSONDict] = []
        self._log: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._closed = False
        self.add(*(replies or ()))

        self._httpd = _HTTPServer(self, host)
        address = self._httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ScriptedOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- lifecycle ----------------------------------------------------------- #

    def __enter__(self) -> ScriptedOpenAIServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and drop open keep-alive connections (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections)
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    # -- addresses ----------------------------------------------------------- #

    @property
    def url(self) -> str:
        """Server root, ``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI ``base_url``, ``http://127.0.0.1:<port>/v1``."""
        return f"{self.url}/v1"

    # -- script -------------------------------------------------------------- #

    def add(self, *replies: Reply | str) -> None:
        """Append replies to the script."""
        items = [Reply.text(r) if isinstance(r, str) else r for r in replies]
        for item in items:
            if not isinstance(item, Reply):
                raise TypeError(f"expected Reply or str, got {type(item).__name__}")
        with self._lock:
            self._script.extend(items)

    def set_responder(self, responder: Responder | None) -> None:
        """Replace the fallback responder."""
        with self._lock:
            self._responder = responder

    @property
    def remaining(self) -> int:
        """Number of scripted replies not consumed yet."""
        with self._lock:
            return len(self._script)

    # -- observations -------------------------------------------------------- #

    @property
    def requests(self) -> list[JSONDict]:
        """JSON bodies of the ``/chat/completions`` requests received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def embedding_requests(self) -> list[JSONDict]:
        """JSON bodies of the ``/embeddings`` requests received, in order."""
        with self._lock:
            return list(self._embedding_requests)

    @property
    def log(self) -> list[RecordedRequest]:
        """Every request received, any endpoint, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def errors(self) -> list[str]:
        """Server-side problems: exhausted script, responder crashes, bad requests."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[JSONDict]:
        """Block until ``count`` chat requests arrived; return them.

        Raises:
            TimeoutError: if fewer arrived within ``timeout`` seconds.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} chat requests, got {len(self._requests)} in {timeout}s"
                )
            return list(self._requests)

    @staticmethod
    def embedding_for(text: str, dim: int = 8) -> list[float]:
        """The deterministic unit vector ``/v1/embeddings`` returns for ``text``.

        (Served as float32, so compare with a tolerance of about ``1e-6``.)
        """
        raw = [
            int.from_bytes(hashlib.sha256(f"{j}\x00{text}".encode()).digest()[:4], "big")
            for j in range(dim)
        ]
        vec = [value / 0xFFFFFFFF * 2.0 - 1.0 for value in raw]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    # -- internals: bookkeeping ---------------------------------------------- #

    def _next_id(self) -> int:
        return next(self._ids)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, handler: _Handler, method: str, body: JSONDict | None) -> None:
        entry = RecordedRequest(
            method=method,
            path=handler.path,
            headers=dict(handler.headers.items()),
            body=body,
            client=(str(handler.client_address[0]), int(handler.client_address[1])),
        )
        with self._lock:
            self._log.append(entry)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _next_reply(self, body: JSONDict, number: int) -> Reply:
        """Pop the next scripted reply, else ask the responder, else fail."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            responder = self._responder
        if responder is None:
            message = (
                f"ScriptedOpenAIServer: script exhausted -- no reply left for chat "
                f"request #{number} (add more Reply objects or pass responder=)"
            )
            self._record_error(message)
            return Reply(
                status=500, error_body=_error_body(500, message, error_type="script_exhausted")
            )
        try:
            result = responder(body)
            if isinstance(result, str):
                result = Reply.text(result)
            if not isinstance(result, Reply):
                raise TypeError(f"responder returned {type(result).__name__}, not Reply/str")
            return result
        except Exception as exc:
            message = (
                f"ScriptedOpenAIServer: responder raised for chat request #{number}: "
                f"{exc!r}\n{traceback.format_exc()}"
            )
            self._record_error(message)
            return Reply(
                status=500, error_body=_error_body(500, message, error_type="responder_error")
            )

    # -- internals: endpoints ------------------------------------------------ #

    def _handle(self, handler: _Handler, method: str, body: JSONDict | None) -> None:
        self._record(handler, method, body)
        route = handler.route
        if method == "POST" and route == "/chat/completions":
            self._chat_completions(handler, body or {})
        elif method == "POST" and route == "/embeddings":
            self._embeddings(handler, body or {})
        elif method == "GET" and route == "/models":
            handler._send_json(
                200, {"object": "list", "data": [self._model_card(self._listed_model)]}
            )
        elif method == "GET" and route.startswith("/models/"):
            handler._send_json(200, self._model_card(route[len("/models/") :]))
        else:
            handler._send_error(
                404,
                f"ScriptedOpenAIServer does not serve {method} {handler.path}",
                error_type="not_found",
            )

    @property
    def _listed_model(self) -> str:
        return self._model or DEFAULT_MODEL

    @staticmethod
    def _model_card(model: str) -> JSONDict:
        return {"id": model, "object": "model", "created": CREATED, "owned_by": "sightline-tests"}

    def _chat_completions(self, handler: _Handler, body: JSONDict) -> None:
        with self._lock:
            self._requests.append(body)
            number = len(self._requests)
            self._lock.notify_all()
        reply = self._next_reply(body, number)
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        if reply.is_error:
            payload = reply.error_body or _error_body(
                reply.status, f"Scripted error {reply.status}"
            )
            headers = {"x-should-retry": "true" if reply.retryable else "false"}
            if reply.retry_after_ms is not None:
                headers["retry-after-ms"] = str(reply.retry_after_ms)
            handler._send_json(reply.status, payload, headers)
            return

        completion_id = f"chatcmpl-scripted-{number}"
        model = reply.model or self._model or str(body.get("model") or DEFAULT_MODEL)
        tool_calls = [
            {
                "id": call.call_id or f"call_{next(self._call_ids)}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call in reply.tool_calls
        ]
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            handler._start_stream()
            for event in self._chunks(completion_id, model, reply, tool_calls, include_usage):
                handler._send_event(json.dumps(event))
                if reply.chunk_delay_s > 0:
                    time.sleep(reply.chunk_delay_s)
            handler._send_event("[DONE]", last=True)
            return

        message: JSONDict = {"role": "assistant", "content": reply.content, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        handler._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": _SYSTEM_FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": reply.effective_finish_reason,
                    }
                ],
                "usage": reply.usage(),
            },
        )

    @staticmethod
    def _chunks(
        completion_id: str,
        model: str,
        reply: Reply,
        tool_calls: list[JSONDict],
        include_usage: bool,
    ) -> Iterator[JSONDict]:
        """The ``chat.completion.chunk`` objects of a streamed reply."""

        def chunk(delta: JSONDict, finish_reason: str | None = None) -> JSONDict:
            event: JSONDict = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": _SYSTEM_FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                event["usage"] = None
            return event

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in _split(reply.content or "", 3):
            yield chunk({"content": piece})
        for index, call in enumerate(tool_calls):
            function = call["function"]
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _split(function["arguments"], 2):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, reply.effective_finish_reason)
        if include_usage:
            yield {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": _SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": reply.usage(),
            }

    def _embeddings(self, handler: _Handler, body: JSONDict) -> None:
        with self._lock:
            self._embedding_requests.append(body)
        raw_input = body.get("input")
        if raw_input is None:
            handler._send_error(400, "'input' is required for /embeddings")
            return
        if isinstance(raw_input, str) or (
            isinstance(raw_input, list) and raw_input and isinstance(raw_input[0], int)
        ):
            items: list[Any] = [raw_input]
        elif isinstance(raw_input, list):
            items = list(raw_input)
        else:
            handler._send_error(400, f"unsupported 'input' type {type(raw_input).__name__}")
            return
        dim = int(body.get("dimensions") or self.embedding_dim)
        as_base64 = body.get("encoding_format") == "base64"
        data: list[JSONDict] = []
        tokens = 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else json.dumps(item)
            tokens += len(item) if isinstance(item, list) else max(1, len(text.split()))
            vector = self.embedding_for(text, dim)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        handler._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": self._model or str(body.get("model") or "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
