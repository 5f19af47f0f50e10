"""A query engine over a VectorStoreIndex, recorded as one exact trace tree (sync and async)."""

from __future__ import annotations

import pytest
from llama_index.core.llms import MockLLM

import sightline
from tests.llamaindex.events import outline, wire

QUESTION = "How long do refunds take?"
NODES = [
    {"id": "refunds", "score": 1.0, "text": "Refunds are paid within 5 business days."},
    {"id": "shipping", "score": 1.0, "text": "Shipping is free above 50 euros."},
]


def query_engine(index):
    return index.as_query_engine(llm=MockLLM(max_tokens=3), similarity_top_k=2)


async def ask(engine, use_async: bool) -> str:
    if use_async:
        return str(await engine.aquery(QUESTION))
    return str(engine.query(QUESTION))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_query_engine_is_one_exact_tree(traced, index, use_async):
    a = "a" if use_async else ""
    assert await ask(query_engine(index), use_async) == "text text text"

    assert outline(traced.events) == [
        ("chain", f"RetrieverQueryEngine.{a}query", "ok", [
            ("retrieval", f"VectorIndexRetriever.{a}retrieve", "ok", [
                ("embedding", f"MockEmbedding.{a}get_query_embedding", "ok", []),
            ]),
            ("chain", f"CompactAndRefine.{a}synthesize", "ok", [
                # predict calling complete: one LLM call, recorded once
                ("llm_invoke", f"MockLLM.{a}predict", "ok", []),
            ]),
        ]),
    ]  # fmt: skip


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_query_engine_events_record_query_nodes_and_answer(traced, index, use_async):
    a = "a" if use_async else ""
    await ask(query_engine(index), use_async)

    common = {"status": "ok", "agent": None, "session_id": None, "framework": "llamaindex",
              "usage": None, "cost_usd": None, "error": None, "tags": []}  # fmt: skip
    assert wire(traced.one(type="chain", name=f"RetrieverQueryEngine.{a}query")) == {
        **common, "type": "chain", "name": f"RetrieverQueryEngine.{a}query",
        "input": {"query": QUESTION}, "output": "text text text", "model": None,
        "metadata": {"source_count": 2},
    }  # fmt: skip
    assert wire(traced.one(type="retrieval")) == {
        **common, "type": "retrieval", "name": f"VectorIndexRetriever.{a}retrieve",
        "input": {"query": QUESTION}, "output": {"nodes": NODES}, "model": None,
        "metadata": {"node_count": 2, "scores": [1.0, 1.0]},
    }  # fmt: skip
    assert wire(traced.one(type="embedding")) == {
        **common, "type": "embedding", "name": f"MockEmbedding.{a}get_query_embedding",
        "input": {"texts": [QUESTION]}, "output": None, "model": "mock-embed-8",
        "metadata": {"text_count": 1, "dimensions": 8},
    }  # fmt: skip
    assert wire(traced.one(type="chain", name=f"CompactAndRefine.{a}synthesize")) == {
        **common, "type": "chain", "name": f"CompactAndRefine.{a}synthesize",
        "input": {"query": QUESTION}, "output": "text text text", "model": None,
        "metadata": {"node_count": 2, "source_count": 2},
    }  # fmt: skip
    llm = wire(traced.one(type="llm_invoke"))
    prompt = llm.pop("input")["prompt"]
    assert prompt.startswith("Context information is below.")
    assert "Refunds are paid within 5 business days." in prompt and QUESTION in prompt
    assert llm == {
        **common, "type": "llm_invoke", "name": f"MockLLM.{a}predict",
        "output": {"text": "text text text"}, "model": None, "metadata": {},
    }  # fmt: skip


async def test_query_engine_inside_a_trace_attaches_to_it(traced, index):
    engine = query_engine(index)
    with sightline.trace("faq") as run:
        engine.query(QUESTION)
    engine.query(QUESTION)  # outside: a trace of its own

    queries = traced.find(type="chain", name="RetrieverQueryEngine.query")
    inside = next(q for q in queries if q.trace_id == run.trace_id)
    outside = next(q for q in queries if q.trace_id != run.trace_id)
    assert inside.parent_span_id == run.span_id
    assert outside.parent_span_id is None
    assert len([e for e in traced.events if e.trace_id == outside.trace_id]) == 5


def test_chat_engine_is_a_chain_around_its_llm_call(traced):
    from llama_index.core.chat_engine import SimpleChatEngine

    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=2))
    assert str(engine.chat("hi")) == "text text"

    assert outline(traced.events) == [
        ("chain", "SimpleChatEngine.chat", "ok", [
            # MockLLM implements chat with complete: one call, its input the messages
            ("llm_invoke", "MockLLM.chat", "ok", []),
        ]),
    ]  # fmt: skip
    assert traced.one(type="chain").input == {"message": "hi"}
    llm = traced.one(type="llm_invoke")
    assert (llm.input, llm.output) == (
        {"messages": [{"role": "user", "content": "hi"}]},
        {"role": "assistant", "content": "text text"},
    )


def test_failing_retriever_records_kind_retrieval_up_the_tree(traced, index):
    from llama_index.core.retrievers import BaseRetriever

    class BrokenRetriever(BaseRetriever):
        def _retrieve(self, query_bundle):
            raise ConnectionError("vector store unreachable")

    from llama_index.core.query_engine import RetrieverQueryEngine

    engine = RetrieverQueryEngine.from_args(BrokenRetriever(), llm=MockLLM(max_tokens=3))
    with pytest.raises(ConnectionError):
        engine.query(QUESTION)

    assert outline(traced.events) == [
        ("chain", "RetrieverQueryEngine.query", "error", [
            ("retrieval", "BrokenRetriever.retrieve", "error", []),
        ]),
    ]  # fmt: skip
    retrieval = traced.one(type="retrieval")
    assert (retrieval.error.type, retrieval.error.message, retrieval.error.kind) == (
        "ConnectionError",
        "vector store unreachable",
        "retrieval",
    )
    # The query engine failed because its retrieval did: the kind says so.
    query = traced.one(type="chain")
    assert (query.error.type, query.error.kind) == ("ConnectionError", "retrieval")
