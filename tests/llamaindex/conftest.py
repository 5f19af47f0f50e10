"""Fixtures for the LlamaIndex adapter tests: real llama-index-core, offline models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sightline_llamaindex
from sightline.testing import Capture, capture
from tests.llamaindex.events import assert_no_open_spans
from tests.llamaindex.scripted import build_index
from tests.support.governance import Policy, policies

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Building a workflow agent walks its members with inspect.getmembers, which touches
    # pydantic's deprecated class attributes: LlamaIndex's noise, not ours.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect"))
            item.add_marker(
                pytest.mark.filterwarnings("ignore:is_running called from within a step")
            )


@pytest.fixture
def traced() -> Iterator[Capture]:
    """LlamaIndex instrumented globally, reporting to an in-memory client, for one test.

    Afterwards the handlers' tables of open spans must be empty again.
    """
    with capture() as cap:
        sightline_llamaindex.instrument(cap.client)
        try:
            yield cap
        finally:
            sightline_llamaindex.uninstrument()
    assert_no_open_spans()


@pytest.fixture
def policy(traced: Capture) -> Iterator[Callable[[Any], Policy]]:
    """``policy(answer)`` registers a recording :class:`Policy` on ``traced``'s client for the
    test."""
    with policies(traced.client) as install:
        yield install


@pytest.fixture(scope="session")
def index() -> Any:
    """Two help-centre articles in a ``VectorStoreIndex`` (built before any instrumentation)."""
    return build_index()
