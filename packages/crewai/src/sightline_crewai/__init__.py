"""Sightline for CrewAI: every crew run, task, agent, LLM call and tool call as a trace.

Global (recommended): with this package installed, ``sightline.init()`` registers a listener on
``crewai_event_bus``. Per constructor::

    from sightline_crewai import SightlineCrewCallback

    cb = SightlineCrewCallback()
    crew = Crew(agents=[...], tasks=[...],
                step_callback=cb.step_callback, task_callback=cb.task_callback)

Both together record nothing twice. Importing this package does not import CrewAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sightline_crewai.callback import SightlineCrewCallback
from sightline_crewai.instrumentation import flush, instrument, is_instrumented, uninstrument

if TYPE_CHECKING:
    from sightline_crewai.listener import SightlineEventListener

__version__ = "0.1.0"

__all__ = [
    "SightlineCrewCallback",
    "SightlineEventListener",
    "__version__",
    "flush",
    "instrument",
    "is_instrumented",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    # The listener subclasses a CrewAI class: load it (and CrewAI) only when asked for.
    if name == "SightlineEventListener":
        from sightline_crewai.listener import SightlineEventListener

        return SightlineEventListener
    raise AttributeError(f"module 'sightline_crewai' has no attribute {name!r}")
