"""Sightline plugin hooks: ``sightline.init()`` instruments CrewAI through these.

Loading this module does not import CrewAI (see :mod:`sightline_crewai.instrumentation`).
"""

from __future__ import annotations

from typing import Any

from sightline import hookimpl
from sightline_crewai.instrumentation import flush, instrument, uninstrument


@hookimpl
def sightline_instrument(client: Any) -> None:
    """Register the CrewAI event listener, recording to ``client``."""
    instrument(client)


@hookimpl
def sightline_uninstrument() -> None:
    """Unregister the CrewAI event listener."""
    uninstrument()


@hookimpl
def sightline_flush(client: Any, timeout: float) -> None:
    """Wait until CrewAI's event bus has run the handlers of the events emitted so far."""
    flush(timeout)
