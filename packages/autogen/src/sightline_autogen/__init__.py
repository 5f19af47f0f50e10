"""Sightline for AutoGen: model calls, tool calls, agent turns, team runs and message hops.

Per constructor::

    from sightline_autogen import SightlineInterventionHandler, instrument_model_client

    agent = AssistantAgent("writer", model_client=instrument_model_client(model_client))
    runtime = SingleThreadedAgentRuntime(intervention_handlers=[SightlineInterventionHandler()])

Globally (what ``sightline.init()`` does when this package is installed)::

    import sightline_autogen
    sightline_autogen.instrument()

Importing this package is cheap: AutoGen is imported when a name that needs it is first used,
and the global instrumentation waits for the application to import AutoGen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sightline.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "FRAMEWORK": "sightline_autogen.mapping",
    "InstrumentedChatCompletionClient": "sightline_autogen.model_client",
    "instrument_model_client": "sightline_autogen.model_client",
    "SightlineInterventionHandler": "sightline_autogen.intervention",
    "SightlineEventLogHandler": "sightline_autogen.event_log",
}

__all__ = [
    "FRAMEWORK",
    "InstrumentedChatCompletionClient",
    "SightlineEventLogHandler",
    "SightlineInterventionHandler",
    "__version__",
    "instrument",
    "instrument_model_client",
    "is_instrumented",
    "uninstrument",
]


def instrument(client: Any = None) -> None:
    """Switch on global AutoGen instrumentation, reporting to ``client`` (default: the global
    Sightline client, resolved at event time). Idempotent."""
    from sightline_autogen.instrumentor import INSTRUMENTOR

    INSTRUMENTOR.instrument(client)


def uninstrument() -> None:
    """Switch global AutoGen instrumentation off and restore AutoGen. Idempotent."""
    from sightline_autogen.instrumentor import INSTRUMENTOR

    INSTRUMENTOR.uninstrument()


def is_instrumented() -> bool:
    """True while the global instrumentation is on."""
    from sightline_autogen.instrumentor import INSTRUMENTOR

    return INSTRUMENTOR.instrumented


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from sightline_autogen.event_log import SightlineEventLogHandler
    from sightline_autogen.intervention import SightlineInterventionHandler
    from sightline_autogen.mapping import FRAMEWORK
    from sightline_autogen.model_client import (
        InstrumentedChatCompletionClient,
        instrument_model_client,
    )
