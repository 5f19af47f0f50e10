"""A CrewAI model call's prompt-cache and reasoning tokens: ``metadata["usage_details"]``
holds those of ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that
are known and not zero, as parts of ``usage`` (never added to it): from CrewAI's native OpenAI
provider against the scripted server, and from the usage dicts other providers hand CrewAI
(through a custom ``BaseLLM`` reporting them as CrewAI's own providers do). Raw Anthropic and
Bedrock usage, which count the cached prompt apart, get it added to the input."""

from __future__ import annotations

from typing import Any

from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM

from tests.crewai.crewai_support import CREWAI_WARNINGS, calculator_crew
from tests.support.openai_server import Reply

pytestmark = CREWAI_WARNINGS


def test_openai_cached_and_reasoning_tokens_are_recorded(instrumented, server, llm):
    server.add(
        Reply.text(
            "The sum is 3",
            prompt_tokens=1200,
            completion_tokens=300,
            cached_tokens=1024,
            reasoning_tokens=256,
        )
    )
    assert calculator_crew(llm(), tools=[]).kickoff().raw == "The sum is 3"
    call = instrumented.one(type="llm_invoke")
    assert call.usage.to_dict() == {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
    }
    assert call.metadata["usage_details"] == {"cache_read_tokens": 1024, "reasoning_tokens": 256}


def test_an_openai_reply_without_cache_or_reasoning_has_no_usage_details(instrumented, server, llm):
    # The server still sends prompt_tokens_details / completion_tokens_details, with zeros.
    server.add(Reply.text("The sum is 3", prompt_tokens=60, completion_tokens=5))
    calculator_crew(llm(), tools=[]).kickoff()
    call = instrumented.one(type="llm_invoke")
    assert call.usage.to_dict() == {"input_tokens": 60, "output_tokens": 5, "total_tokens": 65}
    assert "usage_details" not in call.metadata


class ProviderUsageLLM(BaseLLM):
    """A custom CrewAI LLM answering "ok" and reporting ``usage`` as its provider gave it."""

    usage: dict[str, Any]

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        self._emit_call_started_event(messages=messages)
        self._emit_call_completed_event(
            response="ok", call_type=LLMCallType.LLM_CALL, messages=messages, usage=self.usage
        )
        return "ok"


def recorded(instrumented: Any, usage: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    assert ProviderUsageLLM(model="house-model", usage=usage).call("Add 1 and 2") == "ok"
    call = instrumented.one(type="llm_invoke")
    return call.usage.to_dict(), call.metadata.get("usage_details")


def test_raw_anthropic_usage_counts_the_cached_prompt_as_input(instrumented):
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 1350, "output_tokens": 20, "total_tokens": 1370},
        {"cache_read_tokens": 1000, "cache_creation_tokens": 300},
    )


def test_crewais_native_anthropic_usage_already_counts_it(instrumented):
    # AnthropicCompletion folds the cache counts into input_tokens and names them its own way.
    usage = {
        "input_tokens": 1350,
        "output_tokens": 20,
        "total_tokens": 1370,
        "cached_prompt_tokens": 1000,
        "cache_creation_tokens": 300,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 1350, "output_tokens": 20, "total_tokens": 1370},
        {"cache_read_tokens": 1000, "cache_creation_tokens": 300},
    )


def test_litellm_style_usage_keeps_its_prompt_tokens(instrumented):
    # LiteLLM's prompt_tokens include the cached prompt; it also passes Anthropic's keys on.
    usage = {
        "prompt_tokens": 1350,
        "completion_tokens": 20,
        "total_tokens": 1370,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "cached_prompt_tokens": 1000,
        "cache_creation_tokens": 300,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 1350, "output_tokens": 20, "total_tokens": 1370},
        {"cache_read_tokens": 1000, "cache_creation_tokens": 300},
    )


def test_crewais_native_gemini_usage_is_read_with_its_thoughts(instrumented):
    usage = {
        "prompt_token_count": 1200,
        "candidates_token_count": 80,
        "completion_tokens": 480,
        "total_token_count": 1680,
        "total_tokens": 1680,
        "cached_prompt_tokens": 1024,
        "reasoning_tokens": 400,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 1200, "output_tokens": 480, "total_tokens": 1680},
        {"cache_read_tokens": 1024, "reasoning_tokens": 400},
    )


def test_bedrock_usage_counts_the_cached_prompt_as_input(instrumented):
    usage = {
        "inputTokens": 40,
        "outputTokens": 10,
        "totalTokens": 50,
        "cacheReadInputTokens": 800,
        "cacheWriteInputTokens": 100,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 940, "output_tokens": 10, "total_tokens": 950},
        {"cache_read_tokens": 800, "cache_creation_tokens": 100},
    )


def test_zero_details_are_left_out(instrumented):
    usage = {
        "prompt_tokens": 60,
        "completion_tokens": 5,
        "total_tokens": 65,
        "cached_prompt_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert recorded(instrumented, usage) == (
        {"input_tokens": 60, "output_tokens": 5, "total_tokens": 65},
        None,
    )
