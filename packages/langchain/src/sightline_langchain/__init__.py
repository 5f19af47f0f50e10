"""Sightline for LangChain: every chain, agent, model call, tool call and retrieval as an event.

Per constructor::

    from sightline_langchain import SightlineCallbackHandler
    chain.invoke(question, config={"callbacks": [SightlineCallbackHandler()]})

Globally (what ``sightline.init()`` does when this package is installed)::

    import sightline_langchain
    sightline_langchain.instrument()

Importing this package is cheap: ``SightlineCallbackHandler`` imports LangChain when first used;
``instrument()`` waits for the application to import LangChain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "SightlineCallbackHandler": "sightline_langchain.handler",
    "FRAMEWORK": "sightline_langchain.handler",
    "instrument": "sightline_langchain.instrumentation",
    "uninstrument": "sightline_langchain.instrumentation",
    "is_instrumented": "sightline_langchain.instrumentation",
    "global_handler": "sightline_langchain.instrumentation",
}

__all__ = [
    "FRAMEWORK",
    "SightlineCallbackHandler",
    "__version__",
    "global_handler",
    "instrument",
    "is_instrumented",
    "uninstrument",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from sightline_langchain.handler import FRAMEWORK, SightlineCallbackHandler
    from sightline_langchain.instrumentation import (
        global_handler,
        instrument,
        is_instrumented,
        uninstrument,
    )
