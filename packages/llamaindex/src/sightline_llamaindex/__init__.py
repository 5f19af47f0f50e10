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

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'sightline_llamaindex' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from sightline_llamaindex.handlers import SightlineEventHandler, SightlineSpanHandler
    from sightline_llamaindex.instrumentation import instrument, uninstrument
