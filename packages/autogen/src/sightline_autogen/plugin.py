"""Sightline plugin hooks: ``sightline.init()`` instruments AutoGen through these.

Registered through ``[project.entry-points.sightline] autogen = "sightline_autogen.plugin"``.
Neither discovering the plugin nor calling its hooks imports AutoGen: the class patches wait
for the application to import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sightline.hookspecs import hookimpl

if TYPE_CHECKING:
    from sightline.client import Client


@hookimpl
def sightline_instrument(client: Client) -> None:
    """Attach the event-log handler and the agent/team patches, reporting to ``client``."""
    from sightline_autogen.instrumentor import INSTRUMENTOR

    INSTRUMENTOR.instrument(client)


@hookimpl
def sightline_uninstrument() -> None:
    """Detach the handler and restore AutoGen's methods."""
    from sightline_autogen.instrumentor import INSTRUMENTOR

    INSTRUMENTOR.uninstrument()
