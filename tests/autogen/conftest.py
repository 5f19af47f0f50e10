"""Fixtures for the AutoGen adapter tests: real autogen-agentchat, scripted offline models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

import sightline_autogen
from sightline.event import Event
from sightline.testing import Capture, capture
from tests.support.governance import Policy, policies

MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "gpt-4o",
    "structured_output": False,
}

VOLATILE = (
    "schema_version",
    "id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "end_time",
    "duration_ms",
)


def replay(*responses: str | CreateResult) -> ReplayChatCompletionClient:
    """A scripted model answering ``responses`` in order (model family ``gpt-4o``)."""
    return ReplayChatCompletionClient(list(responses), model_info=MODEL_INFO)


def calls(
    *specs: tuple[str, str, str], prompt_tokens: int = 10, completion_tokens: int = 5
) -> CreateResult:
    """A model result asking for function calls ``(call_id, name, arguments_json)``."""
    return CreateResult(
        finish_reason="function_calls",
        content=[
            FunctionCall(id=call_id, name=name, arguments=arguments)
            for call_id, name, arguments in specs
        ],
        usage=RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        cached=False,
    )


def wire(event: Event) -> dict[str, Any]:
    """The event's wire form without the fields that differ on every run (ids, times)."""
    data = event.to_dict()
    for key in VOLATILE:
        data.pop(key)
    return data


def children(cap: Capture, parent: Event, type: str | None = None) -> list[Event]:
    """Direct children of ``parent`` (of one type), by start time."""
    found = cap.children(parent)
    return [e for e in found if type is None or e.type.value == type]


@pytest.fixture
def recorded() -> Iterator[Capture]:
    """A capturing global client with the global AutoGen instrumentation on."""
    with capture() as cap:
        sightline_autogen.instrument(cap.client)
        try:
            yield cap
        finally:
            sightline_autogen.uninstrument()


@pytest.fixture
def captured() -> Iterator[Capture]:
    """A capturing global client, AutoGen not instrumented globally (per-constructor tests)."""
    with capture() as cap:
        yield cap


@pytest.fixture
def policy(recorded: Capture) -> Iterator[Callable[[Any], Policy]]:
    """``policy(answer)`` registers a recording :class:`Policy` on ``recorded``'s client for
    the test."""
    with policies(recorded.client) as install:
        yield install
