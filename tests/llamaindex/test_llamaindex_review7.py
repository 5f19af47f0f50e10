"""Review 7: a streamed model failure keeps its kind up the agent; cancelled runs; your own span
inside a tool or step is the parent of LlamaIndex calls made in it; human-in-the-loop waits;
custom stop events; streamed structured predictions; images in messages; tool governance."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    TextBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from pydantic import BaseModel

import sightline
import sightline_llamaindex
from sightline import Decision, ToolDenied
from sightline.event import Event
from sightline.testing import Capture
from tests.llamaindex.events import fields, last_message_to_model, outline
from tests.llamaindex.scripted import (
    CARD,
    MODEL,
    ScriptedLLM,
    answer,
    charging_tool,
    shop,
    tool_call,
    turn_script,
)
from tests.support.governance import count_enforced


def failures(events: list[Event]) -> list[tuple[str, str, str, str]]:
    """``(type, name, error type, error kind)`` of the failed events, in start order."""
    return [
        (e.type.value, e.name, e.error.type, e.error.kind)
        for e in sorted(events, key=lambda e: e.start_ns)
        if e.error is not None
    ]


# -- 1. a streamed LLM failure inside an agent keeps its kind ------------------------------------


class ProviderDown(ConnectionError):
    """What the broken stream raises midway."""


class BrokenStreamLLM(ScriptedLLM):
    """Streams one chunk, then fails."""

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            yield ChatResponse(message=ChatMessage(role="assistant", content="Par"), delta="Par")
            raise ProviderDown("stream reset by provider")

        return chunks()


AGENTS = [
    pytest.param(
        lambda llm: FunctionAgent(name="fragile", description="d", tools=[], llm=llm),
        id="FunctionAgent",
    ),
    pytest.param(lambda llm: ReActAgent(name="fragile", tools=[], llm=llm), id="ReActAgent"),
]


@pytest.mark.parametrize("make_agent", AGENTS)
async def test_a_streamed_llm_failure_fails_the_step_and_the_agent_with_kind_model(
    traced: Capture, make_agent: Any
) -> None:
    agent = make_agent(BrokenStreamLLM(response_generator=lambda m, **k: answer("x")))
    with pytest.raises(ProviderDown):
        await agent.run(user_msg="hello")
    assert failures(traced.events) == [
        ("agent", "fragile", "ProviderDown", "model"),
        ("chain", "run_agent_step", "ProviderDown", "model"),
        ("llm_invoke", "BrokenStreamLLM.astream_chat", "ProviderDown", "model"),
    ]


# -- 2. a run stopped with cancel_run() ----------------------------------------------------------


class Slow(Workflow):
    """Its step signals it started, then takes long."""

    def __init__(self, started: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = started

    @step
    async def work(self, ev: StartEvent) -> StopEvent:
        self.started.set()
        await asyncio.sleep(30)
        return StopEvent(result="done")


async def cancel_when(handler: Any, started: asyncio.Event) -> None:
    from llama_index.core.workflow.errors import WorkflowCancelledByUser

    await started.wait()
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler


CANCELLED_RUN = {"type": "WorkflowCancelledByUser", "message": "workflow cancelled by user",
                 "kind": "orchestration"}  # fmt: skip
CANCELLED_STEP = {"type": "CancelledError", "message": "step cancelled", "kind": "orchestration"}


async def test_a_cancelled_workflow_run_and_its_running_step_end_cancelled(
    traced: Capture,
) -> None:
    started = asyncio.Event()
    await cancel_when(Slow(started).run(), started)

    assert outline(traced.events) == [("chain", "Slow", "error", [("chain", "work", "error", [])])]
    assert fields(traced.one(name="Slow")) == {
        "type": "chain", "name": "Slow", "status": "error", "agent": None, "session_id": None,
        "framework": "llamaindex", "input": {}, "output": None, "model": None, "usage": None,
        "cost_usd": None, "error": CANCELLED_RUN, "metadata": {}, "tags": [],
    }  # fmt: skip
    assert fields(traced.one(name="work")) == {
        "type": "chain", "name": "work", "status": "error", "agent": None, "session_id": None,
        "framework": "llamaindex", "input": None, "output": None, "model": None, "usage": None,
        "cost_usd": None, "error": CANCELLED_STEP, "metadata": {"input_event": "StartEvent"},
        "tags": [],
    }  # fmt: skip


class SlowStreamLLM(ScriptedLLM):
    """Streams one chunk, signals it, then takes long."""

    started: Any = None

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        started = self.started

        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            yield ChatResponse(message=ChatMessage(role="assistant", content="Par"), delta="Par")
            started.set()
            await asyncio.sleep(30)
            yield ChatResponse(message=ChatMessage(role="assistant", content="Part"), delta="t")

        return chunks()


async def test_a_cancelled_agent_run_ends_cancelled_like_the_stream_it_cut(
    traced: Capture,
) -> None:
    started = asyncio.Event()
    llm = SlowStreamLLM(response_generator=lambda m, **k: answer("x"))
    llm.started = started
    agent = FunctionAgent(name="support", description="d", tools=[], llm=llm)
    await cancel_when(agent.run(user_msg="hi"), started)

    assert outline(traced.events) == [
        ("agent", "support", "error", [
            ("chain", "init_run", "ok", []),
            ("chain", "setup_agent", "ok", []),
            ("chain", "run_agent_step", "error", [
                ("llm_invoke", "SlowStreamLLM.astream_chat", "error", []),
            ]),
        ]),
    ]  # fmt: skip
    assert fields(traced.one(type="agent"))["error"] == CANCELLED_RUN
    assert fields(traced.one(name="run_agent_step"))["error"] == CANCELLED_STEP
    cut = traced.one(type="llm_invoke").error
    assert (cut.type, cut.kind) == ("CancelledError", "orchestration")


# -- 3. a LlamaIndex call inside your own span inside a tool or a step ---------------------------


def parent_of(events: list[Event], event: Event) -> str | None:
    by_id = {e.span_id: e for e in events if e.trace_id == event.trace_id}
    parent = by_id.get(event.parent_span_id or "")
    return parent.name if parent is not None else None


async def test_a_call_inside_your_span_inside_a_tool_nests_under_your_span(
    traced: Capture, index: Any
) -> None:
    retriever = index.as_retriever(similarity_top_k=1)

    def search_docs(query: str) -> str:
        """Search the docs."""
        with sightline.trace("rewrite-and-search"):
            return retriever.retrieve(query)[0].get_content()

    agent = FunctionAgent(
        name="support",
        description="d",
        tools=[FunctionTool.from_defaults(search_docs)],
        llm=ScriptedLLM(
            response_generator=turn_script(
                tool_call("c1", "search_docs", query="refunds"), answer("ok")
            )
        ),
    )
    with sightline.trace("request"):  # opened before the run: the run's parent, nothing more
        await agent.run(user_msg="refunds?")

    events = traced.events
    [request] = [e for e in events if e.name == "request"]
    mine, retrieval = traced.one(name="rewrite-and-search"), traced.one(type="retrieval")
    assert parent_of(events, traced.one(type="agent")) == "request"
    assert parent_of(events, mine) == "search_docs"
    assert parent_of(events, retrieval) == "rewrite-and-search"
    assert parent_of(events, traced.one(type="embedding")) == "VectorIndexRetriever.retrieve"
    assert {e.trace_id for e in events} == {request.trace_id}


async def test_a_call_inside_your_span_inside_a_workflow_step_nests_under_your_span(
    traced: Capture, index: Any
) -> None:
    retriever = index.as_retriever(similarity_top_k=1)

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            with sightline.trace("my-block"):
                nodes = await retriever.aretrieve("refunds")
            return StopEvent(result=nodes[0].get_content())

    await Flow().run()
    assert outline(traced.events) == [
        ("chain", "Flow", "ok", [
            ("chain", "work", "ok", [
                ("run", "my-block", "ok", [
                    ("retrieval", "VectorIndexRetriever.aretrieve", "ok", [
                        ("embedding", "MockEmbedding.aget_query_embedding", "ok", []),
                    ]),
                ]),
            ]),
        ]),
    ]  # fmt: skip


# -- 4. human in the loop: a step suspended until an event arrives ------------------------------


async def dangerous_task(ctx: Context) -> str:
    """A dangerous task that needs a human's confirmation."""
    response = await ctx.wait_for_event(
        HumanResponseEvent,
        waiter_id="confirm",
        waiter_event=InputRequiredEvent(prefix="Are you sure?"),
    )
    return "done" if response.response == "yes" else "aborted"


