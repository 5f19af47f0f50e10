"""An exporter that appends one JSON line per event to a file."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TextIO

from sightline.event import Event
from sightline.jsonwire import dumps
from sightline.pipeline import ExportResult

__all__ = ["JsonlExporter"]


class JsonlExporter:
    """Appends the wire form of each event as one line of ``path`` (created if missing)."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None

    def _open(self) -> TextIO:
        if self._file is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self._file

    def export(self, events: Sequence[Event]) -> ExportResult:
        lines = "".join(dumps(e.to_dict()) + "\n" for e in events)
        with self._lock:
            handle = self._open()
            handle.write(lines)
            handle.flush()
        return ExportResult.SUCCESS

    def after_fork(self) -> None:
        self._file = None

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
