"""The pytest plugin of :mod:`sightline.testing`: the ``sightline_capture`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sightline.testing import Capture, capture


@pytest.fixture
def sightline_capture() -> Iterator[Capture]:
    """A global Sightline client exporting to memory for one test; yields a :class:`Capture`.

    The installed integrations are instrumented for the test, reporting to it, so that the
    runs of a LangChain, CrewAI, AutoGen or LlamaIndex agent are captured too.
    """
    with capture(instrument=True) as captured:
        yield captured
