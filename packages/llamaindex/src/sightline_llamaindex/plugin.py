"""Sightline plugin hooks: ``sightline.init()`` instruments LlamaIndex through these.

Registered as ``[project.entry-points.sightline] llamaindex = "sightline_llamaindex.plugin"``.
LlamaIndex is imported only when instrumentation is switched on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline import hookimpl

if TYPE_CHECKING:
    from sightline import Client


@hookimpl
def sightline_instrument(client: Client) -> None:
    """Add the Sightline handlers to LlamaIndex's root dispatcher, reporting to ``client``."""
    from sightline_llamaindex.instrumentation import instrument

    instrument(client)


@hookimpl
def sightline_uninstrument() -> None:
    """Remove the handlers :func:`sightline_instrument` added."""
    from sightline_llamaindex.instrumentation import uninstrument

    uninstrument()
