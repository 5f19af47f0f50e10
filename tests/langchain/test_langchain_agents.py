"""Real agents: ``langchain.agents.create_agent`` and LangGraph graphs on scripted models."""

from __future__ import annotations

import sys
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent

from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_events import tree, wire
from tests.langchain.langchain_scripted import (
    PolicyRetriever,
    add,
    charge_card,
    chat_model,
    lookup_order,
    reply,
)

AGENT_TREE = [
    (0, "agent", "support", "ok"),
    (1, "agent", "model", "ok"),
    (2, "llm_invoke", "ScriptedChatModel", "ok"),
    (1, "agent", "tools", "ok"),
    (2, "tool_call", "add", "ok"),
    (1, "agent", "model", "ok"),
    (2, "llm_invoke", "ScriptedChatModel", "ok"),
]


def support_agent(*items: Any, tools: list[Any] | None = None) -> Any:
    items = items or (
        reply(
            "", tool_calls=[("add", {"a": 1, "b": 2}, "call_1")], input_tokens=40, output_tokens=9
        ),
        reply("1 + 2 = 3", input_tokens=55, output_tokens=6),
    )
    return create_agent(chat_model(*items), tools=tools or [add], name="support")


# Below 3.11 asyncio.create_task takes no context: LangGraph then runs an async node without its
# config in LangChain's context, and create_agent's async model node calls the model with no
# config, so the model's run never reaches a handler passed in the call's config.
needs_async_context = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="LangGraph passes a node's config to the model it calls in async code from Python 3.11",
)


def question(text: str = "What is 1 + 2?") -> dict[str, Any]:
    return {"messages": [("user", text)]}


