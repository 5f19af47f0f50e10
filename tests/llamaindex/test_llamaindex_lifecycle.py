"""The life cycle of recorded work: concurrent streams of one LLM, uninstrument() in the middle
of a run, instrument() after hand-attached handlers left, and the kind and agent of what the
events say (timeouts, denied tools, the agents of an AgentWorkflow)."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import sightline
import sightline_llamaindex
from sightline.governance import Decision
from sightline.testing import capture
from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import assert_no_open_spans, outline
from tests.llamaindex.scripted import (
    ScriptedLLM,
    answer,
    call_script,
    handoff_workflow,
    support_tools,
    tool_call,
    turn_script,
)


def sightline_handlers() -> tuple[list, list]:
    root = get_dispatcher()
    return (
        [h for h in root.span_handlers if isinstance(h, SightlineSpanHandler)],
        [h for h in root.event_handlers if isinstance(h, SightlineEventHandler)],
    )


def echo_llm() -> ScriptedLLM:
    return ScriptedLLM(
        response_generator=lambda messages, **kw: answer(f"re {messages[-1].content}")
    )


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


# -- streams of one LLM object ------------------------------------------------------------------


async def test_concurrent_streams_of_one_llm_are_one_event_each_in_their_own_trace(traced):
    llm = echo_llm()  # one LLM object shared by two requests, as a web server's global LLM

    async def request(question: str, delay: float) -> str:
        with sightline.trace(f"request {question}"):
            await asyncio.sleep(delay)
            text = ""
            async for chunk in await llm.astream_chat(user(question)):
                text += chunk.delta or ""
                await asyncio.sleep(0.01)
            return text

    assert await asyncio.gather(request("A", 0), request("B", 0.005)) == ["re A", "re B"]

    for question in ("A", "B"):
        run = traced.one(name=f"request {question}")
        (llm_call,) = [e for e in traced.events if e.parent_span_id == run.span_id]
        assert (llm_call.type.value, llm_call.name, llm_call.trace_id) == (
            "llm_invoke", "ScriptedLLM.astream_chat", run.trace_id,
        )  # fmt: skip
        assert llm_call.input == {"messages": [{"role": "user", "content": question}]}
        assert llm_call.output == {"role": "assistant", "content": f"re {question}"}
    assert len(traced.find(type="llm_invoke")) == 2


async def test_concurrent_top_level_streams_of_one_llm_are_two_events(traced):
    llm = echo_llm()

    async def request(question: str) -> str:
        text = ""
        async for chunk in await llm.astream_chat(user(question)):
            text += chunk.delta or ""
            await asyncio.sleep(0.01)
        return text

    assert await asyncio.gather(request("A"), request("B")) == ["re A", "re B"]

    calls = traced.find(type="llm_invoke")
    assert sorted(e.output["content"] for e in calls) == ["re A", "re B"]
    assert [e.parent_span_id for e in calls] == [None, None]
    assert calls[0].trace_id != calls[1].trace_id


def test_a_call_made_while_a_stream_is_half_read_is_its_own_event(traced):
    llm = echo_llm()
    stream = llm.stream_chat(user("C"))
    next(stream)
    assert llm.chat(user("D")).message.content == "re D"
    for _ in stream:
        pass

    assert outline(traced.events) == [
        ("llm_invoke", "ScriptedLLM.stream_chat", "ok", []),
        ("llm_invoke", "ScriptedLLM.chat", "ok", []),
    ]
    assert traced.one(name="ScriptedLLM.stream_chat").output["content"] == "re C"
    assert traced.one(name="ScriptedLLM.chat").output["content"] == "re D"


# -- uninstrument() and instrument() ------------------------------------------------------------


async def test_uninstrument_during_a_run_still_finishes_the_spans_open_then():
    gate = asyncio.Event()

    async def slow_tool(q: str) -> str:
        """A tool that waits."""
        await gate.wait()
        return "ok"

    llm = ScriptedLLM(
        response_generator=turn_script(tool_call("c1", "slow_tool", q="x"), answer("done"))
    )
    agent = FunctionAgent(
        name="a", tools=[FunctionTool.from_defaults(async_fn=slow_tool)], llm=llm, streaming=False
    )
    with capture() as cap:
        sightline_llamaindex.instrument(cap.client)
        handler = agent.run(user_msg="hi")
        while not cap.find(name="parse_agent_output"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the tool is waiting
        sightline_llamaindex.uninstrument()
        gate.set()
        assert str(await handler) == "done"

        events = cap.events
    assert_no_open_spans()
    assert sightline_handlers() == ([], [])  # gone once the last open span ended
    # Started before uninstrument(): recorded whole. After: not recorded.
    assert outline(events) == [
        ("agent", "a", "ok", [
            ("chain", "init_run", "ok", []),
            ("chain", "setup_agent", "ok", []),
            ("chain", "run_agent_step", "ok", [
                ("llm_invoke", "ScriptedLLM.achat", "ok", []),
            ]),
            ("chain", "parse_agent_output", "ok", []),
            ("tool_call", "slow_tool", "ok", []),
        ]),
    ]  # fmt: skip
    assert [e.output for e in events if e.type.value in ("agent", "tool_call")] == ["ok", "done"]


async def test_instrument_again_during_the_drain_reuses_the_same_handlers():
    gate = asyncio.Event()

    class Waiting(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            await gate.wait()
            return StopEvent(result="done")

    with capture() as cap:
        for _ in range(3):
            sightline_llamaindex.instrument(cap.client)
            handler = Waiting().run()
            await asyncio.sleep(0.05)
            sightline_llamaindex.uninstrument()
        assert tuple(len(h) for h in sightline_handlers()) == (1, 1)  # draining, not piling up
        sightline_llamaindex.instrument(cap.client)
        assert tuple(len(h) for h in sightline_handlers()) == (1, 1)
        gate.set()
        assert await handler == "done"
        sightline_llamaindex.uninstrument()
        assert [e.name for e in cap.events].count("Waiting") == 3
    assert sightline_handlers() == ([], [])
    assert_no_open_spans()


def test_instrument_adds_its_handlers_once_the_hand_attached_ones_are_gone():
    root = get_dispatcher()
    with capture() as cap:
        by_hand = (SightlineSpanHandler(), SightlineEventHandler())
        root.add_span_handler(by_hand[0])
        root.add_event_handler(by_hand[1])
        try:
            sightline_llamaindex.instrument(cap.client)
            assert tuple(len(h) for h in sightline_handlers()) == (1, 1)  # uses those
        finally:
            root.span_handlers = [h for h in root.span_handlers if h is not by_hand[0]]
            root.event_handlers = [h for h in root.event_handlers if h is not by_hand[1]]
        try:
            sightline_llamaindex.instrument(cap.client)
            assert tuple(len(h) for h in sightline_handlers()) == (1, 1)
            echo_llm().chat(user("hello"))
        finally:
            sightline_llamaindex.uninstrument()
        assert [e.name for e in cap.events] == ["ScriptedLLM.chat"]
    assert sightline_handlers() == ([], [])
    assert_no_open_spans()


# -- error kinds --------------------------------------------------------------------------------


async def test_a_tool_timeout_the_agent_catches_has_kind_timeout(traced):
    def fetch(url: str) -> str:
        """Fetch a page."""
        raise TimeoutError("upstream timed out after 30s")

    llm = ScriptedLLM(response_generator=turn_script(tool_call("c1", "fetch", url="x"), answer()))
    agent = FunctionAgent(name="a", tools=[FunctionTool.from_defaults(fetch)], llm=llm)
    await agent.run(user_msg="go")

    tool = traced.one(type="tool_call")
    assert (tool.status.value, tool.error.type, tool.error.kind) == (
        "error", "TimeoutError", "timeout",
    )  # fmt: skip
    assert traced.one(type="agent").status.value == "ok"


class DenyRefunds:
    @sightline.hookimpl
    def sightline_authorize_tool(self, tool_name, arguments, context):
        return Decision(False, "no refunds today") if tool_name == "refund" else None


async def test_a_guarded_tool_denied_by_governance_has_kind_guardrail(traced):
    def refund(order_id: str) -> str:
        """Refund an order."""
        return "refunded"

    traced.client.plugins.register(DenyRefunds(), "deny-refunds")
    llm = ScriptedLLM(
        response_generator=turn_script(tool_call("c1", "refund", order_id="A-1"), answer())
    )
    tools = [FunctionTool.from_defaults(sightline.guard(refund), name="refund")]
    await FunctionAgent(name="a", tools=tools, llm=llm).run(user_msg="refund A-1")

    tool = traced.one(type="tool_call")
    assert (tool.status.value, tool.error.type, tool.error.kind) == (
        "error", "ToolDenied", "guardrail",
    )  # fmt: skip
    assert traced.one(type="decision").name is not None


class Slow(Workflow):
    @step
    async def think(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(5)
        return StopEvent(result="done")


async def test_a_workflow_timeout_has_kind_timeout(traced):
    with pytest.raises(Exception, match="timed out") as raised:
        await Slow(timeout=0.1).run()
    assert type(raised.value).__name__ == "WorkflowTimeoutError"

    run = traced.one(name="Slow")
    assert (run.status.value, run.error.type, run.error.kind) == (
        "error", "WorkflowTimeoutError", "timeout",
    )  # fmt: skip


# -- agents -------------------------------------------------------------------------------------


async def test_every_event_of_an_agent_workflow_carries_the_agent_that_was_running(traced, index):
    search = support_tools(index, use_async=True)[0]
    workflow = handoff_workflow(
        call_script(tool_call("c1", "search_docs", query="refund"), answer("5 days")), [search]
    )
    assert str(await workflow.run(user_msg="Refund?")) == "5 days"

    ordered = sorted(traced.events, key=lambda e: e.start_ns)
    assert [(e.type.value, e.name, e.agent) for e in ordered] == [
        ("agent", "AgentWorkflow", None),
        ("chain", "init_run", None),
        ("chain", "setup_agent", "triage"),
        ("chain", "run_agent_step", "triage"),
        ("llm_invoke", "ScriptedLLM.astream_chat", "triage"),
        ("chain", "parse_agent_output", "triage"),
        ("tool_call", "handoff", "triage"),
        ("chain", "aggregate_tool_results", "triage"),
        ("chain", "setup_agent", "billing"),
        ("chain", "run_agent_step", "billing"),
        ("llm_invoke", "ScriptedLLM.astream_chat", "billing"),
        ("chain", "parse_agent_output", "billing"),
        ("tool_call", "search_docs", "billing"),
        ("retrieval", "VectorIndexRetriever.aretrieve", "billing"),
        ("embedding", "MockEmbedding.aget_query_embedding", "billing"),
        ("chain", "aggregate_tool_results", "billing"),
        ("chain", "setup_agent", "billing"),
        ("chain", "run_agent_step", "billing"),
        ("llm_invoke", "ScriptedLLM.astream_chat", "billing"),
        ("chain", "parse_agent_output", "billing"),
    ]
    assert OPEN_SPANS.streaming == {}
