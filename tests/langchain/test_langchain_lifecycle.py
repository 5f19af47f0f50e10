"""Runs LangChain leaves unended, values the application changes afterwards, and what a run
hands down to the runs inside it (tags, errors, metadata)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

import sightline
from sightline.testing import Capture, InMemoryExporter
from sightline_langchain import SightlineCallbackHandler
from sightline_langchain import handler as handler_module
from sightline_langchain.handler import _RUNS
from tests.langchain.langchain_scripted import TransientError, chat_model, reply

# -- runs LangChain never ends --------------------------------------------------------------------


@tool
async def slow_lookup(x: int) -> int:
    """A slow API call."""
    await asyncio.sleep(30)
    return x


class SlowRetriever(BaseRetriever):
    """A vector store that answers too late."""

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return []

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        await asyncio.sleep(30)
        return [Document(page_content="late")]


async def _retrieve_then_call(x: int) -> int:
    await SlowRetriever().ainvoke("refunds")
    return await slow_lookup.ainvoke({"x": x})


def test_a_tool_and_retriever_cancelled_mid_await_end_with_their_parent(cap: Capture) -> None:
    # LangChain's BaseTool.arun and BaseRetriever.ainvoke catch Exception only: a cancellation
    # (a timeout, a client gone) sends no end for them, only for the lambda around them.
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                RunnableLambda(_retrieve_then_call, name="pipeline").ainvoke(
                    1, config={"callbacks": [SightlineCallbackHandler()]}
                ),
                0.2,
            )

    asyncio.run(main())
    pipeline = cap.one(name="pipeline")
    retrieval = cap.one(type="retrieval")
    assert (pipeline.type.value, pipeline.status.value, pipeline.error.type) == (
        "chain",
        "error",
        "CancelledError",
    )
    assert (retrieval.name, retrieval.status.value, retrieval.error.type) == (
        "SlowRetriever",
        "error",
        "CancelledError",
    )
    assert retrieval.metadata == {"unfinished": True}
    assert retrieval.parent_span_id == pipeline.span_id
    assert retrieval.end_ns == pipeline.end_ns
    assert cap.find(type="tool_call") == []  # never started: the retriever was still waiting
    assert not _RUNS


def test_a_cancelled_tool_call_ends_with_its_parent(cap: Capture) -> None:
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                RunnableLambda(slow_lookup.ainvoke, name="caller").ainvoke(
                    {"x": 1}, config={"callbacks": [SightlineCallbackHandler()]}
                ),
                0.2,
            )

    asyncio.run(main())
    caller = cap.one(name="caller")
    call = cap.one(type="tool_call")
    assert (call.name, call.input, call.status.value, call.error.type) == (
        "slow_lookup",
        {"x": 1},
        "error",
        "CancelledError",
    )
    assert call.metadata["unfinished"] is True
    assert call.parent_span_id == caller.span_id
    assert not _RUNS


def test_a_run_ended_with_its_parent_is_not_recorded_again_when_its_end_comes_after_all(
    cap: Capture,
) -> None:
    handler = SightlineCallbackHandler()
    parent, child, grandchild = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start(None, {"q": "x"}, run_id=parent, name="outer")
    handler.on_tool_start({"name": "t"}, "1", run_id=child, parent_run_id=parent)
    handler.on_retriever_start({}, "q", run_id=grandchild, parent_run_id=child, name="r")
    handler.on_chain_end({"a": 1}, run_id=parent)
    handler.on_tool_end("late", run_id=child, parent_run_id=parent)
    handler.on_retriever_end([], run_id=grandchild, parent_run_id=child)
    outer, t, r = (cap.one(name=name) for name in ("outer", "t", "r"))
    assert len(cap.events) == 3
    assert (outer.status.value, outer.output, outer.metadata) == ("ok", {"a": 1}, {})
    assert (t.status.value, t.output, t.metadata) == ("ok", None, {"unfinished": True})
    assert (r.status.value, r.metadata, r.parent_span_id) == ("ok", {"unfinished": True}, t.span_id)
    assert not _RUNS


def test_an_evicted_run_is_not_recorded_again_when_it_ends(
    cap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "MAX_OPEN_RUNS", 2)
    handler = SightlineCallbackHandler()
    ids = [uuid.uuid4() for _ in range(3)]
    for number, run_id in enumerate(ids):
        handler.on_chain_start(None, {}, run_id=run_id, name=f"run-{number}")
    for run_id in ids:
        handler.on_chain_end("done", run_id=run_id)
    assert sorted((e.name, e.output, e.metadata.get("unfinished")) for e in cap.events) == [
        ("run-0", None, True),
        ("run-1", "done", None),
        ("run-2", "done", None),
    ]


# -- values changed by the application after the call ---------------------------------------------


@pytest.fixture
def slow_worker() -> Iterator[tuple[sightline.Client, InMemoryExporter]]:
    """A client whose worker runs only when flushed: every record is read after the loop."""
    exporter = InMemoryExporter()
    client = sightline.Client(exporters=[exporter], instrument=False, flush_interval=60)
    try:
        yield client, exporter
    finally:
        client.close()


def _roots(exporter: InMemoryExporter) -> list[Any]:
    return sorted(
        (e for e in exporter.events if e.parent_span_id is None), key=lambda e: e.start_ns
    )


def test_a_history_list_reused_by_a_chat_loop_is_recorded_as_each_turn_saw_it(
    slow_worker: tuple[sightline.Client, InMemoryExporter],
) -> None:
    client, exporter = slow_worker
    handler = SightlineCallbackHandler(client)
    model = GenericFakeChatModel(messages=iter([AIMessage(content=f"a{i}") for i in range(3)]))
    chain = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{q}")])
    chain = chain | model
    history: list[Any] = []
    for question in ("hello", "2+2?", "thanks"):
        answer = chain.invoke({"history": history, "q": question}, config={"callbacks": [handler]})
        history += [HumanMessage(content=question), answer]
    client.flush()
    assert [len(root.input["history"]) for root in _roots(exporter)] == [0, 2, 4]
    assert [root.input["q"] for root in _roots(exporter)] == ["hello", "2+2?", "thanks"]


def test_an_agent_state_reused_between_turns_is_recorded_as_each_turn_saw_it(
    slow_worker: tuple[sightline.Client, InMemoryExporter],
) -> None:
    from langchain.agents import create_agent

    client, exporter = slow_worker
    handler = SightlineCallbackHandler(client)
    agent = create_agent(chat_model(reply("hi!"), reply("4"), reply("bye")), tools=[], name="bot")
    state: dict[str, Any] = {"messages": []}
    for question in ("hello", "2+2?", "thanks"):
        state["messages"].append(HumanMessage(content=question))
        state = agent.invoke(state, config={"callbacks": [handler]})  # a LangGraph state dict
    client.flush()
    roots = _roots(exporter)
    assert [r.name for r in roots] == ["bot", "bot", "bot"]
    assert [len(r.input["messages"]) for r in roots] == [1, 3, 5]
    assert [len(r.output["messages"]) for r in roots] == [2, 4, 6]


# -- what a run hands down ------------------------------------------------------------------------


def test_an_agent_tag_marks_the_run_it_was_given_to_not_the_runs_inside(cap: Capture) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="x")]))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    chain.invoke({"q": "hi"}, config={"callbacks": [SightlineCallbackHandler()], "tags": ["agent"]})
    assert sorted((e.name, e.type.value) for e in cap.events) == [
        ("ChatPromptTemplate", "chain"),
        ("GenericFakeChatModel", "llm_invoke"),
        ("RunnableSequence", "agent"),
        ("StrOutputParser", "chain"),
    ]
    # The tag itself is still on every event: LangChain gave it to all of them.
    assert all(e.tags == ["agent"] for e in cap.events)


class _FailsMidStream(GenericFakeChatModel):
    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="par"))
        raise RuntimeError("provider down")

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="par"))
        raise RuntimeError("provider down")


@pytest.mark.parametrize("path", ["stream", "astream"])
def test_a_model_failing_mid_stream_gives_its_kind_to_the_sequence_and_parser(
    cap: Capture, path: str
) -> None:
    # Streaming, the model's error reaches the sequence through the parser reading the stream.
    model = _FailsMidStream(messages=iter([]))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    config: Any = {"callbacks": [SightlineCallbackHandler()]}

    async def consume() -> None:
        async for _ in chain.astream({"q": "hi"}, config=config):
            pass

    with pytest.raises(RuntimeError, match="provider down"):
        if path == "stream":
            list(chain.stream({"q": "hi"}, config=config))
        else:
            asyncio.run(consume())
    kinds = {e.name: (e.status.value, e.error.kind if e.error else None) for e in cap.events}
    assert kinds == {
        "RunnableSequence": ("error", "model"),
        "ChatPromptTemplate": ("ok", None),
        "_FailsMidStream": ("error", "model"),
        "StrOutputParser": ("error", "model"),
    }


def test_run_metadata_wins_over_an_explicit_handler_joining_the_global_one(
    global_cap: Capture,
) -> None:
    explicit = SightlineCallbackHandler(agent="explicit-bot", session_id="explicit-session")
    model = GenericFakeChatModel(messages=iter([AIMessage(content="x")]), callbacks=[explicit])
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    chain.invoke(
        {"q": "hi"},
        config={"metadata": {"sightline_agent": "researcher", "sightline_session_id": "s-1"}},
    )
    call = global_cap.one(type="llm_invoke")
    assert (call.agent, call.session_id) == ("researcher", "s-1")
    assert len(global_cap.events) == 3  # recorded once, by the global handler


def test_retry_errors_keep_only_their_type_when_content_is_not_captured() -> None:
    from sightline.testing import capture

    prompt = "my card is 4111 1111 1111 1111"
    with capture(capture_content=False) as captured:
        model = chat_model(TransientError(f"rejected: {prompt!r}"), reply("ok"))
        model.invoke(prompt, config={"callbacks": [SightlineCallbackHandler()]})
        event = captured.one(type="llm_invoke")
    assert event.metadata["retries"] == [{"attempt": 1, "slept_s": 0.0, "error": "TransientError"}]
    assert (event.input, event.output) == (None, None)


# -- Sightline spans started inside a LangChain run -----------------------------------------------


@sightline.monitor(name="db_lookup")
def _db_lookup(x: int) -> int:
    with sightline.trace("query"):  # a span inside the monitored function
        return x * 2


@tool
def lookup(x: int) -> int:
    """Look a number up."""
    return _db_lookup(x)


@tool
async def alookup(x: int) -> int:
    """Look a number up, asynchronously."""
    await asyncio.sleep(0)
    return _db_lookup(x)


def test_a_monitored_function_called_by_a_tool_nests_under_its_tool_call(cap: Capture) -> None:
    assert lookup.invoke({"x": 3}, config={"callbacks": [SightlineCallbackHandler()]}) == 6
    call, monitored, query = (
        cap.one(name="lookup"),
        cap.one(name="db_lookup"),
        cap.one(name="query"),
    )
    assert call.parent_span_id is None
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)
    assert (query.trace_id, query.parent_span_id) == (call.trace_id, monitored.span_id)
    assert (monitored.input, monitored.output) == ({"x": 3}, 6)


def test_inside_an_outer_trace_the_tool_call_is_still_the_nearest_parent(cap: Capture) -> None:
    with sightline.trace("request", agent="support", session_id="s-9") as request:
        lookup.invoke({"x": 3}, config={"callbacks": [SightlineCallbackHandler()]})
    call, monitored = cap.one(name="lookup"), cap.one(name="db_lookup")
    assert (call.trace_id, call.parent_span_id) == (request.trace_id, request.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (request.trace_id, call.span_id)
    assert (monitored.agent, monitored.session_id) == ("support", "s-9")  # from the ambient span
    cap.clear()
    with sightline.trace("after"):  # no LangChain run any more: the ambient span is the parent
        _db_lookup(1)
    after, monitored = cap.one(name="after"), cap.one(name="db_lookup")
    assert monitored.parent_span_id == after.span_id


def test_a_trace_opened_in_a_lambda_nests_under_the_chain_and_an_async_tool_too(
    cap: Capture,
) -> None:
    def step(x: int) -> int:
        with sightline.trace("inner"):
            return x + 1

    handler = SightlineCallbackHandler()
    RunnableLambda(step, name="step").invoke(1, config={"callbacks": [handler]})
    chain, inner = cap.one(name="step"), cap.one(name="inner")
    assert (inner.trace_id, inner.parent_span_id) == (chain.trace_id, chain.span_id)
    assert inner.type.value == "run"
    cap.clear()

    async def main() -> int:
        return await alookup.ainvoke({"x": 2}, config={"callbacks": [handler]})

    assert asyncio.run(main()) == 4
    call, monitored = cap.one(name="alookup"), cap.one(name="db_lookup")
    assert (monitored.trace_id, monitored.parent_span_id) == (call.trace_id, call.span_id)


def test_monitored_code_in_a_graph_node_nests_under_the_node(cap: Capture) -> None:
    from typing import TypedDict

    from langgraph.graph import StateGraph

    class State(TypedDict):
        x: int

    def double(state: State) -> State:
        return {"x": _db_lookup(state["x"])}

    graph = StateGraph(State)
    graph.add_node("double", double)
    graph.set_entry_point("double")
    graph.set_finish_point("double")
    result = graph.compile().invoke({"x": 5}, config={"callbacks": [SightlineCallbackHandler()]})
    assert result == {"x": 10}
    node, monitored = cap.one(name="double"), cap.one(name="db_lookup")
    assert node.type.value == "agent"
    assert (monitored.trace_id, monitored.parent_span_id) == (node.trace_id, node.span_id)


def test_a_root_runs_trace_id_is_its_run_id_and_each_span_id_its_run_ids_low_half(
    cap: Capture,
) -> None:
    run_id = uuid.uuid4()
    lookup.invoke({"x": 1}, config={"callbacks": [SightlineCallbackHandler()], "run_id": run_id})
    call = cap.one(name="lookup")
    assert (call.trace_id, call.span_id) == (run_id.hex, run_id.hex[16:])


class _DenyRefunds:
    """A governance plugin denying the guarded ``_issue_refund`` (and allowing the LangChain tool
    around it, which the handler asks about too), remembering the context it was given."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    @sightline.hookimpl
    def sightline_authorize_tool(
        self, tool_name: str, arguments: dict[str, Any], context: dict[str, Any]
    ) -> Any:
        if tool_name != "_issue_refund":
            return None
        self.contexts.append(dict(context))
        return sightline.Decision(False, "refunds need a human")


