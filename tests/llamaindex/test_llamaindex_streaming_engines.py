"""Streamed chat engines and streaming query engines: their events end with their stream."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import sightline_llamaindex
from sightline.testing import Capture, capture
from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler, handlers
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import assert_no_open_spans, outline, wire

QUESTION = "How long do refunds take?"
TEXT = "text text text text"  # what MockLLM(max_tokens=4) streams, token by token
# llama-index-core 0.14.22 to 0.14.24 (their regression, undone in 0.14.25): CompactAndRefine
# reads the LLM's whole stream while the query runs, and the response gives it as one chunk. The
# events say so: the LLM call ends inside the query, and a reader stopping after one chunk has
# read all of it.
_CORE = tuple(int(part) for part in version("llama-index-core").split(".")[:3])
REFINE_STREAMS = not (0, 14, 22) <= _CORE < (0, 14, 25)
FIRST = "text " if REFINE_STREAMS else TEXT  # the first chunk of a streaming query's response
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


def assert_chat_ended_with_the_stream(streamed, method: str) -> None:
    """A SimpleChatEngine ``method`` call read to its end: one chain with the streamed text as
    output, ended no sooner than the LLM call under it."""
    assert outline(streamed.events) == [
        ("chain", f"SimpleChatEngine.{method}", "ok", [
            ("llm_invoke", f"MockLLM.{method}", "ok", []),
        ]),
    ]  # fmt: skip
    chat = streamed.one(type="chain")
    assert wire(chat) == {
        **COMMON, "type": "chain", "name": f"SimpleChatEngine.{method}",
        "input": {"message": "hello"}, "output": TEXT, "metadata": {"source_count": 0},
    }  # fmt: skip
    assert chat.end_ns >= streamed.one(type="llm_invoke").end_ns


def test_stream_chat_of_a_chat_engine_ends_with_the_streamed_text(streamed):
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4))
    response = engine.stream_chat("hello")
    assert "".join(response.response_gen) == TEXT
    assert_chat_ended_with_the_stream(streamed, "stream_chat")


async def test_astream_chat_of_a_chat_engine_ends_when_its_writer_has_read_the_stream(streamed):
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4))
    response = await engine.astream_chat("hello")
    assert streamed.find(type="chain") == []  # not over until the stream is
    assert "".join([token async for token in response.async_response_gen()]) == TEXT
    assert_chat_ended_with_the_stream(streamed, "astream_chat")


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
    assert next(tokens) == FIRST
    tokens.close()

    assert outline(streamed.events) == query_tree()
    for name in ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize"):
        event = streamed.one(name=name)
        assert (event.status.value, event.output, event.metadata["stream_closed_early"]) == (
            "ok",
            FIRST,
            True,
        )
    # The LLM stream below it is closed with it; it is collected with the generators reading it
    # before it reports its close, so it ends as a stream dropped half-read. (Read to its end
    # during the query where CompactAndRefine does not stream: complete.)
    llm = streamed.one(type="llm_invoke")
    assert llm.metadata == ({"incomplete": True} if REFINE_STREAMS else {})


@pytest.mark.parametrize("stop", ["aclose", "drop"])
async def test_async_streaming_query_stopped_halfway_is_ok_marked_with_the_text_read(
    streamed, index, stop
):
    response = await streaming_engine(index).aquery(QUESTION)
    tokens = response.async_response_gen()
    assert await tokens.__anext__() == FIRST
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
            FIRST,
            True,
        )
        assert "incomplete" not in event.metadata


def test_streaming_query_dropped_unread_is_closed_as_incomplete(streamed, index):
    response = streaming_engine(index).query(QUESTION)
    assert streamed.find(type="chain") == []  # waiting for the response to be read
    del response
    gc.collect()

    # Never read: the LLM call was never made (made by the query itself where CompactAndRefine
    # does not stream).
    if REFINE_STREAMS:
        assert outline(streamed.events) == [
            ("chain", "RetrieverQueryEngine.query", "ok", [
                ("retrieval", "VectorIndexRetriever.retrieve", "ok", [
                    ("embedding", "MockEmbedding.get_query_embedding", "ok", []),
                ]),
                ("chain", "CompactAndRefine.synthesize", "ok", []),
            ]),
        ]  # fmt: skip
    else:
        assert outline(streamed.events) == query_tree()
    for name in ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize"):
        event = streamed.one(name=name)
        assert (event.output, event.metadata["incomplete"]) == (None, True)


def test_streaming_query_failing_midway_fails_with_the_llm_stream(streamed, index):
    engine = streaming_engine(index, FailingStreamLLM())
    if REFINE_STREAMS:
        response = engine.query(QUESTION)
        with pytest.raises(ConnectionResetError):
            "".join(response.response_gen)
    else:  # the query reads the LLM's stream itself: it fails with it
        with pytest.raises(ConnectionResetError):
            engine.query(QUESTION)

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
    # new work, not recorded (made before it, by the query, where CompactAndRefine does not
    # stream: recorded).
    assert [(e.name, e.output) for e in events if e.type.value == "chain"] == [
        ("CompactAndRefine.synthesize", TEXT),
        ("RetrieverQueryEngine.query", TEXT),
    ]
    llm_calls = [e.name for e in events if e.type.value == "llm_invoke"]
    assert llm_calls == ([] if REFINE_STREAMS else ["MockLLM.stream"])
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


async def test_streaming_query_read_in_a_step_started_after_it_nests_its_llm_call_under_synthesize(
    streamed, index
):
    # The step reading the response started after synthesize did, but outside the stream: the
    # LLM call made while it reads belongs to synthesize, in the query's trace.
    response = streaming_engine(index).query(QUESTION)

    class Reader(Workflow):
        @step
        async def read(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="".join(response.response_gen))

    assert await Reader().run() == TEXT

    events = streamed.events
    assert outline([e for e in events if e.trace_id == events[0].trace_id]) == query_tree()
    assert streamed.one(type="llm_invoke").parent_span_id == (
        streamed.one(name="CompactAndRefine.synthesize").span_id
    )


def test_unrelated_work_does_not_look_at_the_responses_waiting_to_be_read(streamed, index):
    # Spans started while responses wait unread (not being read) cost nothing per response.
    held = [streaming_engine(index).query(QUESTION) for _ in range(3)]
    looked = []
    for record in OPEN_SPANS.responses.values():
        source = record.source
        record.source = lambda source=source: looked.append(1) or source()  # type: ignore[method-assign]
    plain = index.as_query_engine(llm=MockLLM(max_tokens=4), similarity_top_k=2)
    assert str(plain.query(QUESTION)) == TEXT
    assert looked == []
    for response in held:
        assert "".join(response.response_gen) == TEXT
    assert len([e for e in streamed.events if e.type.value == "llm_invoke"]) == 4


# -- chat engine writers racing the engine's span exit ------------------------------------------


class FailingChatLLM(MockLLM):
    """A ``MockLLM`` whose chat stream fails before its first token."""

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            raise ConnectionResetError("stream reset by peer")
            yield  # pragma: no cover

        return gen()


def test_chat_writer_finishing_while_the_engine_waits_for_it_ends_the_chat_event(
    streamed, monkeypatch
):
    # Widen the window between the engine's check of its writer and its record's insertion:
    # the writer thread finishes in it, and its exit must still find the record.
    made = handlers._ResponseStream.__init__

    def slow(self: Any) -> None:
        time.sleep(0.3)
        made(self)

    monkeypatch.setattr(handlers._ResponseStream, "__init__", slow)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4))
    response = engine.stream_chat("hello")
    writer = response.write_response_to_history_thread
    assert "".join(response.response_gen) == TEXT
    writer.join()

    event = streamed.one(name="SimpleChatEngine.stream_chat")  # ended without a collection
    assert (event.status.value, event.output) == ("ok", TEXT)
    assert OPEN_SPANS.responses == {}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_chat_writer_failing_before_the_engine_returns_fails_the_chat_event(streamed, monkeypatch):
    # The engine's thread is preempted after starting its writer, which fails at once.
    follow = OPEN_SPANS.await_response

    def late(call: Any, result: Any) -> bool:
        result.write_response_to_history_thread.join()
        return follow(call, result)

    monkeypatch.setattr(OPEN_SPANS, "await_response", late)
    response = SimpleChatEngine.from_defaults(llm=FailingChatLLM()).stream_chat("hello")
    with pytest.raises(ConnectionResetError):
        "".join(response.response_gen)

    event = streamed.one(name="SimpleChatEngine.stream_chat")
    assert (event.status.value, event.error.type) == ("error", "ConnectionResetError")


# -- process exit ---------------------------------------------------------------------------------

EXIT_SCRIPT = """
    import sys
    import sightline
    from sightline.exporters.jsonl import JsonlExporter
    from llama_index.core.llms import MockLLM
    from tests.llamaindex.scripted import build_index

    index = build_index()
    sightline.init(exporters=[JsonlExporter(sys.argv[1])])
    engine = index.as_query_engine(llm=MockLLM(max_tokens=4), similarity_top_k=2, streaming=True)
    response = engine.query("How long do refunds take?")
    if sys.argv[2] == "half-read":
        for token in response.response_gen:
            break
    # the process exits with the response unread (or half-read), still referenced
