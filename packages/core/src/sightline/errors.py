"""The errors Sightline raises. Instrumentation itself never raises into user code; these come
only from explicit configuration (``init``, ``Client``) and from tool governance."""

from __future__ import annotations

__all__ = ["ConfigError", "SightlineError", "ToolDenied"]


class SightlineError(Exception):
    """Base class of every error Sightline raises on purpose."""


class ConfigError(SightlineError, ValueError):
    """A configuration value cannot work; the message says which and what to do."""


class ToolDenied(SightlineError, PermissionError):
    """A governance plugin refused to let a tool run.

    ``tool`` is the tool's name and ``reason`` the plugin's explanation.
    """

    def __init__(self, tool: str, reason: str = "") -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"tool {tool!r} denied" + (f": {reason}" if reason else ""))
