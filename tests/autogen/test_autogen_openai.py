"""``OpenAIChatCompletionClient`` against the scripted OpenAI-compatible server (127.0.0.1).

Unwrapped, the client's own ``LLMCallEvent`` / ``LLMStreamStartEvent`` / ``LLMStreamEndEvent``
logs are the model calls; wrapped, the wrapper records them and the logs are not recorded twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

from sightline_autogen import instrument_model_client
from tests.support.openai_server import Reply, ScriptedOpenAIServer

SERVED_MODEL = "gpt-4o-mini-2024-07-18"


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(
        [
            Reply.tool_call(
                "get_weather",
                {"city": "Paris"},
                call_id="call_9",
                prompt_tokens=30,
                completion_tokens=8,
            ),
            Reply.text("Sunny in Paris.", prompt_tokens=50, completion_tokens=4),
        ],
        model=SERVED_MODEL,
    ) as srv:
        yield srv


def openai_client(srv: ScriptedOpenAIServer) -> OpenAIChatCompletionClient:
    return OpenAIChatCompletionClient(
        model="gpt-4o-mini",
        base_url=srv.base_url,
        api_key="sk-test",
        stream_options={"include_usage": True},
    )


def weather_agent(model_client: object, stream: bool = False) -> AssistantAgent:
    return AssistantAgent(
        "weather",
        model_client=model_client,  # type: ignore[arg-type]
        tools=[get_weather],
        reflect_on_tool_use=True,
        model_client_stream=stream,
    )


async def test_unwrapped_calls_are_recorded_from_the_clients_event_log(recorded, server):
    await weather_agent(openai_client(server)).run(task="Weather in Paris?")

    agent = recorded.one(type="agent")
    first, tool, second = recorded.children(agent)
    assert (first.type.value, tool.type.value, second.type.value) == (
        "llm_invoke",
        "tool_call",
        "llm_invoke",
    )
    assert first.model == SERVED_MODEL  # the model that answered, from the response
    assert first.usage.to_dict() == {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}
    assert first.output == [
        {"id": "call_9", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    assert first.metadata == {
        "stream": False,
        "tools": ["get_weather"],
        "source": "event_log",
        "start_inferred": True,
        "finish_reason": "tool_calls",
    }
    assert first.input[-1] == {"content": "Weather in Paris?", "role": "user", "name": "user"}
    assert (tool.input, tool.output, tool.metadata) == (
        {"city": "Paris"},
        "sunny in Paris",
        {"call_id": "call_9"},
    )
    assert second.output == "Sunny in Paris."
    assert second.usage.to_dict() == {"input_tokens": 50, "output_tokens": 4, "total_tokens": 54}
    # Seen only when it ended, a call starts at its turn's previous step.
    assert agent.start_ns <= first.start_ns < first.end_ns <= tool.start_ns
    assert tool.end_ns <= second.start_ns < second.end_ns <= agent.end_ns
    assert len(server.requests) == 2


async def test_unwrapped_streaming_calls_have_usage_and_time_to_first_chunk(recorded, server):
    async for _ in weather_agent(openai_client(server), stream=True).run_stream(task="Weather?"):
        pass

    first, second = recorded.find(type="llm_invoke")
    for event in (first, second):
        assert event.metadata["stream"] is True
        assert 0 <= event.metadata["time_to_first_chunk_ms"] <= event.duration_ms
        assert event.model == "gpt-4o-mini"  # a stream's log does not name the served model
        assert "tools" not in event.metadata  # nor the tools offered (never "none offered")
    assert [tool["function"]["name"] for tool in server.requests[0]["tools"]] == ["get_weather"]
    assert first.usage.to_dict() == {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}
    assert first.metadata["finish_reason"] == "function_calls"
    assert first.output == [
        {"id": "call_9", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    assert second.output == "Sunny in Paris."
    assert server.requests[0]["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["create", "create_stream"])
async def test_wrapper_and_global_together_record_each_call_once(recorded, server, stream):
    model_client = instrument_model_client(openai_client(server))
    agent = weather_agent(model_client, stream=stream)

    async for _ in agent.run_stream(task="Weather in Paris?"):
        pass

    events = recorded.find(type="llm_invoke")
    assert len(events) == 2
    assert {e.metadata["client"] for e in events} == {"OpenAIChatCompletionClient"}
    assert {e.metadata["stream"] for e in events} == {stream}
    first, second = sorted(events, key=lambda e: e.start_ns)
    assert first.metadata["tools"] == ["get_weather"]
    assert first.usage.to_dict() == {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}
    assert second.usage.to_dict() == {"input_tokens": 50, "output_tokens": 4, "total_tokens": 54}
    # Without streaming the client's own log names the model that answered.
    assert first.model == ("gpt-4o-mini" if stream else SERVED_MODEL)
    # Priced at gpt-4o-mini's list price ($0.15 / $0.60 per million), whichever name: a
    # provider's answer is not cached.
    assert (first.metadata.get("cached"), second.metadata.get("cached")) == (False, False)
    assert first.cost_usd == pytest.approx((30 * 0.15 + 8 * 0.60) / 1e6)
    assert second.cost_usd == pytest.approx((50 * 0.15 + 4 * 0.60) / 1e6)
    assert len(recorded.find(type="tool_call")) == 1
    assert {e.parent_span_id for e in events} == {recorded.one(type="agent").span_id}


async def test_an_http_error_is_a_model_error_on_the_wrapped_call(recorded):
    with ScriptedOpenAIServer([Reply.http_error(503, "overloaded")], model=SERVED_MODEL) as srv:
        agent = AssistantAgent("weather", model_client=instrument_model_client(openai_client(srv)))
        with pytest.raises(openai.InternalServerError):
            await agent.run(task="Weather?")

    call = recorded.one(type="llm_invoke")
    assert (call.status.value, call.error.kind, call.error.type) == (
        "error",
        "model",
        "InternalServerError",
    )
    assert "overloaded" in call.error.message
    turn = recorded.one(type="agent")
    assert (turn.status.value, turn.error.type) == ("error", "InternalServerError")
    assert call.parent_span_id == turn.span_id


async def test_a_team_over_openai_records_each_call_in_its_turn(recorded, server):
    server.add(Reply.text("Thanks, noted.", prompt_tokens=70, completion_tokens=3))
    model_client = openai_client(server)
    writer = AssistantAgent("writer", model_client=model_client)
    team = RoundRobinGroupChat(
        [weather_agent(model_client), writer], termination_condition=MaxMessageTermination(3)
    )

    await team.run(task="Weather in Paris?")

    run = recorded.one(type="run")
    weather_turn, writer_turn = recorded.children(run)
    assert [e.type.value for e in recorded.children(weather_turn)] == [
        "llm_invoke",
        "tool_call",
        "llm_invoke",
    ]
    [writer_call] = recorded.children(writer_turn)
    assert writer_call.output == "Thanks, noted."
    assert writer_call.agent == "writer"
    # Inside a team, AutoGen's log also names the runtime agent that made the call.
    team_id = run.metadata["team_id"]
    assert writer_call.metadata["agent_id"] == f"writer_{team_id}/{team_id}"
    assert sum(e.usage.total_tokens for e in recorded.find(type="llm_invoke")) == 38 + 54 + 73
