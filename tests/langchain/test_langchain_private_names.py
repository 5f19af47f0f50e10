"""With ``capture_content`` off, a tool name a model made up never leaves the process.

Names come only from code: a tool call naming none of the application's tools (those bound to
the model, or run by the agent) is recorded as ``unknown_tool``; real tools keep their names.
With ``capture_content`` on nothing changes. Every test searches every field of every event
for the canary of the invented name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.agents import AgentAction
from langchain_core.callbacks import CallbackManager
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

import sightline_langchain
from sightline.testing import Capture, capture
from sightline_langchain import SightlineCallbackHandler
from sightline_langchain.handler import _IDS, _RUNS
from tests.langchain.langchain_scripted import ScriptedChatModel, reply

CANARY = "CANARY_LC_7f3a"
INVENTED = f"made_up_{CANARY}"


@tool
def lookup(query: str) -> str:
    """Look an order up."""
    return "shipped"


@tool
def refund(order: str) -> str:
    """Refund an order."""
    return "refunded"


class BindingChatModel(ScriptedChatModel):
    """A scripted model that binds tools as real integrations do (OpenAI's format): they reach
    LangChain's callbacks in ``invocation_params["tools"]``."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def asking(*calls: str, model: type[ScriptedChatModel] = BindingChatModel) -> ScriptedChatModel:
    """A model asking for the tools ``calls`` (with the canary in their arguments), then done."""
    return model(
        messages=iter(
            [
                reply(
                    "", tool_calls=[(n, {"query": CANARY}, f"c{i}") for i, n in enumerate(calls)]
                ),
                reply("done"),
            ]
        )
    )


def leaks(cap: Capture) -> list[dict[str, Any]]:
    """The events holding the canary in any field."""
    return [e.to_dict() for e in cap.events if CANARY in json.dumps(e.to_dict())]


@pytest.fixture
def private_cap() -> Iterator[Capture]:
    """A global client exporting to memory with ``capture_content`` off."""
    with capture(capture_content=False) as captured:
        yield captured
    assert not _RUNS, f"runs left open: {list(_RUNS.values())}"
    assert not _IDS, f"run ids left: {_IDS}"


def run_agent(model: ScriptedChatModel, mode: str, cap: Capture) -> None:
    agent = create_agent(model, tools=[lookup, refund], name="support")
    if mode == "global":
        cap.client.instrument(["langchain"])
        try:
            agent.invoke({"messages": [("user", "where is my order?")]})
        finally:
            cap.client.uninstrument(["langchain"])
        assert not sightline_langchain.is_instrumented()
    else:
        config: Any = {"callbacks": [SightlineCallbackHandler()]}
        agent.invoke({"messages": [("user", "where is my order?")]}, config=config)


@pytest.mark.parametrize("mode", ["handler", "global"])
def test_an_invented_tool_name_is_recorded_as_unknown_tool(private_cap: Capture, mode: str) -> None:
    run_agent(asking("lookup", INVENTED, "refund"), mode, private_cap)
    first, second = sorted(private_cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert first.metadata["tool_calls"] == ["lookup", "unknown_tool", "refund"]
    assert "tool_calls" not in second.metadata
    assert sorted(e.name for e in private_cap.find(type="tool_call")) == ["lookup", "refund"]
    assert leaks(private_cap) == []


def test_with_content_captured_the_invented_name_is_kept(cap: Capture) -> None:
    run_agent(asking("lookup", INVENTED), "handler", cap)
    first, _ = sorted(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert first.metadata["tool_calls"] == ["lookup", INVENTED]


@pytest.mark.parametrize(
    "bound",
    [
        pytest.param({"type": "function", "function": {"name": "lookup"}}, id="openai"),
        pytest.param({"type": "function", "name": "lookup"}, id="openai-responses"),
        pytest.param({"name": "lookup", "input_schema": {}}, id="anthropic"),
        pytest.param({"toolSpec": {"name": "lookup"}}, id="bedrock"),
        pytest.param({"function_declarations": [{"name": "lookup"}]}, id="gemini"),
        pytest.param(lookup, id="tool-object"),
    ],
)
def test_tools_bound_in_any_provider_format_keep_their_names(
    private_cap: Capture, bound: Any
) -> None:
    model = ScriptedChatModel(
        messages=iter([reply("", tool_calls=[("lookup", {}, "c1"), (INVENTED, {}, "c2")])])
    )
    model.bind(tools=[bound]).invoke("hi", config={"callbacks": [SightlineCallbackHandler()]})
    event = private_cap.one(type="llm_invoke")
    assert event.metadata["tool_calls"] == ["lookup", "unknown_tool"]
    assert leaks(private_cap) == []


def test_a_model_with_no_tools_bound_knows_the_tools_its_agent_ran(private_cap: Capture) -> None:
    # The model drops the tools it is given: only the tools the agent has run are known.
    model = ScriptedChatModel(
        messages=iter(
            [
                reply("", tool_calls=[("lookup", {}, "c1")]),
                reply("", tool_calls=[("lookup", {}, "c2"), (INVENTED, {}, "c3")]),
                reply("done"),
            ]
        )
    )
    run_agent(model, "handler", private_cap)
    first, second, _ = sorted(private_cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert first.metadata["tool_calls"] == ["unknown_tool"]  # nothing known yet
    assert second.metadata["tool_calls"] == ["lookup", "unknown_tool"]
    assert leaks(private_cap) == []


def test_a_legacy_agent_choosing_an_invented_tool_is_an_unknown_tool_decision(
    private_cap: Capture,
) -> None:
    # What a legacy AgentExecutor reports: its run, the model run inside it, then the actions.
    manager = CallbackManager.configure(inheritable_callbacks=[SightlineCallbackHandler()])
    executor = manager.on_chain_start({"name": "AgentExecutor"}, {"input": "hi"})
    model = BindingChatModel(messages=iter([reply("thinking")])).bind_tools([lookup])
    model.invoke("hi", config={"callbacks": executor.get_child()})
    for name in ("lookup", INVENTED):
        executor.on_agent_action(AgentAction(tool=name, tool_input={"q": CANARY}, log=CANARY))
    executor.on_chain_end({"output": "done"})
    decisions = sorted(private_cap.find(type="decision"), key=lambda e: e.start_ns)
    assert [e.name for e in decisions] == ["lookup", "unknown_tool"]
    assert leaks(private_cap) == []


class Question(TypedDict, total=False):
    q: str


def test_a_handoff_with_state_records_the_node_alone(private_cap: Capture) -> None:
    def hand_over(state: Question) -> Any:
        return Command(graph=Command.PARENT, goto=Send("finish", {"q": CANARY}))

    inner = StateGraph(Question)
    inner.add_node("inner", hand_over)
    inner.add_edge(START, "inner")
    outer = StateGraph(Question)
    outer.add_node("sub_step", inner.compile(name="sub"), destinations=("finish",))
    outer.add_node("finish", lambda state: {"q": state["q"] + "!"})
    outer.add_edge(START, "sub_step")
    outer.add_edge("finish", END)
    outer.compile(name="outer").invoke(
        {"q": "x"}, config={"callbacks": [SightlineCallbackHandler()]}
    )
    marks = {e.name: e.metadata.get("handoff") for e in private_cap.events}
    assert marks == {
        "outer": None,
        "sub_step": {"node": "finish"},
        "sub": {"node": "finish"},
        "inner": {"node": "finish"},
        "finish": None,
    }
    assert leaks(private_cap) == []
