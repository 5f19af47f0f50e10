"""A LangChain model call's prompt-cache and reasoning tokens: ``metadata["usage_details"]``
holds those of ``cache_read_tokens``, ``cache_creation_tokens`` and ``reasoning_tokens`` that
are known and not zero, as parts of ``usage`` (never added to it). They come from the message's
``usage_metadata`` (``input_token_details`` / ``output_token_details``), or from a provider's
``llm_output`` usage in OpenAI's or Anthropic's shape, whose input is then the whole prompt."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_events import only
from tests.langchain.langchain_scripted import ScriptedTextModel, chat_model, reply


def cached_reply() -> AIMessage:
    """A reply as LangChain's Anthropic and OpenAI integrations report it: the details are
    parts of ``input_tokens`` and ``output_tokens``."""
    message = AIMessage(content="Refunds take five days.")
    message.usage_metadata = {
        "input_tokens": 1500,
        "output_tokens": 300,
        "total_tokens": 1800,
        "input_token_details": {"cache_read": 1024, "cache_creation": 200, "audio": 0},
        "output_token_details": {"reasoning": 256},
    }
    return message


def handled() -> dict[str, Any]:
    return {"callbacks": [SightlineCallbackHandler()]}


def usage_of(cap: Capture) -> tuple[tuple[int | None, int | None, int | None], dict[str, Any]]:
    event = only(cap.events)
    usage = event.usage
    return (usage.input_tokens, usage.output_tokens, usage.total_tokens), event.metadata


def test_cache_and_reasoning_tokens_from_usage_metadata_are_recorded(cap: Capture) -> None:
    chat_model(cached_reply()).invoke("How long do refunds take?", config=handled())
    usage, metadata = usage_of(cap)
    assert usage == (1500, 300, 1800)
    assert metadata.pop("usage_details") == {
        "cache_read_tokens": 1024,
        "cache_creation_tokens": 200,
        "reasoning_tokens": 256,
    }
    assert metadata == {"provider": "scripted"}


def test_a_streamed_replys_details_are_recorded(global_cap: Capture) -> None:
    model = chat_model(cached_reply())
    assert "".join(chunk.content for chunk in model.stream("q")) == "Refunds take five days."
    event = global_cap.one(type="llm_invoke")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1500, 300)
    assert event.metadata["usage_details"] == {
        "cache_read_tokens": 1024,
        "cache_creation_tokens": 200,
        "reasoning_tokens": 256,
    }


def test_zero_details_are_left_out(cap: Capture) -> None:
    message = AIMessage(content="Five days.")
    message.usage_metadata = {
        "input_tokens": 40,
        "output_tokens": 5,
        "total_tokens": 45,
        "input_token_details": {"cache_read": 0},
        "output_token_details": {"reasoning": 3},
    }
    chat_model(message).invoke("q", config=handled())
    usage, metadata = usage_of(cap)
    assert usage == (40, 5, 45)
    assert metadata["usage_details"] == {"reasoning_tokens": 3}


def test_a_reply_without_details_has_no_usage_details(cap: Capture) -> None:
    chat_model(reply("Five days.", input_tokens=40, output_tokens=5)).invoke("q", config=handled())
    usage, metadata = usage_of(cap)
    assert usage == (40, 5, 45)
    assert "usage_details" not in metadata


def test_openai_shaped_token_usage_details_are_recorded(cap: Capture) -> None:
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 500,
        "total_tokens": 2500,
        "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 384, "audio_tokens": 0},
    }
    ScriptedTextModel(token_usage=usage).invoke("Capital of France?", config=handled())
    counts, metadata = usage_of(cap)
    assert counts == (2000, 500, 2500)
    assert metadata["usage_details"] == {"cache_read_tokens": 1536, "reasoning_tokens": 384}


def test_anthropic_shaped_token_usage_counts_the_cached_prompt_as_input(cap: Capture) -> None:
    # Anthropic's input_tokens are the uncached rest of the prompt only.
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
    }
    ScriptedTextModel(token_usage=usage).invoke("Capital of France?", config=handled())
    counts, metadata = usage_of(cap)
    assert counts == (1350, 20, 1370)
    assert metadata["usage_details"] == {
        "cache_read_tokens": 1000,
        "cache_creation_tokens": 300,
    }


def test_token_usage_without_details_has_no_usage_details(cap: Capture) -> None:
    ScriptedTextModel().invoke("Capital of France?", config=handled())
    counts, metadata = usage_of(cap)
    assert counts == (9, 2, 11)
    assert "usage_details" not in metadata
