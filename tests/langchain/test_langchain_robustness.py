"""The handler never raises into LangChain, never blocks, and records odd input as well as it can."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableLambda

import sightline
from sightline.testing import Capture, InMemoryExporter
from sightline_langchain import SightlineCallbackHandler
from sightline_langchain import handler as handler_module
from tests.langchain.langchain_events import only, wire
from tests.langchain.langchain_scripted import chat_model, reply


class Opaque:
    """Neither JSON nor a message."""

    def __repr__(self) -> str:
        return "<Opaque>"


def test_malformed_messages_are_recorded_as_well_as_possible(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    run_id = uuid.uuid4()
    messages: list[Any] = [
        HumanMessage(content=[{"type": "text", "text": "hi"}, {"type": "image", "url": "x"}]),
        ("user", "tuple form"),
        {"role": "assistant", "content": "dict form"},
        "bare string",
        Opaque(),
    ]
    handler.on_chat_model_start({"name": "Odd"}, [messages], run_id=run_id)
    broken = AIMessage.model_construct(content=[Opaque()])  # what validation would refuse
    response = LLMResult.model_construct(
        generations=[[ChatGeneration.model_construct(message=broken)]]
    )
    handler.on_llm_end(response, run_id=run_id)
    event = only(cap.events)
    assert (event.name, event.status.value) == ("Odd", "ok")
    assert event.input == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image", "url": "x"}],
        },
        {"role": "user", "content": "tuple form"},
        {"role": "assistant", "content": "dict form"},
        {"role": "user", "content": "bare string"},
        {"role": "unknown", "content": "<Opaque>"},
    ]
    assert event.output == {"role": "assistant", "content": ["<Opaque>"]}


def test_an_end_for_an_unknown_run_is_recorded_as_an_unmatched_event(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    handler.on_tool_end("42", run_id=uuid.uuid4(), name="add")
    handler.on_llm_error(RuntimeError("boom"), run_id=uuid.uuid4())
    handler.on_chain_end({"x": 1}, run_id=uuid.uuid4())
    tool = cap.one(type="tool_call")
    llm = cap.one(type="llm_invoke")
    chain = cap.one(type="chain")
    assert wire(tool) == {
        "type": "tool_call", "name": "add", "status": "ok", "agent": None, "session_id": None,
        "framework": "langchain", "input": None, "output": "42", "model": None, "usage": None,
        "cost_usd": None, "error": None, "metadata": {"unmatched_run": True}, "tags": [],
    }  # fmt: skip
    assert (llm.name, llm.status.value, llm.error.kind) == ("llm", "error", "model")
    assert (chain.name, chain.output) == ("chain", {"x": 1})
    assert all(e.parent_span_id is None for e in cap.events)


def test_an_unknown_run_under_a_known_parent_keeps_its_parent(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    parent = uuid.uuid4()
    handler.on_chain_start(None, {"q": 1}, run_id=parent, name="outer")
    handler.on_retriever_end([], run_id=uuid.uuid4(), parent_run_id=parent)
    handler.on_chain_end("done", run_id=parent)
    outer = cap.one(type="chain", name="outer")
    assert cap.one(type="retrieval").parent_span_id == outer.span_id


def test_token_retry_and_custom_callbacks_for_unknown_runs_do_nothing_harmful(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    handler.on_llm_new_token("x", run_id=uuid.uuid4())
    handler.on_stream_event({"event": "content-block-delta"}, run_id=uuid.uuid4())
    handler.on_retry(object(), run_id=uuid.uuid4())
    handler.on_custom_event("orphan", {"a": 1}, run_id=uuid.uuid4())
    assert [(e.type.value, e.name, e.parent_span_id) for e in cap.events] == [
        ("custom", "orphan", None)
    ]


def test_garbage_arguments_never_raise(cap: Capture, caplog: pytest.LogCaptureFixture) -> None:
    handler = SightlineCallbackHandler()
    garbage: Any = object()
    run_id = uuid.uuid4()
    with caplog.at_level(logging.DEBUG, logger="sightline"):
        handler.on_chat_model_start(garbage, garbage, run_id=run_id, metadata=garbage, tags=garbage)
        handler.on_llm_new_token(garbage, run_id=run_id, chunk=garbage)
        handler.on_llm_end(garbage, run_id=run_id)
        handler.on_tool_start(garbage, garbage, run_id=run_id, inputs=garbage)
        handler.on_tool_end(garbage, run_id=run_id)
        handler.on_retriever_start(garbage, garbage, run_id=run_id)
        handler.on_retriever_end(garbage, run_id=run_id)
        handler.on_chain_start(garbage, garbage, run_id=run_id, metadata={"sightline_tags": 5})
        handler.on_chain_error(garbage, run_id=run_id)
        handler.on_retry(garbage, run_id=run_id)
        handler.on_custom_event(garbage, garbage, run_id=garbage)
        handler.on_agent_action(garbage, run_id=run_id)
    assert cap.events  # whatever could be read was recorded; nothing raised


def test_a_failing_client_is_logged_and_never_reaches_langchain(
    cap: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenClient:
        def defer(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("client is broken")

    handler = SightlineCallbackHandler(BrokenClient())  # type: ignore[arg-type]
    handler_module._failed_callbacks.clear()
    with caplog.at_level(logging.WARNING, logger="sightline"):
        result = RunnableLambda(lambda x: x + 1).invoke(1, config={"callbacks": [handler]})
    assert result == 2
    assert "on_chain_start failed" in caplog.text
    assert cap.events == []


def test_a_disabled_client_records_nothing_and_costs_no_errors(cap: Capture) -> None:
    handler = SightlineCallbackHandler(sightline.Client(enabled=False))
    model = chat_model(reply("ok"))
    chain = RunnableLambda(lambda x: x) | model
    assert chain.invoke("hi", config={"callbacks": [handler]}).content == "ok"
    assert cap.events == []
    assert not handler_module._RUNS


def test_without_init_the_handler_records_nothing() -> None:
    from sightline.client import set_client

    previous = set_client(None)
    try:
        out = chat_model(reply("ok")).invoke(
            "hi", config={"callbacks": [SightlineCallbackHandler()]}
        )
    finally:
        set_client(previous)
    assert out.content == "ok"
    assert not handler_module._RUNS


def test_runs_that_never_end_are_evicted_and_marked_unfinished(
    cap: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "MAX_OPEN_RUNS", 3)
    handler = SightlineCallbackHandler()
    ids = [uuid.uuid4() for _ in range(5)]
    for number, run_id in enumerate(ids):
        handler.on_chain_start(None, {}, run_id=run_id, name=f"abandoned-{number}")
    cap.client.flush()  # runs are opened on the worker
    assert len(handler_module._RUNS) == 3
    assert [(e.name, e.metadata) for e in cap.events] == [
        ("abandoned-0", {"unfinished": True}),
        ("abandoned-1", {"unfinished": True}),
    ]
    for run_id in ids[2:]:
        handler.on_chain_end(None, run_id=run_id)


def test_the_same_handler_listed_twice_records_each_run_once(cap: Capture) -> None:
    handler = SightlineCallbackHandler()
    chain = RunnableLambda(lambda x: x) | chat_model(reply("ok"))
    chain.invoke("hi", config={"callbacks": [handler, handler]})
    assert sorted((e.type.value, e.name) for e in cap.events) == [
        ("chain", "RunnableLambda"),
        ("chain", "RunnableSequence"),
        ("llm_invoke", "ScriptedChatModel"),
    ]


# -- deferral: the callbacks queue, the worker records --------------------------------------


def test_times_are_those_of_the_callbacks_not_of_the_worker(cap: Capture) -> None:
    chain = RunnableLambda(lambda x: x) | chat_model(reply("ok"))
    before = time.time_ns()
    chain.invoke("hi", config={"callbacks": [SightlineCallbackHandler()]})
    after = time.time_ns()
    time.sleep(0.2)  # the worker (flush interval 50 ms) records well after the run ended
    events = cap.events
    assert len(events) == 3
    for event in events:
        assert event.end_ns is not None
        assert before <= event.start_ns <= event.end_ns <= after


def test_an_input_the_application_changes_afterwards_is_recorded_as_it_was(cap: Capture) -> None:
    chain = RunnableLambda(lambda x: x["question"]) | chat_model(reply("ok"))
    question = {"question": "first"}
    chain.invoke(question, config={"callbacks": [SightlineCallbackHandler()]})
    question["question"] = "second"  # before the worker has recorded the run
    root = next(e for e in cap.events if e.name == "RunnableSequence")
    assert root.input == {"question": "first"}


def test_a_model_reply_changed_after_the_call_is_recorded_as_the_model_gave_it(
    cap: Capture,
) -> None:
    handler = SightlineCallbackHandler()
    run_id = uuid.uuid4()
    message = AIMessage(content="answer")
    handler.on_chat_model_start({"name": "Model"}, [[HumanMessage(content="q")]], run_id=run_id)
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=run_id)
    message.name = "support"  # create_agent names the reply once the model returned it
    message.content = "changed"
    assert only(cap.events).output == {"role": "assistant", "content": "answer"}


def test_a_failure_on_the_worker_is_logged_and_never_reaches_langchain(
    cap: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    class FailingClient(sightline.Client):
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("cannot start spans")

    client = FailingClient(exporters=[exporter := InMemoryExporter()], flush_interval=0.05)
    handler_module._failed_callbacks.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="sightline"):
            result = RunnableLambda(lambda x: x + 1).invoke(
                1, config={"callbacks": [SightlineCallbackHandler(client)]}
            )
            client.flush()
        assert result == 2
        assert "on_chain_start failed" in caplog.text  # logged by the worker's replay
        assert exporter.events == []
        assert client.stats()["dropped"] == 0
    finally:
        client.close()


def test_queued_callbacks_keep_no_run_ids_or_positional_tags_alive() -> None:
    """Records waiting for the worker hold what it needs and nothing more: LangChain's run-id
    objects and a lone positional tag are not kept alive by them, and the tree is still right."""
    import gc
    import weakref

    from langchain_core.callbacks import BaseCallbackHandler

    run_ids: list[weakref.ref[Any]] = []
    tag_lists: list[list[str]] = []

    class Watcher(BaseCallbackHandler):
        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            run_ids.append(weakref.ref(kwargs["run_id"]))
            if kwargs.get("tags"):
                tag_lists.append(kwargs["tags"])

    exporter = InMemoryExporter()
    # The worker waits for a flush: every record is still queued after invoke returns.
    client = sightline.Client(exporters=[exporter], flush_interval=3600, batch_size=100_000)
    try:
        chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2)
        callbacks = [SightlineCallbackHandler(client), Watcher()]
        assert chain.invoke(1, config={"callbacks": callbacks}) == 4
        assert client.stats()["queued"] == 6  # 3 runs, a start and an end each
        gc.collect()
        assert len(run_ids) == 3
        assert [ref() for ref in run_ids] == [None, None, None]
        assert [tags[0][:9] for tags in tag_lists] == ["seq:step:", "seq:step:"]
        for tags in tag_lists:  # only this test's list still refers to them
            assert gc.get_referrers(tags) == [tag_lists]

        assert client.flush()
        assert len(exporter.events) == 3
        root = next(event for event in exporter.events if event.name == "RunnableSequence")
        children = [event for event in exporter.events if event is not root]
        assert [event.name for event in children] == ["RunnableLambda", "RunnableLambda"]
        assert [event.parent_span_id for event in children] == [root.span_id] * 2
        assert [event.output for event in children] == [2, 4]
        assert (root.input, root.output) == (1, 4)
        assert all(event.tags == [] for event in exporter.events)
    finally:
        client.close()