# FunctionTool finds the Context parameter by its annotation: a class, not this module's string.
dangerous_task.__annotations__["ctx"] = Context


async def answer_yes(handler: Any) -> Any:
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.ctx.send_event(HumanResponseEvent(response="yes"))
    return await handler


async def test_a_tool_waiting_for_a_human_is_one_call_after_one_waiting_attempt(
    traced: Capture,
) -> None:
    agent = FunctionAgent(
        name="ops",
        description="d",
        tools=[FunctionTool.from_defaults(async_fn=dangerous_task)],
        llm=ScriptedLLM(
            response_generator=turn_script(tool_call("c1", "dangerous_task"), answer("Done."))
        ),
    )
    assert str(await answer_yes(agent.run(user_msg="do it"))) == "Done."

    waiting, done = sorted(traced.find(type="tool_call"), key=lambda e: e.start_ns)
    common = {
        "type": "tool_call", "name": "dangerous_task", "status": "ok", "agent": "ops",
        "session_id": None, "framework": "llamaindex", "input": {}, "model": None,
        "usage": None, "cost_usd": None, "error": None, "tags": [],
    }  # fmt: skip
    assert fields(waiting) == {
        **common,
        "output": None,
        "metadata": {"tool_call_id": "c1", "waiting": True, "waiting_for": "HumanResponseEvent"},
    }
    assert fields(done) == {
        **common,
        "output": "done",
        "metadata": {"tool_call_id": "c1", "is_error": False},
    }
    run = traced.one(type="agent")
    assert waiting.parent_span_id == done.parent_span_id == run.span_id


