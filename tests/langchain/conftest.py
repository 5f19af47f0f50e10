"""Fixtures for the LangChain adapter tests: real langchain-core / langchain / langgraph, offline.

Nothing here reaches the network: models, retrievers and tools are the scripted ones of
``langchain_scripted``, and LangSmith tracing is switched off before LangChain is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import sightline_langchain
from sightline.testing import Capture, capture
from sightline_langchain.handler import _IDS, _RUNS

# LangChain reads these when a run starts, so setting them here is early enough.
for _variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
    os.environ[_variable] = "false"


@pytest.fixture
def cap() -> Iterator[Capture]:
    """A global client exporting to memory; LangChain is instrumented only when asked."""
    with capture() as captured:
        yield captured
    assert not _RUNS, f"runs left open: {list(_RUNS.values())}"
    assert not _IDS, f"run ids left: {_IDS}"


@pytest.fixture
def global_cap() -> Iterator[Capture]:
    """As ``cap``, with LangChain instrumented globally through the plugin hook."""
    with capture() as captured:
        captured.client.instrument(["langchain"])
        try:
            yield captured
        finally:
            captured.client.uninstrument(["langchain"])
    assert not sightline_langchain.is_instrumented()
    assert not _RUNS, f"runs left open: {list(_RUNS.values())}"
    assert not _IDS, f"run ids left: {_IDS}"


@pytest.fixture(autouse=True)
def _never_left_instrumented() -> Iterator[None]:
    yield
    sightline_langchain.uninstrument()
    _RUNS.clear()
    _IDS.clear()
