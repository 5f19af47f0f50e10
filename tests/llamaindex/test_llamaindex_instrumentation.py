"""Installing the handlers: globally through ``sightline.init()``, by hand on a dispatcher, both;
never raising into LlamaIndex, never touching the network, and cleaning up after itself."""

from __future__ import annotations

import inspect
import os
import pathlib
import socket
import subprocess
import sys
import uuid

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM

import sightline
import sightline_llamaindex
from sightline.exporters.memory import InMemoryExporter
from sightline.testing import capture
from sightline_llamaindex import SightlineEventHandler, SightlineSpanHandler
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import assert_no_open_spans, outline
from tests.llamaindex.scripted import ANSWER, MODEL, ScriptedLLM, answer, support_agent

QUESTION = "How long do refunds take?"


def sightline_handlers(dispatcher=None) -> tuple[list, list]:
    dispatcher = dispatcher or get_dispatcher()
    return (
        [h for h in dispatcher.span_handlers if isinstance(h, SightlineSpanHandler)],
        [h for h in dispatcher.event_handlers if isinstance(h, SightlineEventHandler)],
    )


def ask(index) -> str:
    return str(index.as_query_engine(llm=MockLLM(max_tokens=3)).query(QUESTION))


@pytest.fixture
def attached():
    """Attach handlers to a dispatcher by hand; detached again after the test."""
    added: list[tuple] = []

    def attach(span_handler, event_handler, dispatcher=None):
        dispatcher = dispatcher or get_dispatcher()
        dispatcher.add_span_handler(span_handler)
        dispatcher.add_event_handler(event_handler)
        added.append((dispatcher, span_handler, event_handler))

    yield attach
    for dispatcher, span_handler, event_handler in added:
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not span_handler]
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not event_handler]
    assert_no_open_spans()


def test_init_adds_the_handlers_to_the_root_dispatcher_once_and_shutdown_removes_them(index):
    exporter = InMemoryExporter()
    assert sightline_handlers() == ([], [])
    try:
        sightline.init(plugins=["llamaindex"], exporters=[exporter], flush_interval=0.05)
        sightline.init(plugins=["llamaindex"], exporters=[exporter], flush_interval=0.05)
        sightline.instrument()
        sightline_llamaindex.instrument()
        spans, events = sightline_handlers()
        assert (len(spans), len(events)) == (1, 1)

        assert ask(index) == "text text text"
        sightline.flush()
        assert [e.name for e in exporter.events if e.parent_span_id is None] == [
            "RetrieverQueryEngine.query"
        ]
    finally:
        sightline.shutdown()
    assert sightline_handlers() == ([], [])
    assert_no_open_spans()


def test_uninstrument_stops_recording_and_is_idempotent(traced, index):
    ask(index)
    sightline_llamaindex.uninstrument()
    sightline_llamaindex.uninstrument()
    ask(index)

    assert sightline_handlers() == ([], [])
    assert len(traced.find(type="chain", name="RetrieverQueryEngine.query")) == 1


def test_handlers_attached_by_hand_work_without_global_instrumentation(attached, index):
    with capture() as cap:
        attached(SightlineSpanHandler(), SightlineEventHandler())
        ask(index)
        assert [e.name for e in cap.events if e.parent_span_id is None] == [
            "RetrieverQueryEngine.query"
        ]
        assert len(cap.events) == 5


def test_a_handler_reports_to_its_own_client(attached, index):
    exporter = InMemoryExporter()
    own = sightline.Client(exporters=[exporter], flush_interval=0.05)
    try:
        with capture() as global_capture:
            attached(SightlineSpanHandler(client=own), SightlineEventHandler())
            ask(index)
            own.flush()
            assert len(exporter.events) == 5
            assert global_capture.events == []
    finally:
        own.close()


def test_handler_without_client_uses_the_global_client_of_the_moment(attached, index):
    attached(SightlineSpanHandler(), SightlineEventHandler())
    with capture() as first:
        ask(index)
    with capture() as second:
        ask(index)
        ask(index)
        assert len(second.find(type="retrieval")) == 2
    assert len(first.find(type="retrieval")) == 1


def test_handlers_by_hand_and_global_instrumentation_record_each_span_once(traced, attached, index):
    # By hand on the root dispatcher: instrument() sees them and adds nothing.
    sightline_llamaindex.uninstrument()
    attached(SightlineSpanHandler(), SightlineEventHandler())
    sightline_llamaindex.instrument(traced.client)
    assert tuple(len(h) for h in sightline_handlers()) == (1, 1)
    # And on a child dispatcher, which propagates to the root: both see every span.
    child = get_dispatcher("llama_index.core.base.base_retriever")
    attached(SightlineSpanHandler(), SightlineEventHandler(), child)

    ask(index)

    assert outline(traced.events) == [
        ("chain", "RetrieverQueryEngine.query", "ok", [
            ("retrieval", "VectorIndexRetriever.retrieve", "ok", [
                ("embedding", "MockEmbedding.get_query_embedding", "ok", []),
            ]),
            ("chain", "CompactAndRefine.synthesize", "ok", [
                ("llm_invoke", "MockLLM.predict", "ok", []),
            ]),
        ]),
    ]  # fmt: skip


