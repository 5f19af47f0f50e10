"""A LlamaIndex model call's prompt-cache and reasoning tokens: ``metadata["usage_details"]``
holds those of ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that
are known and not zero, read from the provider's usage in ``response.raw``, as parts of
``usage``: the prompt Anthropic and Bedrock count apart from their input tokens is added to the
input, Gemini's thoughts (counted apart from the candidates) to the output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseAsyncGen
from llama_index.core.llms.callbacks import llm_chat_callback
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails

from tests.llamaindex.scripted import ScriptedLLM, answer

HELLO = [ChatMessage(role="user", content="hello")]


class ProviderLLM(ScriptedLLM):
    """A scripted LLM whose raw payload carries ``usage`` as a provider reports it."""

    usage: Any = None
    usage_key: str = "usage"

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=answer("hi"), raw={self.usage_key: self.usage})

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def chunks() -> Any:
            yield ChatResponse(message=answer("h"), delta="h", raw={"choices": []})
            yield ChatResponse(message=answer("hi"), delta="i", raw={self.usage_key: self.usage})

        return chunks()


def recorded(traced: Any, usage: Any, usage_key: str = "usage") -> tuple[Any, dict[str, Any]]:
    ProviderLLM(usage=usage, usage_key=usage_key).chat(HELLO)
    event = traced.one(type="llm_invoke")
    counts = event.usage
    return (counts.input_tokens, counts.output_tokens, counts.total_tokens), event.metadata


OPENAI_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 500,
    "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 384, "audio_tokens": 0},
}


def test_openai_cached_and_reasoning_tokens_are_parts_of_the_counts(traced):
    counts, metadata = recorded(traced, OPENAI_USAGE)
    assert counts == (2000, 500, 2500)
    assert metadata == {
        "usage_details": {"cache_read_tokens": 1536, "reasoning_tokens": 384},
    }


def test_openai_sdk_usage_objects_are_read_like_dicts(traced):
    usage = CompletionUsage(
        prompt_tokens=2000,
        completion_tokens=500,
        total_tokens=2500,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=1536),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=0),
    )
    counts, metadata = recorded(traced, usage)
    assert counts == (2000, 500, 2500)
    assert metadata == {"usage_details": {"cache_read_tokens": 1536}}


def test_openai_responses_api_details_are_recorded(traced):
    usage = {
        "input_tokens": 900,
        "output_tokens": 120,
        "total_tokens": 1020,
        "input_tokens_details": {"cached_tokens": 512},
        "output_tokens_details": {"reasoning_tokens": 64},
    }
    counts, metadata = recorded(traced, usage)
    assert counts == (900, 120, 1020)
    assert metadata == {"usage_details": {"cache_read_tokens": 512, "reasoning_tokens": 64}}


def test_anthropic_cached_prompt_is_added_to_its_input_tokens(traced):
    # Anthropic's input_tokens are the uncached rest of the prompt only.
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
    }
    counts, metadata = recorded(traced, usage)
    assert counts == (1350, 20, 1370)
    assert metadata == {
        "usage_details": {"cache_read_tokens": 1000, "cache_creation_tokens": 300},
    }


def test_anthropic_usage_without_cache_keeps_its_counts(traced):
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": 0,
    }
    counts, metadata = recorded(traced, usage)
    assert counts == (50, 20, 70)
    assert "usage_details" not in metadata


def test_bedrock_cached_prompt_is_added_to_its_input_and_total(traced):
    usage = {
        "inputTokens": 40,
        "outputTokens": 10,
        "totalTokens": 50,
        "cacheReadInputTokens": 800,
        "cacheWriteInputTokens": 100,
    }
    counts, metadata = recorded(traced, usage)
    assert counts == (940, 10, 950)
    assert metadata == {
        "usage_details": {"cache_read_tokens": 800, "cache_creation_tokens": 100},
    }


def test_gemini_thoughts_are_output_and_cached_content_is_part_of_the_prompt(traced):
    usage = {
        "prompt_token_count": 1200,
        "candidates_token_count": 80,
        "thoughts_token_count": 400,
        "cached_content_token_count": 1024,
        "total_token_count": 1680,
        "tool_use_prompt_token_count": None,
    }
    counts, metadata = recorded(traced, usage, usage_key="usage_metadata")
    assert counts == (1200, 480, 1680)
    assert metadata == {
        "usage_details": {"cache_read_tokens": 1024, "reasoning_tokens": 400},
    }


def test_a_reply_without_details_has_no_usage_details(traced):
    counts, metadata = recorded(
        traced, {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}
    )
    assert counts == (10, 7, 17)
    assert metadata == {}


async def test_a_streamed_replys_details_come_with_its_last_chunk(traced):
    stream = await ProviderLLM(usage=OPENAI_USAGE).astream_chat(HELLO)
    assert [chunk.delta async for chunk in stream] == ["h", "i"]
    event = traced.one(type="llm_invoke")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (2000, 500)
    assert event.metadata["usage_details"] == {"cache_read_tokens": 1536, "reasoning_tokens": 384}
