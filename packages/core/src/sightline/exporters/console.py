"""An exporter that prints one readable line per event to stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from sightline.event import Event
from sightline.pipeline import ExportResult

__all__ = ["ConsoleExporter"]


class ConsoleExporter:
    """``[sightline] tool_call search_kb ok 12.3ms trace=… span=…`` per event."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def export(self, events: Sequence[Event]) -> ExportResult:
        stream = self.stream or sys.stderr
        for e in events:
            extra = ""
            if e.usage is not None and e.usage.total_tokens:
                extra += f" tokens={e.usage.total_tokens}"
            if e.error is not None:
                extra += f" error={e.error.kind}:{e.error.type}: {e.error.message[:120]}"
            stream.write(
                f"[sightline] {e.type.value:<11} {e.name} {e.status.value} "
                f"{e.duration_ms:.1f}ms trace={e.trace_id[:8]} span={e.span_id}{extra}\n"
            )
        stream.flush()
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        return None
