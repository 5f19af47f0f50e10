"""A FunctionAgent with a retrieval tool and a failing tool, recorded as one exact trace tree."""

from __future__ import annotations

import pytest

import sightline
from sightline import EventType
from tests.llamaindex.events import outline, wire
from tests.llamaindex.scripted import ANSWER, MODEL, usage_for

QUESTION = "How long do refunds take for order A-17?"
DOCS = "Refunds are paid within 5 business days.\nShipping is free above 50 euros."
VARIANTS = [
    pytest.param(True, False, id="streaming-sync-tools"),
    pytest.param(True, True, id="streaming-async-tools"),
    pytest.param(False, False, id="chat-sync-tools"),
    pytest.param(False, True, id="chat-async-tools"),
]


def expected_tree(streaming: bool, use_async: bool) -> list:
    llm = "ScriptedLLM.astream_chat" if streaming else "ScriptedLLM.achat"
    retrieve = "VectorIndexRetriever.aretrieve" if use_async else "VectorIndexRetriever.retrieve"
    embed = (
        "MockEmbedding.aget_query_embedding" if use_async else "MockEmbedding.get_query_embedding"
    )

    def step(name: str, *children: tuple) -> tuple:
        return ("chain", name, "ok", list(children))

    def turn() -> list[tuple]:
        return [
            step("setup_agent"),
            step("run_agent_step", ("llm_invoke", llm, "ok", [])),
            step("parse_agent_output"),
        ]

    return [
        ("agent", "support", "ok", [
            step("init_run"),
            *turn(),
            ("tool_call", "search_docs", "ok", [
                ("retrieval", retrieve, "ok", [("embedding", embed, "ok", [])]),
            ]),
            step("aggregate_tool_results"),
            *turn(),
            ("tool_call", "lookup_order", "error", []),
            step("aggregate_tool_results"),
            *turn(),
        ]),
    ]  # fmt: skip


async def run_support_agent(agent: object) -> str:
    handler = agent.run(user_msg=QUESTION)  # type: ignore[attr-defined]
    return str(await handler)


@pytest.mark.parametrize(("streaming", "use_async"), VARIANTS)
async def test_agent_run_is_one_exact_tree(traced, index, streaming, use_async):
    from tests.llamaindex.scripted import support_agent

    agent = support_agent(index, streaming=streaming, use_async=use_async)
    assert await run_support_agent(agent) == ANSWER

    events = traced.events
    assert outline(events) == expected_tree(streaming, use_async)
    assert {e.trace_id for e in events} == {traced.one(type="agent").trace_id}
    assert {e.framework for e in events} == {"llamaindex"}
    assert {e.agent for e in events} == {"support"}


@pytest.mark.parametrize(("streaming", "use_async"), VARIANTS)
async def test_agent_event_records_question_answer_and_tools(traced, index, streaming, use_async):
    from tests.llamaindex.scripted import support_agent

    await run_support_agent(support_agent(index, streaming=streaming, use_async=use_async))

    run = traced.one(type="agent")
    assert run.parent_span_id is None
    assert wire(run) == {
        "type": "agent", "name": "support", "status": "ok", "agent": "support",
        "session_id": None, "framework": "llamaindex",
        "input": QUESTION, "output": ANSWER,
        "model": None, "usage": None, "cost_usd": None, "error": None,
        "metadata": {
            "agent_type": "FunctionAgent",
            "tools": ["search_docs", "lookup_order"],
            "tool_calls": ["search_docs", "lookup_order"],
        },
        "tags": [],
    }  # fmt: skip