def assert_agent_trace(cap: Capture, session_id: str | None = None) -> None:
    assert tree(cap) == AGENT_TREE
    root = cap.one(type="agent", name="support")
    first_model, second_model = cap.find(type="agent", name="model")
    tools = cap.one(type="agent", name="tools")
    first_llm, second_llm = sorted(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    tool = cap.one(type="tool_call")
    assert root.parent_span_id is None
    assert {e.parent_span_id for e in (first_model, tools, second_model)} == {root.span_id}
    assert first_llm.parent_span_id == first_model.span_id
    assert second_llm.parent_span_id == second_model.span_id
    assert tool.parent_span_id == tools.span_id
    assert {e.trace_id for e in cap.events} == {root.trace_id}
    assert {e.agent for e in cap.events} == {"support"}  # create_agent's name
    assert (first_llm.usage.input_tokens, first_llm.usage.output_tokens) == (40, 9)
    assert (second_llm.usage.input_tokens, second_llm.usage.output_tokens) == (55, 6)
    assert first_llm.output["tool_calls"] == [
        {"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}
    ]
    assert first_llm.metadata["tool_calls"] == ["add"]
    assert second_llm.input[-1] == {
        "role": "tool",
        "content": "3",
        "name": "add",
        "tool_call_id": "call_1",
    }
    assert second_llm.output == {"role": "assistant", "content": "1 + 2 = 3"}
    tool_wire = wire(tool)
    assert tool_wire == {
        "type": "tool_call", "name": "add", "status": "ok", "agent": "support",
        "session_id": session_id,
        "framework": "langchain", "input": {"a": 1, "b": 2}, "output": "3", "model": None,
        "usage": None, "cost_usd": None, "error": None,
        "metadata": {"langgraph_node": "tools", "langgraph_step": 2, "tool_call_id": "call_1"},
        "tags": [],
    }  # fmt: skip
    assert root.input == {"messages": [["user", "What is 1 + 2?"]]}
    assert root.output["messages"][-1] == {
        "role": "assistant",
        "content": "1 + 2 = 3",
        "name": "support",
    }
    assert (first_model.metadata, tools.metadata) == (
        {"langgraph_node": "model", "langgraph_step": 1},
        {"langgraph_node": "tools", "langgraph_step": 2},
    )


def test_create_agent_records_agent_model_and_tool_events(cap: Capture) -> None:
    result = support_agent().invoke(question(), config={"callbacks": [SightlineCallbackHandler()]})
    assert result["messages"][-1].content == "1 + 2 = 3"
    assert_agent_trace(cap)


@needs_async_context
async def test_create_agent_ainvoke_records_the_same_events(cap: Capture) -> None:
    result = await support_agent().ainvoke(
        question(), config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert result["messages"][-1].content == "1 + 2 = 3"
    assert_agent_trace(cap)


def test_create_agent_stream_records_the_same_events_with_streamed_tokens(cap: Capture) -> None:
    agent = support_agent()
    chunks = list(
        agent.stream(
            question(), config={"callbacks": [SightlineCallbackHandler()]}, stream_mode="messages"
        )
    )
    assert chunks
    assert tree(cap) == AGENT_TREE
    final = sorted(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)[-1]
    assert final.metadata["streamed_tokens"] == 5  # "1", " +", " 2", " =", " 3"
    assert final.usage.output_tokens == 6


@needs_async_context
async def test_create_agent_astream_updates_records_the_same_events(cap: Capture) -> None:
    updates = [
        update
        async for update in support_agent().astream(
            question(), config={"callbacks": [SightlineCallbackHandler()]}, stream_mode="updates"
        )
    ]
    assert [next(iter(u)) for u in updates] == ["model", "tools", "model"]
    assert tree(cap) == AGENT_TREE


def test_create_agent_under_global_instrumentation_records_the_same_events(
    global_cap: Capture,
) -> None:
    support_agent().invoke(question())
    assert_agent_trace(global_cap)


def test_create_agent_with_global_and_explicit_handlers_records_each_run_once(
    global_cap: Capture,
) -> None:
    handler = SightlineCallbackHandler(session_id="ticket-7")
    support_agent().invoke(question(), config={"callbacks": [handler]})
    assert_agent_trace(global_cap, session_id="ticket-7")
    assert {e.session_id for e in global_cap.events} == {"ticket-7"}


def test_a_failing_tool_fails_the_agent_with_kind_tool(cap: Capture) -> None:
    agent = support_agent(
        reply("", tool_calls=[("charge_card", {"amount": 30}, "call_5")]), tools=[charge_card]
    )
    with pytest.raises(ValueError, match="card declined"):
        agent.invoke(question("Charge me"), config={"callbacks": [SightlineCallbackHandler()]})
    assert tree(cap) == [
        (0, "agent", "support", "error"),
        (1, "agent", "model", "ok"),
        (2, "llm_invoke", "ScriptedChatModel", "ok"),
        (1, "agent", "tools", "error"),
        (2, "tool_call", "charge_card", "error"),
    ]
    tool = cap.one(type="tool_call")
    assert (tool.error.kind, tool.error.type, tool.error.message) == (
        "tool",
        "ValueError",
        "card declined",
    )
    assert tool.metadata["tool_call_id"] == "call_5"
    # The error passed through the tools node and the agent: they keep its kind.
    assert {(e.name, e.error.kind) for e in cap.find(type="agent") if e.error} == {
        ("tools", "tool"),
        ("support", "tool"),
    }


def test_a_handled_tool_error_is_an_error_event_and_the_agent_goes_on(cap: Capture) -> None:
    agent = support_agent(
        reply("", tool_calls=[("lookup_order", {"order_id": "missing"}, "call_8")]),
        reply("I could not find that order."),
        tools=[lookup_order],
    )
    result = agent.invoke(
        question("Where is my order?"), config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert result["messages"][-1].content == "I could not find that order."
    tool = cap.one(type="tool_call")
    assert (tool.status.value, tool.error.kind, tool.error.message) == (
        "error",
        "tool",
        "order missing not found",
    )
    assert cap.one(type="agent", name="support").status.value == "ok"
    second_llm = sorted(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)[-1]
    assert second_llm.input[-1] == {
        "role": "tool", "content": "order missing not found", "name": "lookup_order",
        "tool_call_id": "call_8", "status": "error",
    }  # fmt: skip


def test_a_model_error_inside_an_agent_has_kind_model(cap: Capture) -> None:
    agent = support_agent(TimeoutError("model timed out"))
    with pytest.raises(TimeoutError):
        agent.invoke(question(), config={"callbacks": [SightlineCallbackHandler()]})
    llm = cap.one(type="llm_invoke")
    assert (llm.status.value, llm.error.kind, llm.error.type) == (
        "error",
        "timeout",
        "TimeoutError",
    )
    assert cap.one(type="agent", name="support").error.kind == "timeout"


class TriageState(TypedDict, total=False):
    question: str
    documents: list[str]
    answer: str


def triage_graph(name: str | None = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    retriever = PolicyRetriever()

    def retrieve(state: TriageState) -> TriageState:
        documents = retriever.invoke(state["question"])
        return {"documents": [d.page_content[:20] for d in documents]}

    def answer(state: TriageState) -> TriageState:
        return {"answer": f"{len(state['documents'])} documents"}

    graph = StateGraph(TriageState)
    graph.add_node("retrieve", retrieve)
    graph.add_node("answer", answer)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    return graph.compile(name=name) if name else graph.compile()


def test_langgraph_graphs_and_nodes_are_agent_events(cap: Capture) -> None:
    result = triage_graph().invoke(
        {"question": "refunds"}, config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert result["answer"] == "2 documents"
    assert tree(cap) == [
        (0, "agent", "LangGraph", "ok"),
        (1, "agent", "retrieve", "ok"),
        (2, "retrieval", "PolicyRetriever", "ok"),
        (1, "agent", "answer", "ok"),
    ]
    retrieval = cap.one(type="retrieval")
    assert (retrieval.input, retrieval.metadata["document_count"]) == ("refunds", 2)
    root = cap.one(type="agent", name="LangGraph")
    assert root.output == {
        "question": "refunds",
        "documents": result["documents"],
        "answer": "2 documents",
    }


def test_a_named_graph_names_its_trace(global_cap: Capture) -> None:
    triage_graph("triage").invoke({"question": "refunds"})
    roots = [e for e in global_cap.events if e.parent_span_id is None]
    assert [(r.type.value, r.name) for r in roots] == [("agent", "triage")]


def test_a_graph_interrupt_is_not_an_error(cap: Capture) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    def approve(state: TriageState) -> TriageState:
        return {"answer": interrupt("approve refund?")}

    graph = StateGraph(TriageState)
    graph.add_node("approve", approve)
    graph.add_edge(START, "approve")
    graph.add_edge("approve", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"callbacks": [SightlineCallbackHandler()], "configurable": {"thread_id": "t1"}}
    result = app.invoke({"question": "refund?"}, config=config)
    assert "__interrupt__" in result
    assert all(e.status.value == "ok" for e in cap.events), [(e.name, e.error) for e in cap.events]
    node = cap.one(type="agent", name="approve")
    assert node.metadata["interrupted"] == "GraphInterrupt"
