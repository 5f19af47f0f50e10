"""Tool governance where no tool method of the tool's own runs the tool.

- A tool class whose ``call`` / ``acall`` come from a mixin (a class that is no ``BaseTool``)
  gets a governed wrapper on the tool class itself: it asks once per call, in an agent or called
  directly, and ``uninstrument()`` leaves the class's ``__dict__`` as it was.
- ``RouterQueryEngine`` and ``SubQuestionQueryEngine`` query the engines of their
  ``QueryEngineTool`` themselves: each engine they choose asks as its tool first, in a
  ``tool_call`` of its own; a deny fails the router's query, and drops the sub-question.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.base_selector import BaseSelector, SelectorResult, SingleSelection
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine, SubQuestionQueryEngine
from llama_index.core.question_gen.types import BaseQuestionGenerator, SubQuestion
from llama_index.core.response_synthesizers import get_response_synthesizer
from llama_index.core.schema import QueryBundle
from llama_index.core.tools import FunctionTool, QueryEngineTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool

import sightline_llamaindex
from sightline import Decision, ToolDenied
from sightline.testing import Capture, capture
from sightline_llamaindex import patches
from tests.llamaindex.events import (
    assert_no_open_spans,
    decision_under_call,
    denied_tool_call,
    deny_decision,
    fields,
    outline,
)
from tests.llamaindex.scripted import shop
from tests.support.governance import policies

FROZEN = "refunds are frozen"


# -- 1. a tool class whose call / acall come from a mixin ---------------------------------------


class HttpToolMixin:
    """Plumbing an application shares between its tools: no ``BaseTool``."""

    def call(self, order_id: str) -> ToolOutput:
        self.ran.append(order_id)  # type: ignore[attr-defined]
        return ToolOutput(
            content=f"refunded {order_id}",
            tool_name="refund",
            raw_input={"order_id": order_id},
            raw_output="ok",
        )

    async def acall(self, order_id: str) -> ToolOutput:
        return self.call(order_id)  # one tool call, one question


class RefundTool(HttpToolMixin, AsyncBaseTool):
    """Defined before ``instrument()``; ``call`` and ``acall`` are the mixin's."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="refund", description="Refund an order.")


class PartialRefund(RefundTool):
    """Inherits the wrappers ``RefundTool`` got: nothing of its own to govern."""


class PlainFunctionTool(FunctionTool):
    """Inherits ``FunctionTool``'s methods, governed by name: nothing of its own to govern."""


def refund_tool_made_after_instrument() -> type[AsyncBaseTool]:
    class LateRefund(HttpToolMixin, AsyncBaseTool):
        def __init__(self) -> None:
            self.ran: list[str] = []

        @property
        def metadata(self) -> ToolMetadata:
            return ToolMetadata(name="refund", description="Refund an order.")

    return LateRefund


@pytest.mark.parametrize("defined", ["before-instrument", "after-instrument"])
async def test_a_mixin_tool_in_an_agent_is_denied_with_the_decision_under_its_tool_call(
    traced: Capture, policy: Any, defined: str
) -> None:
    cls = RefundTool if defined == "before-instrument" else refund_tool_made_after_instrument()
    rules = policy(Decision(False, FROZEN))
    tool: Any = cls()
    assert str(await shop(tool, "c1", order_id="A-17").run(user_msg="refund A-17")) == "ok"

    assert tool.ran == []
    assert rules.asked == [("refund", {"order_id": "A-17"})]
    assert rules.contexts[0]["agent"] == "shop"
    call, decision = decision_under_call(traced)
    denied = f"tool 'refund' denied: {FROZEN}"
    assert fields(call) == {
        **denied_tool_call("refund", {"order_id": "A-17"}, FROZEN, agent="shop"),
        "output": denied, "metadata": {"tool_call_id": "c1", "is_error": True},
    }  # fmt: skip
    assert fields(decision) == deny_decision("refund", {"order_id": "A-17"}, FROZEN, "shop")
    assert traced.one(type="agent").status.value == "ok"

    traced.clear()  # allowed: acall runs call, asked once
    rules.answer = None
    await shop(tool, "c2", order_id="B-2").run(user_msg="refund B-2")
    assert tool.ran == ["B-2"]
    assert rules.asked[1:] == [("refund", {"order_id": "B-2"})]
    assert traced.find(type="decision") == []
    allowed = traced.one(type="tool_call")
    assert fields(allowed) == {
        **denied_tool_call("refund", {"order_id": "B-2"}, FROZEN, agent="shop"),
        "status": "ok", "output": "refunded B-2", "error": None,
        "metadata": {"tool_call_id": "c2", "is_error": False},
    }  # fmt: skip