@pytest.mark.parametrize(("streaming", "use_async"), VARIANTS)
async def test_llm_calls_record_messages_tool_calls_and_usage(traced, index, streaming, use_async):
    from tests.llamaindex.scripted import support_agent

    await run_support_agent(support_agent(index, streaming=streaming, use_async=use_async))

    first, second, third = sorted(traced.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert wire(first) == {
        "type": "llm_invoke",
        "name": "ScriptedLLM.astream_chat" if streaming else "ScriptedLLM.achat",
        "status": "ok", "agent": "support", "session_id": None, "framework": "llamaindex",
        "input": {"messages": [{"role": "user", "content": QUESTION}]},
        "output": {
            "role": "assistant", "content": None,
            "tool_calls": [
                {"id": "call-1", "name": "search_docs", "arguments": {"query": "refund delay"}}
            ],
        },
        "model": MODEL,
        "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
        "cost_usd": None, "error": None,
        "metadata": {"tools": ["search_docs", "lookup_order"], "tool_calls": ["search_docs"]},
        "tags": [],
    }  # fmt: skip
    # The second call sees the first tool's result; it asks for the failing tool.
    messages = second.input["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2] == {"role": "tool", "content": DOCS, "tool_call_id": "call-1"}
    assert second.output["tool_calls"][0]["name"] == "lookup_order"
    assert second.metadata["tool_calls"] == ["lookup_order"]
    assert second.usage.to_dict() == usage_for_count(3)
    # The third sees the error text of the failing tool, and answers.
    assert third.input["messages"][-1] == {
        "role": "tool",
        "content": "order A-17 not found",
        "tool_call_id": "call-2",
    }
    assert third.output == {"role": "assistant", "content": ANSWER}
    assert "tool_calls" not in third.metadata
    assert third.usage.to_dict() == usage_for_count(5)


def usage_for_count(messages: int) -> dict[str, int]:
    usage = usage_for([None] * messages)  # type: ignore[list-item]
    return {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
    }


@pytest.mark.parametrize(("streaming", "use_async"), VARIANTS)
async def test_tool_calls_record_name_kwargs_output_and_error(traced, index, streaming, use_async):
    from tests.llamaindex.scripted import support_agent

    await run_support_agent(support_agent(index, streaming=streaming, use_async=use_async))

    search = traced.one(type="tool_call", name="search_docs")
    assert wire(search) == {
        "type": "tool_call", "name": "search_docs", "status": "ok", "agent": "support",
        "session_id": None, "framework": "llamaindex",
        "input": {"query": "refund delay"}, "output": DOCS,
        "model": None, "usage": None, "cost_usd": None, "error": None,
        "metadata": {"tool_call_id": "call-1", "is_error": False}, "tags": [],
    }  # fmt: skip
    failing = traced.one(type="tool_call", name="lookup_order")
    assert wire(failing) == {
        "type": "tool_call", "name": "lookup_order", "status": "error", "agent": "support",
        "session_id": None, "framework": "llamaindex",
        "input": {"order_id": "A-17"}, "output": "order A-17 not found",
        "model": None, "usage": None, "cost_usd": None,
        "error": {"type": "OrderLookupError", "message": "order A-17 not found", "kind": "tool"},
        "metadata": {"tool_call_id": "call-2", "is_error": True}, "tags": [],
    }  # fmt: skip
    # Tool calls hang off the agent run, next to the steps.
    assert search.parent_span_id == failing.parent_span_id == traced.one(type="agent").span_id


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_retrieval_inside_a_tool_records_query_nodes_and_scores(traced, index, use_async):
    from tests.llamaindex.scripted import support_agent

    await run_support_agent(support_agent(index, streaming=True, use_async=use_async))

    [retrieval] = traced.find(type="retrieval")
    assert retrieval.parent_span_id == traced.one(type="tool_call", name="search_docs").span_id
    assert wire(retrieval) == {
        "type": "retrieval",
        "name": "VectorIndexRetriever.aretrieve" if use_async else "VectorIndexRetriever.retrieve",
        "status": "ok", "agent": "support", "session_id": None, "framework": "llamaindex",
        "input": {"query": "refund delay"},
        "output": {"nodes": [
            {"id": "refunds", "score": 1.0, "text": "Refunds are paid within 5 business days."},
            {"id": "shipping", "score": 1.0, "text": "Shipping is free above 50 euros."},
        ]},
        "model": None, "usage": None, "cost_usd": None, "error": None,
        "metadata": {"node_count": 2, "scores": [1.0, 1.0]}, "tags": [],
    }  # fmt: skip
    [embedding] = traced.find(type="embedding")
    assert embedding.parent_span_id == retrieval.span_id
    assert (embedding.model, embedding.input, embedding.metadata) == (
        "mock-embed-8",
        {"texts": ["refund delay"]},
        {"text_count": 1, "dimensions": 8},
    )


async def test_steps_record_the_events_they_take_and_return(traced, index):
    from tests.llamaindex.scripted import support_agent

    await run_support_agent(support_agent(index, streaming=True, use_async=False))

    init_run = traced.one(type="chain", name="init_run")
    assert (init_run.input, init_run.output, init_run.metadata) == (
        None,
        None,
        {"input_event": "AgentWorkflowStartEvent", "output_event": "AgentInput"},
    )
    steps = sorted(traced.find(type="chain"), key=lambda e: e.start_ns)
    assert [(e.name, e.metadata["input_event"], e.metadata.get("output_event")) for e in steps] == [
        ("init_run", "AgentWorkflowStartEvent", "AgentInput"),
        ("setup_agent", "AgentInput", "AgentSetup"),
        ("run_agent_step", "AgentSetup", "AgentOutput"),
        ("parse_agent_output", "AgentOutput", None),  # it sends the tool calls itself
        ("aggregate_tool_results", "ToolCallResult", "AgentInput"),
        ("setup_agent", "AgentInput", "AgentSetup"),
        ("run_agent_step", "AgentSetup", "AgentOutput"),
        ("parse_agent_output", "AgentOutput", None),
        ("aggregate_tool_results", "ToolCallResult", "AgentInput"),
        ("setup_agent", "AgentInput", "AgentSetup"),
        ("run_agent_step", "AgentSetup", "AgentOutput"),
        ("parse_agent_output", "AgentOutput", "StopEvent"),
    ]


async def test_agent_run_nests_under_the_ambient_sightline_span(traced, index):
    from tests.llamaindex.scripted import support_agent

    agent = support_agent(index, streaming=True, use_async=True)
    with sightline.trace("support-ticket", agent="helpdesk") as ticket:
        await run_support_agent(agent)

    run = traced.one(type="run")
    agent_event = traced.one(type="agent")
    assert agent_event.parent_span_id == run.span_id
    assert {e.trace_id for e in traced.events} == {ticket.trace_id}
    assert traced.one(type="llm_invoke", name="ScriptedLLM.astream_chat", output={
        "role": "assistant", "content": ANSWER}).agent == "support"  # fmt: skip


async def test_each_agent_run_without_ambient_span_starts_its_own_trace(traced, index):
    from tests.llamaindex.scripted import support_agent

    agent = support_agent(index, streaming=False, use_async=True)
    await run_support_agent(agent)
    await run_support_agent(agent)

    runs = traced.find(type="agent")
    assert len(runs) == 2
    assert runs[0].trace_id != runs[1].trace_id
    for run in runs:
        assert len([e for e in traced.events if e.trace_id == run.trace_id]) == 20


async def test_failing_llm_fails_the_step_and_the_agent_with_kind_model(traced):
    from llama_index.core.agent.workflow import FunctionAgent

    from tests.llamaindex.scripted import ScriptedLLM

    class ProviderDown(ConnectionError):
        pass

    def broken(messages, **kwargs):
        raise ProviderDown("provider unavailable")

    agent = FunctionAgent(name="fragile", tools=[], llm=ScriptedLLM(response_generator=broken),
                          streaming=False)  # fmt: skip
    with pytest.raises(Exception, match="provider unavailable"):
        await agent.run(user_msg="hello")

    llm = traced.one(type="llm_invoke")
    assert llm.status.value == "error"
    assert (llm.error.type, llm.error.message, llm.error.kind) == (
        "ProviderDown",
        "provider unavailable",
        "model",
    )
    step = traced.one(type="chain", name="run_agent_step")
    assert (step.status.value, step.error.type, step.error.kind) == (
        "error",
        "ProviderDown",
        "model",
    )
    run = traced.one(type=EventType.AGENT)
    assert run.status.value == "error"
    assert run.error.message == "provider unavailable"
    assert llm.parent_span_id == step.span_id and step.parent_span_id == run.span_id
