"""A model stopped inside a chain's stream keeps what it streamed, a retry records its own wait,
a refused call recorded to another client than its agent's stays in one trace with its decision,
the handler given to a run lends it its settings, one unreadable metadata value loses one field,
and instrument() without a client says when nothing records: on the real frameworks, offline."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_incrementing

import sightline
import sightline_langchain
from sightline import ToolDenied
from sightline.testing import Capture, InMemoryExporter, capture
from sightline_langchain import SightlineCallbackHandler, instrumentation
from sightline_langchain.handler import _RUNS
from tests.langchain.langchain_events import only, tree, wire
from tests.langchain.langchain_refunds import RAN, refund_agent, refund_limit
from tests.langchain.langchain_scripted import ScriptedChatModel, TransientError, chat_model, reply
from tests.support.governance import policies


def words_chain(*, model_callbacks: list[Any] | None = None) -> Any:
    """``prompt | model | parser``, the model answering "one two three four" (usage 3 + 4)."""
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    model = chat_model(
        reply("one two three four", input_tokens=3, output_tokens=4), callbacks=model_callbacks
    )
    return prompt | model | StrOutputParser()


def model_event_fields(event: Any) -> dict[str, Any]:
    """The model event's wire form, its time to first token checked and dropped."""
    data = wire(event)
    assert data["metadata"].pop("ttft_ms") >= 0
    return data


STOPPED_MODEL = {
    "type": "llm_invoke", "name": "ScriptedChatModel", "status": "ok", "agent": None,
    "session_id": None, "framework": "langchain", "input": [{"role": "user", "content": "x"}],
    "output": {"role": "assistant", "content": "one two"}, "model": "scripted-1",
    "usage": None, "cost_usd": None, "error": None,
    "metadata": {"provider": "scripted", "unfinished": True, "streamed_tokens": 2},
    "tags": [],
}  # fmt: skip


# -- 1. a model inside a chain's stream stopped early keeps the text it streamed ------------------


def test_a_model_in_a_chain_stream_stopped_early_keeps_the_text_it_streamed(
    cap: Capture,
) -> None:
    stream = words_chain().stream({"q": "x"}, config={"callbacks": [SightlineCallbackHandler()]})
    for number, _ in enumerate(stream):
        if number == 1:
            break
    stream.close()  # LangChain ends the sequence first, then sends the model's full end
    assert tree(cap) == [
        (0, "chain", "RunnableSequence", "ok"),
        (1, "chain", "ChatPromptTemplate", "ok"),
        (1, "llm_invoke", "ScriptedChatModel", "ok"),
        (1, "chain", "StrOutputParser", "ok"),
    ]
    model = cap.one(type="llm_invoke")
    assert model_event_fields(model) == STOPPED_MODEL


def test_a_model_in_a_chain_astream_closed_early_keeps_the_text_it_streamed(
    cap: Capture,
) -> None:
    async def read_two_then_close() -> None:
        stream = words_chain().astream(
            {"q": "x"}, config={"callbacks": [SightlineCallbackHandler()]}
        )
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                break
        await stream.aclose()

    asyncio.run(read_two_then_close())
    model = cap.one(type="llm_invoke")
    assert model_event_fields(model) == STOPPED_MODEL


def _start_chain_then_model(
    handler: SightlineCallbackHandler, *, chat: bool
) -> tuple[uuid.UUID, uuid.UUID]:
    chain_id, model_id = uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start({"name": "outer"}, {"q": "x"}, run_id=chain_id)
    if chat:
        handler.on_chat_model_start(
            {"name": "Chat"}, [[("user", "x")]], run_id=model_id, parent_run_id=chain_id
        )
    else:
        handler.on_llm_start({"name": "Text"}, ["x"], run_id=model_id, parent_run_id=chain_id)
    return chain_id, model_id