# ``tool(...)`` is ``AsyncBaseTool.__call__`` (its span records the arguments as passed), which
# calls the governed ``call``: one tool call, asked once.
DIRECT = [
    ("call", {"order_id": "B-2"}),
    ("acall", {"order_id": "B-2"}),
    ("__call__", {"args": ["B-2"], "kwargs": {}}),
]


@pytest.mark.parametrize(("how", "recorded"), DIRECT, ids=[how for how, _ in DIRECT])
async def test_a_mixin_tool_called_directly_is_a_failed_tool_call_with_the_decision_under_it(
    traced: Capture, policy: Any, how: str, recorded: dict[str, Any]
) -> None:
    rules = policy(Decision(False, FROZEN))
    tool = RefundTool()

    async def run() -> Any:
        if how == "acall":
            return await tool.acall("B-2")
        return tool.call("B-2") if how == "call" else tool("B-2")

    with pytest.raises(ToolDenied, match=FROZEN):
        await run()

    assert tool.ran == []
    assert rules.asked == [("refund", {"order_id": "B-2"})]
    call, decision = decision_under_call(traced)
    assert call.parent_span_id is None
    assert fields(call) == denied_tool_call("refund", recorded, FROZEN)
    assert fields(decision) == deny_decision("refund", {"order_id": "B-2"}, FROZEN)
    assert outline(traced.events) == [
        ("tool_call", "refund", "error", [("decision", "authorize:refund", "error", [])])
    ]

    traced.clear()
    rules.answer = None
    output = await run()
    assert (output.content, tool.ran, len(rules.asked)) == ("refunded B-2", ["B-2"], 2)
    assert traced.find(type="decision") == []
    assert fields(traced.one(type="tool_call")) == {
        **denied_tool_call("refund", recorded, FROZEN),
        "status": "ok", "output": "refunded B-2", "error": None, "metadata": {"is_error": False},
    }  # fmt: skip


def test_uninstrument_leaves_the_tool_classes_dicts_as_they_were() -> None:
    classes = (RefundTool, PartialRefund, PlainFunctionTool, HttpToolMixin)
    before = {cls: dict(cls.__dict__) for cls in classes}
    with capture() as cap, policies(cap.client) as install:
        sightline_llamaindex.instrument(cap.client)
        try:
            late = refund_tool_made_after_instrument()
            governed = set(patches.governed_tool_methods())
            assert {"RefundTool.acall", "RefundTool.call"} <= governed
            assert {"LateRefund.acall", "LateRefund.call"} <= governed
            # __call__ is AsyncBaseTool's (it calls call); PartialRefund inherits RefundTool's
            # wrappers, PlainFunctionTool FunctionTool's methods (wrapped by name)
            assert not {
                "RefundTool.__call__", "PartialRefund.call", "PartialRefund.acall",
                "PlainFunctionTool.call", "PlainFunctionTool.acall",
            } & governed  # fmt: skip
            assert dict(PartialRefund.__dict__) == before[PartialRefund]
            assert dict(HttpToolMixin.__dict__) == before[HttpToolMixin]
            assert RefundTool.__dict__["call"].__wrapped__ is HttpToolMixin.call

            sightline_llamaindex.uninstrument()
            assert {cls: dict(cls.__dict__) for cls in classes} == before
            assert "call" not in late.__dict__ and "acall" not in late.__dict__
            assert late.call is HttpToolMixin.call
            rules = install(Decision(False, FROZEN))
            assert RefundTool().call("A-1").content == "refunded A-1"  # nobody asked
            assert rules.asked == []

            sightline_llamaindex.instrument(cap.client)  # governed again
            with pytest.raises(ToolDenied):
                PartialRefund().call("A-2")
            assert rules.asked == [("refund", {"order_id": "A-2"})]
        finally:
            sightline_llamaindex.uninstrument()
        assert {cls: dict(cls.__dict__) for cls in classes} == before
        assert patches.governed_tool_methods() == []
    assert_no_open_spans()


# -- 2. query engines that query their tools' engines themselves --------------------------------


