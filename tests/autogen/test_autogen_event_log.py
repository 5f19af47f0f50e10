"""The handler on AutoGen's event loggers: runtime failures, logging hygiene, never raising."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import (
    AgentId,
    DefaultInterventionHandler,
    DropMessage,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    message_handler,
)
from autogen_core.exceptions import MessageDroppedException

import sightline
import sightline_autogen
from sightline.testing import capture
from sightline_autogen import SightlineEventLogHandler
from tests.autogen.conftest import calls, replay, wire


@dataclass
class Ping:
    content: str


class EchoAgent(RoutedAgent):
    """Answers a Ping; fails on "boom"."""

    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        if message.content == "boom":
            raise ValueError("boom went the handler")
        return Ping(content=f"pong {message.content}")


class DropSecrets(DefaultInterventionHandler):
    """Drops direct messages whose content is "secret"."""

    async def on_send(self, message, *, message_context, recipient):  # type: ignore[no-untyped-def]
        return DropMessage if getattr(message, "content", None) == "secret" else message


async def echo_runtime(*handlers: object) -> SingleThreadedAgentRuntime:
    runtime = SingleThreadedAgentRuntime(intervention_handlers=list(handlers) or None)  # type: ignore[arg-type]
    await EchoAgent.register(runtime, "echo", EchoAgent)
    return runtime


async def test_dropped_message_is_an_error_decision_with_kind_guardrail(recorded):
    with sightline.trace("session") as outer:
        runtime = await echo_runtime(DropSecrets())
        runtime.start()
        with pytest.raises(MessageDroppedException):
            await runtime.send_message(Ping("secret"), AgentId("echo", "default"))
    await (
        runtime.stop()
    )  # (stop_when_idle would wait forever: AutoGen leaves a dropped send pending)

    event = recorded.one(type="decision", name="message_dropped")
    assert event.parent_span_id == outer.span_id
    assert wire(event) == {
        "type": "decision",
        "name": "message_dropped",
        "status": "error",
        "agent": None,
        "session_id": None,
        "framework": "autogen",
        "input": '{"content": "secret"}',
        "output": None,
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": {
            "type": "MessageDropped",
            "message": "an intervention handler dropped the message",
            "stack": None,
            "kind": "guardrail",
        },
        "metadata": {"sender": None, "recipient": "echo/default", "delivery": "direct"},
        "tags": [],
    }


async def test_handler_exception_is_an_error_event(recorded):
    with sightline.trace("session") as outer:
        runtime = await echo_runtime()
        runtime.start()
        assert (
            await runtime.send_message(Ping("hi"), AgentId("echo", "default"))
        ).content == "pong hi"
        with pytest.raises(ValueError, match="boom went the handler"):
            await runtime.send_message(Ping("boom"), AgentId("echo", "default"))
    await runtime.stop_when_idle()

    event = recorded.one(type="custom", name="message_handler_exception")
    assert event.parent_span_id == outer.span_id
    assert (event.status.value, event.error.kind, event.error.type, event.error.message) == (
        "error",
        "orchestration",
        "MessageHandlerException",
        "boom went the handler",
    )
    assert event.metadata == {"handling_agent": "echo/default"}
    assert event.input == '{"content": "boom"}'


async def test_agent_construction_failure_is_an_error_event(recorded):
    def broken_factory() -> EchoAgent:
        raise RuntimeError("cannot build the agent")

    runtime = SingleThreadedAgentRuntime()
    await EchoAgent.register(runtime, "fragile", broken_factory)
    runtime.start()
    with pytest.raises(RuntimeError, match="cannot build the agent"):
        await runtime.send_message(Ping("hi"), AgentId("fragile", "default"))
    await runtime.stop()

    event = recorded.one(type="custom", name="agent_construction_exception")
    assert (event.status.value, event.error.kind, event.error.type, event.error.message) == (
        "error",
        "orchestration",
        "AgentConstructionException",
        "cannot build the agent",
    )
    assert (event.input, event.metadata) == (None, {"agent_id": "fragile/default"})


async def test_application_logging_sees_exactly_what_it_saw_before(recorded):
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    collector = Collect()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        model = replay(calls(("call_1", "get_weather", '{"city": "Oslo"}')), "Cold.")
        agent = AssistantAgent(
            "weather", model_client=model, tools=[get_weather], reflect_on_tool_use=True
        )
        await agent.run(task="Oslo?")
    finally:
        root.removeHandler(collector)

    autogen_events = [
        r for r in seen if r.name in ("autogen_core.events", "autogen_agentchat.events")
    ]
    # Sightline lowered the loggers to DEBUG, yet only the WARNINGs the application would have
    # seen anyway reach its handlers, attributed to AutoGen's code, not to Sightline's.
    assert autogen_events
    assert {r.levelno for r in autogen_events} == {logging.WARNING}
    assert {r.filename for r in autogen_events} == {"_replay_chat_completion_client.py"}
    assert recorded.one(type="tool_call").output == "cold in Oslo"


async def test_an_application_that_logs_autogen_events_still_gets_them(recorded):
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    events_logger = logging.getLogger("autogen_agentchat.events")
    sightline_autogen.uninstrument()
    collector = Collect()
    events_logger.addHandler(collector)
    events_logger.setLevel(logging.DEBUG)
    sightline_autogen.instrument(recorded.client)
    try:
        model = replay(calls(("call_1", "get_weather", '{"city": "Oslo"}')), "Cold.")
        agent = AssistantAgent(
            "weather", model_client=model, tools=[get_weather], reflect_on_tool_use=True
        )
        await agent.run(task="Oslo?")
    finally:
        sightline_autogen.uninstrument()
        events_logger.removeHandler(collector)
        events_logger.setLevel(logging.NOTSET)

    assert [type(r.msg).__name__ for r in seen] == [
        "ToolCallRequestEvent",
        "ToolCallExecutionEvent",
    ]
    assert {r.filename for r in seen} == {"_assistant_agent.py"}
    assert len(recorded.find(type="tool_call")) == 1  # and Sightline still recorded the call once


def test_instrumenting_sets_the_event_loggers_to_debug_and_uninstrumenting_restores_them():
    core_logger = logging.getLogger("autogen_core.events")
    core_logger.setLevel(logging.ERROR)
    try:
        with capture() as cap:
            sightline_autogen.instrument(cap.client)
            assert core_logger.level == logging.DEBUG
            assert any(isinstance(h, SightlineEventLogHandler) for h in core_logger.handlers)
            sightline_autogen.uninstrument()
        assert core_logger.level == logging.ERROR
        assert not any(isinstance(h, SightlineEventLogHandler) for h in core_logger.handlers)
        assert "_log" not in vars(core_logger)
    finally:
        core_logger.setLevel(logging.NOTSET)


async def test_a_failure_inside_the_handler_never_reaches_autogen(recorded, monkeypatch, caplog):
    from sightline_autogen.scopes import REGISTRY

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry bug")

    monkeypatch.setattr(REGISTRY, "request_tools", broken)
    model = replay(calls(("call_1", "get_weather", '{"city": "Oslo"}')), "Cold.")
    agent = AssistantAgent(
        "weather", model_client=model, tools=[get_weather], reflect_on_tool_use=True
    )

    with caplog.at_level(logging.WARNING, logger="sightline"):
        result = await agent.run(task="Oslo?")

    assert result.messages[-1].content == "Cold."
    assert "could not record AutoGen ToolCallRequestEvent" in caplog.text
    # The result without its request is still recorded, as a call of its own.
    tool = recorded.one(type="tool_call")
    assert (tool.name, tool.output, tool.metadata) == (
        "get_weather",
        "cold in Oslo",
        {"call_id": "call_1"},
    )


async def test_the_handler_can_be_attached_by_hand(captured):
    tool_logger = logging.getLogger("autogen_core.events")
    handler = SightlineEventLogHandler()
    tool_logger.addHandler(handler)
    tool_logger.setLevel(logging.INFO)
    try:
        from autogen_core import CancellationToken
        from autogen_core.tools import FunctionTool

        await FunctionTool(get_weather, description="Weather.").run_json(
            {"city": "Lima"}, CancellationToken()
        )
    finally:
        tool_logger.removeHandler(handler)
        tool_logger.setLevel(logging.NOTSET)

    event = captured.one(type="tool_call")
    assert (event.name, event.input, event.output) == (
        "get_weather",
        {"city": "Lima"},
        "cold in Lima",
    )


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"cold in {city}"
