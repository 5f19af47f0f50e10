"""Writing a Sightline plugin: a processor that tags events and masks e-mail addresses, and an
exporter that prints a one-line summary per trace.

A plugin is any module or object with ``@sightline.hookimpl`` functions. Published as a package,
it registers itself in its pyproject and ``sightline.init()`` finds it::

    [project.entry-points.sightline]
    ticket-tools = "ticket_tools.sightline_plugin"

Here the plugin object is registered with ``sightline.register_plugin`` so that the example
runs from a checkout:

    python examples/plugin_example.py
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sightline
from sightline import Event, ExportResult

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


class TicketTools:
    """Tags every event with the team that owns it and masks e-mail addresses in inputs."""

    def __init__(self, team: str) -> None:
        self.team = team

    @sightline.hookimpl
    def sightline_process_event(self, event: Event) -> bool | None:
        if event.name == "healthcheck":
            return False  # dropped: never exported (counted as "filtered" in client.stats())
        event.tags.append(f"team:{self.team}")
        if isinstance(event.input, dict):
            event.input = {
                key: EMAIL.sub("<email>", value) if isinstance(value, str) else value
                for key, value in event.input.items()
            }
        return None

    @sightline.hookimpl
    def sightline_exporters(self, config: sightline.Config) -> dict[str, object]:
        return {"summary": lambda cfg: SummaryExporter()}


class SummaryExporter:
    """Prints one line per finished run."""

    def export(self, events: Sequence[Event]) -> ExportResult:
        for event in events:
            if event.parent_span_id is None:
                print(
                    f"  [summary exporter] {event.name}: {event.status.value} in "
                    f"{event.duration_ms:.2f} ms, tags={event.tags}, input={event.input}"
                )
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def main() -> None:
    sightline.register_plugin(TicketTools(team="support"), "ticket-tools")
    client = sightline.init(exporters=["sqlite", "summary"])
    with sightline.trace("reply-to-customer", input={"from": "ana@example.com"}) as run:
        step = run.step("tool", "lookup_customer", input={"email": "ana@example.com"})
        step.end()
    client.log_event("custom", "healthcheck")
    client.flush()
    stats = client.stats()
    print(f"  stats: {stats['processed']} processed, {stats['filtered']} filtered by the plugin")
    sightline.shutdown()


if __name__ == "__main__":
    main()