"""


@pytest.mark.parametrize(("read", "text"), [("unread", None), ("half-read", FIRST)])
def test_streamed_response_left_open_at_exit_is_recorded_as_incomplete(tmp_path, read, text):
    path = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), str(path), read],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "after the client was closed" not in done.stderr
    events = {e["name"]: e for e in map(json.loads, path.read_text().splitlines())}
    for name in ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize"):
        event = events[name]
        assert (event["status"], event["output"], event["metadata"]["incomplete"]) == (
            "ok",
            text,
            True,
        )


@pytest.mark.parametrize("stop", ["close", "drop"])
def test_uninstrument_while_a_response_is_half_read_releases_the_handlers_when_it_stops(
    index, stop
):
    with capture() as cap:
        sightline_llamaindex.instrument(cap.client)
        response = streaming_engine(index).query(QUESTION)
        tokens = response.response_gen
        assert next(tokens) == FIRST
        sightline_llamaindex.uninstrument()
        if stop == "close":
            tokens.close()
        del tokens, response
        gc.collect()
        events = cap.events
    assert [(e.name, e.output) for e in events if e.type.value == "chain"] == [
        ("CompactAndRefine.synthesize", FIRST),
        ("RetrieverQueryEngine.query", FIRST),
    ]
    assert_no_open_spans()
    assert OPEN_SPANS.responses == {}
    root = get_dispatcher()
    assert not any(isinstance(h, SightlineSpanHandler) for h in root.span_handlers)
    assert not any(isinstance(h, SightlineEventHandler) for h in root.event_handlers)
