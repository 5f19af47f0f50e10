"""A request handler class served on 127.0.0.1 in a thread of the test's process, for a test
that wants to see the requests a client sends (a collector stand-in it can read in memory)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on a free port of 127.0.0.1 for the block, which gets the port; the
    server is shut down and closed after it, even when the block fails.

    ::

        with serving(type("Handler", (_Recorder,), {"requests": requests})) as port:
            client = sightline.Client(endpoint=f"http://127.0.0.1:{port}/", ...)
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
