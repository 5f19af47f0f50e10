"""CrewAI Flows, review: methods CrewAI cancels itself end as errors with their flow, a cancelled
resume ends its run, a method that timed a crew out keeps the flow's later methods in the flow,
a crew kicked off in a Sightline span in a method or a tool nests under that span, values are
recorded as they were handed over, an interrupt keeps its own type, and a result of the user's
own is recorded whole. Real flows, offline; their crews talk to the scripted server."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any
from unittest.mock import ANY
from uuid import uuid4

import pytest
from crewai.events.event_context import _event_id_stack
from crewai.flow.async_feedback.types import HumanFeedbackPending
from crewai.flow.flow import Flow, listen, or_, start
from crewai.flow.human_feedback import human_feedback
from crewai.flow.persistence import SQLiteFlowPersistence
from crewai.tools import tool
from pydantic import BaseModel

import sightline
import sightline_crewai
from sightline_crewai import listener as listener_module
from sightline_crewai.instrumentation import active_listener
from sightline_crewai.tree import span_id_of
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    LaterReviewer,
    Subset,
    calculator_crew,
    check_event,
    open_spans,
    tree_of,
)
from tests.support.openai_server import Reply

pytestmark = CREWAI_WARNINGS

CANCELLED = Subset(kind="orchestration", type="CancelledError")

# asyncio.timeout (3.11) cancels the crew in the method's own task, where CrewAI then leaves the
# crew's scopes (asyncio.wait_for before 3.12 runs it in a task of its own)
needs_asyncio_timeout = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11"
)


# -- 1. methods CrewAI cancels itself -------------------------------------------------------------


class Race(Flow):
    """``done`` waits for the first of ``fast`` and ``slow``: CrewAI cancels the other."""

    @start()
    def begin(self) -> str:
        return "go"

    @listen(begin)
    async def fast(self) -> str:
        return "fast"

    @listen(begin)
    async def slow(self) -> str:
        await asyncio.sleep(5)
        return "slow"

    @listen(or_(fast, slow))
    def done(self, first: str) -> str:
        return f"first: {first}"


def test_the_loser_of_an_or_race_ends_as_cancelled_before_its_flow(instrumented, monkeypatch):
    # The thread that ends interrupted work once CrewAI's bus is drained is held back: the
    # flow's own end (CrewAI drains its bus before it) ends the method it cancelled.
    held: list[Any] = []
    monkeypatch.setattr(listener_module, "start_background_thread", lambda *a: held.append(a))
    flow = Race()

    assert flow.kickoff() == "first: fast"

    assert len(held) == 1  # the loser was reported
    [(kind, name, methods)] = tree_of(instrumented)  # fast and slow start together: any order
    assert (kind, name, sorted(methods)) == ("chain", "Race", [
        ("chain", "begin", []), ("chain", "done", []), ("chain", "fast", []),
        ("chain", "slow", []),
    ])  # fmt: skip
    race = instrumented.one(name="Race")
    slow = instrumented.one(name="slow")
    state = {"state": {"id": flow.flow_id}}
    check_event(
        race, type="chain", name="Race", output="first: fast", metadata={"flow_id": flow.flow_id}
    )
    check_event(
        slow, type="chain", name="slow", parent_span_id=race.span_id, status="error",
        input=state, error=CANCELLED, metadata={"incomplete": True},
    )  # fmt: skip
    check_event(
        instrumented.one(name="fast"), type="chain", name="fast",
        parent_span_id=race.span_id, input=state, output="fast",
    )  # fmt: skip
    names = [event.name for event in instrumented.events]  # in the order they were exported
    assert names.index("slow") < names.index("Race")
    assert open_spans() == 0


def test_a_parallel_start_still_running_when_its_flow_fails_ends_as_cancelled(instrumented):
    class Parallel(Flow):
        @start()
        async def fails(self) -> str:
            await asyncio.sleep(0.1)
            raise ValueError("boom")

        @start()
        async def slow(self) -> str:
            await asyncio.sleep(5)
            return "slow"

    flow = Parallel()
    with pytest.raises(ValueError, match="boom"):
        flow.kickoff()
    sightline_crewai.flush()

    parallel = instrumented.one(name="Parallel")
    failed = Subset(kind="orchestration", type="ValueError", message="boom")
    state = {"state": {"id": flow.flow_id}}
    assert len(instrumented.events) == 3
    check_event(
        parallel, type="chain", name="Parallel", status="error", error=failed,
        metadata={"flow_id": flow.flow_id},
    )  # fmt: skip
    check_event(
        instrumented.one(name="fails"), type="chain", name="fails",
        parent_span_id=parallel.span_id, status="error", input=state, error=failed,
    )  # fmt: skip
    check_event(
        instrumented.one(name="slow"), type="chain", name="slow",
        parent_span_id=parallel.span_id, status="error", input=state, error=CANCELLED,
        metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


def test_a_parallel_branch_still_running_when_its_flow_pauses_ends_as_cancelled(instrumented):
    class Review(Flow):
        @start()
        @human_feedback(message="Approve the draft?", provider=LaterReviewer())
        def draft(self) -> str:
            return "the draft"

        @start()
        async def research(self) -> str:
            await asyncio.sleep(5)
            return "facts"

    flow = Review()

    assert isinstance(flow.kickoff(), HumanFeedbackPending)
    sightline_crewai.flush()

    review = instrumented.one(name="Review")
    state = {"state": {"id": flow.flow_id}}
    assert len(instrumented.events) == 3
    check_event(
        review, type="chain", name="Review", output="Approve the draft?",
        metadata={"flow_id": flow.flow_id, "paused": True, "paused_method": "draft"},
    )  # fmt: skip
    check_event(
        instrumented.one(name="draft"), type="chain", name="draft",
        parent_span_id=review.span_id, input=state, output="Approve the draft?",
        metadata={"paused": True},
    )  # fmt: skip
    check_event(
        instrumented.one(name="research"), type="chain", name="research",
        parent_span_id=review.span_id, status="error", input=state, error=CANCELLED,
        metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


def test_the_methods_crewai_cancelled_are_forgotten_with_their_flow(instrumented):
    listener = active_listener()
    assert listener is not None
    tree = listener.tree
    tree.wait_seconds = 0.05

    for _ in range(5):
        Race().kickoff()
    sightline_crewai.flush()

    assert len(instrumented.find(name="slow", status="error")) == 5
    time.sleep(0.1)
    tree.settle()  # the flows ended more than wait_seconds ago: their nodes go
    assert (tree.open_spans(), len(tree._nodes), len(tree._members)) == (0, 0, 0)


# -- 2. a cancelled resume ------------------------------------------------------------------------


def test_a_cancelled_resume_async_ends_the_resumed_run_and_its_method_as_cancelled(
    instrumented, tmp_path
):
    waiting: list[asyncio.Event] = []

    class Publishing(Flow):
        @start()
        @human_feedback(message="Approve the draft?", provider=LaterReviewer())
        def draft(self) -> str:
            return "the draft"

        @listen(draft)
        async def publish(self, reviewed: Any) -> str:
            waiting[0].set()
            await asyncio.sleep(30)
            return "published"

    persistence = SQLiteFlowPersistence(str(tmp_path / "flows.db"))
    paused = Publishing(persistence=persistence)
    paused.kickoff()
    sightline_crewai.flush()
    before = {event.span_id for event in instrumented.events}

    async def resume_then_cancel() -> None:
        waiting.append(asyncio.Event())
        resume = asyncio.create_task(
            Publishing.from_pending(paused.flow_id, persistence).resume_async("ok")
        )
        await waiting[0].wait()
        resume.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resume

    asyncio.run(resume_then_cancel())
    sightline_crewai.flush()

    resumed = [event for event in instrumented.events if event.span_id not in before]
    assert sorted(event.name for event in resumed) == ["Publishing", "draft", "publish"]
    by_name = {event.name: event for event in resumed}
    flow_run = by_name["Publishing"]
    check_event(
        flow_run, type="chain", name="Publishing", status="error", error=CANCELLED,
        metadata={"flow_id": paused.flow_id, "incomplete": True},
    )  # fmt: skip
    reviewed = Subset(output="the draft", feedback="ok", method_name="draft")
    check_event(
        by_name["draft"], type="chain", name="draft", parent_span_id=flow_run.span_id,
        input={"state": {"id": paused.flow_id}}, output=reviewed,
    )  # fmt: skip
    check_event(
        by_name["publish"], type="chain", name="publish", parent_span_id=flow_run.span_id,
        status="error", input={"params": {"_0": reviewed}, "state": {"id": paused.flow_id}},
        error=CANCELLED, metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


# -- 3. a crew timed out in a method --------------------------------------------------------------


@needs_asyncio_timeout
def test_after_a_method_timed_a_crew_out_the_next_methods_stay_in_the_flow(instrumented, slow_llm):
    class Impatient(Flow):
        @start()
        async def call_crew(self) -> str:
            try:
                async with asyncio.timeout(0.5):  # type: ignore[attr-defined,unused-ignore]
                    await calculator_crew(slow_llm, tools=[]).akickoff()
            except TimeoutError:
                return "timed out"
            return "answered"

        @listen(call_crew)
        async def next_step(self, outcome: str) -> str:
            return "next"

        @listen(next_step)
        def last_step(self, outcome: str) -> str:
            return "last"

    flow = Impatient()

    assert flow.kickoff() == "last"
    sightline_crewai.flush()

    assert tree_of(instrumented) == [
        ("chain", "Impatient", [
            ("chain", "call_crew", [("run", "crew", [("chain", "Add 1 and 2", [
                ("agent", "Calculator", [("llm_invoke", "gpt-4o-mini", [])]),
            ])])]),
            ("chain", "next_step", []),
            ("chain", "last_step", []),
        ]),
    ]  # fmt: skip
    flow_run = instrumented.one(name="Impatient")
    assert {event.trace_id for event in instrumented.events} == {flow_run.trace_id}
    state = {"id": flow.flow_id}
    check_event(
        flow_run, type="chain", name="Impatient", output="last", metadata={"flow_id": flow.flow_id}
    )
    check_event(
        instrumented.one(name="call_crew"), type="chain", name="call_crew",
        parent_span_id=flow_run.span_id, input={"state": state}, output="timed out",
    )  # fmt: skip
    for name, given, output in (("next_step", "timed out", "next"), ("last_step", "next", "last")):
        check_event(
            instrumented.one(name=name), type="chain", name=name,
            parent_span_id=flow_run.span_id, input={"params": {"_0": given}, "state": state},
            output=output,
        )  # fmt: skip
    for name in ("crew", "Add 1 and 2", "Calculator", "gpt-4o-mini"):
        event = instrumented.one(name=name)
        assert (event.status.value, event.error.kind, event.error.type) == (
            "error", "orchestration", "CancelledError",
        )  # fmt: skip
        assert event.metadata["incomplete"] is True
    assert open_spans() == 0


@needs_asyncio_timeout
def test_code_in_the_next_method_nests_in_the_flow_before_that_methods_start_is_recorded(
    instrumented, slow_llm
):
    listener = active_listener()
    assert listener is not None
    tree = listener.tree
    seen: list[Any] = []
    stale: list[str] = []
    unrecorded = str(uuid4())

    class Impatient(Flow):
        @start()
        async def call_crew(self) -> str:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # type: ignore[attr-defined,unused-ignore]
                    await calculator_crew(slow_llm, tools=[]).akickoff()
            return "timed out"

        @listen(call_crew)
        async def next_step(self, outcome: str) -> str:
            sightline_crewai.flush()  # the crew's abort is applied
            # CrewAI's scopes here (the interrupted crew's left under this method), as code in
            # this method sees them while CrewAI's pool has not recorded the method's start yet
            *outer, _ = _event_id_stack.get()
            stale.extend(kind for _, kind in outer)
            stack = (*outer, (unrecorded, "method_execution_started"))
            seen.append(tree.run_parent(stack, listener_module._RECORDED_TYPES))
            return "next"

    Impatient().kickoff()

    flow_run = instrumented.one(name="Impatient")
    assert stale[0] == "flow_started"
    assert "crew_kickoff_started" in stale  # left by the crew the timeout interrupted
    assert seen == [(flow_run.trace_id, span_id_of(unrecorded), ANY, instrumented.client)]


# -- 4. a crew kicked off in a Sightline span ---------------------------------------------------------


def test_a_crew_kicked_off_in_a_sightline_span_in_a_method_nests_under_that_span(
    instrumented, server, llm
):
    server.add(Reply.text("3"))
    model = llm()

    class Stepwise(Flow):
        @start()
        def method(self) -> str:
            with sightline.trace("my-step"):
                result: Any = calculator_crew(model, tools=[]).kickoff()
                return str(result.raw)

    Stepwise().kickoff()

    assert tree_of(instrumented) == [
        ("chain", "Stepwise", [("chain", "method", [("run", "my-step", [
            ("run", "crew", [("chain", "Add 1 and 2", [
                ("agent", "Calculator", [("llm_invoke", "gpt-4o-mini", [])]),
            ])]),
        ])])]),
    ]  # fmt: skip
    method, step = instrumented.one(name="method"), instrumented.one(name="my-step")
    crew = instrumented.one(name="crew")
    task = instrumented.one(name="Add 1 and 2")
    assert (step.parent_span_id, crew.parent_span_id, task.parent_span_id) == (
        method.span_id,
        step.span_id,
        crew.span_id,
    )
    assert {event.trace_id for event in instrumented.events} == {method.trace_id}
    assert (crew.framework, step.framework) == ("crewai", None)


def test_a_crew_kicked_off_in_a_sightline_span_in_a_tool_nests_under_that_span(
    instrumented, server, llm
):
    server.add(Reply.tool_call("delegate", {"q": "x"}), Reply.text("3"), Reply.text("done"))
    model = llm()

    @tool("delegate")
    def delegate(q: str) -> str:
        """Delegate the question to another crew."""
        with sightline.trace("inner-step"):
            result: Any = calculator_crew(model, tools=[]).kickoff()
            return str(result.raw)

    calculator_crew(model, tools=[delegate]).kickoff()

    outer, inner = sorted(instrumented.find(type="run", name="crew"), key=lambda e: e.start_ns)
    tool_call = instrumented.one(type="tool_call")
    step = instrumented.one(name="inner-step")
    assert (step.parent_span_id, inner.parent_span_id) == (tool_call.span_id, step.span_id)
    assert {event.trace_id for event in instrumented.events} == {outer.trace_id}
    [inner_task] = instrumented.children(inner)
    assert inner_task.name == "Add 1 and 2"


# -- 5. values as they were handed over -----------------------------------------------------------


def test_kickoff_inputs_are_recorded_as_given_not_as_the_flow_changed_them(instrumented):
    class Shop(Flow):
        @start()
        def add_item(self) -> int:
            self.state["items"].append("added by the flow")
            self.state["meta"]["changed"] = True
            return len(self.state["items"])

    inputs = {"items": ["given"], "meta": {"changed": False}}

    assert Shop().kickoff(inputs=inputs) == 2

    assert instrumented.one(name="Shop").input == {"items": ["given"], "meta": {"changed": False}}
    assert inputs == {"items": ["given", "added by the flow"], "meta": {"changed": True}}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_result_and_the_next_methods_params_are_recorded_as_handed_over(
    instrumented, asynchronous
):
    if asynchronous:

        class Pipeline(Flow):
            @start()
            def collect(self) -> list[Any]:
                return ["a", {"n": 1}]

            @listen(collect)
            async def enrich(self, items: list[Any]) -> int:
                items.append("added later")
                items[1]["n"] = 2
                return len(items)

    else:

        class Pipeline(Flow):  # type: ignore[no-redef]
            @start()
            def collect(self) -> list[Any]:
                return ["a", {"n": 1}]

            @listen(collect)
            def enrich(self, items: list[Any]) -> int:
                items.append("added later")
                items[1]["n"] = 2
                return len(items)

    flow = Pipeline()

    assert flow.kickoff() == 3

    state = {"id": flow.flow_id}
    check_event(
        instrumented.one(name="collect"), type="chain", name="collect",
        parent_span_id=ANY, input={"state": state}, output=["a", {"n": 1}],
    )  # fmt: skip
    check_event(
        instrumented.one(name="enrich"), type="chain", name="enrich", parent_span_id=ANY,
        input={"params": {"_0": ["a", {"n": 1}]}, "state": state}, output=3,
    )  # fmt: skip


# -- 6. an interrupt keeps its type ---------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync_method", "async_method"])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_a_method_is_recorded_with_its_own_type(
    instrumented, interrupt, asynchronous
):
    if asynchronous:

        class Interrupted(Flow):
            @start()
            def first(self) -> int:
                return 1

            @listen(first)
            async def boom(self, value: int) -> int:
                raise interrupt("stopped")

    else:

        class Interrupted(Flow):  # type: ignore[no-redef]
            @start()
            def first(self) -> int:
                return 1

            @listen(first)
            def boom(self, value: int) -> int:
                raise interrupt("stopped")

    flow = Interrupted()
    with pytest.raises(interrupt):
        flow.kickoff()
    sightline_crewai.flush()

    assert tree_of(instrumented) == [
        ("chain", "Interrupted", [("chain", "first", []), ("chain", "boom", [])]),
    ]  # fmt: skip
    flow_run = instrumented.one(name="Interrupted")
    error = Subset(kind="orchestration", type=interrupt.__name__, message="stopped")
    check_event(
        flow_run, type="chain", name="Interrupted", status="error", error=error,
        metadata={"flow_id": flow.flow_id, "incomplete": True},
    )  # fmt: skip
    check_event(
        instrumented.one(name="boom"), type="chain", name="boom",
        parent_span_id=flow_run.span_id, status="error", error=error,
        input={"params": {"_0": 1}, "state": {"id": flow.flow_id}},
        metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


def test_an_interrupt_in_a_resumed_method_is_recorded_with_its_own_type(instrumented, tmp_path):
    class Publishing(Flow):
        @start()
        @human_feedback(message="Approve the draft?", provider=LaterReviewer())
        def draft(self) -> str:
            return "the draft"

        @listen(draft)
        def publish(self, reviewed: Any) -> str:
            raise KeyboardInterrupt("stopped")

    persistence = SQLiteFlowPersistence(str(tmp_path / "flows.db"))
    paused = Publishing(persistence=persistence)
    paused.kickoff()
    sightline_crewai.flush()
    before = {event.span_id for event in instrumented.events}

    with pytest.raises(KeyboardInterrupt):
        Publishing.from_pending(paused.flow_id, persistence).resume("ok")
    sightline_crewai.flush()

    resumed = {e.name: e for e in instrumented.events if e.span_id not in before}
    assert sorted(resumed) == ["Publishing", "draft", "publish"]
    interrupted = Subset(kind="orchestration", type="KeyboardInterrupt", message="stopped")
    check_event(
        resumed["Publishing"], type="chain", name="Publishing", status="error",
        error=interrupted, metadata={"flow_id": paused.flow_id, "incomplete": True},
    )  # fmt: skip
    check_event(
        resumed["publish"], type="chain", name="publish",
        parent_span_id=resumed["Publishing"].span_id, status="error", error=interrupted,
        input={"params": {"_0": ANY}, "state": {"id": paused.flow_id}},
        metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


# -- 7. a result of the user's own ----------------------------------------------------------------


class Page(BaseModel):
    url: str
    status: int
    raw: str


def test_a_result_of_the_users_own_with_a_raw_attribute_is_recorded_whole(instrumented):
    class Fetch(Flow):
        @start()
        def fetch(self) -> Page:
            return Page(url="https://example.test/a", status=200, raw="<html>")

        @listen(fetch)
        def parse(self, page: Page) -> int:
            return page.status

    flow = Fetch()

    assert flow.kickoff() == 200

    page = {"url": "https://example.test/a", "status": 200, "raw": "<html>"}
    state = {"id": flow.flow_id}
    fetch = instrumented.one(name="fetch")
    check_event(
        fetch, type="chain", name="fetch", parent_span_id=ANY, input={"state": state}, output=page
    )
    check_event(
        instrumented.one(name="parse"), type="chain", name="parse",
        parent_span_id=fetch.parent_span_id, input={"params": {"_0": page}, "state": state},
        output=200,
    )  # fmt: skip
