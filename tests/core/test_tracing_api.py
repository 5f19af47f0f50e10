"""The public tracing API (ARCHITECTURE.md §4): init, Client, AsyncClient, trace / step,
log_event, track_event, @monitor, parent links through contextvars, and the disabled no-op."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from typing import Any

import pytest

import sightline
from sightline import Client, EventType
from sightline.event import ErrorInfo, Event, Usage
from sightline.testing import InMemoryExporter, capture


@pytest.fixture
def memory():
    """An explicit client exporting to memory; yields (client, exporter) and closes it."""
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05)
    yield client, exporter
    client.close()


def delivered(client: Client, exporter: InMemoryExporter) -> list[Event]:
    assert client.flush(5.0) is True
    return exporter.events


# -- init and the global client ------------------------------------------------------------------


def test_init_installs_the_global_client_that_trace_records_to():
    client = sightline.init(exporters=["memory"], instrument=False)
    assert sightline.get_client() is client
    with sightline.trace("support-ticket", agent="support-bot"):
        pass
    [exporter] = client.exporters
    [run] = delivered(client, exporter)
    assert (run.type, run.name, run.agent, run.status.value) == (
        EventType.RUN,
        "support-ticket",
        "support-bot",
        "ok",
    )


def test_init_again_closes_the_previous_client():
    first = sightline.init(exporters=["memory"], instrument=False)
    [first_exporter] = first.exporters
    second = sightline.init(exporters=["memory"], instrument=False)
    assert sightline.get_client() is second
    assert first_exporter.shut_down is True
    assert first.track(Event("custom", "late")) is False


def test_shutdown_flushes_and_removes_the_global_client():
    client = sightline.init(exporters=["memory"], instrument=False, flush_interval=60)
    [exporter] = client.exporters
    client.log_event("custom", "before-shutdown")
    assert sightline.shutdown() is True
    assert [e.name for e in exporter.events] == ["before-shutdown"]
    assert sightline.get_client().enabled is False


def test_get_client_before_init_is_a_disabled_client():
    client = sightline.get_client()
    assert client.enabled is False
    assert client.exporters == []
    with sightline.trace("nothing") as run:
        assert run.is_recording is False
    assert client.log_event("custom", "x") is None
    assert sightline.flush() is True


# -- Client and AsyncClient ----------------------------------------------------------------------


def test_client_as_context_manager_delivers_and_shuts_down_its_exporters():
    exporter = InMemoryExporter()
    with Client(exporters=[exporter], flush_interval=60) as client:
        client.log_event("tool_call", "search")
    assert [e.name for e in exporter.events] == ["search"]
    assert exporter.shut_down is True


async def test_async_client_flush_is_awaited():
    exporter = InMemoryExporter()
    client = sightline.AsyncClient(exporters=[exporter], flush_interval=60)
    try:
        client.log_event("llm_invoke", "answer")
        assert await client.flush() is True
        assert [e.name for e in exporter.events] == ["answer"]
    finally:
        await client.close()
    assert exporter.shut_down is True


async def test_async_client_as_async_context_manager_delivers_on_exit():
    exporter = InMemoryExporter()
    async with sightline.AsyncClient(exporters=[exporter], flush_interval=60) as client:
        with client.trace("async-run") as run, run.step("tool", "lookup"):
            await asyncio.sleep(0)
    assert sorted(e.name for e in exporter.events) == ["async-run", "lookup"]
    assert exporter.shut_down is True


def test_register_agent_reaches_the_exporters_and_becomes_the_default_agent(memory):
    client, exporter = memory
    client.register_agent("support-bot", framework="plain", metadata={"version": 2})
    client.log_event("tool_call", "search")
    [event] = delivered(client, exporter)
    assert exporter.agents == [
        {"name": "support-bot", "framework": "plain", "metadata": {"version": 2}}
    ]
    assert event.agent == "support-bot"


def test_register_agent_keeps_a_configured_default_agent():
    exporter = InMemoryExporter()
    with Client(exporters=[exporter], agent="configured") as client:
        client.register_agent("other")
        client.log_event("custom", "x")
    assert [e.agent for e in exporter.events] == ["configured"]


def test_track_hands_a_finished_event_to_the_exporters(memory):
    client, exporter = memory
    event = Event(EventType.API_CALL, "GET /orders", input={"id": 7})
    assert client.track(event) is True
    [exported] = delivered(client, exporter)
    assert exported is event
    assert exported.end_ns is not None and exported.end_ns >= exported.start_ns
    assert exported.input == {"id": 7}


# -- log_event and track_event -------------------------------------------------------------------


def test_log_event_records_every_field_given(memory):
    client, exporter = memory
    returned = client.log_event(
        "llm_invoke",
        "summarize",
        input={"text": "long"},
        output="short",
        metadata={"temperature": 0.1},
        cost_usd=0.002,
        model="gpt-4o-mini",
        usage={"input_tokens": 100, "output_tokens": 10},
        duration_ms=250,
        tags=["nightly"],
        session_id="s-1",
        framework="plain",
    )
    [event] = delivered(client, exporter)
    assert returned is event
    assert event.type is EventType.LLM_INVOKE
    assert event.name == "summarize"
    assert event.status.value == "ok"
    assert event.parent_span_id is None
    assert event.input == {"text": "long"}
    assert event.output == "short"
    assert event.metadata == {"temperature": 0.1}
    assert event.cost_usd == 0.002
    assert event.model == "gpt-4o-mini"
    assert event.usage == Usage(100, 10, 110)
    assert event.duration_ms == pytest.approx(250.0)
    assert event.tags == ["nightly"]
    assert (event.session_id, event.framework) == ("s-1", "plain")
    assert event.error is None


def test_log_event_with_status_error_records_an_error_of_the_type_kind(memory):
    client, exporter = memory
    client.log_event("tool_call", "search", status="error", error="index offline")
    [event] = delivered(client, exporter)
    assert event.status.value == "error"
    assert event.error.to_dict() == {
        "type": "Error",
        "message": "index offline",
        "stack": None,
        "kind": "tool",
    }


def test_log_event_with_an_exception_records_its_type_and_stack(memory):
    client, exporter = memory
    try:
        raise LookupError("no such order")
    except LookupError as exc:
        client.log_event("retrieval", "orders", error=exc)
    [event] = delivered(client, exporter)
    assert event.status.value == "error"
    assert (event.error.type, event.error.message, event.error.kind) == (
        "LookupError",
        "no such order",
        "retrieval",
    )
    assert "LookupError: no such order" in event.error.stack


def test_log_event_with_an_error_info_keeps_it(memory):
    client, exporter = memory
    client.log_event("custom", "x", error=ErrorInfo("E42", "broken", kind="orchestration"))
    [event] = delivered(client, exporter)
    assert (event.status.value, event.error.type, event.error.kind) == (
        "error",
        "E42",
        "orchestration",
    )


def test_log_event_nests_under_the_ambient_span(memory):
    client, exporter = memory
    with client.trace("run") as run:
        client.log_event("decision", "route")
    events = {e.name: e for e in delivered(client, exporter)}
    assert events["route"].parent_span_id == run.span_id
    assert events["route"].trace_id == run.trace_id


def test_track_event_records_output_usage_cost_and_metadata(memory):
    client, exporter = memory
    with client.track_event("summarize", type=EventType.LLM_INVOKE, model="m-1") as ev:
        ev.set_output("a summary")
        ev.set_usage(input_tokens=812, output_tokens=64)
        ev.set_cost(0.004)
        ev.set_metadata({"temperature": 0}, stream=False)
    [event] = delivered(client, exporter)
    assert (event.type, event.name, event.model) == (EventType.LLM_INVOKE, "summarize", "m-1")
    assert event.output == "a summary"
    assert event.usage.to_dict() == {"input_tokens": 812, "output_tokens": 64, "total_tokens": 876}
    assert event.cost_usd == 0.004
    assert event.metadata == {"temperature": 0, "stream": False}
    assert event.status.value == "ok"


def test_track_event_is_the_ambient_span_inside_its_block(memory):
    client, exporter = memory
    with client.track_event("outer", type="chain") as outer:
        client.log_event("tool_call", "inner")
    events = {e.name: e for e in delivered(client, exporter)}
    assert events["inner"].parent_span_id == outer.span_id
    assert sightline.current_span() is None


def test_exception_in_track_event_is_recorded_with_kind_model_and_re_raised(memory):
    client, exporter = memory
    error = RuntimeError("model overloaded")
    with pytest.raises(RuntimeError) as raised, client.track_event("answer", type="llm_invoke"):
        raise error
    assert raised.value is error
    [event] = delivered(client, exporter)
    assert event.status.value == "error"
    assert (event.error.type, event.error.message, event.error.kind) == (
        "RuntimeError",
        "model overloaded",
        "model",
    )


# -- trace and steps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_type", "expected"),
    [
        ("plan", EventType.DECISION),
        ("retrieve", EventType.RETRIEVAL),
        ("tool", EventType.TOOL_CALL),
        ("respond", EventType.LLM_INVOKE),
        ("other", EventType.CUSTOM),
        ("embedding", EventType.EMBEDDING),
        (EventType.FILE_WRITE, EventType.FILE_WRITE),
    ],
)
def test_step_type_is_an_event_type_its_value_or_a_step_alias(
    sightline_capture, step_type, expected
):
    with sightline.trace("run") as run, run.step(step_type, "the-step"):
        pass
    step = sightline_capture.one(name="the-step")
    assert step.type is expected
    assert step.parent_span_id == run.span_id


def test_unknown_step_type_raises_value_error(sightline_capture):
    with sightline.trace("run") as run, pytest.raises(ValueError, match="unknown event type"):
        run.step("bogus", "x")


def test_trace_records_a_run_with_nested_steps_and_inherited_agent_and_session(sightline_capture):
    with sightline.trace(
        "support-ticket", agent="support-bot", session_id="s-9", tags=["vip"], input={"q": "hi"}
    ) as run:
        with run.step("tool", "search_kb") as step:
            step.add_metadata({"hits": 3})
            with step.step("retrieve", "vector_search"):
                pass
        with run.step("respond", "answer"):
            pass
    events = sightline_capture.events
    assert len(events) == 4
    by_name = {e.name: e for e in events}
    root = by_name["support-ticket"]
    assert root.type is EventType.RUN
    assert root.parent_span_id is None
    assert (root.agent, root.session_id, root.tags, root.input) == (
        "support-bot",
        "s-9",
        ["vip"],
        {"q": "hi"},
    )
    assert by_name["search_kb"].parent_span_id == root.span_id
    assert by_name["search_kb"].metadata == {"hits": 3}
    assert by_name["vector_search"].parent_span_id == by_name["search_kb"].span_id
    assert by_name["answer"].parent_span_id == root.span_id
    assert {e.trace_id for e in events} == {root.trace_id}
    assert {(e.agent, e.session_id) for e in events} == {("support-bot", "s-9")}
    assert all(e.status.value == "ok" for e in events)


def test_step_ends_before_its_run_and_within_its_time(sightline_capture):
    with sightline.trace("run") as run, run.step("tool", "sleepy"):
        time.sleep(0.03)
    step = sightline_capture.one(name="sleepy")
    root = sightline_capture.one(type="run")
    assert step.duration_ms >= 30
    assert root.start_ns <= step.start_ns <= step.end_ns <= root.end_ns


def test_record_failure_sets_status_error_and_the_error_code(sightline_capture):
    with sightline.trace("support-ticket") as run:
        run.record_failure(kind="tool", code="timeout", message="search_kb timed out")
    root = sightline_capture.one(type="run")
    assert root.status.value == "error"
    assert root.error.to_dict() == {
        "kind": "tool",
        "type": "timeout",
        "message": "search_kb timed out",
        "stack": None,
    }


def test_tool_error_is_recorded_with_kind_tool(sightline_capture):
    with (
        sightline.trace("run") as run,
        pytest.raises(ConnectionError),
        run.step("tool", "search_kb"),
    ):
        raise ConnectionError("kb unreachable")
    step = sightline_capture.one(name="search_kb")
    assert step.status.value == "error"
    assert (step.error.type, step.error.message, step.error.kind) == (
        "ConnectionError",
        "kb unreachable",
        "tool",
    )


def test_a_handled_step_failure_leaves_the_run_ok(sightline_capture):
    with sightline.trace("run"), pytest.raises(KeyError), sightline.trace("inner-tool") as inner:
        raise KeyError("x")
    root = sightline_capture.one(name="run")
    assert root.status.value == "ok"
    assert sightline_capture.one(name="inner-tool").parent_span_id == root.span_id
    assert inner.event.status.value == "error"


def test_an_exception_leaving_the_run_marks_it_failed_with_kind_orchestration(sightline_capture):
    with pytest.raises(ValueError), sightline.trace("run"):
        raise ValueError("bad plan")
    root = sightline_capture.one(type="run")
    assert (root.status.value, root.error.kind, root.error.type) == (
        "error",
        "orchestration",
        "ValueError",
    )


def test_timeout_errors_are_recorded_with_kind_timeout(sightline_capture):
    with (
        sightline.trace("run") as run,
        pytest.raises(TimeoutError),
        run.step("respond", "answer"),
    ):
        raise TimeoutError("model took too long")
    assert sightline_capture.one(name="answer").error.kind == "timeout"


def test_start_span_with_explicit_ids_links_to_a_remote_parent(sightline_capture):
    client = sightline.get_client()
    span = client.start_span(
        "remote-child", "tool_call", trace_id="ab" * 16, parent_span_id="cd" * 8
    )
    span.end()
    event = sightline_capture.one(name="remote-child")
    assert (event.trace_id, event.parent_span_id) == ("ab" * 16, "cd" * 8)


def test_start_span_with_parent_none_starts_a_new_trace_inside_a_run(sightline_capture):
    client = sightline.get_client()
    with sightline.trace("run") as run:
        client.start_span("detached", parent=None).end()
    detached = sightline_capture.one(name="detached")
    assert detached.parent_span_id is None
    assert detached.trace_id != run.trace_id


def test_ending_a_span_twice_records_it_once(sightline_capture):
    span = sightline.get_client().start_span("once")
    span.end()
    span.end()
    assert len(sightline_capture.find(name="once")) == 1


# -- @monitor ------------------------------------------------------------------------------------


def test_monitor_records_a_call_with_arguments_by_name_result_and_timing(sightline_capture):
    @sightline.monitor
    def search_kb(query: str, limit: int = 3) -> list[str]:
        time.sleep(0.02)
        return [query] * limit

    assert search_kb("refund", limit=2) == ["refund", "refund"]
    event = sightline_capture.one(type="tool_call")
    assert event.name.endswith("search_kb")
    assert event.input == {"query": "refund", "limit": 2}
    assert event.output == ["refund", "refund"]
    assert event.status.value == "ok"
    assert event.duration_ms >= 20


def test_monitor_takes_type_and_name(sightline_capture):
    @sightline.monitor(type="retrieve", name="kb.search")
    def search(q):
        return q

    search("x")
    assert sightline_capture.one(name="kb.search").type is EventType.RETRIEVAL


def test_monitor_leaves_out_arguments_and_result_when_asked(sightline_capture):
    @sightline.monitor(name="secretive", capture_args=False, capture_result=False)
    def secretive(password):
        return password

    assert secretive("hunter2") == "hunter2"
    event = sightline_capture.one(name="secretive")
    assert (event.input, event.output) == (None, None)


def test_monitor_leaves_self_out_of_a_method_arguments(sightline_capture):
    class Agent:
        @sightline.monitor(name="Agent.act")
        def act(self, goal):
            return goal.upper()

    Agent().act("ship")
    assert sightline_capture.one(name="Agent.act").input == {"goal": "ship"}


def test_monitor_records_an_exception_and_re_raises_the_same_object(sightline_capture):
    error = ValueError("bad query")

    @sightline.monitor(name="failing")
    def failing(query):
        raise error

    with pytest.raises(ValueError) as raised:
        failing("q")
    assert raised.value is error
    event = sightline_capture.one(name="failing")
    assert event.status.value == "error"
    assert (event.error.type, event.error.message, event.error.kind) == (
        "ValueError",
        "bad query",
        "tool",
    )
    assert event.output is None


async def test_monitor_records_an_async_function(sightline_capture):
    @sightline.monitor(type="llm_invoke", name="answer")
    async def answer(question: str) -> str:
        await asyncio.sleep(0.02)
        return question[::-1]

    assert await answer(question="abc") == "cba"
    event = sightline_capture.one(name="answer")
    assert (event.type, event.input, event.output, event.status.value) == (
        EventType.LLM_INVOKE,
        {"question": "abc"},
        "cba",
        "ok",
    )
    assert event.duration_ms >= 20


async def test_monitor_records_an_async_exception_and_re_raises_it(sightline_capture):
    error = TimeoutError("slow")

    @sightline.monitor(name="slow")
    async def slow():
        raise error

    with pytest.raises(TimeoutError) as raised:
        await slow()
    assert raised.value is error
    event = sightline_capture.one(name="slow")
    assert (event.status.value, event.error.kind) == ("error", "timeout")


def test_monitor_records_the_items_a_generator_yields(sightline_capture):
    @sightline.monitor(type="retrieval", name="pages")
    def pages(n):
        for i in range(n):
            yield {"page": i}

    assert list(pages(3)) == [{"page": 0}, {"page": 1}, {"page": 2}]
    event = sightline_capture.one(name="pages")
    assert event.input == {"n": 3}
    assert event.output == [{"page": 0}, {"page": 1}, {"page": 2}]
    assert event.status.value == "ok"


def test_monitor_records_a_generator_closed_early_with_the_items_consumed(sightline_capture):
    @sightline.monitor(name="endless")
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    for item in endless():
        if item == 1:
            break
    event = sightline_capture.one(name="endless")
    assert (event.output, event.status.value) == ([0, 1], "ok")


def test_monitor_records_a_generator_exception_and_re_raises_it(sightline_capture):
    error = OSError("disk gone")

    @sightline.monitor(name="lines")
    def lines():
        yield "first"
        raise error

    consumed = []
    with pytest.raises(OSError) as raised:
        for line in lines():
            consumed.append(line)
    assert raised.value is error
    assert consumed == ["first"]
    event = sightline_capture.one(name="lines")
    assert (event.status.value, event.error.type, event.output) == ("error", "OSError", ["first"])


def test_spans_inside_a_generator_nest_under_it_but_not_the_consumers_spans(sightline_capture):
    @sightline.monitor(name="inner")
    def inner():
        return 1

    @sightline.monitor(name="gen")
    def gen():
        yield inner()
        yield 2

    @sightline.monitor(name="consumer_work")
    def consumer_work():
        return None

    with sightline.trace("run") as run:
        for _ in gen():
            consumer_work()
    spans = {e.name: e for e in sightline_capture.events}
    assert spans["inner"].parent_span_id == spans["gen"].span_id
    assert spans["gen"].parent_span_id == run.span_id
    assert {e.parent_span_id for e in sightline_capture.find(name="consumer_work")} == {run.span_id}


async def test_monitor_records_the_items_an_async_generator_yields(sightline_capture):
    @sightline.monitor(type="llm_invoke", name="stream")
    async def stream(prompt):
        for token in prompt.split():
            await asyncio.sleep(0)
            yield token

    assert [t async for t in stream("hello big world")] == ["hello", "big", "world"]
    event = sightline_capture.one(name="stream")
    assert (event.input, event.output, event.status.value) == (
        {"prompt": "hello big world"},
        ["hello", "big", "world"],
        "ok",
    )


async def test_monitor_records_an_async_generator_closed_early_with_the_items_consumed(
    sightline_capture,
):
    @sightline.monitor(name="ticks")
    async def ticks():
        i = 0
        while True:
            yield i
            i += 1

    async with contextlib.aclosing(ticks()) as stream:
        async for tick in stream:
            if tick == 2:
                break
    event = sightline_capture.one(name="ticks")
    assert (event.output, event.status.value) == ([0, 1, 2], "ok")


async def test_monitor_records_an_async_generator_exception_and_re_raises_it(sightline_capture):
    error = ConnectionResetError("stream cut")

    @sightline.monitor(type="llm_invoke", name="stream")
    async def stream():
        yield "a"
        raise error

    with pytest.raises(ConnectionResetError) as raised:
        async for _ in stream():
            pass
    assert raised.value is error
    event = sightline_capture.one(name="stream")
    assert (event.status.value, event.error.type, event.error.kind, event.output) == (
        "error",
        "ConnectionResetError",
        "model",
        ["a"],
    )


# -- context propagation -------------------------------------------------------------------------


async def test_parent_links_follow_asyncio_tasks_of_gather(sightline_capture):
    @sightline.monitor(name="lookup")
    async def lookup(key):
        await asyncio.sleep(0.01)
        with sightline.get_client().track_event(f"fetch-{key}", type="api_call"):
            await asyncio.sleep(0.01)
        return key

    with sightline.trace("fan-out") as run:
        assert await asyncio.gather(lookup("a"), lookup("b"), lookup("c")) == ["a", "b", "c"]

    lookups = sightline_capture.find(name="lookup")
    assert len(lookups) == 3
    assert {e.parent_span_id for e in lookups} == {run.span_id}
    by_key = {e.input["key"]: e for e in lookups}
    for key in "abc":
        fetch = sightline_capture.one(name=f"fetch-{key}")
        assert fetch.parent_span_id == by_key[key].span_id
    assert {e.trace_id for e in sightline_capture.events} == {run.trace_id}


def test_parent_links_follow_threads_started_with_a_copied_context(sightline_capture):
    def work(index):
        with sightline.get_client().track_event(f"work-{index}", type="tool_call"):
            time.sleep(0.005)

    with sightline.trace("threads") as run:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(work, i))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for i in range(4):
        event = sightline_capture.one(name=f"work-{i}")
        assert (event.trace_id, event.parent_span_id) == (run.trace_id, run.span_id)


def test_a_thread_without_a_copied_context_starts_a_new_trace(sightline_capture):
    def work():
        with sightline.get_client().track_event("orphan", type="tool_call"):
            pass

    with sightline.trace("threads") as run:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    orphan = sightline_capture.one(name="orphan")
    assert orphan.parent_span_id is None
    assert orphan.trace_id != run.trace_id


def test_the_ambient_span_is_restored_after_each_block(sightline_capture):
    assert sightline.current_span() is None
    with sightline.trace("run") as run:
        assert sightline.current_span() is run
        with run.step("tool", "s") as step:
            assert sightline.current_span() is step
        assert sightline.current_span() is run
    assert sightline.current_span() is None


# -- disabled ------------------------------------------------------------------------------------


def exercise_every_call(client: Client) -> Any:
    @sightline.monitor(client=client)
    def tool(x):
        return x * 2

    client.register_agent("a")
    with client.trace("run") as run:
        with run.step("tool", "s") as step:
            step.set_output(1).set_usage(1, 2).set_cost(0.1).set_metadata(a=1)
            run.record_failure("tool", "code", "message")
        client.log_event("custom", "e")
        with client.track_event("t"):
            pass
    client.track(Event("custom", "tracked"))
    return tool(21)


def test_disabled_client_records_nothing_and_exports_nothing():
    exporter = InMemoryExporter()
    client = Client(enabled=False, exporters=[exporter])
    assert exercise_every_call(client) == 42
    assert client.exporters == []
    assert client.flush() is True
    assert client.close() is True
    assert exporter.events == []
    assert client.stats()["processed"] == 0


def test_disabled_client_calls_are_cheap():
    client = Client(enabled=False)
    started = time.perf_counter()
    for _ in range(10_000):
        client.log_event("custom", "x", input={"a": 1})
        with client.trace("run") as run, run.step("tool", "s"):
            pass
    assert time.perf_counter() - started < 1.0


def test_sightline_enabled_false_makes_init_a_no_op(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGHTLINE_ENABLED", "false")
    client = sightline.init(db=str(tmp_path / "never.db"), instrument=False)
    assert client.enabled is False
    assert exercise_every_call(client) == 42
    with sightline.trace("global") as run:
        assert run.is_recording is False
    sightline.shutdown()
    assert not (tmp_path / "never.db").exists()
    assert not (tmp_path / ".sightline").exists()


# -- sightline.testing ---------------------------------------------------------------------------


def test_capture_installs_a_global_client_for_the_block_only():
    before = sightline.get_client()
    with capture() as captured:
        assert sightline.get_client() is captured.client
        with sightline.trace("inside"):
            pass
        assert [e.name for e in captured.events] == ["inside"]
    assert sightline.get_client() is before
    assert captured.exporter.shut_down is True


def test_capture_passes_options_to_the_client():
    with capture(capture_content=False) as captured:
        sightline.get_client().log_event("tool_call", "t", input="secret input")
        assert captured.one(name="t").input is None


def test_sightline_capture_fixture_find_filters_by_type_name_and_fields(sightline_capture):
    client = sightline.get_client()
    client.log_event("tool_call", "search", agent="a")
    client.log_event("tool_call", "search", agent="b")
    client.log_event("llm_invoke", "search")
    assert len(sightline_capture.find(type="tool_call")) == 2
    assert len(sightline_capture.find(name="search")) == 3
    assert [e.agent for e in sightline_capture.find(type=EventType.TOOL_CALL, agent="b")] == ["b"]
    assert sightline_capture.find(type="decision") == []


def test_sightline_capture_fixture_find_accepts_step_aliases(sightline_capture):
    with sightline.trace("run") as run, run.step("tool", "search"):
        pass
    assert [e.name for e in sightline_capture.find(type="tool")] == ["search"]
    assert sightline_capture.one(type="tool").name == "search"
    assert sightline_capture.find(type="plan") == []


def test_sightline_capture_fixture_one_fails_on_none_or_several(sightline_capture):
    client = sightline.get_client()
    client.log_event("tool_call", "twice")
    client.log_event("tool_call", "twice")
    with pytest.raises(AssertionError, match="found 2"):
        sightline_capture.one(name="twice")
    with pytest.raises(AssertionError, match="found 0"):
        sightline_capture.one(name="never")


def test_sightline_capture_fixture_children_and_tree_follow_parent_links(sightline_capture):
    with sightline.trace("run") as run:
        with run.step("plan", "plan"):
            pass
        with run.step("tool", "search") as search, search.step("retrieve", "vectors"):
            pass
        with run.step("respond", "answer") as answer:
            answer.record_failure("model", "refused", "no")
    root = sightline_capture.one(type="run")
    assert [e.name for e in sightline_capture.children(root)] == ["plan", "search", "answer"]
    assert sightline_capture.tree(run.trace_id) == [
        {
            "type": "run",
            "name": "run",
            "status": "ok",
            "children": [
                {"type": "decision", "name": "plan", "status": "ok", "children": []},
                {
                    "type": "tool_call",
                    "name": "search",
                    "status": "ok",
                    "children": [
                        {"type": "retrieval", "name": "vectors", "status": "ok", "children": []}
                    ],
                },
                {"type": "llm_invoke", "name": "answer", "status": "error", "children": []},
            ],
        }
    ]


def test_sightline_capture_fixture_clear_forgets_earlier_events(sightline_capture):
    sightline.get_client().log_event("custom", "old")
    sightline_capture.clear()
    sightline.get_client().log_event("custom", "new")
    assert [e.name for e in sightline_capture.events] == ["new"]


def test_a_parent_source_nests_spans_under_a_framework_run_that_is_the_innermost():
    from sightline.span import add_parent_source, remove_parent_source

    running: contextvars.ContextVar[tuple[str, str, int, Any] | None] = contextvars.ContextVar(
        "framework_run", default=None
    )

    def broken() -> None:
        raise RuntimeError("a source that raises is ignored")

    add_parent_source(broken)
    add_parent_source(running.get)
    add_parent_source(running.get)  # once only
    try:
        with capture() as cap:
            run = ("a" * 32, "b" * 16, time.time_ns(), cap.client)
            token = running.set(run)
            with sightline.trace("inside"):  # no ambient span: the run is the parent
                with sightline.trace("nested"):  # the ambient span started later: it wins
                    pass
            running.reset(token)
            with sightline.trace("outer", agent="bot") as outer:
                token = running.set(("c" * 32, "d" * 16, time.time_ns(), cap.client))  # inside
                with sightline.trace("in-run"):
                    pass
                running.reset(token)
            inside, nested, in_run = (cap.one(name=n) for n in ("inside", "nested", "in-run"))
            assert (inside.trace_id, inside.parent_span_id) == ("a" * 32, "b" * 16)
            assert (nested.trace_id, nested.parent_span_id) == ("a" * 32, inside.span_id)
            assert (in_run.trace_id, in_run.parent_span_id, in_run.agent) == (
                "c" * 32,
                "d" * 16,
                "bot",
            )
            assert outer.event.parent_span_id is None
    finally:
        remove_parent_source(broken)
        remove_parent_source(running.get)
    from sightline.span import _PARENT_SOURCES

    assert running.get not in _PARENT_SOURCES and broken not in _PARENT_SOURCES


def test_a_framework_run_another_client_records_is_not_a_parent():
    from sightline.span import add_parent_source, remove_parent_source

    other = Client(exporters=[InMemoryExporter()])

    def source() -> tuple[str, str, int, Any]:
        return ("e" * 32, "f" * 16, time.time_ns(), other)

    add_parent_source(source)
    try:
        with capture() as cap:
            with sightline.trace("mine"):
                pass
            mine = cap.one(name="mine")
            assert mine.parent_span_id is None and mine.trace_id != "e" * 32
    finally:
        remove_parent_source(source)
        other.close()
