"""Fixtures for the CrewAI adapter tests: real CrewAI against the scripted OpenAI server.

CrewAI's environment is set before anything imports CrewAI: no telemetry, no version check, no
cloud tracing, its SQLite files in a temporary directory. (Never OTEL_SDK_DISABLED: that would
switch off the user's own OpenTelemetry too.)
"""

from __future__ import annotations

import os
import tempfile

os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["CREWAI_DISABLE_VERSION_CHECK"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="sightline-crewai-"))

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crewai import LLM

import sightline_crewai
from sightline.testing import capture
from tests.crewai.crewai_support import DrainingCapture
from tests.support.openai_server import Reply, ScriptedOpenAIServer


@pytest.fixture
def cap() -> Iterator[DrainingCapture]:
    """A global client exporting to memory; reading its events first drains CrewAI's bus."""
    with capture() as captured:
        yield DrainingCapture(captured)


@pytest.fixture
def instrumented(cap: DrainingCapture) -> Iterator[DrainingCapture]:
    """The global integration on (recording to ``cap``), and off again after the test."""
    sightline_crewai.instrument()
    try:
        yield cap
    finally:
        sightline_crewai.uninstrument()


@pytest.fixture
def private() -> Iterator[DrainingCapture]:
    """The global integration recording to a client with ``capture_content=False``."""
    with capture(capture_content=False) as captured:
        sightline_crewai.instrument()
        try:
            yield DrainingCapture(captured)
        finally:
            sightline_crewai.uninstrument()


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as srv:
        yield srv


@pytest.fixture
def llm(server: ScriptedOpenAIServer) -> Callable[..., Any]:
    """``llm(model="gpt-4o-mini")``: CrewAI's native OpenAI provider against the server."""

    def make(model: str = "gpt-4o-mini", **options: Any) -> Any:
        return LLM(model=model, base_url=server.base_url, api_key="sk-test", **options)

    return make


@pytest.fixture
def slow_llm(server: ScriptedOpenAIServer, llm: Callable[..., Any]) -> Any:
    """An LLM whose every answer ("3") takes 2 s: long enough for a timeout to interrupt."""
    server.set_responder(lambda request: Reply.text("3", delay_s=2.0))
    return llm()
