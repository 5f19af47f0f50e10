"""An exporter that appends one JSON line per event to a file."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from sightline.event import Event
from sightline.jsonwire import dumps
from sightline.logs import log_safely
from sightline.pipeline import ExportResult

__all__ = ["JsonlExporter"]


class JsonlExporter:
    """Appends the wire form of each event as one line of ``path`` (created if missing).

    An event that cannot be written as JSON (say, an int too long to print) is dropped alone,
    counted as ``rejected`` in ``stats()``; the rest of its batch is written.
    """

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self.rejected = 0
        self._logged_rejection = False

    def _open(self) -> TextIO:
        if self._file is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self._file

    def export(self, events: Sequence[Event]) -> ExportResult:
        try:
            lines = "".join(dumps(e.to_dict()) + "\n" for e in events)
        except Exception:
            lines = self._lines_one_by_one(events)
        with self._lock:
            handle = self._open()
            handle.write(lines)
            handle.flush()
        return ExportResult.SUCCESS

    def _lines_one_by_one(self, events: Sequence[Event]) -> str:
        lines = []
        errors: list[Exception] = []
        for event in events:
            try:
                lines.append(dumps(event.to_dict()) + "\n")
            except Exception as exc:
                errors.append(exc)
        self.rejected += len(errors)
        if errors and not self._logged_rejection:
            self._logged_rejection = True
            log_safely(
                logging.ERROR,
                "sightline: %d event(s) of a batch cannot be written as JSON to %s (%s: %s); "
                "they were dropped, the rest of the batch was written (further ones are counted "
                "as 'rejected' in client.stats()['exporters']['jsonl'])",
                len(errors),
                self.path,
                type(errors[0]).__name__,
                str(errors[0])[:200],
            )
        return "".join(lines)

    def stats(self) -> dict[str, Any]:
        # Rejected events were in batches export() took: the pipeline adds them to its failed.
        return {"rejected": self.rejected, "failed": self.rejected, "path": self.path}

    def after_fork(self) -> None:
        self._file = None

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