class Confirm(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        reply = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ok?")
        )
        return StopEvent(result=reply.response)


async def test_a_step_waiting_for_an_event_is_marked_waiting_then_runs_again(
    traced: Capture,
) -> None:
    assert await answer_yes(Confirm().run()) == "yes"

    assert outline(traced.events) == [
        ("chain", "Confirm", "ok", [("chain", "ask", "ok", []), ("chain", "ask", "ok", [])]),
    ]
    waiting, done = sorted(traced.find(name="ask"), key=lambda e: e.start_ns)
    assert waiting.metadata == {
        "input_event": "StartEvent",
        "waiting": True,
        "waiting_for": "HumanResponseEvent",
    }
    assert done.metadata == {"input_event": "StartEvent", "output_event": "StopEvent"}


# -- 5. a custom stop event is the workflow's result ---------------------------------------------


class Answer(StopEvent):
    answer: str
    confidence: float


class Qa(Workflow):
    @step
    async def solve(self, ev: StartEvent) -> Answer:
        return Answer(answer="42", confidence=0.9)


async def test_a_custom_stop_event_is_recorded_by_its_fields(traced: Capture) -> None:
    result = await Qa().run(question="meaning?")
    assert (result.answer, result.confidence) == ("42", 0.9)
    run = traced.one(name="Qa")
    assert (run.status.value, run.input, run.output) == (
        "ok",
        {"question": "meaning?"},
        {"answer": "42", "confidence": 0.9},
    )


# -- 6. streamed structured predictions ----------------------------------------------------------

TICKET_JSON = '{"category": "refund", "urgent": true}'
TICKET_USAGE = {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}


class Ticket(BaseModel):
    category: str
    urgent: bool


def json_chunks() -> list[ChatResponse]:
    """The ticket's JSON streamed ten characters at a time, the usage in the last chunk."""
    out = []
    for end in range(10, len(TICKET_JSON) + 10, 10):
        text = TICKET_JSON[:end]
        raw = {"usage": TICKET_USAGE} if end >= len(TICKET_JSON) else {}
        out.append(
            ChatResponse(
                message=ChatMessage(role="assistant", content=text),
                delta=TICKET_JSON[end - 10 : end],
                raw=raw,
            )
        )
    return out


class JsonStreamLLM(ScriptedLLM):
    """Streams the ticket's JSON as its answer (sync and async)."""

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        def gen() -> Generator[ChatResponse, None, None]:
            yield from json_chunks()

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for chunk in json_chunks():
                yield chunk

        return gen()


PROMPT = PromptTemplate("Classify: {text}")


