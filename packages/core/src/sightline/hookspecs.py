"""Hook specifications: every extension point of Sightline.

A plugin is a module or object with functions marked ``@sightline.hookimpl`` whose names match
the functions below. Plugins are discovered through the ``sightline`` entry-point group::

    [project.entry-points.sightline]
    myplugin = "my_package.sightline_plugin"

The core's own exporters and processors are plugins implementing these same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from sightline.client import Client
    from sightline.config import Config
    from sightline.event import Event
    from sightline.pipeline import Exporter

hookspec = pluggy.HookspecMarker("sightline")
hookimpl = pluggy.HookimplMarker("sightline")


@hookspec
def sightline_instrument(client: Client) -> None:
    """Switch on global instrumentation of a framework, reporting to ``client``.

    Called by ``sightline.init()`` (when ``instrument=True``) and by ``sightline.instrument()``.
    Must be idempotent: a second call while instrumented does nothing. Return value ignored.
    """


@hookspec
def sightline_uninstrument() -> None:
    """Reverse :func:`sightline_instrument`: remove every global hook the plugin installed.

    Called by ``sightline.uninstrument()`` and when the global client closes. Idempotent.
    """


@hookspec
def sightline_flush(client: Client, timeout: float) -> None:
    """Hand ``client`` what a framework still holds, before ``client.flush()`` drains it.

    For integrations whose framework delivers its events on threads of its own (CrewAI's
    event bus): wait, at most ``timeout`` seconds, until what was emitted so far has been
    recorded. Called on the thread calling ``flush()``. Return value ignored.
    """


@hookspec
def sightline_exporters(config: Config) -> Mapping[str, Callable[[Config], Exporter]] | None:
    """Offer exporters by name.

    Return a mapping of exporter name to a factory ``factory(config) -> exporter``; only the
    factories of the names selected in configuration (``exporters=[...]``,
    ``SIGHTLINE_EXPORTERS``) are called. An exporter has ``export(events) -> ExportResult`` and
    ``shutdown()``.
    """


@hookspec
def sightline_process_event(event: Event) -> bool | None:
    """Process one event on the background worker, before export: redact, enrich, sample.

    Change the event in place (``input``, ``output``, ``metadata`` and ``tags`` are plain
    mutable values). Return ``False`` to drop the event; any other value is ignored. Never
    called on the caller's thread.
    """


@hookspec(firstresult=True)
def sightline_authorize_tool(
    tool_name: str, arguments: dict[str, Any], context: dict[str, Any]
) -> Any:
    """Decide whether a tool may run, before it runs (first answer wins).

    Return ``None`` to abstain, ``True`` / ``"allow"`` to allow, ``False`` / ``"deny"`` or a
    ``Decision(allow=False, reason=...)`` to deny (the agent then gets ``ToolDenied``), or a
    ``Decision(allow=True, arguments={...})`` to let it run with redacted arguments.
    ``context`` holds ``trace_id``, ``span_id``, ``agent`` and ``framework`` where known.
    """


@hookspec
def sightline_cli(cli: Any) -> None:
    """Add subcommands to the ``sightline`` command.

    ``cli`` is a :class:`sightline.cli.CommandLine`; call ``cli.command(name, help, handler)``
    which returns an ``argparse.ArgumentParser`` to add arguments to. ``handler(args)``
    returns the process exit code.
    """
