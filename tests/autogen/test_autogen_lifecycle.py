"""Lifecycle and edge cases of the AutoGen adapter: uninstrument and re-instrument with teams
that already ran, participants of any class, content off, nested tools, eager client errors,
handlers attached twice, loggers the application disables, calls seen outside any turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

import sightline
import sightline_autogen
from sightline.testing import capture
from sightline_autogen import SightlineEventLogHandler, instrument_model_client
from tests.autogen.conftest import MODEL_INFO, calls, replay, wire
from tests.support.openai_server import Reply, ScriptedOpenAIServer

EVENT_LOGGERS = ("autogen_core.events", "autogen_agentchat.events")


def two_agent_team() -> RoundRobinGroupChat:
    return RoundRobinGroupChat(
        [
            AssistantAgent("a", model_client=replay("one", "three")),
            AssistantAgent("b", model_client=replay("two", "four")),
        ],
        termination_condition=MaxMessageTermination(3),
    )


def lookup(city: str) -> str:
    """A sync tool."""
    return f"sunny in {city}"


def lookup_agent() -> AssistantAgent:
    return AssistantAgent(
        "a",
        model_client=replay(calls(("c1", "lookup", '{"city": "Paris"}')), "done"),
        tools=[lookup],
        reflect_on_tool_use=True,
    )


# -- uninstrument / instrument again ----------------------------------------------------------


async def test_uninstrument_stops_recording_a_team_that_already_ran():
    with capture() as cap:
        sightline_autogen.instrument(cap.client)
        try:
            team = two_agent_team()
            await team.run(task="go")
            assert sorted((e.type.value, e.name) for e in cap.events) == [
                ("agent", "a"),
                ("agent", "b"),
                ("run", "RoundRobinGroupChat"),
            ]
        finally:
            sightline_autogen.uninstrument()
        cap.clear()

        result = await team.run(task="again")

        assert result.messages[-1].content == "four"
        assert cap.events == []


async def test_instrumenting_again_sends_an_old_teams_turns_to_the_new_client():
    with capture() as first, capture() as second:
        sightline_autogen.instrument(first.client)
        team = two_agent_team()
        try:
            await team.run(task="go")
        finally:
            sightline_autogen.uninstrument()
        first.clear()
        sightline_autogen.instrument(second.client)
        try:
            await team.run(task="again")
        finally:
            sightline_autogen.uninstrument()

        assert first.events == []
        run = second.one(type="run", name="RoundRobinGroupChat")
        a, b = second.children(run)
        assert (a.type.value, a.name, b.type.value, b.name) == ("agent", "a", "agent", "b")
        assert run.parent_span_id is None


# -- participants of any class ----------------------------------------------------------------


async def test_a_user_proxy_turn_in_a_team_has_its_response_as_output(recorded):
    user = UserProxyAgent("human", input_func=lambda prompt: "approved by human")
    team = RoundRobinGroupChat(
        [AssistantAgent("a", model_client=replay("draft")), user],
        termination_condition=MaxMessageTermination(3),
    )

    await team.run(task="go")

    run = recorded.one(type="run")
    human = recorded.one(type="agent", name="human")
    assert human.parent_span_id == run.span_id
    data = wire(human)
    team_id = data["metadata"].pop("team_id")
    assert team_id == run.metadata["team_id"]
    assert data == {
        "type": "agent",
        "name": "human",
        "status": "ok",
        "agent": "human",
        "session_id": None,
        "framework": "autogen",
        "input": [
            {"source": "user", "type": "TextMessage", "content": "go"},
            {"source": "a", "type": "TextMessage", "content": "draft"},
        ],
        "output": {"source": "human", "type": "TextMessage", "content": "approved by human"},
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": None,
        "metadata": {"agent_type": "UserProxyAgent"},
        "tags": [],
    }


# -- content off ------------------------------------------------------------------------------


async def test_the_models_thought_is_not_recorded_without_capture_content():
    result = CreateResult(
        finish_reason="stop",
        content="The answer is 42",
        usage=RequestUsage(prompt_tokens=3, completion_tokens=2),
        cached=False,
        thought="the user's card is 4111 1111 1111 1111, so the answer is 42",
    )
    with capture(capture_content=False) as cap:
        model = instrument_model_client(ReplayChatCompletionClient([result], model_info=MODEL_INFO))
        await model.create([UserMessage(content="private prompt", source="user")])

    event = cap.one(type="llm_invoke")
    data = event.to_dict()
    assert (data["input"], data["output"]) == (None, None)
    assert data["metadata"] == {
        "client": "ReplayChatCompletionClient",
        "stream": False,
        "tools": [],
        "finish_reason": "stop",
        "cached": False,
    }


# -- a tool run inside a tool -----------------------------------------------------------------


def geocode(city: str) -> str:
    """A sync tool the other tool runs itself."""
    time.sleep(0.02)
    return "48.8,2.3"


GEOCODE = FunctionTool(geocode, description="geocode")


async def weather(city: str) -> str:
    """An async tool that runs another tool directly."""
    coordinates = await GEOCODE.run_json({"city": city}, CancellationToken())
    return f"sunny at {coordinates}"


async def test_a_tool_run_inside_a_tool_nests_under_the_outer_tool_call(recorded):
    agent = AssistantAgent(
        "a",
        model_client=replay(calls(("c1", "weather", '{"city": "Paris"}')), "done"),
        tools=[weather],
        reflect_on_tool_use=True,
    )

    await agent.run(task="go")

    turn = recorded.one(type="agent")
    outer = recorded.one(type="tool_call", name="weather")
    inner = recorded.one(type="tool_call", name="geocode")
    assert outer.parent_span_id == turn.span_id
    assert inner.parent_span_id == outer.span_id
    assert (inner.input, inner.output, inner.metadata, inner.status.value) == (
        {"city": "Paris"},
        "48.8,2.3",
        {"call_id": None},
        "ok",
    )
    assert outer.output == "sunny at 48.8,2.3"
    # Timed from the inner run_json's start, not only seen when it ended.
    assert inner.duration_ms >= 15
    assert outer.start_ns <= inner.start_ns < inner.end_ns <= outer.end_ns


# -- a client failing before it streams -------------------------------------------------------


class EagerlyValidatingClient(ReplayChatCompletionClient):
    """Checks its arguments before returning a stream, as many hand-written clients do."""

    def create_stream(self, messages, **kwargs):  # type: ignore[no-untyped-def, override]
        if kwargs.get("json_output"):
            raise ValueError("json_output not supported")
        return super().create_stream(messages, **kwargs)


async def test_create_stream_failing_before_streaming_is_recorded_as_a_model_error(captured):
    model = instrument_model_client(EagerlyValidatingClient(["hi"], model_info=MODEL_INFO))

    with pytest.raises(ValueError, match="json_output not supported"):
        async for _ in model.create_stream(
            [UserMessage(content="q", source="user")], json_output=True
        ):
            pass

    event = captured.one(type="llm_invoke")
    assert event.status.value == "error"
    assert (event.error.kind, event.error.type, event.error.message) == (
        "model",
        "ValueError",
        "json_output not supported",
    )
    assert event.metadata == {
        "client": "EagerlyValidatingClient",
        "stream": True,
        "tools": [],
        "json_output": True,
    }
    assert event.output is None


# -- an explicit handler and the global instrumentation ---------------------------------------


@pytest.fixture
def explicit_handler() -> Iterator[SightlineEventLogHandler]:
    """A handler attached by hand, as the README shows, with the loggers set to DEBUG."""
    handler = SightlineEventLogHandler()
    saved = {name: logging.getLogger(name).level for name in EVENT_LOGGERS}
    try:
        yield handler
    finally:
        for name, level in saved.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(level)
        for name in ("autogen_core", "autogen_agentchat"):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(logging.NOTSET)


def attach_by_hand(handler: SightlineEventLogHandler, names: tuple[str, ...]) -> None:
    for name in names:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)


@pytest.mark.parametrize("order", ["explicit_first", "global_first"])
async def test_an_explicit_handler_and_the_global_instrumentation_record_a_tool_call_once(
    explicit_handler, order
):
    with capture() as cap:
        if order == "explicit_first":
            attach_by_hand(explicit_handler, EVENT_LOGGERS)
            sightline_autogen.instrument(cap.client)
        else:
            sightline_autogen.instrument(cap.client)
            # On the parent loggers: records propagate to it from AutoGen's event loggers.
            attach_by_hand(explicit_handler, ("autogen_core", "autogen_agentchat"))
        try:
            await lookup_agent().run(task="go")
        finally:
            sightline_autogen.uninstrument()

        tool = cap.one(type="tool_call")
        assert (tool.name, tool.metadata, tool.parent_span_id) == (
            "lookup",
            {"call_id": "c1"},
            cap.one(type="agent").span_id,
        )
        assert len(cap.events) == 2

        # With the global instrumentation off, the handler attached by hand records again.
        cap.clear()
        await lookup_agent().run(task="go")
        assert [(e.type.value, e.name) for e in cap.events] == [("tool_call", "lookup")]


# -- loggers the application disables ---------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("silencing", ["dict_config_disabled", "logging_disable"])
async def test_event_loggers_silenced_by_the_application_are_still_recorded(recorded, silencing):
    # logging.config.dictConfig (disable_existing_loggers=True, its default) sets ``disabled``
    # on every existing logger it does not name: done here directly, so that the test does not
    # tear down pytest's own logging handlers.
    loggers = [logging.getLogger(name) for name in EVENT_LOGGERS]
    application = ListHandler()
    loggers[0].addHandler(application)
    try:
        if silencing == "dict_config_disabled":
            for target in loggers:
                target.disabled = True
        else:
            logging.disable(logging.CRITICAL)
        await lookup_agent().run(task="go")
        assert [target.disabled for target in loggers] == (
            [True, True] if silencing == "dict_config_disabled" else [False, False]
        )
    finally:
        for target in loggers:
            target.disabled = False
        logging.disable(logging.NOTSET)
        loggers[0].removeHandler(application)

    tool = recorded.one(type="tool_call")
    assert (tool.name, tool.input, tool.output, tool.metadata) == (
        "lookup",
        {"city": "Paris"},
        "sunny in Paris",
        {"call_id": "c1"},
    )
    assert tool.parent_span_id == recorded.one(type="agent").span_id
    assert application.records == []  # the application's logging stays as it configured it


# -- a model call seen on the event log outside any turn --------------------------------------


async def test_an_unwrapped_call_outside_any_turn_is_flagged_start_inferred(recorded):
    with ScriptedOpenAIServer([Reply.text("hi")], model="gpt-4o-mini-2024-07-18") as server:
        model = OpenAIChatCompletionClient(
            model="gpt-4o-mini", base_url=server.base_url, api_key="sk-test"
        )
        with sightline.trace("job"):
            await model.create([UserMessage(content="q", source="user")])
        await model.close()

    job = recorded.one(name="job")
    call = recorded.one(type="llm_invoke")
    assert call.parent_span_id == job.span_id
    assert call.output == "hi"
    assert call.model == "gpt-4o-mini-2024-07-18"
    assert call.metadata == {
        "stream": False,
        "tools": [],
        "source": "event_log",
        "start_inferred": True,  # seen only when it ended: its start is not known
        "finish_reason": "stop",
    }