def structured_event(name: str) -> dict[str, Any]:
    return {
        "type": "llm_invoke", "name": name, "status": "ok", "agent": None,
        "session_id": None, "framework": "llamaindex",
        "input": {"messages": [{"role": "user", "content": "Classify: late refund"}]},
        "output": {"category": "refund", "urgent": True},
        "model": MODEL,
        "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
        "cost_usd": None, "error": None,
        "metadata": {"tools": ["Ticket"], "output_cls": "Ticket"}, "tags": [],
    }  # fmt: skip


def test_stream_structured_predict_records_its_class_and_final_object(traced: Capture) -> None:
    llm = JsonStreamLLM(response_generator=lambda m, **k: answer("x"))
    parts = list(llm.stream_structured_predict(Ticket, PROMPT, text="late refund"))
    assert parts[-1] == Ticket(category="refund", urgent=True)
    [event] = traced.events
    assert fields(event) == structured_event("JsonStreamLLM.stream_structured_predict")


async def test_astream_structured_predict_records_its_class_and_final_object(
    traced: Capture,
) -> None:
    llm = JsonStreamLLM(response_generator=lambda m, **k: answer("x"))
    stream = await llm.astream_structured_predict(Ticket, PROMPT, text="late refund")
    parts = [part async for part in stream]
    assert parts[-1] == Ticket(category="refund", urgent=True)
    [event] = traced.events
    assert fields(event) == structured_event("JsonStreamLLM.astream_structured_predict")


# -- 7. images in chat messages -----------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG\r\n" + b"0" * 64)


def test_an_image_in_a_message_is_recorded_as_a_placeholder_never_its_data(
    traced: Capture,
) -> None:
    llm = ScriptedLLM(response_generator=lambda m, **k: answer("a cat"))
    llm.chat([ChatMessage(role="user", blocks=[ImageBlock(url="https://example.test/cat.png")])])
    llm.chat(
        [
            ChatMessage(
                role="user",
                blocks=[
                    TextBlock(text="what is this?"),
                    ImageBlock(image=PNG, image_mimetype="image/png"),
                    ImageBlock(url="data:image/jpeg;base64,/9j/4AAQSkZJRg=="),
                ],
            ),
            ChatMessage(role="assistant", content="plain text stays a string"),
        ]
    )
    first, second = sorted(traced.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert first.input == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "url": "https://example.test/cat.png",
                        "mimetype": "image/png",
                    }
                ],
            }
        ]
    }
    assert second.input == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image", "mimetype": "image/png"},
                    {"type": "image", "mimetype": "image/jpeg"},
                ],
            },
            {"role": "assistant", "content": "plain text stays a string"},
        ]
    }
    wire_form = json.dumps([e.to_dict() for e in traced.events])
    assert PNG.decode() not in wire_form and "/9j/4AAQ" not in wire_form


# -- 8. tool governance --------------------------------------------------------------------------


SYNC_AND_ASYNC = [pytest.param(False, id="sync-tool"), pytest.param(True, id="async-tool")]


@pytest.mark.parametrize("use_async", SYNC_AND_ASYNC)
async def test_a_denied_tool_does_not_run_and_fails_its_tool_call_with_kind_guardrail(
    traced: Capture, policy: Any, use_async: bool
) -> None:
    rules = policy(Decision(False, "no charges"))
    tool, ran = charging_tool(use_async)
    agent = shop(tool, "c1", card=CARD, amount=30)
    assert str(await agent.run(user_msg="pay")) == "ok"  # the model is told, and answers

    assert ran == []
    assert rules.asked == [("charge", {"card": CARD, "amount": 30})]
    assert rules.contexts[0]["agent"] == "shop" and rules.contexts[0]["framework"] == "llamaindex"
    call, decision = traced.one(type="tool_call"), traced.one(type="decision")
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    denied = "tool 'charge' denied: no charges"
    assert fields(call) == {
        "type": "tool_call", "name": "charge", "status": "error", "agent": "shop",
        "session_id": None, "framework": "llamaindex",
        "input": {"card": CARD, "amount": 30}, "output": denied,
        "model": None, "usage": None, "cost_usd": None,
        "error": {"type": "ToolDenied", "message": denied, "kind": "guardrail"},
        "metadata": {"tool_call_id": "c1", "is_error": True}, "tags": [],
    }  # fmt: skip
    decided = fields(decision)
    assert decided == {
        # agent: the tool call's, as the policy was told
        "type": "decision", "name": "authorize:charge", "status": "error", "agent": "shop",
        "session_id": None, "framework": "llamaindex",
        "input": {"tool": "charge", "arguments": {"card": CARD, "amount": 30}},
        "output": {"decision": "deny", "reason": "no charges"},
        "model": None, "usage": None, "cost_usd": None,
        "error": {"type": "Error", "message": denied, "kind": "guardrail"},
        "metadata": {"governance": True}, "tags": [],
    }  # fmt: skip
    assert traced.one(type="agent").status.value == "ok"
    assert last_message_to_model(traced) == {
        "role": "tool",
        "content": denied,
        "tool_call_id": "c1",
    }


