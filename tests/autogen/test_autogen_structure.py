"""Agent turns and team runs as spans; the model and tool events of a turn nest under it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken, SingleThreadedAgentRuntime
from autogen_core.tools import FunctionTool

import sightline
import sightline_autogen
from sightline import EventType
from sightline_autogen import instrument_model_client
from tests.autogen.conftest import calls, children, replay, wire

TOOL_THREADS: list[str] = []


def get_weather(city: str) -> str:
    """The weather in a city (a sync tool: AutoGen runs it in a thread pool)."""
    TOOL_THREADS.append(threading.current_thread().name)
    sightline.get_client().log_event(EventType.CUSTOM, "weather_lookup", input={"city": city})
    return f"sunny in {city}"


async def get_time(zone: str) -> str:
    """The time in a zone (an async tool)."""
    sightline.get_client().log_event(EventType.CUSTOM, "clock_lookup", input={"zone": zone})
    return f"12:00 in {zone}"


def broken_tool(order_id: str) -> str:
    """A tool that fails."""
    raise RuntimeError(f"order service down for {order_id}")


def weather_agent(name: str = "weather", **kwargs: object) -> AssistantAgent:
    model = replay(calls(("call_1", "get_weather", '{"city": "Paris"}')), "It is sunny in Paris.")
    return AssistantAgent(
        name,
        model_client=instrument_model_client(model),
        tools=[get_weather],
        reflect_on_tool_use=True,
        **kwargs,  # type: ignore[arg-type]
    )


def shape(cap) -> list[dict]:
    return cap.tree()


async def test_agent_run_is_an_agent_span_with_its_model_and_tool_calls_inside(recorded):
    result = await weather_agent().run(task="Weather in Paris?")

    assert result.messages[-1].content == "It is sunny in Paris."
    agent = recorded.one(type="agent")
    assert wire(agent) == {
        "type": "agent",
        "name": "weather",
        "status": "ok",
        "agent": "weather",
        "session_id": None,
        "framework": "autogen",
        "input": "Weather in Paris?",
        "output": {"source": "weather", "type": "TextMessage", "content": "It is sunny in Paris."},
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": None,
        "metadata": {"agent_type": "AssistantAgent", "message_count": 4},
        "tags": [],
    }
    assert agent.parent_span_id is None
    first_call, tool, reflection = children(recorded, agent)
    assert (first_call.type, tool.type, reflection.type) == (
        EventType.LLM_INVOKE,
        EventType.TOOL_CALL,
        EventType.LLM_INVOKE,
    )
    assert first_call.output == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    ]
    tool_fields = wire(tool)
    assert tool_fields == {
        "type": "tool_call",
        "name": "get_weather",
        "status": "ok",
        "agent": "weather",
        "session_id": None,
        "framework": "autogen",
        "input": {"city": "Paris"},
        "output": "sunny in Paris",
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": None,
        "metadata": {"call_id": "call_1"},
        "tags": [],
    }
    assert first_call.end_ns <= tool.start_ns <= tool.end_ns <= reflection.start_ns
    assert {e.agent for e in recorded.events} == {"weather"}


async def test_agent_run_stream_gives_the_same_tree(recorded):
    items = [item async for item in weather_agent().run_stream(task="Weather in Paris?")]

    assert items[-1].messages[-1].content == "It is sunny in Paris."
    assert recorded.tree() == [
        {
            "type": "agent",
            "name": "weather",
            "status": "ok",
            "children": [
                {"type": "llm_invoke", "name": "chat_completion", "status": "ok", "children": []},
                {
                    "type": "tool_call",
                    "name": "get_weather",
                    "status": "ok",
                    "children": [
                        {"type": "custom", "name": "weather_lookup", "status": "ok", "children": []}
                    ],
                },
                {"type": "llm_invoke", "name": "chat_completion", "status": "ok", "children": []},
            ],
        }
    ]


async def test_sync_tool_events_land_under_the_tool_call_of_the_right_agent(recorded):
    TOOL_THREADS.clear()

    await weather_agent().run(task="Weather in Paris?")

    assert TOOL_THREADS and TOOL_THREADS[0] != threading.main_thread().name  # a pool thread
    lookup = recorded.one(type="custom", name="weather_lookup")
    tool = recorded.one(type="tool_call", name="get_weather")
    assert lookup.parent_span_id == tool.span_id
    assert lookup.trace_id == tool.trace_id
    assert lookup.agent == "weather"


async def test_async_tool_events_land_under_their_tool_call(recorded):
    model = replay(calls(("call_7", "get_time", '{"zone": "UTC"}')), "Noon.")
    agent = AssistantAgent("clock", model_client=model, tools=[get_time], reflect_on_tool_use=True)

    await agent.run(task="What time is it?")

    tool = recorded.one(type="tool_call", name="get_time")
    assert (tool.input, tool.output, tool.metadata) == (
        {"zone": "UTC"},
        "12:00 in UTC",
        {"call_id": "call_7"},
    )
    assert recorded.one(type="custom", name="clock_lookup").parent_span_id == tool.span_id
    assert tool.parent_span_id == recorded.one(type="agent").span_id


async def test_parallel_tool_calls_keep_their_own_call_ids_arguments_and_results(recorded):
    model = replay(
        calls(
            ("call_a", "get_weather", '{"city": "Paris"}'),
            ("call_b", "get_weather", '{"city": "Rome"}'),
            ("call_c", "get_time", '{"zone": "CET"}'),
        ),
        "Done.",
    )
    agent = AssistantAgent(
        "planner", model_client=model, tools=[get_weather, get_time], reflect_on_tool_use=True
    )

    await agent.run(task="Paris and Rome?")

    tools = {
        e.metadata["call_id"]: (e.name, e.input, e.output) for e in recorded.find(type="tool_call")
    }
    assert tools == {
        "call_a": ("get_weather", {"city": "Paris"}, "sunny in Paris"),
        "call_b": ("get_weather", {"city": "Rome"}, "sunny in Rome"),
        "call_c": ("get_time", {"zone": "CET"}, "12:00 in CET"),
    }
    agent_span = recorded.one(type="agent")
    assert {e.parent_span_id for e in recorded.find(type="tool_call")} == {agent_span.span_id}


async def test_tool_error_is_recorded_with_kind_tool(recorded):
    model = replay(calls(("call_x", "broken_tool", '{"order_id": "A-1"}')), "Sorry.")
    agent = AssistantAgent(
        "support", model_client=model, tools=[broken_tool], reflect_on_tool_use=True
    )

    result = await agent.run(task="Where is A-1?")

    assert result.messages[-1].content == "Sorry."
    tool = recorded.one(type="tool_call")
    assert (tool.status.value, tool.input, tool.metadata) == (
        "error",
        {"order_id": "A-1"},
        {"call_id": "call_x"},
    )
    assert (tool.error.kind, tool.error.type, tool.error.message) == (
        "tool",
        "ToolError",
        "order service down for A-1",
    )
    assert tool.output == "order service down for A-1"
    assert recorded.one(type="agent").status.value == "ok"  # the agent handled it


async def test_a_tool_call_cut_short_by_cancellation_is_recorded_as_incomplete(recorded):
    started, never = asyncio.Event(), asyncio.Event()

    async def wait_forever(reason: str) -> str:
        """Blocks until cancelled."""
        started.set()
        await never.wait()
        return "unreachable"

    model = replay(calls(("call_w", "wait_forever", '{"reason": "test"}')), "Done.")
    agent = AssistantAgent("waiter", model_client=model, tools=[wait_forever])
    task = asyncio.create_task(agent.run(task="Wait."))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    tool = recorded.one(type="tool_call", name="wait_forever")
    assert (tool.status.value, tool.error.kind, tool.error.type) == (
        "error",
        "orchestration",  # the tool did nothing wrong
        "Incomplete",
    )
    assert tool.error.message == "the agent turn ended before the tool call reported a result"
    assert tool.metadata == {"call_id": "call_w"}
    turn = recorded.one(type="agent")
    assert (turn.status.value, turn.error.type) == ("error", "CancelledError")
    assert "closed_early" not in turn.metadata
    assert tool.parent_span_id == turn.span_id


async def test_a_stream_the_caller_stops_reading_marks_the_turn_closed_early(recorded):
    TOOL_THREADS.clear()
    agent = weather_agent()
    stream = agent.run_stream(task="Weather in Paris?")
    seen = []
    async for item in stream:
        seen.append(type(item).__name__)
        if seen[-1] == "ToolCallRequestEvent":
            break
    await stream.aclose()

    assert seen == ["TextMessage", "ToolCallRequestEvent"]
    turn = recorded.one(type="agent")
    assert (turn.status.value, turn.metadata["closed_early"]) == ("ok", True)
    tool = recorded.one(type="tool_call")
    assert (tool.status.value, tool.error.kind, tool.error.type, tool.error.message) == (
        "error",
        "orchestration",
        "Incomplete",
        "the caller stopped reading the agent's stream before the tool call reported a result",
    )
    assert tool.parent_span_id == turn.span_id
    assert TOOL_THREADS == []  # the tool never ran


async def test_a_stream_read_to_its_result_and_then_closed_is_not_closed_early(recorded):
    stream = weather_agent().run_stream(task="Weather in Paris?")
    async for item in stream:
        if type(item).__name__ == "TaskResult":
            break
    await stream.aclose()

    turn = recorded.one(type="agent")
    assert turn.status.value == "ok"
    assert "closed_early" not in turn.metadata
    assert recorded.one(type="tool_call").status.value == "ok"


async def test_round_robin_team_is_a_run_with_one_agent_span_per_turn(recorded):
    writer = AssistantAgent(
        "writer", model_client=instrument_model_client(replay("Dear customer."))
    )
    team = RoundRobinGroupChat(
        [weather_agent(), writer], termination_condition=MaxMessageTermination(3)
    )

    result = await team.run(task="Weather in Paris?")

    assert [m.source for m in result.messages if isinstance(m, TextMessage)] == [
        "user",
        "weather",
        "writer",
    ]
    llm = {"type": "llm_invoke", "name": "chat_completion", "status": "ok", "children": []}
    assert recorded.tree() == [
        {
            "type": "run",
            "name": "RoundRobinGroupChat",
            "status": "ok",
            "children": [
                {
                    "type": "agent",
                    "name": "weather",
                    "status": "ok",
                    "children": [
                        llm,
                        {
                            "type": "tool_call",
                            "name": "get_weather",
                            "status": "ok",
                            "children": [
                                {
                                    "type": "custom",
                                    "name": "weather_lookup",
                                    "status": "ok",
                                    "children": [],
                                }
                            ],
                        },
                        llm,
                    ],
                },
                {"type": "agent", "name": "writer", "status": "ok", "children": [llm]},
            ],
        }
    ]
    run = wire(recorded.one(type="run"))
    team_id = run["metadata"].pop("team_id")
    assert run == {
        "type": "run",
        "name": "RoundRobinGroupChat",
        "status": "ok",
        "agent": None,
        "session_id": None,
        "framework": "autogen",
        "input": "Weather in Paris?",
        "output": {"source": "writer", "type": "TextMessage", "content": "Dear customer."},
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": None,
        "metadata": {
            "team_type": "RoundRobinGroupChat",
            "participants": ["weather", "writer"],
            "message_count": 5,
            "stop_reason": "Maximum number of messages 3 reached, current message count: 3",
        },
        "tags": [],
    }
    writer_turn = recorded.one(type="agent", name="writer")
    assert writer_turn.metadata == {"agent_type": "AssistantAgent", "team_id": team_id}
    assert writer_turn.input == [
        {"source": "user", "type": "TextMessage", "content": "Weather in Paris?"},
        {"source": "weather", "type": "TextMessage", "content": "It is sunny in Paris."},
    ]
    assert writer_turn.output == {
        "source": "writer",
        "type": "TextMessage",
        "content": "Dear customer.",
    }
    assert {e.agent for e in recorded.children(writer_turn)} == {"writer"}


async def test_team_run_stream_gives_the_same_tree_as_run(recorded):
    writer = AssistantAgent(
        "writer", model_client=instrument_model_client(replay("Dear customer."))
    )
    team = RoundRobinGroupChat(
        [weather_agent(), writer], termination_condition=MaxMessageTermination(3)
    )

    async for _ in team.run_stream(task="Weather in Paris?"):
        pass

    [run] = recorded.tree()
    assert (run["type"], run["name"]) == ("run", "RoundRobinGroupChat")
    assert [(c["type"], c["name"]) for c in run["children"]] == [
        ("agent", "weather"),
        ("agent", "writer"),
    ]
    assert len(recorded.events) == 8  # run, 2 turns, 3 model calls, 1 tool call, 1 lookup


async def test_selector_team_records_each_speaker_selection_as_a_decision(recorded):
    selector_model = instrument_model_client(replay("writer", "critic"))
    writer = AssistantAgent("writer", model_client=replay("A haiku."), description="Writes.")
    critic = AssistantAgent("critic", model_client=replay("Lovely."), description="Critiques.")
    team = SelectorGroupChat(
        [writer, critic],
        model_client=selector_model,
        termination_condition=MaxMessageTermination(3),
        allow_repeated_speaker=True,  # two candidates each time: the model chooses
    )

    await team.run(task="Write a haiku.")

    [run] = recorded.tree()
    assert [(c["type"], c["name"]) for c in run["children"]] == [
        ("decision", "select_speaker"),
        ("agent", "writer"),
        ("decision", "select_speaker"),
        ("agent", "critic"),
    ]
    decisions = recorded.find(type="decision", name="select_speaker")
    assert [d.output for d in sorted(decisions, key=lambda d: d.start_ns)] == [
        ["writer"],
        ["critic"],
    ]
    assert decisions[0].input == {"participants": ["writer", "critic"]}
    # The selector's own model call is inside its decision.
    for decision in decisions:
        assert [e.type for e in recorded.children(decision)] == [EventType.LLM_INVOKE]


async def test_agent_failure_is_an_error_on_its_turn_and_on_the_team(recorded):
    failing = AssistantAgent("failing", model_client=instrument_model_client(replay()))
    team = RoundRobinGroupChat([failing], termination_condition=MaxMessageTermination(2))

    with pytest.raises(RuntimeError, match="No more mock responses available"):
        await team.run(task="Go.")

    turn = recorded.one(type="agent", name="failing")
    assert (turn.status.value, turn.error.type, turn.error.kind) == (
        "error",
        "ValueError",
        "orchestration",
    )
    model_call = recorded.one(type="llm_invoke")
    assert (model_call.error.kind, model_call.parent_span_id) == ("model", turn.span_id)
    run = recorded.one(type="run")
    assert (run.status.value, run.error.type) == ("error", "RuntimeError")
    exception = recorded.one(type="custom", name="message_handler_exception")
    assert exception.parent_span_id == run.span_id
    assert (exception.error.kind, exception.error.message) == (
        "orchestration",
        "No more mock responses available",
    )


async def test_on_messages_used_directly_is_an_agent_span(recorded):
    agent = AssistantAgent("echo", model_client=instrument_model_client(replay("hello back")))

    response = await agent.on_messages(
        [TextMessage(content="hello", source="user")], CancellationToken()
    )

    assert response.chat_message.content == "hello back"
    turn = recorded.one(type="agent")
    assert turn.input == [{"source": "user", "type": "TextMessage", "content": "hello"}]
    assert turn.output == {"source": "echo", "type": "TextMessage", "content": "hello back"}
    assert [e.type for e in recorded.children(turn)] == [EventType.LLM_INVOKE]


async def test_team_on_a_runtime_started_elsewhere_still_nests_its_turns(recorded):
    runtime = SingleThreadedAgentRuntime()
    runtime.start()  # started outside any span: the turns find their run by the team id
    writer = AssistantAgent("writer", model_client=replay("Draft."))
    critic = AssistantAgent("critic", model_client=replay("Fine."))
    team = RoundRobinGroupChat(
        [writer, critic], termination_condition=MaxMessageTermination(3), runtime=runtime
    )

    with sightline.trace("review") as outer:
        await team.run(task="Write.")
    await runtime.stop_when_idle()

    run = recorded.one(type="run", name="RoundRobinGroupChat")
    assert run.parent_span_id == outer.span_id
    assert [e.name for e in recorded.children(run)] == ["writer", "critic"]


async def test_concurrent_teams_with_the_same_agent_names_keep_their_own_trees(recorded):
    async def one_team(city: str) -> None:
        model = replay(
            calls((f"call_{city}", "get_weather", f'{{"city": "{city}"}}')), f"Sunny in {city}."
        )
        agent = AssistantAgent(
            "weather", model_client=model, tools=[get_weather], reflect_on_tool_use=True
        )
        team = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(2))
        with sightline.trace(f"ask-{city}"):
            await team.run(task=f"Weather in {city}?")

    await asyncio.gather(one_team("Paris"), one_team("Rome"), one_team("Oslo"))

    for city in ("Paris", "Rome", "Oslo"):
        outer = recorded.one(type="run", name=f"ask-{city}")
        tool = recorded.one(type="tool_call", input={"city": city})
        turn = next(e for e in recorded.events if e.span_id == tool.parent_span_id)
        team_run = next(e for e in recorded.events if e.span_id == turn.parent_span_id)
        assert (turn.type, team_run.type) == (EventType.AGENT, EventType.RUN)
        assert team_run.parent_span_id == outer.span_id
        assert tool.trace_id == outer.trace_id
        assert tool.metadata == {"call_id": f"call_{city}"}


async def test_tool_run_directly_is_a_tool_call_under_the_ambient_span(recorded):
    tool = FunctionTool(get_time, description="The time.")

    with sightline.trace("maintenance") as outer:
        await tool.run_json({"zone": "UTC"}, CancellationToken())

    event = recorded.one(type="tool_call")
    assert (event.name, event.input, event.output, event.parent_span_id) == (
        "get_time",
        {"zone": "UTC"},
        "12:00 in UTC",
        outer.span_id,
    )
    assert event.metadata == {"call_id": None}


async def test_uninstrument_restores_autogen_and_records_nothing_more(recorded):
    from autogen_agentchat.agents import BaseChatAgent
    from autogen_agentchat.teams import BaseGroupChat

    patched_run = BaseChatAgent.run
    assert patched_run.__wrapped__ is not None
    sightline_autogen.uninstrument()

    assert not hasattr(BaseChatAgent.run, "__wrapped__")
    assert not hasattr(BaseGroupChat.run_stream, "__wrapped__")
    await weather_agent().run(task="Weather in Paris?")
    # Only what the wrapped client and the tool's own code record: no turn, no tool call.
    assert sorted(e.type.value for e in recorded.events) == ["custom", "llm_invoke", "llm_invoke"]
