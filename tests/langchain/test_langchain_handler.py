"""SightlineCallbackHandler passed explicitly: the exact events of chains, models, tools and
retrievers, on every way LangChain runs them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import sightline
from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_events import only, tree, wire
from tests.langchain.langchain_scripted import (
    PolicyRetriever,
    ScriptedTextModel,
    TransientError,
    chat_model,
    reply,
)

SYSTEM = "You answer in one short sentence."
QUESTION = "How long do refunds take?"
ANSWER = "Refunds take five business days."
PROMPT_MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def refund_chain(*items: Any) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    items = items or (reply(ANSWER, input_tokens=21, output_tokens=7, finish_reason="stop"),)
    return prompt | chat_model(*items) | StrOutputParser()


def assert_refund_trace(cap: Capture, *, streamed: bool = False) -> None:
    """The four events of one refund_chain run, field by field."""
    root = cap.one(type="chain", name="RunnableSequence")
    prompt = cap.one(type="chain", name="ChatPromptTemplate")
    model = cap.one(type="llm_invoke")
    parser = cap.one(type="chain", name="StrOutputParser")
    assert len(cap.events) == 4
    assert root.parent_span_id is None
    assert {e.parent_span_id for e in (prompt, model, parser)} == {root.span_id}
    assert {e.trace_id for e in (prompt, model, parser)} == {root.trace_id}
    assert root.start_ns <= prompt.start_ns <= model.start_ns <= parser.start_ns
    base = {"status": "ok", "agent": None, "session_id": None, "framework": "langchain",
            "model": None, "usage": None, "cost_usd": None, "error": None, "metadata": {},
            "tags": []}  # fmt: skip
    assert wire(root) == {**base, "type": "chain", "name": "RunnableSequence",
                          "input": {"question": QUESTION}, "output": ANSWER}  # fmt: skip
    assert wire(prompt) == {**base, "type": "chain", "name": "ChatPromptTemplate",
                            "input": {"question": QUESTION}, "output": PROMPT_MESSAGES}  # fmt: skip
    assert wire(parser) == {**base, "type": "chain", "name": "StrOutputParser",
                            "input": {"role": "assistant", "content": ANSWER},
                            "output": ANSWER}  # fmt: skip
    model_wire = wire(model)
    metadata = model_wire.pop("metadata")
    base.pop("metadata")
    assert model_wire == {
        **base,
        "type": "llm_invoke",
        "name": "ScriptedChatModel",
        "input": PROMPT_MESSAGES,
        "output": {"role": "assistant", "content": ANSWER},
        "model": "scripted-1",
        "usage": {"input_tokens": 21, "output_tokens": 7, "total_tokens": 28},
    }
    expected_metadata: dict[str, Any] = {
        "provider": "scripted",
        "finish_reason": "stop",
    }
    if streamed:
        ttft = metadata.pop("ttft_ms")
        assert 0 <= ttft <= model.duration_ms
        expected_metadata["streamed_tokens"] = 5  # one per word: "Refunds", " take", " five"...
    assert metadata == expected_metadata


# -- the ways to pass a handler -----------------------------------------------------------------


def test_invoke_records_one_event_per_run_with_exact_fields(cap: Capture) -> None:
    refund_chain().invoke(
        {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert_refund_trace(cap)


def test_handler_in_with_config_records_the_same_events(cap: Capture) -> None:
    chain = refund_chain().with_config(callbacks=[SightlineCallbackHandler()])
    chain.invoke({"question": QUESTION})
    assert_refund_trace(cap)


def test_handler_on_the_model_constructor_records_the_model_run_alone(cap: Capture) -> None:
    model = chat_model(reply(ANSWER), callbacks=[SightlineCallbackHandler()])
    model.invoke(QUESTION)
    event = only(cap.events)
    assert (event.type.value, event.name, event.parent_span_id) == (
        "llm_invoke",
        "ScriptedChatModel",
        None,
    )
    assert event.input == [{"role": "user", "content": QUESTION}]


async def test_ainvoke_records_the_same_events(cap: Capture) -> None:
    chain = refund_chain()
    await chain.ainvoke({"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]})
    assert_refund_trace(cap)


def test_stream_records_time_to_first_token_and_token_count(cap: Capture) -> None:
    chunks = list(
        refund_chain().stream(
            {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    )
    assert "".join(chunks) == ANSWER
    assert_refund_trace(cap, streamed=True)


async def test_astream_records_time_to_first_token_and_token_count(cap: Capture) -> None:
    chunks = [
        chunk
        async for chunk in refund_chain().astream(
            {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    ]
    assert "".join(chunks) == ANSWER
    assert_refund_trace(cap, streamed=True)


def test_stream_events_v3_counts_each_streamed_token_once(cap: Capture) -> None:
    model = chat_model(reply("one two three", input_tokens=3, output_tokens=3))
    stream = model.stream_events(
        "hi", version="v3", config={"callbacks": [SightlineCallbackHandler()]}
    )
    deltas = [e for e in stream if e.get("event") == "content-block-delta"]
    assert len(deltas) == 3
    event = only(cap.events)
    assert event.metadata["streamed_tokens"] == 3  # both token callbacks fired: counted once
    assert event.usage.to_dict() == {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}


def test_protocol_stream_events_alone_give_time_to_first_token(cap: Capture) -> None:
    import uuid

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    handler = SightlineCallbackHandler()
    run_id = uuid.uuid4()
    handler.on_chat_model_start({"name": "Native"}, [[]], run_id=run_id)
    handler.on_stream_event({"event": "message-start", "role": "ai"}, run_id=run_id)
    for text in ("a", "b"):
        delta = {"event": "content-block-delta", "delta": {"type": "text-delta", "text": text}}
        handler.on_stream_event(delta, run_id=run_id)
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("ab"))]])
    handler.on_llm_end(result, run_id=run_id)
    event = only(cap.events)
    assert event.metadata["streamed_tokens"] == 2
    assert 0 <= event.metadata["ttft_ms"] <= event.duration_ms


def test_batch_records_one_trace_per_input(cap: Capture) -> None:
    answers = [reply(f"answer {i}", input_tokens=10 + i, output_tokens=2) for i in range(3)]
    chain = refund_chain(*answers)
    handler = SightlineCallbackHandler()
    outputs = chain.batch(
        [{"question": f"q{i}"} for i in range(3)], config={"callbacks": [handler]}
    )
    assert sorted(outputs) == ["answer 0", "answer 1", "answer 2"]
    roots = cap.find(type="chain", name="RunnableSequence")
    assert len(roots) == 3 and len({r.trace_id for r in roots}) == 3
    for root in roots:
        children = cap.children(root)
        assert [(c.type.value, c.name) for c in children] == [
            ("chain", "ChatPromptTemplate"),
            ("llm_invoke", "ScriptedChatModel"),
            ("chain", "StrOutputParser"),
        ]
        model = children[1]
        question = root.input["question"]
        assert model.input[1] == {"role": "user", "content": question}
        assert root.output == model.output["content"]
        assert model.usage.output_tokens == 2 and model.usage.input_tokens >= 10


async def test_abatch_records_one_trace_per_input(cap: Capture) -> None:
    chain = refund_chain(*[reply(f"answer {i}") for i in range(4)])
    handler = SightlineCallbackHandler()
    await chain.abatch([{"question": f"q{i}"} for i in range(4)], config={"callbacks": [handler]})
    roots = cap.find(type="chain", name="RunnableSequence")
    assert len(roots) == 4 and len(cap.events) == 16
    assert all(len(cap.children(root)) == 3 for root in roots)


def test_runs_in_a_thread_pool_keep_their_own_trees(cap: Capture) -> None:
    chain = refund_chain(*[reply(f"answer {i}") for i in range(16)])
    handler = SightlineCallbackHandler()

    def run(i: int) -> str:
        return chain.invoke({"question": f"q{i}"}, config={"callbacks": [handler]})

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert len(list(pool.map(run, range(16)))) == 16
    roots = cap.find(type="chain", name="RunnableSequence")
    assert len(roots) == 16 and len(cap.events) == 64
    for root in roots:
        children = cap.children(root)
        assert len(children) == 3
        assert children[1].input[1]["content"] == root.input["question"]
        assert root.output == children[1].output["content"]


# -- models ---------------------------------------------------------------------------------------


def test_tool_calls_requested_by_the_model_are_in_output_and_metadata(cap: Capture) -> None:
    model = chat_model(
        reply(
            "",
            tool_calls=[("add", {"a": 1, "b": 2}, "call_1"), ("add", {"a": 3, "b": 4}, "call_2")],
            input_tokens=30,
            output_tokens=12,
            finish_reason="tool_calls",
        )
    )
    model.invoke(
        [("system", "use tools"), ("user", "1+2 and 3+4?")],
        config={"callbacks": [SightlineCallbackHandler()]},
    )
    event = only(cap.events)
    assert event.output == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}},
            {"id": "call_2", "name": "add", "arguments": {"a": 3, "b": 4}},
        ],
    }
    assert event.metadata["tool_calls"] == ["add", "add"]
    assert event.metadata["finish_reason"] == "tool_calls"
    assert event.usage.to_dict() == {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}


def test_conversation_messages_keep_roles_tool_calls_and_tool_call_ids(cap: Capture) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    conversation = [
        SystemMessage("be terse"),
        HumanMessage("1+2?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"}]),
        ToolMessage("3", tool_call_id="call_1", name="add"),
    ]
    chat_model(reply("3")).invoke(conversation, config={"callbacks": [SightlineCallbackHandler()]})
    assert only(cap.events).input == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}}]},
        {"role": "tool", "content": "3", "name": "add", "tool_call_id": "call_1"},
    ]  # fmt: skip


def test_text_model_usage_comes_from_llm_output(cap: Capture) -> None:
    ScriptedTextModel().invoke(
        "Capital of France?", config={"callbacks": [SightlineCallbackHandler()]}
    )
    event = only(cap.events)
    data = wire(event)
    assert data == {
        "type": "llm_invoke", "name": "ScriptedTextModel", "status": "ok", "agent": None,
        "session_id": None, "framework": "langchain", "input": "Capital of France?",
        "output": "Paris", "model": "scripted-text-1",
        "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}, "cost_usd": None,
        "error": None, "metadata": {"provider": "scriptedtextmodel", "finish_reason": "length"},
        "tags": [],
    }  # fmt: skip


def test_model_error_has_kind_model_and_its_chain_keeps_that_kind(cap: Capture) -> None:
    chain = refund_chain(RuntimeError("provider overloaded"))
    with pytest.raises(RuntimeError):
        chain.invoke({"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]})
    model = cap.one(type="llm_invoke")
    root = cap.one(type="chain", name="RunnableSequence")
    assert (model.status.value, model.error.kind, model.error.type, model.error.message) == (
        "error",
        "model",
        "RuntimeError",
        "provider overloaded",
    )
    assert "provider overloaded" in model.error.stack
    assert model.output is None and model.usage is None
    assert (root.status.value, root.error.kind, root.error.type) == (
        "error",
        "model",
        "RuntimeError",
    )
    assert cap.find(type="chain", name="StrOutputParser") == []


def test_retries_are_recorded_in_the_model_events_metadata(cap: Capture) -> None:
    model = chat_model(TransientError("429 slow down"), TransientError("503"), reply("ok"))
    assert model.invoke("hi", config={"callbacks": [SightlineCallbackHandler()]}).content == "ok"
    event = only(cap.events)
    assert event.status.value == "ok"
    assert event.metadata["retries"] == [
        {"attempt": 1, "slept_s": 0.0, "error": "TransientError: 429 slow down"},
        {"attempt": 2, "slept_s": 0.0, "error": "TransientError: 503"},
    ]


# -- tools ----------------------------------------------------------------------------------------


def test_tool_call_records_name_arguments_output_and_tool_call_id(cap: Capture) -> None:
    from tests.langchain.langchain_scripted import add

    message = add.invoke(
        {"name": "add", "args": {"a": 2, "b": 40}, "id": "call_42", "type": "tool_call"},
        config={"callbacks": [SightlineCallbackHandler()]},
    )
    assert message.content == "42"
    assert wire(only(cap.events)) == {
        "type": "tool_call", "name": "add", "status": "ok", "agent": None, "session_id": None,
        "framework": "langchain", "input": {"a": 2, "b": 40}, "output": "42", "model": None,
        "usage": None, "cost_usd": None, "error": None, "metadata": {"tool_call_id": "call_42"},
        "tags": [],
    }  # fmt: skip


def test_tool_error_is_recorded_with_kind_tool(cap: Capture) -> None:
    from tests.langchain.langchain_scripted import charge_card

    with pytest.raises(ValueError, match="card declined"):
        charge_card.invoke(
            {"name": "charge_card", "args": {"amount": 5}, "id": "call_9", "type": "tool_call"},
            config={"callbacks": [SightlineCallbackHandler()]},
        )
    event = only(cap.events)
    assert (event.type.value, event.name, event.status.value) == (
        "tool_call",
        "charge_card",
        "error",
    )
    assert (event.error.kind, event.error.type, event.error.message) == (
        "tool",
        "ValueError",
        "card declined",
    )
    assert event.metadata == {"tool_call_id": "call_9"}
    assert event.input == {"amount": 5}


def test_handled_tool_error_is_an_error_event_with_the_message_the_model_sees(cap: Capture) -> None:
    from tests.langchain.langchain_scripted import lookup_order

    message = lookup_order.invoke(
        {
            "name": "lookup_order",
            "args": {"order_id": "missing"},
            "id": "call_3",
            "type": "tool_call",
        },
        config={"callbacks": [SightlineCallbackHandler()]},
    )
    assert message.status == "error"
    event = only(cap.events)
    assert (event.status.value, event.error.kind, event.error.type, event.error.message) == (
        "error",
        "tool",
        "ToolError",
        "order missing not found",
    )
    assert event.output == "order missing not found"
    assert event.metadata == {"tool_call_id": "call_3"}


def test_non_json_tool_output_is_recorded_by_its_repr(cap: Capture) -> None:
    from tests.langchain.langchain_scripted import print_receipt

    result = print_receipt.invoke({"number": 7}, config={"callbacks": [SightlineCallbackHandler()]})
    assert repr(result) == "Receipt(number=7)"
    event = only(cap.events)
    assert (event.status.value, event.output, event.input) == (
        "ok",
        "Receipt(number=7)",
        {"number": 7},
    )


# -- retrievers -----------------------------------------------------------------------------------


def test_retrieval_records_query_document_count_ids_metadata_and_bounded_preview(
    cap: Capture,
) -> None:
    documents = PolicyRetriever().invoke(
        "refund policy", config={"callbacks": [SightlineCallbackHandler()]}
    )
    assert len(documents) == 2
    event = only(cap.events)
    data = wire(event)
    output = data.pop("output")
    assert data == {
        "type": "retrieval", "name": "PolicyRetriever", "status": "ok", "agent": None,
        "session_id": None, "framework": "langchain", "input": "refund policy", "model": None,
        "usage": None, "cost_usd": None, "error": None, "metadata": {"document_count": 2},
        "tags": [],
    }  # fmt: skip
    assert [(d["id"], d["metadata"]) for d in output] == [
        ("policy-1", {"source": "refunds.md"}),
        ("policy-2", {"source": "exchanges.md"}),
    ]
    assert output[0]["preview"] == documents[0].page_content[:500] + "…"
    assert output[1]["preview"] == "Exchanges are free."


def test_retriever_error_is_recorded_with_kind_retrieval(cap: Capture) -> None:
    with pytest.raises(ConnectionError):
        PolicyRetriever(fail=True).invoke(
            "refund", config={"callbacks": [SightlineCallbackHandler()]}
        )
    event = only(cap.events)
    assert (event.type.value, event.status.value, event.error.kind, event.error.type) == (
        "retrieval",
        "error",
        "retrieval",
        "ConnectionError",
    )
    assert event.input == "refund" and event.output is None


# -- agents, trees and run settings ---------------------------------------------------------------


def test_runs_named_or_tagged_as_agents_are_agent_events(cap: Capture) -> None:
    step = RunnableLambda(lambda x: x)
    handler = SightlineCallbackHandler()
    step.invoke(1, config={"callbacks": [handler], "run_name": "ResearchAgent"})
    step.invoke(2, config={"callbacks": [handler], "run_name": "planner", "tags": ["agent"]})
    step.invoke(3, config={"callbacks": [handler], "run_name": "formatter", "tags": ["agentic"]})
    kinds = {e.name: (e.type.value, e.tags) for e in cap.events}
    assert kinds == {
        "ResearchAgent": ("agent", []),
        "planner": ("agent", ["agent"]),
        "formatter": ("chain", ["agentic"]),
    }


def test_each_root_run_starts_a_new_trace_named_after_it(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    chain = refund_chain(reply("a"), reply("b"))
    chain.invoke({"question": "1"}, config={"callbacks": [handler], "run_name": "refund-bot"})
    chain.invoke({"question": "2"}, config={"callbacks": [handler], "run_name": "refund-bot"})
    roots = [e for e in cap.events if e.parent_span_id is None]
    assert [r.name for r in roots] == ["refund-bot", "refund-bot"]
    assert roots[0].trace_id != roots[1].trace_id


def test_root_run_nests_under_the_ambient_sightline_span(cap: Capture) -> None:
    with sightline.trace("support-ticket", session_id="t-1") as run:
        refund_chain().invoke(
            {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]}
        )
    assert tree(cap) == [
        (0, "run", "support-ticket", "ok"),
        (1, "chain", "RunnableSequence", "ok"),
        (2, "chain", "ChatPromptTemplate", "ok"),
        (2, "llm_invoke", "ScriptedChatModel", "ok"),
        (2, "chain", "StrOutputParser", "ok"),
    ]
    assert {e.trace_id for e in cap.events} == {run.trace_id}
    assert {e.session_id for e in cap.events} == {"t-1"}


def test_handler_arguments_set_agent_session_and_tags(cap: Capture) -> None:
    handler = SightlineCallbackHandler(agent="refund-bot", session_id="s-9", tags=["prod"])
    refund_chain().invoke({"question": QUESTION}, config={"callbacks": [handler], "tags": ["eu"]})
    assert len(cap.events) == 4
    assert {(e.agent, e.session_id, tuple(e.tags)) for e in cap.events} == {
        ("refund-bot", "s-9", ("prod", "eu"))
    }


def test_run_metadata_sets_session_agent_and_tags_and_is_kept(cap: Capture) -> None:
    metadata = {
        "sightline_session_id": "sess-1",
        "sightline_agent": "billing",
        "sightline_tags": ["vip", "beta"],
        "customer": "acme",
    }
    refund_chain().invoke(
        {"question": QUESTION},
        config={"callbacks": [SightlineCallbackHandler(agent="ignored")], "metadata": metadata},
    )
    assert len(cap.events) == 4
    for event in cap.events:
        assert (event.session_id, event.agent, event.tags) == ("sess-1", "billing", ["vip", "beta"])
        assert event.metadata.get("customer") == "acme"
        assert not any(key.startswith("sightline_") for key in event.metadata)


def test_custom_events_are_custom_events_under_their_run(cap: Capture) -> None:
    from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event

    def step(x: int) -> int:
        dispatch_custom_event("cache_hit", {"key": "k1", "x": x})
        return x + 1

    async def astep(x: int) -> int:
        await adispatch_custom_event("cache_miss", {"key": "k2"})
        return x * 2

    chain = RunnableLambda(step) | RunnableLambda(astep)
    assert asyncio.run(chain.ainvoke(1, config={"callbacks": [SightlineCallbackHandler()]})) == 4
    hit = cap.one(type="custom", name="cache_hit")
    miss = cap.one(type="custom", name="cache_miss")
    assert (hit.input, miss.input) == ({"key": "k1", "x": 1}, {"key": "k2"})
    assert hit.parent_span_id == cap.one(type="chain", name="step").span_id
    assert miss.parent_span_id == cap.one(type="chain", name="astep").span_id
    assert hit.framework == "langchain"


def test_capture_content_false_keeps_structure_and_usage_but_no_content() -> None:
    from sightline.testing import capture

    with capture(capture_content=False) as cap:
        refund_chain().invoke(
            {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler()]}
        )
        model = cap.one(type="llm_invoke")
        assert len(cap.events) == 4
        assert all(e.input is None and e.output is None for e in cap.events)
        assert model.usage.total_tokens == 28 and model.model == "scripted-1"


def test_explicit_client_receives_the_events_instead_of_the_global_one(cap: Capture) -> None:
    from sightline.testing import InMemoryExporter

    exporter = InMemoryExporter()
    with sightline.Client(exporters=[exporter]) as client:
        refund_chain().invoke(
            {"question": QUESTION}, config={"callbacks": [SightlineCallbackHandler(client)]}
        )
        client.flush()
        assert len(exporter.events) == 4
    assert cap.events == []
