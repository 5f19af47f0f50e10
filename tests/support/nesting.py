"""What the nesting tests of every adapter run inside a framework's tool: a monitored function
with a span of its own, and a guarded call that a governance plugin denies."""

from __future__ import annotations

from typing import Any

import sightline
from sightline import Decision, ToolDenied


@sightline.monitor(name="db_lookup")
def db_lookup(x: int) -> int:
    """Recorded as ``db_lookup`` with a ``query`` span inside it."""
    with sightline.trace("query"):
        return x * 2


class DenyWipe:
    """A governance plugin that denies the guarded ``wipe`` and lets every other tool run (the
    framework's tool calling it is asked too, now that the adapters govern their tools)."""

    @sightline.hookimpl
    def sightline_authorize_tool(
        self, tool_name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> Decision | None:
        return Decision(False, "not today") if tool_name == "wipe" else None


@sightline.guard
def wipe(x: int) -> int:
    return x


def wiper(x: int) -> str:
    """Wipe a number."""
    try:
        wipe(x)
    except ToolDenied as denied:
        return str(denied)
    return "wiped"
