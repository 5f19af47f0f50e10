"""A loopback stand-in for the Sightline collector's ingest API, run as a separate process.

It accepts ``POST /api/v1/events`` (``{"events": [...]}``, gzip or not, bearer key) and
records every request durably in a JSON-lines file, so that a test can count event ids across
kills and restarts of the receiver. It can be told to misbehave, one *step* per request:

=================  ==========================================================================
``ok``             202 with ``{"accepted", "duplicate", "rejected", "errors"}``; ids recorded
``delay:S``        sleep S seconds, then as ``ok``
``429:S``          429 with ``Retry-After: S`` (``503:S`` likewise)
``500`` / ``401``  that status (any 3-digit code), nothing recorded as accepted
``refuse``         close the connection at once with a TCP reset, no answer
``die``            record the batch as accepted, then exit without answering (the answer is lost)
``die-before``     exit without recording or answering
``hang``           never answer (the client times out)
=================  ==========================================================================

A *mode* is a comma-separated script of steps; ``N*step`` repeats a step; the last step repeats
for ever: ``--mode "429:2,ok"`` answers the first batch 429 and accepts the rest.

Run it by hand::

    python tests/support/receiver.py --port 7879 --record /tmp/rec.jsonl --mode ok

or from a test through :class:`Receiver`, which starts, kills and restarts the process on one
fixed port::

    with Receiver(tmp_path / "rec.jsonl", api_key=KEY) as receiver:
        client = sightline.Client(endpoint=receiver.url, api_key=KEY, ...)
        ...
        receiver.kill(); receiver.start()
        assert set(receiver.accepted_ids()) == expected

Record lines: ``{"req", "t", "pid", "step", "peer", "status"}`` for every events request (``peer``
is the client's port, so connection reuse shows; ``"query"`` when the URL had one), with ``"n"`` and ``"ids"``
when the batch was accepted, and ``{"req", "pid", "answered": true}`` once the answer was written.
``GET /health`` answers 200; ``POST /_control`` ``{"mode": ...}`` replaces the script.
Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Receiver", "free_port", "parse_mode", "read_records"]


def parse_mode(mode: str) -> list[str]:
    """Expand a mode script into its steps: ``"2*500,ok"`` → ``["500", "500", "ok"]``."""
    steps: list[str] = []
    for part in mode.split(","):
        part = part.strip()
        if not part:
            continue
        if "*" in part:
            count, step = part.split("*", 1)
            steps.extend([step.strip()] * int(count))
        else:
            steps.append(part)
    return steps or ["ok"]


class _Script:
    def __init__(self, mode: str) -> None:
        self.lock = threading.Lock()
        self.steps = parse_mode(mode)

    def replace(self, mode: str) -> None:
        with self.lock:
            self.steps = parse_mode(mode)

    def next(self) -> str:
        with self.lock:
            if len(self.steps) > 1:
                return self.steps.pop(0)
            return self.steps[0]


class _State:
    def __init__(self, record: str, mode: str, api_key: str | None) -> None:
        self.script = _Script(mode)
        self.api_key = api_key
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.requests = 0
        for line in read_records(record):
            self.seen.update(line.get("ids", ()))
        self.fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        # One write(2) per line on an O_APPEND descriptor: a line is whole or absent even if the
        # process is killed; the page cache keeps it when the process dies.
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sightline-test-receiver"
    state: _State

    def setup(self) -> None:
        super().setup()
        # Without this, Nagle's algorithm and delayed ACKs add ~40 ms to each keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/health":
            self._answer(200, {"status": "ok", "pid": os.getpid()})
        elif path == "/_control":
            with self.state.lock:
                self._answer(200, {"requests": self.state.requests, "ids": len(self.state.seen)})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_control":
            self.state.script.replace(json.loads(raw or b"{}").get("mode", "ok"))
            self._answer(200, {"ok": True})
            return
        path, _, query = self.path.partition("?")
        if path != "/api/v1/events":
            self._answer(404, {"error": "not found"})
            return
        state = self.state
        with state.lock:
            state.requests += 1
            number = state.requests
        step = state.script.next()
        entry: dict[str, Any] = {
            "req": number,
            "t": time.time(),
            "pid": os.getpid(),
            "step": step,
            "peer": self.client_address[1],  # the client's port: one per connection
        }
        if query:
            entry["query"] = query
        if step == "die-before":
            os._exit(3)
        if step == "refuse":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            state.write({**entry, "status": None})
            return
        if step == "hang":
            state.write({**entry, "status": None})
            time.sleep(3600)
            return
        if step.startswith("delay:"):
            time.sleep(float(step.split(":", 1)[1]))
            step = "ok"
        expected = f"Bearer {state.api_key}" if state.api_key else None
        if expected is not None and self.headers.get("Authorization") != expected:
            state.write({**entry, "status": 401})
            self._answer(401, {"error": "invalid API key"})
            return
        if step not in ("ok", "die"):
            code_text, _, retry_after = step.partition(":")
            status = int(code_text)
            headers = {"Retry-After": retry_after} if retry_after else {}
            state.write({**entry, "status": status})
            self._answer(status, {"error": f"scripted {status}"}, headers)
            return
        try:
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            events = json.loads(body)["events"]
            ids = [event["id"] for event in events]
        except Exception as exc:
            state.write({**entry, "status": 400})
            self._answer(400, {"error": f"bad batch: {exc}"})
            return
        with state.lock:
            duplicate = sum(1 for i in ids if i in state.seen)
            state.seen.update(ids)
        state.write(
            {
                **entry,
                "status": 202,
                "n": len(ids),
                "ids": ids,
                "agent": self.headers.get("User-Agent"),
                "gzip": self.headers.get("Content-Encoding") == "gzip",
            }
        )
        if step == "die":
            os._exit(3)
        self._answer(
            202,
            {"accepted": len(ids) - duplicate, "duplicate": duplicate, "rejected": 0, "errors": []},
        )
        state.write({"req": number, "pid": os.getpid(), "answered": True})


def serve(port: int, record: str, mode: str = "ok", api_key: str | None = None) -> None:
    """Run the receiver in this process until it is killed (prints ``ready <port>`` when up)."""
    _Handler.state = _State(record, mode, api_key)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.05)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete line of a record file (a torn last line, if any, is skipped)."""
    records: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
    except FileNotFoundError:
        pass
    return records


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """Controls one receiver process on a fixed loopback port across kills and restarts."""

    def __init__(
        self,
        record: str | os.PathLike[str],
        *,
        mode: str = "ok",
        api_key: str | None = None,
        port: int | None = None,
    ) -> None:
        self.record = str(record)
        self.mode = mode
        self.api_key = api_key
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The endpoint to give Sightline (the base URL, without ``/api/v1/events``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, mode: str | None = None, timeout: float = 10.0) -> Receiver:
        """Start the process (with ``mode``, else the last one) and wait until it listens."""
        if self.running:
            raise RuntimeError("the receiver is already running")
        if mode is not None:
            self.mode = mode
        command = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port)]
        command += ["--record", self.record, "--mode", self.mode]
        if self.api_key:
            command += ["--api-key", self.api_key]
        deadline = time.monotonic() + timeout
        while True:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = _read_line(process, deadline)
            if line.startswith(b"ready"):
                break
            process.kill()
            process.wait()
            if time.monotonic() > deadline:  # the port may linger for a moment after a kill
                raise RuntimeError(f"receiver did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.05)
        self.process = process
        self.starts += 1
        return self

    def kill(self) -> None:
        """SIGKILL the process (mid-request, if there is one) and wait for it to be gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """End the process gently (SIGTERM)."""
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def restart(self, mode: str | None = None) -> Receiver:
        self.kill()
        return self.start(mode)

    def set_mode(self, mode: str) -> None:
        """Replace the running process's script (and the one used on the next start)."""
        import urllib.request

        self.mode = mode
        request = urllib.request.Request(
            self.url + "/_control",
            data=json.dumps({"mode": mode}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def records(self) -> list[dict[str, Any]]:
        """Every request line recorded so far (across restarts)."""
        return [r for r in read_records(self.record) if "step" in r]

    def accepted_ids(self) -> Counter[str]:
        """How many times each event id was accepted."""
        counts: Counter[str] = Counter()
        for record in self.records():
            counts.update(record.get("ids", ()))
        return counts

    def unanswered_requests(self) -> set[tuple[int, int]]:
        """(pid, req) of accepted batches whose answer was never written (lost in a kill)."""
        answered = {(r["pid"], r["req"]) for r in read_records(self.record) if r.get("answered")}
        return {
            (r["pid"], r["req"])
            for r in self.records()
            if r.get("status") == 202 and (r["pid"], r["req"]) not in answered
        }

    def wait_for_ids(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until at least ``count`` distinct ids were accepted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.accepted_ids()) >= count:
                return True
            time.sleep(0.05)
        return len(self.accepted_ids()) >= count

    def __enter__(self) -> Receiver:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    stream = process.stdout
    assert stream is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.05)
        if ready:
            return stream.readline()
        if process.poll() is not None:
            return b""
    return b""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True, help="JSON-lines file of accepted batches")
    parser.add_argument("--mode", default="ok", help='script of steps, e.g. "429:2,ok"')
    parser.add_argument("--api-key", default=None, help="answer 401 to any other bearer key")
    args = parser.parse_args(argv)
    serve(args.port, args.record, args.mode, args.api_key)


if __name__ == "__main__":
    main()
