"""Global instrumentation (``sightline.init()`` / ``instrument()``), alone and with explicit
handlers: every run recorded once, in every thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import sightline
import sightline_langchain
from sightline.testing import Capture, InMemoryExporter
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_events import tree
from tests.langchain.langchain_scripted import chat_model, reply

REFUND_TREE = [
    (0, "chain", "RunnableSequence", "ok"),
    (1, "chain", "ChatPromptTemplate", "ok"),
    (1, "llm_invoke", "ScriptedChatModel", "ok"),
    (1, "chain", "StrOutputParser", "ok"),
]


def refund_chain(*items: Any, model_callbacks: list[Any] | None = None) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{question}")])
    items = items or (reply("five days", input_tokens=12, output_tokens=3),)
    model = chat_model(*items, callbacks=model_callbacks)
    return prompt | model | StrOutputParser()


def test_instrumented_langchain_is_recorded_with_no_handler_passed(global_cap: Capture) -> None:
    assert refund_chain().invoke({"question": "refund?"}) == "five days"
    assert tree(global_cap) == REFUND_TREE
    model = global_cap.one(type="llm_invoke")
    assert (model.usage.input_tokens, model.usage.output_tokens, model.model) == (
        12,
        3,
        "scripted-1",
    )
    assert {e.framework for e in global_cap.events} == {"langchain"}


async def test_instrumented_async_runs_are_recorded(global_cap: Capture) -> None:
    assert await refund_chain().ainvoke({"question": "refund?"}) == "five days"
    chunks = [c async for c in refund_chain(reply("two words")).astream({"question": "x"})]
    assert "".join(chunks) == "two words"
    assert len(global_cap.find(type="chain", name="RunnableSequence")) == 2
    streamed = [e for e in global_cap.find(type="llm_invoke") if "ttft_ms" in e.metadata]
    assert [e.metadata["streamed_tokens"] for e in streamed] == [2]


def test_new_threads_see_the_global_handler_without_a_copied_context(global_cap: Capture) -> None:
    chain = refund_chain(*[reply(f"answer {i}") for i in range(9)])
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(chain.invoke({"question": "t"})))
    thread.start()
    thread.join()
    with ThreadPoolExecutor(max_workers=4) as pool:  # plain executor: no context copied
        results.extend(pool.map(lambda i: chain.invoke({"question": f"p{i}"}), range(8)))
    assert len(results) == 9
    roots = global_cap.find(type="chain", name="RunnableSequence")
    assert len(roots) == 9 and len(global_cap.events) == 36
    assert all(len(global_cap.children(root)) == 3 for root in roots)


def test_batch_is_recorded_once_per_input(global_cap: Capture) -> None:
    refund_chain(*[reply(str(i)) for i in range(5)]).batch([{"question": str(i)} for i in range(5)])
    assert len(global_cap.find(type="chain", name="RunnableSequence")) == 5
    assert len(global_cap.events) == 20


def test_an_explicit_handler_in_config_records_nothing_twice(global_cap: Capture) -> None:
    handler = SightlineCallbackHandler(session_id="explicit")
    refund_chain().invoke({"question": "refund?"}, config={"callbacks": [handler]})
    assert tree(global_cap) == REFUND_TREE
    assert {e.session_id for e in global_cap.events} == {"explicit"}


def test_an_explicit_handler_on_an_inner_model_records_nothing_twice(global_cap: Capture) -> None:
    handler = SightlineCallbackHandler(session_id="model-owner", tags=["inner"])
    chain = refund_chain(model_callbacks=[handler])
    chain.invoke({"question": "refund?"})
    assert tree(global_cap) == REFUND_TREE
    model = global_cap.one(type="llm_invoke")
    # The global handler records the run; the explicit one's settings still apply to it.
    assert (model.session_id, model.tags) == ("model-owner", ["inner"])
    root = global_cap.one(type="chain", name="RunnableSequence")
    assert root.session_id is None


async def test_explicit_and_global_together_on_async_streams_record_once(
    global_cap: Capture,
) -> None:
    handler = SightlineCallbackHandler()
    chain = refund_chain(reply("one two three"), model_callbacks=[handler])
    chunks = [c async for c in chain.astream({"question": "x"}, config={"callbacks": [handler]})]
    assert "".join(chunks) == "one two three"
    assert tree(global_cap) == REFUND_TREE
    assert global_cap.one(type="llm_invoke").metadata["streamed_tokens"] == 3


def test_uninstrument_stops_recording_and_instrument_is_idempotent(global_cap: Capture) -> None:
    from langchain_core.tracers import context as lc_context

    hooks_before = len(lc_context._configure_hooks)
    handler = sightline_langchain.global_handler()
    assert handler is not None and handler.is_global
    sightline_langchain.instrument(global_cap.client)
    assert sightline_langchain.global_handler() is handler
    assert len(lc_context._configure_hooks) == hooks_before
    sightline_langchain.uninstrument()
    sightline_langchain.uninstrument()
    assert not sightline_langchain.is_instrumented()
    assert sightline_langchain.global_handler() is None
    assert len(lc_context._configure_hooks) == hooks_before - 1
    refund_chain().invoke({"question": "not recorded"})
    assert global_cap.events == []


def test_the_global_handler_follows_the_global_client_when_given_none(cap: Capture) -> None:
    sightline_langchain.instrument()
    RunnableLambda(lambda x: x).invoke(1, config={"run_name": "first"})
    with sightline.Client(exporters=[other := InMemoryExporter()]) as client:
        previous = sightline.set_client(client)
        try:
            RunnableLambda(lambda x: x).invoke(2, config={"run_name": "second"})
        finally:
            sightline.set_client(previous)
        client.flush()
    assert [e.name for e in cap.events] == ["first"]
    assert [e.name for e in other.events] == ["second"]


def test_sightline_init_instruments_langchain_through_the_entry_point() -> None:
    exporter = InMemoryExporter()
    sightline.init(exporters=[exporter], plugins=["langchain"])
    try:
        assert sightline_langchain.is_instrumented()
        refund_chain().invoke({"question": "refund?"})
    finally:
        sightline.shutdown()
    assert not sightline_langchain.is_instrumented()
    assert sorted(e.name for e in exporter.events) == [
        "ChatPromptTemplate",
        "RunnableSequence",
        "ScriptedChatModel",
        "StrOutputParser",
    ]


def test_init_before_langchain_is_imported_instruments_it_on_import(tmp_path: Any) -> None:
    code = (
        "import sys\n"
        "import sightline\n"
        "from sightline.testing import InMemoryExporter\n"
        "exporter = InMemoryExporter()\n"
        "sightline.init(exporters=[exporter], plugins=['langchain'])\n"
        "assert 'langchain_core' not in sys.modules, 'init imported LangChain'\n"
        "from langchain_core.runnables import RunnableLambda\n"
        "RunnableLambda(lambda x: x + 1).invoke(1, config={'run_name': 'late'})\n"
        "sightline.shutdown()\n"
        "print([(e.type.value, e.name) for e in exporter.events])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('chain', 'late')]"


def test_plugin_is_registered_and_loading_it_does_not_import_langchain() -> None:
    code = (
        "import sys, importlib.metadata as m\n"
        "eps = [e for e in m.entry_points(group='sightline') if e.name == 'langchain']\n"
        "assert [e.value for e in eps] == ['sightline_langchain.plugin'], eps\n"
        "eps[0].load()\n"
        "import sightline_langchain\n"
        "assert 'langchain_core' not in sys.modules, 'langchain imported too early'\n"
        "sightline_langchain.SightlineCallbackHandler\n"
        "assert 'langchain_core' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
