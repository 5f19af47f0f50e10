"""Streamed chat engines and streaming query engines: their events end with their stream."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import sightline_llamaindex
from sightline.testing import Capture, capture
from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import assert_no_open_spans, outline, wire

QUESTION = "How long do refunds take?"
TEXT = "text text text text"  # what MockLLM(max_tokens=4) streams, token by token
COMMON = {"status": "ok", "agent": None, "session_id": None, "framework": "llamaindex",
          "usage": None, "cost_usd": None, "error": None, "tags": [], "model": None}  # fmt: skip


@pytest.fixture
def streamed(traced: Capture) -> Iterator[Capture]:
    """``traced``, and no streamed response left waiting afterwards."""
    yield traced
    gc.collect()
    assert OPEN_SPANS.responses == {}


def streaming_engine(index: Any, llm: Any = None) -> Any:
    return index.as_query_engine(
        llm=llm or MockLLM(max_tokens=4), similarity_top_k=2, streaming=True
    )


class FailingStreamLLM(MockLLM):
    """A ``MockLLM`` whose stream breaks after its first token."""

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="text", delta="text")
            raise ConnectionResetError("stream reset by peer")

        return gen()


def query_tree(a: str = "") -> list[Any]:
    return [
        ("chain", f"RetrieverQueryEngine.{a}query", "ok", [
            ("retrieval", f"VectorIndexRetriever.{a}retrieve", "ok", [
                ("embedding", f"MockEmbedding.{a}get_query_embedding", "ok", []),
            ]),
            ("chain", f"CompactAndRefine.{a}synthesize", "ok", [
                # made while the response is read, after the query returned
                ("llm_invoke", f"MockLLM.{a}stream", "ok", []),
            ]),
        ]),
    ]  # fmt: skip


# -- chat engines ---------------------------------------------------------------------------------


def test_stream_chat_of_a_chat_engine_ends_with_the_streamed_text(streamed):
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4))
    response = engine.stream_chat("hello")
    assert "".join(response.response_gen) == TEXT

    assert outline(streamed.events) == [
        ("chain", "SimpleChatEngine.stream_chat", "ok", [
            ("llm_invoke", "MockLLM.stream_chat", "ok", []),
        ]),
    ]  # fmt: skip
    chat = streamed.one(type="chain")
    assert wire(chat) == {
        **COMMON, "type": "chain", "name": "SimpleChatEngine.stream_chat",
        "input": {"message": "hello"}, "output": TEXT, "metadata": {"source_count": 0},
    }  # fmt: skip
    assert chat.end_ns >= streamed.one(type="llm_invoke").end_ns


async def test_astream_chat_of_a_chat_engine_ends_when_its_writer_has_read_the_stream(streamed):
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4))
    response = await engine.astream_chat("hello")
    assert streamed.find(type="chain") == []  # not over until the stream is
    assert "".join([token async for token in response.async_response_gen()]) == TEXT

    assert outline(streamed.events) == [
        ("chain", "SimpleChatEngine.astream_chat", "ok", [
            ("llm_invoke", "MockLLM.astream_chat", "ok", []),
        ]),
    ]  # fmt: skip
    chat = streamed.one(type="chain")
    assert wire(chat) == {
        **COMMON, "type": "chain", "name": "SimpleChatEngine.astream_chat",
        "input": {"message": "hello"}, "output": TEXT, "metadata": {"source_count": 0},
    }  # fmt: skip
    assert chat.end_ns >= streamed.one(type="llm_invoke").end_ns


# -- streaming query engines ------------------------------------------------------------------


def test_streaming_query_nests_the_llm_call_made_while_it_is_read_in_one_trace(streamed, index):
    response = streaming_engine(index).query(QUESTION)
    assert streamed.find(name="RetrieverQueryEngine.query") == []  # not over until read
    assert "".join(response.response_gen) == TEXT

    events = streamed.events
    assert outline(events) == query_tree()
    assert len({e.trace_id for e in events}) == 1
    query = streamed.one(name="RetrieverQueryEngine.query")
    synthesis = streamed.one(name="CompactAndRefine.synthesize")
    llm = streamed.one(type="llm_invoke")
    assert query.end_ns >= synthesis.end_ns >= llm.end_ns
    assert wire(query) == {
        **COMMON, "type": "chain", "name": "RetrieverQueryEngine.query",
        "input": {"query": QUESTION}, "output": TEXT, "metadata": {"source_count": 2},
    }  # fmt: skip
    assert wire(synthesis) == {
        **COMMON, "type": "chain", "name": "CompactAndRefine.synthesize",
        "input": {"query": QUESTION}, "output": TEXT,
        "metadata": {"node_count": 2, "source_count": 2},
    }  # fmt: skip


async def test_async_streaming_query_nests_the_llm_call_made_while_it_is_read(streamed, index):
    response = await streaming_engine(index).aquery(QUESTION)
    assert streamed.find(name="RetrieverQueryEngine.aquery") == []
    assert "".join([token async for token in response.async_response_gen()]) == TEXT

    events = streamed.events
    assert outline(events) == query_tree("a")
    assert len({e.trace_id for e in events}) == 1
    assert [e.output for e in events if e.type.value == "chain"] == [TEXT, TEXT]


@pytest.mark.parametrize("read", ["str", "get_response", "print_response_stream"])
def test_streaming_query_read_through_the_response_helpers_records_the_text(
    streamed, index, capsys, read
):
    response = streaming_engine(index).query(QUESTION)
    if read == "str":
        assert str(response) == TEXT
    elif read == "get_response":
        assert response.get_response().response == TEXT
    else:
        response.print_response_stream()
        assert capsys.readouterr().out == TEXT

    assert outline(streamed.events) == query_tree()
    assert [e.output for e in streamed.events if e.type.value == "chain"] == [TEXT, TEXT]


def test_streaming_query_closed_early_is_ok_marked_with_the_text_read(streamed, index):
    response = streaming_engine(index).query(QUESTION)
    tokens = response.response_gen
    assert next(tokens) == "text "
    tokens.close()

    assert outline(streamed.events) == query_tree()
    for name in ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize"):
        event = streamed.one(name=name)
        assert (event.status.value, event.output, event.metadata["stream_closed_early"]) == (
            "ok",
            "text ",
            True,
        )
    # The LLM stream below it is closed with it; it is collected with the generators reading it
    # before it reports its close, so it ends as a stream dropped half-read.
    assert streamed.one(type="llm_invoke").metadata == {"incomplete": True}


@pytest.mark.parametrize("stop", ["aclose", "drop"])
async def test_async_streaming_query_stopped_halfway_is_ok_marked_with_the_text_read(
    streamed, index, stop
):
    response = await streaming_engine(index).aquery(QUESTION)
    tokens = response.async_response_gen()
    assert await tokens.__anext__() == "text "
    if stop == "aclose":
        await tokens.aclose()
    # The response still holds the watched generator (``async_response_gen()`` reads it through
    # another one): the events end once the response is collected. asyncio closes dropped async
    # generators in tasks of its own: let them run.
    del tokens, response
    for _ in range(20):  # one generator of the chain (watcher, LLM stream...) per round
        gc.collect()
        await asyncio.sleep(0)

    assert outline(streamed.events) == query_tree("a")
    for name in ("RetrieverQueryEngine.aquery", "CompactAndRefine.asynthesize"):
        event = streamed.one(name=name)
        assert (event.status.value, event.output, event.metadata["stream_closed_early"]) == (
            "ok",
            "text ",
            True,
        )
        assert "incomplete" not in event.metadata


def test_streaming_query_dropped_unread_is_closed_as_incomplete(streamed, index):
    response = streaming_engine(index).query(QUESTION)
    assert streamed.find(type="chain") == []  # waiting for the response to be read
    del response
    gc.collect()

    # Never read: the LLM call was never made.
    assert outline(streamed.events) == [
        ("chain", "RetrieverQueryEngine.query", "ok", [
            ("retrieval", "VectorIndexRetriever.retrieve", "ok", [
                ("embedding", "MockEmbedding.get_query_embedding", "ok", []),
            ]),
            ("chain", "CompactAndRefine.synthesize", "ok", []),
        ]),
    ]  # fmt: skip
    for name in ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize"):
        event = streamed.one(name=name)
        assert (event.output, event.metadata["incomplete"]) == (None, True)


def test_streaming_query_failing_midway_fails_with_the_llm_stream(streamed, index):
    response = streaming_engine(index, FailingStreamLLM()).query(QUESTION)
    with pytest.raises(ConnectionResetError):
        "".join(response.response_gen)

    events = streamed.events
    assert len({e.trace_id for e in events}) == 1
    assert [
        (e.name, e.status.value, e.error.type, e.error.kind) for e in events if e.error is not None
    ] == [
        ("FailingStreamLLM.stream", "error", "ConnectionResetError", "model"),
        ("CompactAndRefine.synthesize", "error", "ConnectionResetError", "model"),
        ("RetrieverQueryEngine.query", "error", "ConnectionResetError", "model"),
    ]
    assert streamed.one(name="FailingStreamLLM.stream").parent_span_id == (
        streamed.one(name="CompactAndRefine.synthesize").span_id
    )


def test_streaming_query_under_a_sightline_trace_nests_there(streamed, index):
    with streamed.client.trace("ask"):
        response = streaming_engine(index).query(QUESTION)
    "".join(response.response_gen)

    assert outline(streamed.events) == [("run", "ask", "ok", query_tree())]


def test_uninstrument_while_a_response_is_unread_finishes_it_when_read(index):
    with capture() as cap:
        sightline_llamaindex.instrument(cap.client)
        response = streaming_engine(index).query(QUESTION)
        sightline_llamaindex.uninstrument()
        assert "".join(response.response_gen) == TEXT
        events = cap.events
    # Started before uninstrument(): finished with its text; the LLM call made afterwards is
    # new work, not recorded.
    assert [(e.name, e.output) for e in events if e.type.value == "chain"] == [
        ("CompactAndRefine.synthesize", TEXT),
        ("RetrieverQueryEngine.query", TEXT),
    ]
    assert [e for e in events if e.type.value == "llm_invoke"] == []
    # The handlers left once the response had been read.
    assert_no_open_spans()
    assert OPEN_SPANS.responses == {}
    root = get_dispatcher()
    assert not any(isinstance(h, SightlineSpanHandler) for h in root.span_handlers)
    assert not any(isinstance(h, SightlineEventHandler) for h in root.event_handlers)


async def test_streaming_query_read_inside_a_workflow_step_nests_its_llm_call_under_synthesize(
    streamed, index
):
    engine = streaming_engine(index)

    class Answer(Workflow):
        @step
        async def answer(self, ev: StartEvent) -> StopEvent:
            response = await engine.aquery(ev.question)
            return StopEvent(result="".join([t async for t in response.async_response_gen()]))

    assert await Answer().run(question=QUESTION) == TEXT

    events = streamed.events
    assert outline(events) == [
        ("chain", "Answer", "ok", [
            ("chain", "answer", "ok", query_tree("a")),
        ]),
    ]  # fmt: skip
    assert len({e.trace_id for e in events}) == 1