class Choose(BaseSelector):
    """Selects the choices at ``indexes``."""

    def __init__(self, *indexes: int) -> None:
        self.indexes = indexes

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: Any) -> None:
        pass

    def _select(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        return SelectorResult(
            selections=[SingleSelection(index=i, reason="chosen") for i in self.indexes]
        )

    async def _aselect(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> Any:
        return self._select(choices, query)


QUESTION = "what does Bob earn?"


def engine_tools(index: Any) -> list[QueryEngineTool]:
    return [
        QueryEngineTool.from_defaults(
            index.as_query_engine(llm=MockLLM()), name=name, description=f"{name} docs."
        )
        for name in ("hr", "docs")
    ]


async def ask(engine: Any, use_async: bool, query: Any = QUESTION) -> Any:
    return await engine.aquery(query) if use_async else engine.query(query)


def routed_call(name: str, query: str, output: str) -> dict[str, Any]:
    """The wire form of an allowed ``tool_call`` a router made of its tool's engine."""
    return {
        **denied_tool_call(name, {"input": query}, FROZEN),
        "status": "ok", "output": output, "error": None,
    }  # fmt: skip


def engine_tree(method: str) -> tuple[str, str, str, list[Any]]:
    """What a routed engine (``index.as_query_engine()``) records under its tool call."""
    prefix = "a" if method == "aquery" else ""
    return (
        "chain", f"RetrieverQueryEngine.{method}", "ok", [
            ("retrieval", f"VectorIndexRetriever.{prefix}retrieve", "ok", [
                ("embedding", f"MockEmbedding.{prefix}get_query_embedding", "ok", []),
            ]),
            ("chain", f"CompactAndRefine.{prefix}synthesize", "ok", [
                ("llm_invoke", f"MockLLM.{prefix}predict", "ok", []),
            ]),
        ],
    )  # fmt: skip


@pytest.mark.parametrize("use_async", [False, True], ids=["query", "aquery"])
async def test_a_router_asks_for_the_tool_it_selected_before_its_engine_runs(
    traced: Capture, policy: Any, index: Any, use_async: bool
) -> None:
    method = "aquery" if use_async else "query"
    router = RouterQueryEngine(
        selector=Choose(0), query_engine_tools=engine_tools(index), llm=MockLLM()
    )
    answered = await ask(router, use_async)  # no policy: recorded as before, no tool_call
    assert outline(traced.events) == [
        ("chain", f"RouterQueryEngine.{method}", "ok", [engine_tree(method)])
    ]

    traced.clear()
    rules = policy(Decision(False, FROZEN))
    with pytest.raises(ToolDenied, match=FROZEN):  # the router cannot answer: its query fails
        await ask(router, use_async)
    assert rules.asked == [("hr", {"input": QUESTION})]
    denied: Any = ("tool_call", "hr", "error", [("decision", "authorize:hr", "error", [])])
    assert outline(traced.events) == [  # the engine did not run
        ("chain", f"RouterQueryEngine.{method}", "error", [denied])
    ]
    call, decision = decision_under_call(traced)
    assert fields(call) == denied_tool_call("hr", {"input": QUESTION}, FROZEN)
    assert fields(decision) == deny_decision("hr", {"input": QUESTION}, FROZEN)
    assert fields(traced.one(type="chain")) == {  # the router's query fails with the deny
        **denied_tool_call("hr", {"query": QUESTION}, FROZEN),
        "type": "chain", "name": f"RouterQueryEngine.{method}",
    }  # fmt: skip

    traced.clear()
    rules.answer = None
    response = await ask(router, use_async)
    assert str(response) == str(answered)
    assert rules.asked[1:] == [("hr", {"input": QUESTION})]
    assert outline(traced.events) == [
        ("chain", f"RouterQueryEngine.{method}", "ok", [
            ("tool_call", "hr", "ok", [engine_tree(method)]),
        ])
    ]  # fmt: skip
    assert fields(traced.one(type="tool_call")) == routed_call("hr", QUESTION, str(response))


@pytest.mark.parametrize("use_async", [False, True], ids=["query", "aquery"])
async def test_a_router_selecting_several_tools_asks_once_for_each(
    traced: Capture, policy: Any, index: Any, use_async: bool
) -> None:
    method = "aquery" if use_async else "query"
    rules = policy(None)
    router = RouterQueryEngine(
        selector=Choose(0, 1), query_engine_tools=engine_tools(index), llm=MockLLM()
    )
    await ask(router, use_async)

    assert sorted(rules.asked) == [("docs", {"input": QUESTION}), ("hr", {"input": QUESTION})]
    root = traced.one(type="chain", name=f"RouterQueryEngine.{method}")
    calls = sorted(traced.find(type="tool_call"), key=lambda e: e.name)
    assert [(c.name, c.status.value, c.input, c.parent_span_id) for c in calls] == [
        (name, "ok", {"input": QUESTION}, root.span_id) for name in ("docs", "hr")
    ]
    for call in calls:  # each engine under its own tool call
        (engine,) = outline(traced.events, call)
        assert engine[:3] == ("chain", f"RetrieverQueryEngine.{method}", "ok")


async def test_a_router_queries_the_engine_with_the_arguments_the_policy_returned(
    traced: Capture, policy: Any, index: Any
) -> None:
    rules = policy(lambda tool, args: Decision(True, "reworded", {"input": "what is refunded?"}))
    router = RouterQueryEngine(
        selector=Choose(1), query_engine_tools=engine_tools(index), llm=MockLLM()
    )
    router.query(QueryBundle(QUESTION))

    assert rules.asked == [("docs", {"input": QUESTION})]
    call, decision = decision_under_call(traced)
    assert (call.name, call.status.value, call.input) == (
        "docs",
        "ok",
        {"input": "what is refunded?"},
    )
    assert (decision.status.value, decision.output) == (
        "ok",
        {"decision": "allow_redacted", "reason": "reworded"},
    )
    assert traced.one(type="retrieval").input == {"query": "what is refunded?"}


class TwoQuestions(BaseQuestionGenerator):
    """One sub-question for ``hr``, one for ``docs``."""

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: Any) -> None:
        pass

    def generate(self, tools: Sequence[ToolMetadata], query: QueryBundle) -> list[SubQuestion]:
        return [
            SubQuestion(sub_question=QUESTION, tool_name="hr"),
            SubQuestion(sub_question="how are refunds paid?", tool_name="docs"),
        ]

    async def agenerate(self, tools: Sequence[ToolMetadata], query: QueryBundle) -> Any:
        return self.generate(tools, query)


SUB_QUESTION_MODES = ["query", "query-use-async", "aquery"]


@pytest.mark.parametrize("mode", SUB_QUESTION_MODES)
async def test_a_denied_sub_question_is_dropped_and_the_others_answered(
    traced: Capture, policy: Any, index: Any, mode: str
) -> None:
    rules = policy(lambda tool, args: Decision(False, FROZEN) if tool == "hr" else None)
    engine = SubQuestionQueryEngine(
        question_gen=TwoQuestions(),
        response_synthesizer=get_response_synthesizer(llm=MockLLM()),
        query_engine_tools=engine_tools(index),
        verbose=False,
        use_async=(mode == "query-use-async"),
    )
    if mode == "query-use-async":  # LlamaIndex runs its coroutines in a loop of its own
        response = await asyncio.to_thread(engine.query, "compare")
    else:
        response = await ask(engine, mode == "aquery", "compare")

    assert sorted(rules.asked) == [
        ("docs", {"input": "how are refunds paid?"}),
        ("hr", {"input": QUESTION}),
    ]
    assert QUESTION not in str(response) and "how are refunds paid?" in str(response)
    method = "query" if mode == "query" else "aquery"
    denied, allowed = sorted(traced.find(type="tool_call"), key=lambda e: e.name != "hr")
    assert fields(denied) == denied_tool_call("hr", {"input": QUESTION}, FROZEN)
    assert outline(traced.events, denied) == [("decision", "authorize:hr", "error", [])]
    assert fields(traced.one(type="decision")) == deny_decision("hr", {"input": QUESTION}, FROZEN)
    assert outline(traced.events, allowed) == [engine_tree(method)]
    assert fields(allowed)["input"] == {"input": "how are refunds paid?"}
    root = traced.one(name=f"SubQuestionQueryEngine.{'aquery' if mode == 'aquery' else 'query'}")
    assert root.status.value == "ok"
    assert {denied.parent_span_id, allowed.parent_span_id} == {root.span_id}


def test_uninstrument_restores_the_router_engines(index: Any) -> None:
    originals = {
        (cls, name): cls.__dict__[name]
        for cls in (RouterQueryEngine, SubQuestionQueryEngine)
        for name in ("_query", "_aquery")
    }
    with capture() as cap, policies(cap.client) as install:
        sightline_llamaindex.instrument(cap.client)
        try:
            assert patches.governed_engine_methods() == [
                "RouterQueryEngine._aquery", "RouterQueryEngine._query",
                "SubQuestionQueryEngine._aquery", "SubQuestionQueryEngine._query",
            ]  # fmt: skip
            assert all(cls.__dict__[name] is not m for (cls, name), m in originals.items())
        finally:
            sightline_llamaindex.uninstrument()
        assert patches.governed_engine_methods() == []
        assert all(cls.__dict__[name] is m for (cls, name), m in originals.items())
        rules = install(Decision(False, FROZEN))
        router = RouterQueryEngine(
            selector=Choose(0), query_engine_tools=engine_tools(index), llm=MockLLM()
        )
        assert str(router.query(QUESTION))  # not instrumented: nobody asked
        assert rules.asked == []
    assert_no_open_spans()
