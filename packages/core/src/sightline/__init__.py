"""Sightline: observability for AI agents.

``sightline.init()`` and every LLM call, tool call, decision, token, cost and error of an agent
becomes an event in a trace. Importing this package is cheap: the pipeline, plugins, HTTP and
SQLite load when first used.
"""

from __future__ import annotations

from sightline.lazy import lazy_exports

# typing costs ~10 ms to import; the names below are only needed by type checkers.
TYPE_CHECKING = False

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_EXPORTS = {
    "init": "sightline.client",
    "Client": "sightline.client",
    "AsyncClient": "sightline.client",
    "get_client": "sightline.client",
    "set_client": "sightline.client",
    "shutdown": "sightline.client",
    "trace": "sightline.client",
    "instrument": "sightline.client",
    "uninstrument": "sightline.client",
    "flush": "sightline.client",
    "AMBIENT": "sightline.client",
    "monitor": "sightline.decorators",
    "guard": "sightline.governance",
    "Decision": "sightline.governance",
    "Span": "sightline.span",
    "current_span": "sightline.span",
    "Event": "sightline.event",
    "EventType": "sightline.event",
    "Status": "sightline.event",
    "ErrorKind": "sightline.event",
    "ErrorInfo": "sightline.event",
    "Usage": "sightline.event",
    "Config": "sightline.config",
    "ExportResult": "sightline.pipeline",
    "Exporter": "sightline.pipeline",
    "SightlineError": "sightline.errors",
    "ConfigError": "sightline.errors",
    "ToolDenied": "sightline.errors",
    "hookimpl": "sightline.hookspecs",
    "register_plugin": "sightline.plugins",
    "unregister_plugin": "sightline.plugins",
    "hookspec": "sightline.hookspecs",
}

# Modules the README writes names through (`sightline.testing.capture()`,
# `sightline.schema.schema_path()`, ...): reachable after a plain `import sightline`, imported
# when first read.
_SUBMODULES = frozenset(
    {"capture", "client", "config", "exporters", "governance", "schema", "span", "testing"}
)

__all__ = [
    "AMBIENT",
    "AsyncClient",
    "Client",
    "Config",
    "ConfigError",
    "Decision",
    "ErrorInfo",
    "ErrorKind",
    "Event",
    "EventType",
    "ExportResult",
    "Exporter",
    "SightlineError",
    "Span",
    "Status",
    "ToolDenied",
    "Usage",
    "__version__",
    "current_span",
    "flush",
    "get_client",
    "guard",
    "hookimpl",
    "hookspec",
    "init",
    "instrument",
    "monitor",
    "register_plugin",
    "set_client",
    "shutdown",
    "trace",
    "uninstrument",
    "unregister_plugin",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)


if TYPE_CHECKING:
    from sightline.client import (
        AMBIENT,
        AsyncClient,
        Client,
        flush,
        get_client,
        init,
        instrument,
        set_client,
        shutdown,
        trace,
        uninstrument,
    )
    from sightline.config import Config
    from sightline.decorators import monitor
    from sightline.errors import ConfigError, SightlineError, ToolDenied
    from sightline.event import ErrorInfo, ErrorKind, Event, EventType, Status, Usage
    from sightline.governance import Decision, guard
    from sightline.hookspecs import hookimpl, hookspec
    from sightline.pipeline import Exporter, ExportResult
    from sightline.plugins import register_plugin, unregister_plugin
    from sightline.span import Span, current_span