def test_disabled_sightline_records_nothing_and_keeps_no_state(attached, index):
    disabled = sightline.Client(enabled=False)
    seen = []

    class Watching(SightlineSpanHandler):
        def span_exit(self, id_, *args, **kwargs):
            seen.append(len(OPEN_SPANS.records))
            super().span_exit(id_, *args, **kwargs)

    attached(Watching(client=disabled), SightlineEventHandler())
    with capture() as cap:
        ask(index)
        assert cap.events == []
    assert seen and set(seen) == {0}


async def test_failures_inside_the_handlers_never_reach_llamaindex(traced, index, monkeypatch):
    from sightline_llamaindex import handlers, mapping

    def boom(*args, **kwargs):
        raise RuntimeError("bug in the adapter")

    monkeypatch.setattr(handlers, "start_event", boom)
    monkeypatch.setattr(handlers, "apply_llm_start", boom)
    monkeypatch.setattr(handlers, "apply_llm_response", boom)
    monkeypatch.setattr(mapping, "_tool_input", boom)

    agent = support_agent(index, streaming=True, use_async=False)
    assert str(await agent.run(user_msg=QUESTION)) == ANSWER
    assert traced.events == []


def test_a_failing_reader_loses_its_attribute_not_the_event(traced, monkeypatch):
    from sightline_llamaindex import mapping

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected payload")

    monkeypatch.setattr(mapping, "usage_of", boom)
    ScriptedLLM(response_generator=lambda messages, **kwargs: answer("hi")).chat([answer("hello")])

    event = traced.one(type="llm_invoke")
    assert (event.name, event.status.value, event.output) == (
        "ScriptedLLM.chat",
        "ok",
        {"role": "assistant", "content": "hi"},
    )
    assert (event.model, event.usage) == (MODEL, None)


def test_a_failing_client_never_reaches_llamaindex(attached, index):
    class BrokenClient(sightline.Client):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("client bug")

    broken = BrokenClient(exporters=[InMemoryExporter()])
    try:
        attached(SightlineSpanHandler(client=broken), SightlineEventHandler())
        assert ask(index) == "text text text"
    finally:
        broken.close()


async def test_nothing_tries_the_network(traced, index, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    await support_agent(index, streaming=True, use_async=True).run(user_msg=QUESTION)
    ask(index)

    assert attempts == []
    assert len(traced.find(type="agent")) == 1


def test_dispatcher_shutdown_finishes_the_spans_still_open(traced, index):
    retriever = index.as_retriever()
    root = get_dispatcher()
    span_id = f"VectorIndexRetriever.retrieve-{uuid.uuid4()}"
    bound = inspect.signature(retriever.retrieve).bind("refunds")
    root.span_enter(id_=span_id, bound_args=bound, instance=retriever)
    assert span_id in OPEN_SPANS.records

    root.shutdown()

    event = traced.one(type="retrieval")
    assert (event.status.value, event.error.message) == ("error", "dispatcher shutdown")
    assert OPEN_SPANS.records == {}


def test_capture_content_false_keeps_names_timings_and_usage_only(index):
    with capture(capture_content=False) as cap:
        sightline_llamaindex.instrument(cap.client)
        try:
            ScriptedLLM(response_generator=lambda messages, **kwargs: answer("secret")).chat(
                [answer("my password is hunter2")]
            )
        finally:
            sightline_llamaindex.uninstrument()
        event = cap.one(type="llm_invoke")
    assert (event.name, event.input, event.output) == ("ScriptedLLM.chat", None, None)
    assert event.usage.total_tokens == 17


def run_script(script: str, tmp_path: pathlib.Path) -> list[str]:
    env = {**os.environ, "SIGHTLINE_DB": str(tmp_path / "s.db")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_init_imports_no_llamaindex_and_instruments_it_once_the_application_does(tmp_path):
    # An application with the adapter installed but no LlamaIndex code pays nothing for it.
    lines = run_script(
        "import sys, sightline\n"
        "from sightline.testing import InMemoryExporter\n"
        "memory = InMemoryExporter()\n"
        "sightline.init(plugins=['llamaindex'], exporters=[memory])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llama_index', 'pydantic'))))\n"
        "from llama_index.core.llms import MockLLM\n"
        "from llama_index_instrumentation import get_dispatcher\n"
        "print([type(h).__name__ for h in get_dispatcher().span_handlers])\n"
        "MockLLM(max_tokens=2).complete('hello there')\n"
        "sightline.get_client().flush(10)\n"
        "print([(e.type.value, e.name) for e in memory.events])\n"
        "sightline.shutdown()\n",
        tmp_path,
    )
    assert lines[0] == "[]"
    assert lines[1] == "['NullSpanHandler', 'SightlineSpanHandler']"
    assert lines[2] == "[('llm_invoke', 'MockLLM.complete')]"


def test_uninstrument_before_llamaindex_is_imported_stops_waiting_for_it(tmp_path):
    lines = run_script(
        "import sightline\n"
        "sightline.init(plugins=['llamaindex'])\n"
        "sightline.uninstrument()\n"
        "from llama_index_instrumentation import get_dispatcher\n"
        "import llama_index.core\n"
        "print([type(h).__name__ for h in get_dispatcher().span_handlers])\n"
        "sightline.shutdown()\n",
        tmp_path,
    )
    assert lines == ["['NullSpanHandler']"]
