"""``SightlineInterventionHandler``: every message hop of a runtime is a ``decision`` event."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import (
    AgentId,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    default_subscription,
    message_handler,
)

import sightline
from sightline_autogen import SightlineInterventionHandler
from tests.autogen.conftest import replay, wire


@dataclass
class Question:
    content: str


@dataclass
class Answer:
    content: str


@default_subscription
class Oracle(RoutedAgent):
    """Answers questions sent to it; takes note of questions published to everyone."""

    heard: list[str] = []

    def __init__(self) -> None:
        super().__init__("oracle")

    @message_handler
    async def on_question(self, message: Question, ctx: MessageContext) -> Answer:
        if ctx.is_rpc:
            return Answer(content=f"42 ({message.content})")
        Oracle.heard.append(message.content)
        return Answer(content="")


async def oracle_runtime(handler: SightlineInterventionHandler) -> SingleThreadedAgentRuntime:
    runtime = SingleThreadedAgentRuntime(intervention_handlers=[handler])
    await Oracle.register(runtime, "oracle", Oracle)
    return runtime


async def test_a_sent_message_and_its_response_are_decisions_with_sender_and_recipient(captured):
    with sightline.trace("ask") as outer:
        runtime = await oracle_runtime(SightlineInterventionHandler())
        runtime.start()  # started inside the trace: the hops are recorded under it
        answer = await runtime.send_message(
            Question("meaning of life?"), AgentId("oracle", "default")
        )
        await runtime.stop_when_idle()

    assert answer == Answer(content="42 (meaning of life?)")
    send = captured.one(type="decision", name="send:Question")
    response = captured.one(type="decision", name="response:Answer")
    send_fields = wire(send)
    message_id = send_fields["metadata"].pop("message_id")
    assert isinstance(message_id, str) and message_id
    assert send_fields == {
        "type": "decision",
        "name": "send:Question",
        "status": "ok",
        "agent": None,
        "session_id": None,
        "framework": "autogen",
        "input": {"type": "Question", "content": "meaning of life?"},
        "output": None,
        "model": None,
        "usage": None,
        "cost_usd": None,
        "error": None,
        "metadata": {
            "hop": "send",
            "sender": None,
            "recipient": "oracle/default",
            "message_type": "Question",
        },
        "tags": [],
    }
    assert response.input == {"type": "Answer", "content": "42 (meaning of life?)"}
    assert response.metadata == {
        "hop": "response",
        "sender": "oracle/default",
        "recipient": None,
        "message_type": "Answer",
        "message_id": None,
    }
    assert {send.parent_span_id, response.parent_span_id} == {outer.span_id}
    assert send.start_ns <= response.start_ns


async def test_a_published_message_names_its_topic(captured):
    Oracle.heard.clear()
    runtime = await oracle_runtime(SightlineInterventionHandler())
    runtime.start()
    await runtime.publish_message(Question("anyone?"), DefaultTopicId())
    await runtime.stop_when_idle()

    assert Oracle.heard == ["anyone?"]
    publish = captured.one(type="decision", name="publish:Question")
    assert publish.metadata["hop"] == "publish"
    assert publish.metadata["recipient"] == "default/default"
    assert publish.input == {"type": "Question", "content": "anyone?"}


async def test_content_is_cut_to_the_limit(captured):
    runtime = await oracle_runtime(SightlineInterventionHandler(content_limit=10))
    runtime.start()
    await runtime.send_message(Question("x" * 500), AgentId("oracle", "default"))
    await runtime.stop_when_idle()

    send = captured.one(type="decision", name="send:Question")
    assert send.input == {"type": "Question", "content": "xxxxxxxxxx…[truncated]"}


# AutoGen warns whenever a handler returns None, even when the message itself was None.
@pytest.mark.filterwarnings("ignore:Intervention handler on_response returned None")
async def test_the_hops_of_a_team_attach_to_its_run(recorded):
    runtime = SingleThreadedAgentRuntime(intervention_handlers=[SightlineInterventionHandler()])
    runtime.start()
    writer = AssistantAgent("writer", model_client=replay("Draft."))
    critic = AssistantAgent("critic", model_client=replay("Fine."))
    team = RoundRobinGroupChat(
        [writer, critic], termination_condition=MaxMessageTermination(3), runtime=runtime
    )

    await team.run(task="Write.")
    await runtime.stop_when_idle()

    run = recorded.one(type="run")
    hops = [e for e in recorded.find(type="decision") if e.metadata.get("hop")]
    assert hops and {e.parent_span_id for e in hops} == {run.span_id}
    names = [e.name for e in sorted(hops, key=lambda e: e.start_ns)]
    assert names[:2] == ["send:GroupChatStart", "publish:GroupChatStart"]
    assert "publish:GroupChatAgentResponse" in names
    responses = [e for e in hops if e.name == "publish:GroupChatAgentResponse"]
    assert {e.input["source"] for e in responses} == {"writer", "critic"}


async def test_the_handler_lets_every_message_through_even_when_recording_fails(
    captured, monkeypatch
):
    handler = SightlineInterventionHandler()
    monkeypatch.setattr(handler, "client", object())  # not a client: recording fails
    runtime = await oracle_runtime(handler)
    runtime.start()

    answer = await runtime.send_message(Question("still there?"), AgentId("oracle", "default"))
    await runtime.stop_when_idle()

    assert answer == Answer(content="42 (still there?)")
    assert captured.events == []