@pytest.mark.parametrize("use_async", SYNC_AND_ASYNC)
async def test_an_allowed_tool_runs_with_the_arguments_the_policy_returned(
    traced: Capture, policy: Any, use_async: bool
) -> None:
    policy(lambda tool, args: Decision(True, "masked", {**args, "card": "****4242"}))
    tool, ran = charging_tool(use_async)
    await shop(tool, "c1", card=CARD, amount=30).run(user_msg="pay")

    assert ran == [("****4242", 30)]
    call, decision = traced.one(type="tool_call"), traced.one(type="decision")
    assert decision.parent_span_id == call.span_id
    assert (call.status.value, call.input, call.output) == (
        "ok",
        {"card": "****4242", "amount": 30},
        "charged 30",
    )
    assert (decision.status.value, decision.input, decision.output) == (
        "ok",
        {"tool": "charge", "arguments": {"card": "****4242", "amount": 30}},
        {"decision": "allow_redacted", "reason": "masked"},
    )


@pytest.mark.parametrize("use_async", SYNC_AND_ASYNC)
async def test_without_a_policy_a_tool_runs_unchanged_after_one_enforced_check(
    traced: Capture, monkeypatch: pytest.MonkeyPatch, use_async: bool
) -> None:
    from sightline_llamaindex import governance

    checks = count_enforced(monkeypatch, governance)
    tool, ran = charging_tool(use_async)
    await shop(tool, "c1", card=CARD, amount=30).run(user_msg="pay")

    assert ran == [(CARD, 30)]
    assert checks == [traced.client]
    assert traced.find(type="decision") == []
    call = traced.one(type="tool_call")
    assert (call.status.value, call.input, call.output) == (
        "ok",
        {"card": CARD, "amount": 30},
        "charged 30",
    )


def test_a_tool_called_directly_is_denied_with_the_decision_under_its_tool_call(
    traced: Capture, policy: Any
) -> None:
    policy(Decision(False, "no charges"))
    tool, ran = charging_tool(False)
    with pytest.raises(ToolDenied, match="no charges"):
        tool(card=CARD, amount=30)
    assert ran == []
    call, decision = traced.one(type="tool_call"), traced.one(type="decision")
    assert decision.parent_span_id == call.span_id
    assert (call.name, call.error.type, call.error.kind) == ("charge", "ToolDenied", "guardrail")


def test_uninstrument_restores_the_wrapped_methods_and_instrument_wraps_them_again(
    traced: Capture,
) -> None:
    from llama_index.core.tools import QueryEngineTool, RetrieverTool

    from sightline_llamaindex import patches

    wrapped = [
        "Context.wait_for_event", "FunctionTool.acall", "FunctionTool.call",
        "QueryEngineTool.acall", "QueryEngineTool.call", "RetrieverTool.acall",
        "RetrieverTool.call",
    ]  # fmt: skip
    assert patches.patched_methods() == wrapped
    methods = [(cls, name) for cls in (FunctionTool, QueryEngineTool, RetrieverTool)
               for name in ("call", "acall")] + [(Context, "wait_for_event")]  # fmt: skip
    wrappers = {key: key[0].__dict__[key[1]] for key in methods}
    sightline_llamaindex.uninstrument()
    assert patches.patched_methods() == []
    for cls, name in methods:
        assert cls.__dict__[name] is wrappers[(cls, name)].__wrapped__
    sightline_llamaindex.instrument(traced.client)
    assert patches.patched_methods() == wrapped