def test_a_text_model_ended_with_its_chain_keeps_its_streamed_text_as_text(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    chain_id, model_id = _start_chain_then_model(handler, chat=False)
    for token in ("Par", "is", ""):
        handler.on_llm_new_token(token, run_id=model_id)
    handler.on_chain_end("Paris", run_id=chain_id)
    model = cap.one(type="llm_invoke")
    assert (model.input, model.output, model.usage) == ("x", "Paris", None)
    assert (model.metadata["unfinished"], model.metadata["streamed_tokens"]) == (True, 2)


def test_text_streamed_through_stream_events_v3_is_kept_once(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    chain_id, model_id = _start_chain_then_model(handler, chat=True)
    for text in ("one", " two"):
        # stream_events(v3) reports each piece twice: as a token and as a content delta.
        handler.on_llm_new_token(text, run_id=model_id)
        delta = {"event": "content-block-delta", "delta": {"type": "text-delta", "text": text}}
        handler.on_stream_event(delta, run_id=model_id)
    deltas_only = uuid.uuid4()
    handler.on_chat_model_start(
        {"name": "Native"}, [[("user", "x")]], run_id=deltas_only, parent_run_id=chain_id
    )
    for text in ("a", "b"):
        delta = {"event": "content-block-delta", "delta": {"type": "text-delta", "text": text}}
        handler.on_stream_event(delta, run_id=deltas_only)
    handler.on_chain_end("one two", run_id=chain_id)
    outputs = {e.name: e.output for e in cap.find(type="llm_invoke")}
    assert outputs == {
        "Chat": {"role": "assistant", "content": "one two"},
        "Native": {"role": "assistant", "content": "ab"},
    }


def test_the_streamed_text_kept_is_bounded_by_the_clients_max_string() -> None:
    with capture(max_string=16) as captured:
        handler = SightlineCallbackHandler()
        chain_id, model_id = _start_chain_then_model(handler, chat=True)
        for _ in range(30):
            handler.on_llm_new_token("0123456789", run_id=model_id)
        captured.client.flush(10.0)
        kept = _RUNS[model_id.int].stream
        assert kept is not None
        assert ("".join(kept.text), kept.room) == ("0123456789012345" + "6", 0)
        handler.on_chain_end("x", run_id=chain_id)
        model = captured.one(type="llm_invoke")
    assert model.output == {"role": "assistant", "content": "0123456789012345…[truncated]"}
    assert model.metadata["streamed_tokens"] == 30


# -- 2. a retry records the wait of that retry, not the total so far -----------------------------


class BackingOffChatModel(ScriptedChatModel):
    """Retries TransientError waiting 1 s, then 2 s (not slept: the test does not wait)."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        def before_sleep(state: RetryCallState) -> None:
            if run_manager is not None:
                run_manager.on_retry(state)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            wait=wait_incrementing(start=1, increment=1),
            sleep=lambda seconds: None,
            before_sleep=before_sleep,
            reraise=True,
        )

        def attempt() -> AIMessage:
            item = next(self.messages)
            if isinstance(item, BaseException):
                raise item
            return item

        return ChatResult(generations=[ChatGeneration(message=retrying(attempt))])


def test_each_retry_records_the_wait_before_the_next_attempt_not_the_total(
    cap: Capture,
) -> None:
    model = BackingOffChatModel(
        messages=iter([TransientError("429"), TransientError("503"), reply("ok")])
    )
    assert model.invoke("hi", config={"callbacks": [SightlineCallbackHandler()]}).content == "ok"
    event = only(cap.events)
    assert event.metadata["retries"] == [
        {"attempt": 1, "slept_s": 1.0, "error": "TransientError: 429"},
        {"attempt": 2, "slept_s": 2.0, "error": "TransientError: 503"},  # 3.0 in all
    ]


# -- 3. a refused call recorded to the global client, its agent to another ---------------------


@pytest.fixture
def two_clients(global_cap: Capture) -> Iterator[tuple[Capture, sightline.Client, Any]]:
    """The global client, instrumented, with the refund limit as its policy; another client
    for an explicit handler (the README's governance setup with two clients); the policy."""
    RAN.clear()
    other = sightline.Client(exporters=[InMemoryExporter()], instrument=False)
    try:
        with policies(global_cap.client) as install_policy:
            yield global_cap, other, install_policy(refund_limit)
    finally:
        other.close()


def test_a_refused_call_recorded_to_another_client_than_its_agent_stays_with_its_decision(
    two_clients: tuple[Capture, sightline.Client, Any],
) -> None:
    global_cap, other, policy = two_clients
    handler = SightlineCallbackHandler(other, agent="explicit")
    with pytest.raises(ToolDenied):
        refund_agent().invoke({"messages": [("user", "refund A-1")]}, {"callbacks": [handler]})
    assert RAN == []
    # The agent, recorded to the other client.
    other.flush(10.0)
    [exporter] = other.exporters
    assert sorted((e.type.value, e.name) for e in exporter.events) == [
        ("agent", "model"),
        ("agent", "support"),
        ("agent", "tools"),
        ("llm_invoke", "ScriptedChatModel"),
    ]
    agent_trace = {e.trace_id for e in exporter.events}
    # The refused call, recorded to the global client: a trace of its own, the decision in it.
    call = global_cap.one(type="tool_call")
    decision = global_cap.one(type="decision")
    assert len(global_cap.events) == 2
    assert (call.name, call.status.value, call.error.kind) == ("refund", "error", "guardrail")
    assert call.parent_span_id is None
    assert call.trace_id not in agent_trace
    assert (decision.trace_id, decision.parent_span_id) == (call.trace_id, call.span_id)
    [context] = policy.contexts
    assert (context["trace_id"], context["span_id"]) == (call.trace_id, call.span_id)


# -- 4. the handler given to a run lends it its settings -----------------------------------------


def test_a_handler_given_to_a_model_lends_it_its_settings_inside_an_explicit_handlers_chain(
    cap: Capture,
) -> None:
    chain_handler = SightlineCallbackHandler(agent="chain-bot", tags=["chain"])
    model_handler = SightlineCallbackHandler(agent="model-bot", session_id="m-1", tags=["model"])
    words_chain(model_callbacks=[model_handler]).invoke(
        {"q": "x"}, config={"callbacks": [chain_handler]}
    )
    settings = {(e.name, e.agent, e.session_id, tuple(e.tags)) for e in cap.events}
    assert settings == {
        ("RunnableSequence", "chain-bot", None, ("chain",)),
        ("ChatPromptTemplate", "chain-bot", None, ("chain",)),
        ("ScriptedChatModel", "model-bot", "m-1", ("chain", "model")),
        ("StrOutputParser", "chain-bot", None, ("chain",)),
    }
    assert len(cap.events) == 4  # recorded once, by the chain's handler


def test_two_handlers_given_to_the_same_call_record_with_the_first_ones_settings(
    cap: Capture,
) -> None:
    first = SightlineCallbackHandler(agent="first", session_id="s-1")
    second = SightlineCallbackHandler(agent="second", session_id="s-2")
    words_chain().invoke({"q": "x"}, config={"callbacks": [first, second]})
    assert {(e.agent, e.session_id) for e in cap.events} == {("first", "s-1")}
    assert len(cap.events) == 4


def test_run_metadata_wins_over_the_handler_given_to_the_model(cap: Capture) -> None:
    model_handler = SightlineCallbackHandler(agent="model-bot", session_id="m-1")
    words_chain(model_callbacks=[model_handler]).invoke(
        {"q": "x"},
        config={
            "callbacks": [SightlineCallbackHandler(agent="chain-bot")],
            "metadata": {"sightline_agent": "researcher", "sightline_session_id": "s-1"},
        },
    )
    model = cap.one(type="llm_invoke")
    assert (model.agent, model.session_id) == ("researcher", "s-1")


# -- 5. a metadata value that cannot be read loses that field alone ------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "<Unprintable>"


def test_a_session_id_that_cannot_be_made_text_loses_the_session_not_the_run(
    cap: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sightline"):
        out = RunnableLambda(lambda x: x + 1).invoke(
            1,
            config={
                "callbacks": [SightlineCallbackHandler()],
                "run_name": "step",
                "metadata": {
                    "sightline_session_id": Unprintable(),
                    "sightline_agent": "billing",
                    "sightline_tags": ["vip"],
                    "order": "A-1",
                    7: "a key that is not a string",
                },
            },
        )
    assert out == 2
    assert wire(only(cap.events)) == {
        "type": "chain", "name": "step", "status": "ok", "agent": "billing", "session_id": None,
        "framework": "langchain", "input": 1, "output": 2, "model": None, "usage": None,
        "cost_usd": None, "error": None,
        "metadata": {"order": "A-1", "7": "a key that is not a string"}, "tags": ["vip"],
    }  # fmt: skip
    assert "metadata['sightline_session_id']" in caplog.text


# -- 6. instrument() without a client while the global client records nothing ------------------


@pytest.fixture
def warn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instrumentation, "_warned_disabled", False, raising=False)


def test_instrument_without_a_client_before_init_warns_once_that_nothing_records(
    warn_again: None, caplog: pytest.LogCaptureFixture
) -> None:
    from sightline.client import set_client

    previous = set_client(None)  # sightline.init() not called: the global client is disabled
    try:
        with caplog.at_level(logging.WARNING, logger="sightline"):
            sightline_langchain.instrument()
            sightline_langchain.instrument()
    finally:
        sightline_langchain.uninstrument()
        set_client(previous)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "records nothing until sightline.init()" in warnings[0]


def test_instrument_with_a_client_or_after_init_does_not_warn(
    cap: Capture, warn_again: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sightline"):
        sightline_langchain.instrument()  # the global client records (cap installed it)
        sightline_langchain.uninstrument()
        with sightline.Client(enabled=False) as disabled:
            sightline_langchain.instrument(disabled)  # a client given: the caller's choice
            sightline_langchain.uninstrument()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_with_fallbacks_in_a_sequence_reports_its_models_beside_it_under_the_global_handler(
    global_cap: Capture,
) -> None:
    # The README's limit, which holds under any handler: LangChain hands the models the
    # sequence's config, so they are the sequence's children, siblings of the fallbacks run.
    model = chat_model(ConnectionError("down")).with_fallbacks([chat_model(reply("ok"))])
    (ChatPromptTemplate.from_messages([("human", "{q}")]) | model).invoke({"q": "x"})
    assert tree(global_cap) == [
        (0, "chain", "RunnableSequence", "ok"),
        (1, "chain", "ChatPromptTemplate", "ok"),
        (1, "chain", "RunnableWithFallbacks", "ok"),
        (1, "llm_invoke", "ScriptedChatModel", "error"),
        (1, "llm_invoke", "ScriptedChatModel", "ok"),
    ]


def test_a_single_tag_given_as_a_string_is_one_tag():
    assert SightlineCallbackHandler(tags="prod").tags == ["prod"]
    assert SightlineCallbackHandler(tags=("prod", "eu")).tags == ["prod", "eu"]


def test_runs_evicted_past_the_open_bound_are_recorded_once_when_their_ends_come(
    cap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As many runs as can be open are remembered once ended early, so that their late ends are
    # ignored (1,024 were, of the 10,000 that can be open: 976 runs of a reviewer's 12,000 were
    # recorded twice).
    from langchain_core.callbacks.manager import CallbackManager

    from sightline_langchain import handler as handler_module

    monkeypatch.setattr(handler_module, "MAX_OPEN_RUNS", 40)
    monkeypatch.setattr(handler_module, "_MAX_CLOSED", 8)
    manager = CallbackManager(handlers=[SightlineCallbackHandler()])
    started = [
        manager.on_chain_start({"name": "open"}, {"i": i}, run_id=uuid.uuid4()) for i in range(70)
    ]
    cap.client.flush()
    for run in started:
        run.on_chain_end({"out": 1})
    cap.client.flush()

    events = cap.find(type="chain")
    assert len(events) == 70  # one event per run, none for a late end
    assert len({event.span_id for event in events}) == 70
    unfinished = [event for event in events if event.metadata.get("unfinished")]
    assert len(unfinished) == 30  # evicted past the bound of 40 open runs
    assert all(event.output is None for event in unfinished)
