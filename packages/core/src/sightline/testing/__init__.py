"""Testing support for users and for us: assert what an agent did.

``InMemoryExporter`` keeps events in memory; :func:`capture` installs a global client that
exports to it, synchronously flushed on demand. With the pytest plugin (registered through the
``pytest11`` entry point) a test asks for the ``sightline_capture`` fixture::

    def test_agent_searches_once(sightline_capture):
        run_my_agent()
        [search] = sightline_capture.find(type="tool_call", name="search")
        assert search.parent_span_id == sightline_capture.one(type="run").span_id
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sightline.event import Event, EventType
from sightline.exporters.memory import InMemoryExporter

__all__ = ["Capture", "InMemoryExporter", "capture"]


class Capture:
    """A client with an in-memory exporter. Reading ``events`` flushes the pipeline first."""

    def __init__(self, client: Any, exporter: InMemoryExporter) -> None:
        self.client = client
        self.exporter = exporter

    @property
    def events(self) -> list[Event]:
        self.client.flush(10.0)
        return self.exporter.events

    def clear(self) -> None:
        self.client.flush(10.0)
        self.exporter.clear()

    def find(
        self, type: EventType | str | None = None, name: str | None = None, **fields: Any
    ) -> list[Event]:
        self.client.flush(10.0)
        return self.exporter.find(type, name, **fields)

    def one(
        self, type: EventType | str | None = None, name: str | None = None, **fields: Any
    ) -> Event:
        self.client.flush(10.0)
        return self.exporter.one(type, name, **fields)

    def children(self, parent: Event) -> list[Event]:
        self.client.flush(10.0)
        return self.exporter.children(parent)

    def tree(self, trace_id: str | None = None) -> list[dict[str, Any]]:
        self.client.flush(10.0)
        return self.exporter.tree(trace_id)


@contextmanager
def capture(instrument: bool = False, **options: Any) -> Iterator[Capture]:
    """Install a global client exporting to memory for the duration of the block.

    ``instrument=True`` also switches on every installed integration (and off again after).
    When the global client in place is instrumented (the application called
    ``sightline.init()``), its integrations record to the capture during the block whatever
    ``instrument`` says, and report to that client again after it. Other options go to
    :class:`sightline.Client` (``capture_content=False``, ...). The client records even when the
    environment says ``SIGHTLINE_ENABLED=false`` (a CI turning telemetry off must not empty
    every test's capture); pass ``enabled=False`` to test that case.
    """
    from sightline.client import Client, set_client

    exporter = InMemoryExporter()
    options.setdefault("flush_interval", 0.05)
    options.setdefault("enabled", True)
    client = Client(exporters=[exporter], instrument=False, **options)
    previous = set_client(client)
    # The integrations report to the client they were instrumented with, not to the global one
    # of the moment: the capture takes them over to see the agent's framework runs.
    give_back = previous is not None and bool(getattr(previous, "_instrumented", False))
    try:
        if instrument or give_back:
            client.instrument()
        yield Capture(client, exporter)
    finally:
        set_client(previous)
        if give_back and client._instrumented and previous is not None:
            previous.instrument()  # the integrations report to the application's client again
            client._instrumented = False  # so that closing the capture leaves them on
        client.close()  # switches off what the capture alone instrumented
