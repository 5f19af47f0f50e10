"""Sightline plugin hooks: ``sightline.init()`` instruments LangChain through these.

Registered through ``[project.entry-points.sightline] langchain = "sightline_langchain.plugin"``.
Neither discovering the plugin nor calling its hooks imports LangChain: the global handler is
registered once the application imports ``langchain_core`` (see
:mod:`sightline_langchain.instrumentation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline.hookspecs import hookimpl

if TYPE_CHECKING:
    from sightline.client import Client


@hookimpl
def sightline_instrument(client: Client) -> None:
    """Install the global LangChain handler, reporting to ``client``."""
    from sightline_langchain.instrumentation import instrument

    instrument(client)


@hookimpl
def sightline_uninstrument() -> None:
    """Remove the global LangChain handler."""
    from sightline_langchain.instrumentation import uninstrument

    uninstrument()
