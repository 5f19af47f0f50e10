"""Sightline for LlamaIndex: agents, LLM calls, tools, retrievals and workflows as events.

With the package installed, ``sightline.init()`` instruments LlamaIndex globally. By hand::

    from llama_index.core.instrumentation import get_dispatcher
    from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler

    dispatcher = get_dispatcher()
    dispatcher.add_span_handler(SightlineSpanHandler())
    dispatcher.add_event_handler(SightlineEventHandler())

or ``sightline_llamaindex.instrument()`` / ``uninstrument()``. Importing this package is cheap:
LlamaIndex loads when a handler is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "SightlineSpanHandler": "sightline_llamaindex.handlers",
    "SightlineEventHandler": "sightline_llamaindex.handlers",
    "instrument": "sightline_llamaindex.instrumentation",
    "uninstrument": "sightline_llamaindex.instrumentation",
}

__all__ = [
    "SightlineEventHandler",
    "SightlineSpanHandler",
    "__version__",
    "instrument",
    "uninstrument",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler
    from sightline_llamaindex.instrumentation import instrument, uninstrument
