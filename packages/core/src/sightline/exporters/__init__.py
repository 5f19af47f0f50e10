"""The exporters that ship with the core. Each is offered through ``sightline_exporters`` by the
built-in plugin, selected by name: ``sqlite`` (the default), ``http``, ``jsonl``, ``console``
and ``memory``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sightline.config import Config
    from sightline.pipeline import Exporter

__all__ = ["builtin_exporter_factories"]


def _sqlite(config: Config) -> Exporter:
    from sightline.exporters.sqlite import SqliteExporter

    return SqliteExporter(config.db)


def _http(config: Config) -> Exporter:
    from sightline.exporters.http import HttpExporter

    return HttpExporter.from_config(config)


def _jsonl(config: Config) -> Exporter:
    from sightline.exporters.jsonl import JsonlExporter

    return JsonlExporter(config.extra.get("jsonl_path") or _beside_db(config, "events.jsonl"))


def _console(config: Config) -> Exporter:
    from sightline.exporters.console import ConsoleExporter

    return ConsoleExporter()


def _memory(config: Config) -> Exporter:
    from sightline.exporters.memory import InMemoryExporter

    return InMemoryExporter()


def _beside_db(config: Config, name: str) -> str:
    import os

    return os.path.join(os.path.dirname(os.path.abspath(config.db)), name)


def builtin_exporter_factories() -> dict[str, Callable[[Config], Any]]:
    return {
        "sqlite": _sqlite,
        "http": _http,
        "jsonl": _jsonl,
        "console": _console,
        "memory": _memory,
    }