@sightline.guard
def _issue_refund(order: str) -> str:
    raise AssertionError("denied calls never run")


@tool
def refund(order: str) -> str:
    """Refund an order."""
    try:
        return _issue_refund(order)
    except sightline.ToolDenied as denied:
        return f"denied: {denied}"


def test_a_guard_inside_a_tool_asks_with_and_records_under_the_tool_call(cap: Capture) -> None:
    policy = _DenyRefunds()
    cap.client.plugins.register(policy, "deny-refunds")
    try:
        with sightline.trace("request") as request:
            out = refund.invoke(
                {"order": "A-1"}, config={"callbacks": [SightlineCallbackHandler()]}
            )
    finally:
        cap.client.plugins.unregister("deny-refunds")
    assert out.startswith("denied:")
    call, decision = cap.one(name="refund"), cap.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (request.trace_id, call.span_id)
    assert [(c["trace_id"], c["span_id"]) for c in policy.contexts] == [
        (request.trace_id, call.span_id)
    ]


def test_a_span_of_another_client_does_not_nest_under_a_run_it_never_receives(
    cap: Capture,
) -> None:
    exporter = InMemoryExporter()
    other = sightline.Client(exporters=[exporter], instrument=False)
    try:
        lookup.invoke({"x": 1}, config={"callbacks": [SightlineCallbackHandler(other)]})
        other.flush()
    finally:
        other.close()
    [call] = exporter.events
    monitored = cap.one(name="db_lookup")  # the global client's
    assert call.name == "lookup"
    assert monitored.parent_span_id is None and monitored.trace_id != call.trace_id


def test_a_long_list_in_the_input_is_copied_only_as_far_as_it_is_recorded(
    slow_worker: tuple[sightline.Client, InMemoryExporter],
) -> None:
    client, exporter = slow_worker
    numbers = list(range(10_000))
    step = RunnableLambda(lambda inputs: len(inputs["numbers"]), name="count")
    assert (
        step.invoke({"numbers": numbers}, config={"callbacks": [SightlineCallbackHandler(client)]})
        == 10_000
    )
    numbers.clear()  # after the call: not what was recorded
    client.flush()
    [count] = exporter.events
    recorded = count.input["numbers"]
    assert recorded[:2] == [0, 1] and len(recorded) == 500
    assert recorded[-1] == "…[truncated] 9501 more items"
