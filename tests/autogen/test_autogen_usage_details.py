"""An AutoGen model call's prompt-cache and reasoning tokens: ``metadata["usage_details"]``
holds those of ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that
are known and not zero, as parts of ``usage`` (never added to it).

``RequestUsage`` has only prompt and completion tokens: the details come from the raw response
a client logs (``LLMCallEvent``), read for the event-log path and, with the global
instrumentation on, for a wrapped client. The OpenAI client logs a ``ChatCompletion`` dump
(against the scripted server here); the Anthropic client a ``Message`` dump whose
``input_tokens`` leave the cached prompt out, and copies them into ``RequestUsage``: the cached
prompt is added to the input (a scripted client logging as the Anthropic client does, since
the ``anthropic`` SDK is not installed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import EVENT_LOGGER_NAME
from autogen_core.logging import LLMCallEvent
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

from sightline_autogen import instrument_model_client
from tests.autogen.conftest import MODEL_INFO
from tests.support.openai_server import Reply, ScriptedOpenAIServer

OPENAI_DETAILS = {"cache_read_tokens": 1024, "reasoning_tokens": 256}


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(
        [
            Reply.text(
                "Refunds take five days.",
                prompt_tokens=1200,
                completion_tokens=300,
                cached_tokens=1024,
                reasoning_tokens=256,
            )
        ],
        model="gpt-4o-mini-2024-07-18",
    ) as srv:
        yield srv


def openai_client(srv: ScriptedOpenAIServer) -> OpenAIChatCompletionClient:
    return OpenAIChatCompletionClient(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")


async def ask(model_client: Any) -> None:
    await AssistantAgent("support", model_client=model_client).run(task="Refund time?")


def usage_of(cap: Any) -> tuple[dict[str, Any], Any]:
    call = cap.one(type="llm_invoke")
    return call.usage.to_dict(), call.metadata.get("usage_details")


async def test_openai_details_are_read_from_the_clients_event_log(recorded, server):
    await ask(openai_client(server))
    assert usage_of(recorded) == (
        {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500},
        OPENAI_DETAILS,
    )


async def test_a_wrapped_openai_client_has_them_with_the_global_instrumentation(recorded, server):
    await ask(instrument_model_client(openai_client(server)))
    call = recorded.one(type="llm_invoke")
    assert call.metadata["client"] == "OpenAIChatCompletionClient"
    assert usage_of(recorded) == (
        {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500},
        OPENAI_DETAILS,
    )


async def test_a_wrapped_client_alone_has_only_request_usage(captured, server):
    # Without the global instrumentation the client's log is not read: RequestUsage only.
    await ask(instrument_model_client(openai_client(server)))
    assert usage_of(captured) == (
        {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500},
        None,
    )


async def test_a_reply_without_cache_or_reasoning_has_no_usage_details(recorded):
    # The server still sends prompt_tokens_details / completion_tokens_details, with zeros.
    with ScriptedOpenAIServer(
        [Reply.text("Five days.", prompt_tokens=60)], model="gpt-4o-mini-2024-07-18"
    ) as srv:
        await ask(openai_client(srv))
    assert usage_of(recorded) == (
        {"input_tokens": 60, "output_tokens": 5, "total_tokens": 65},
        None,
    )


ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "output_tokens": 20,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 300,
}


class AnthropicLikeClient(ReplayChatCompletionClient):
    """Answers as AutoGen's ``AnthropicChatCompletionClient`` does: logs an ``LLMCallEvent``
    with the ``Message`` dump, and its ``RequestUsage`` copies Anthropic's ``input_tokens``."""

    def __init__(self, usage: dict[str, Any]) -> None:
        super().__init__(["Refunds take five days."], model_info=MODEL_INFO)
        self._usage = usage

    async def create(self, messages: Sequence[Any], **kwargs: Any) -> CreateResult:
        usage = RequestUsage(
            prompt_tokens=self._usage["input_tokens"],
            completion_tokens=self._usage["output_tokens"],
        )
        logging.getLogger(EVENT_LOGGER_NAME).info(
            LLMCallEvent(
                messages=[{"role": "user", "content": "Refund time?"}],
                response={
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "Refunds take five days."}],
                    "stop_reason": "end_turn",
                    "usage": self._usage,
                },
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )
        return CreateResult(
            finish_reason="stop", content="Refunds take five days.", usage=usage, cached=False
        )


ANTHROPIC_COUNTS = {"input_tokens": 1350, "output_tokens": 20, "total_tokens": 1370}
ANTHROPIC_DETAILS = {"cache_read_tokens": 1000, "cache_creation_tokens": 300}


async def test_anthropic_cached_prompt_is_added_to_the_logged_input(recorded):
    await ask(AnthropicLikeClient(ANTHROPIC_USAGE))
    assert usage_of(recorded) == (ANTHROPIC_COUNTS, ANTHROPIC_DETAILS)


async def test_a_wrapped_anthropic_clients_input_gets_the_cached_prompt_too(recorded):
    await ask(instrument_model_client(AnthropicLikeClient(ANTHROPIC_USAGE)))
    assert recorded.one(type="llm_invoke").metadata["client"] == "AnthropicLikeClient"
    assert usage_of(recorded) == (ANTHROPIC_COUNTS, ANTHROPIC_DETAILS)


async def test_anthropic_usage_without_cache_keeps_its_counts(recorded):
    usage = {**ANTHROPIC_USAGE, "cache_read_input_tokens": None, "cache_creation_input_tokens": 0}
    await ask(AnthropicLikeClient(usage))
    assert usage_of(recorded) == (
        {"input_tokens": 50, "output_tokens": 20, "total_tokens": 70},
        None,
    )
