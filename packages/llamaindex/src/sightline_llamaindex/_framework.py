"""The LlamaIndex instrumentation API, from its lightest home.

``llama-index-core`` re-exports its instrumentation from the small ``llama-index-instrumentation``
package (pydantic and wrapt only); importing that one instead of ``llama_index.core`` keeps
``sightline.init()`` from loading all of LlamaIndex in an application that has the adapter
installed but does not use LlamaIndex. Both are the same objects (one root dispatcher).
"""

from __future__ import annotations

try:
    from llama_index_instrumentation import get_dispatcher
    from llama_index_instrumentation.event_handlers import BaseEventHandler
    from llama_index_instrumentation.span import BaseSpan, active_span_id
    from llama_index_instrumentation.span_handlers import BaseSpanHandler
except ImportError:  # llama-index-core before the instrumentation package was split out
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import (
        BaseEventHandler,
    )
    from llama_index.core.instrumentation.span import BaseSpan, active_span_id
    from llama_index.core.instrumentation.span_handlers import (
        BaseSpanHandler,
    )

__all__ = ["BaseEventHandler", "BaseSpan", "BaseSpanHandler", "active_span_id", "get_dispatcher"]
