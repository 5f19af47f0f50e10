"""With ``capture_content`` off, a tool name a model made up never leaves the process.

Names come only from code: a tool call naming none of the run's tools (the agents' tools, the
tools offered to its LLM calls, the tools that ran) is recorded as ``unknown_tool``, as a
``tool_call`` event's name and in the ``tool_calls`` of LLM calls and agent runs; real tools
keep their names. With ``capture_content`` on nothing changes. Every test searches every field
of every event for the canary of the invented name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import sightline_llamaindex
from sightline.testing import Capture, capture
from tests.llamaindex.events import assert_no_open_spans
from tests.llamaindex.scripted import ScriptedLLM, answer, call_script, tool_call, turn_script

CANARY = "CANARY_LI_9b2c"
INVENTED = f"made_up_{CANARY}"


def lookup(query: str) -> str:
    """Look an order up."""
    return "shipped"


def fails(query: str) -> str:
    """Fail."""
    raise ValueError("no such order")


LOOKUP = FunctionTool.from_defaults(lookup)
FAILS = FunctionTool.from_defaults(fails)


def leaks(cap: Capture) -> list[dict[str, Any]]:
    """The events holding the canary in any field."""
    return [e.to_dict() for e in cap.events if CANARY in json.dumps(e.to_dict())]


def by_start(events: list[Any]) -> list[Any]:
    return sorted(events, key=lambda e: e.start_ns)


@pytest.fixture
def private() -> Iterator[Capture]:
    """LlamaIndex instrumented globally, reporting with ``capture_content`` off."""
    with capture(capture_content=False) as cap:
        sightline_llamaindex.instrument(cap.client)
        try:
            yield cap
        finally:
            sightline_llamaindex.uninstrument()
    assert_no_open_spans()


def helper(*turns: ChatMessage) -> FunctionAgent:
    llm = ScriptedLLM(response_generator=call_script(*turns))
    return FunctionAgent(name="helper", description="d", tools=[LOOKUP, FAILS], llm=llm)


def asking_three() -> FunctionAgent:
    return helper(
        tool_call("c1", "lookup", query=CANARY),
        tool_call("c2", INVENTED, query=CANARY),
        tool_call("c3", "fails", query=CANARY),
        answer("done"),
    )


async def test_an_invented_tool_name_is_recorded_as_unknown_tool(private: Capture) -> None:
    await asking_three().run(user_msg="where is my order?")
    calls = by_start(private.find(type="tool_call"))
    assert [e.name for e in calls] == ["lookup", "unknown_tool", "fails"]
    llms = by_start(private.find(type="llm_invoke"))
    assert [e.metadata.get("tool_calls") for e in llms] == [
        ["lookup"],
        ["unknown_tool"],
        ["fails"],
        None,
    ]
    agent = private.one(type="agent", name="helper")
    assert agent.metadata["tool_calls"] == ["lookup", "unknown_tool", "fails"]
    assert agent.metadata["tools"] == ["lookup", "fails"]
    assert leaks(private) == []


async def test_with_content_captured_the_invented_name_is_kept(traced: Capture) -> None:
    await asking_three().run(user_msg="where is my order?")
    calls = by_start(traced.find(type="tool_call"))
    assert [e.name for e in calls] == ["lookup", INVENTED, "fails"]
    agent = traced.one(type="agent", name="helper")
    assert agent.metadata["tool_calls"] == ["lookup", INVENTED, "fails"]


async def test_a_failed_run_lists_its_tool_calls_by_their_recorded_names(
    private: Capture,
) -> None:
    def script(messages: Any, **kwargs: Any) -> ChatMessage:
        if any(m.role.value == "tool" for m in messages):
            raise RuntimeError("the model is down")
        return tool_call("c1", INVENTED, query=CANARY)

    agent = FunctionAgent(
        name="helper",
        description="d",
        tools=[LOOKUP],
        llm=ScriptedLLM(response_generator=script),
    )
    with pytest.raises(RuntimeError, match="the model is down"):
        await agent.run(user_msg="where is my order?")
    run = private.one(type="agent", name="helper")
    assert run.status.value == "error"
    assert run.metadata["tool_calls"] == ["unknown_tool"]
    assert leaks(private) == []


async def test_handoffs_keep_their_name_and_an_invented_target_is_not_recorded(
    private: Capture,
) -> None:
    from llama_index.core.agent.workflow import AgentWorkflow

    triage = FunctionAgent(
        name="triage",
        description="Routes questions.",
        can_handoff_to=["billing"],
        llm=ScriptedLLM(
            response_generator=turn_script(
                tool_call("h0", f"transfer_to_{CANARY}", to=CANARY),
                tool_call("h1", "handoff", to_agent=CANARY, reason=CANARY),
                tool_call("h2", "handoff", to_agent="billing", reason="refund"),
            )
        ),
    )
    billing = FunctionAgent(
        name="billing",
        description="Answers billing questions.",
        tools=[LOOKUP],
        llm=ScriptedLLM(response_generator=turn_script(answer("Refunds take 5 days."))),
    )
    workflow = AgentWorkflow(agents=[triage, billing], root_agent="triage")
    await workflow.run(user_msg="refund?")
    calls = by_start(private.find(type="tool_call"))
    assert [e.name for e in calls] == ["unknown_tool", "handoff", "handoff"]
    triage_llms = by_start(private.find(type="llm_invoke", agent="triage"))
    assert [e.metadata["tool_calls"] for e in triage_llms] == [
        ["unknown_tool"],
        ["handoff"],  # offered to the model by the workflow (no agent lists it)
        ["handoff"],
    ]
    assert {e.agent for e in private.events} == {None, "triage", "billing"}
    assert leaks(private) == []


class Ask(StartEvent):
    tool_name: str
    tool_kwargs: dict[str, Any]


class ToolRunner(Workflow):
    """A workflow of your own whose ``call_tool`` step runs the tool its start event names:
    the run lists no tools, so a name is known to be a tool's when a tool of that name runs."""

    @step
    async def call_tool(self, ev: Ask) -> StopEvent:
        if ev.tool_name != LOOKUP.metadata.name:
            return StopEvent(result=f"no tool {ev.tool_name}")
        return StopEvent(result=str(await LOOKUP.acall(**ev.tool_kwargs)))


async def test_a_tool_the_run_does_not_list_keeps_its_name_once_it_runs(
    private: Capture,
) -> None:
    await ToolRunner().run(start_event=Ask(tool_name="lookup", tool_kwargs={"query": CANARY}))
    await ToolRunner().run(start_event=Ask(tool_name=INVENTED, tool_kwargs={"query": CANARY}))
    assert [e.name for e in by_start(private.find(type="tool_call"))] == [
        "lookup",
        "unknown_tool",
    ]
    assert leaks(private) == []
