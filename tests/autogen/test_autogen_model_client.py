"""``instrument_model_client``: every create / create_stream is one ``llm_invoke`` event."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from autogen_core.models import SystemMessage, UserMessage
from autogen_core.tools import FunctionTool

import sightline
from sightline.testing import InMemoryExporter
from sightline_autogen import InstrumentedChatCompletionClient, instrument_model_client
from tests.autogen.conftest import calls, replay, wire

MESSAGES = [
    SystemMessage(content="Be brief."),
    UserMessage(content="Weather in Paris?", source="user"),
]


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


WEATHER_TOOL = FunctionTool(get_weather, description="The weather in a city.")
CLOCK_SCHEMA = {
    "name": "clock",
    "description": "The time.",
    "parameters": {"type": "object", "properties": {}},
}
OPENAI_TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}


async def test_create_is_recorded_with_model_messages_usage_and_finish_reason(captured):
    model = instrument_model_client(replay("It is sunny."))

    result = await model.create(MESSAGES)

    assert result.content == "It is sunny."
    event = wire(captured.one(type="llm_invoke"))
    assert event.pop("input") == [
        {"content": "Be brief.", "type": "SystemMessage"},
        {"content": "Weather in Paris?", "source": "user", "type": "UserMessage"},
    ]
    assert event == {
        "type": "llm_invoke",
        "name": "chat_completion",
        "status": "ok",
        "agent": None,
        "session_id": None,
        "framework": "autogen",
        "output": "It is sunny.",
        "model": "gpt-4o",
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
        "cost_usd": 0.0,  # a cached result: nothing billed, not priced
        "error": None,
        "metadata": {
            "client": "ReplayChatCompletionClient",
            "stream": False,
            "tools": [],
            "finish_reason": "stop",
            "cached": True,
        },
        "tags": [],
    }


async def test_function_calls_requested_are_the_output_with_their_call_ids(captured):
    model = instrument_model_client(
        replay(
            calls(
                ("call_1", "get_weather", '{"city": "Paris"}'),
                ("call_2", "get_weather", '{"city": "Rome"}'),
                prompt_tokens=31,
                completion_tokens=17,
            )
        )
    )

    await model.create(MESSAGES, tools=[WEATHER_TOOL])

    event = captured.one(type="llm_invoke")
    assert event.output == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    assert event.metadata["finish_reason"] == "function_calls"
    assert event.metadata["tools"] == ["get_weather"]
    assert event.usage.to_dict() == {"input_tokens": 31, "output_tokens": 17, "total_tokens": 48}


async def test_tools_offered_as_objects_and_as_dicts_are_all_named(captured):
    model = instrument_model_client(replay("ok"))

    await model.create(
        MESSAGES, tools=[WEATHER_TOOL, CLOCK_SCHEMA, OPENAI_TOOL], tool_choice="required"
    )

    metadata = captured.one(type="llm_invoke").metadata
    assert metadata["tools"] == ["get_weather", "clock", "search"]
    assert metadata["tool_choice"] == "required"


async def test_create_stream_records_chunks_usage_and_time_to_first_chunk(captured):
    model = instrument_model_client(replay("sunny and warm today"))

    items = [item async for item in model.create_stream(MESSAGES)]

    assert items[:-1] == ["sunny ", "and ", "warm ", "today"]
    event = captured.one(type="llm_invoke")
    metadata = dict(event.metadata)
    first_chunk_ms = metadata.pop("time_to_first_chunk_ms")
    assert 0 <= first_chunk_ms <= event.duration_ms
    assert metadata == {
        "client": "ReplayChatCompletionClient",
        "stream": True,
        "tools": [],
        "finish_reason": "stop",
        "cached": True,
        "chunks": 4,
    }
    assert event.output == "sunny and warm today"
    assert event.usage.to_dict() == {"input_tokens": 5, "output_tokens": 4, "total_tokens": 9}


async def test_stream_closed_early_is_recorded_once_as_ok(captured):
    model = instrument_model_client(replay("one two three four"))

    stream = model.create_stream(MESSAGES)
    assert await stream.__anext__() == "one "
    await stream.aclose()

    event = captured.one(type="llm_invoke")
    assert event.status.value == "ok"
    assert event.metadata["closed_early"] is True
    assert event.metadata["chunks"] == 1


async def test_model_error_is_recorded_with_kind_model_and_reraised_unchanged(captured):
    model = instrument_model_client(replay())  # nothing scripted: the client raises

    with pytest.raises(ValueError, match="No more mock responses available"):
        await model.create(MESSAGES)

    event = captured.one(type="llm_invoke")
    assert event.status.value == "error"
    assert (event.error.kind, event.error.type, event.error.message) == (
        "model",
        "ValueError",
        "No more mock responses available",
    )


async def test_stream_error_is_recorded_with_kind_model(captured):
    model = instrument_model_client(replay())

    with pytest.raises(ValueError):
        async for _ in model.create_stream(MESSAGES):
            pass

    event = captured.one(type="llm_invoke")
    assert (event.status.value, event.error.kind) == ("error", "model")


async def test_calls_nest_under_the_ambient_span(captured):
    model = instrument_model_client(replay("a", "b"))

    with sightline.trace("conversation") as run:
        await model.create(MESSAGES)
        async for _ in model.create_stream(MESSAGES):
            pass

    events = captured.find(type="llm_invoke")
    assert len(events) == 2
    assert {e.parent_span_id for e in events} == {run.span_id}
    assert {e.trace_id for e in events} == {run.trace_id}


async def test_wrapper_behaves_as_the_wrapped_client():
    inner = replay("first", "second")
    model = instrument_model_client(inner)

    assert isinstance(model, InstrumentedChatCompletionClient)
    assert model.inner is inner
    assert model.model_info == inner.model_info
    assert model.count_tokens(MESSAGES) == inner.count_tokens(MESSAGES)
    await model.create(MESSAGES)
    assert model.actual_usage() == inner.actual_usage()
    assert model.total_usage() == inner.total_usage()
    assert model.remaining_tokens(MESSAGES) == inner.remaining_tokens(MESSAGES)
    # Attributes and methods only the concrete client has are reached through the wrapper.
    assert len(model.create_calls) == 1
    model.reset()
    assert (await model.create(MESSAGES)).content == "first"
    assert model.dump_component() == inner.dump_component()
    await model.close()


def test_wrapping_twice_returns_the_same_wrapper():
    model = instrument_model_client(replay("x"))

    assert instrument_model_client(model) is model


async def test_disabled_sightline_records_nothing_and_passes_calls_through():
    exporter = InMemoryExporter()
    previous = sightline.client.set_client(sightline.Client(enabled=False, exporters=[exporter]))
    try:
        model = instrument_model_client(replay("fine", "streamed"))
        assert (await model.create(MESSAGES)).content == "fine"
        chunks = [c async for c in model.create_stream(MESSAGES)]
        assert chunks[0] == "streamed"
    finally:
        sightline.client.set_client(previous)
    assert exporter.events == []


async def test_events_go_to_the_client_given_to_the_wrapper(captured):
    exporter = InMemoryExporter()
    with sightline.Client(exporters=[exporter]) as own:
        model = instrument_model_client(replay("mine"), client=own)
        await model.create(MESSAGES)
        own.flush()
        assert [e.output for e in exporter.events] == ["mine"]
    assert captured.find(type="llm_invoke") == []


async def test_a_failure_to_record_never_breaks_the_call(captured, monkeypatch, caplog):
    import sightline_autogen.model_client as model_client_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(model_client_module, "tool_names", broken)
    monkeypatch.setattr(model_client_module, "_warned", False)
    model = instrument_model_client(replay("still works"))

    with caplog.at_level(logging.WARNING, logger="sightline"):
        result = await model.create(MESSAGES, tools=[WEATHER_TOOL])

    assert result.content == "still works"
    assert captured.find(type="llm_invoke") == []
    assert "could not record an AutoGen model call" in caplog.text
