"""CrewAI Flows: a flow run is a ``chain``, each method it runs a ``chain`` under it, and a crew
kicked off in a method nests under that method's chain. Real flows (``@start``, ``@listen``,
``@router``, ``or_`` / ``and_``, structured and dict state) run offline; the crews inside them
talk to the scripted server."""

from __future__ import annotations

import asyncio
import json
import random
from enum import Enum
from typing import Any
from unittest.mock import ANY
from uuid import uuid4

import openai
import pytest
from crewai import LLM
from crewai.events import FlowFinishedEvent
from crewai.flow.async_feedback.types import HumanFeedbackPending
from crewai.flow.flow import Flow, and_, listen, or_, router, start
from crewai.flow.human_feedback import human_feedback
from pydantic import BaseModel

import sightline
import sightline_crewai
from sightline.testing import capture
from sightline_crewai.mapping import RULES
from sightline_crewai.tree import SpanTree
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    LaterReviewer,
    Recorded,
    Subset,
    calculator_crew,
    check_event,
    open_spans,
    record_events,
    replay,
    tree_of,
)
from tests.support.nesting import db_lookup
from tests.support.openai_server import Reply, ScriptedOpenAIServer

pytestmark = CREWAI_WARNINGS


class Ticket(BaseModel):
    topic: str = ""
    answer: str = ""


def research_flow(llm: Any) -> Any:
    """``read_ticket`` -> router ``triage`` -> ``solve`` (a crew, on route "math") -> ``report``;
    ``give_up`` (route "other") never runs."""

    class ResearchFlow(Flow[Ticket]):
        @start()
        def read_ticket(self) -> str:
            return self.state.topic

        @router(read_ticket)
        def triage(self, topic: str) -> str:
            return "math" if "sum" in topic else "other"

        @listen("math")
        def solve(self, route: str) -> Any:
            result: Any = calculator_crew(llm, tools=[]).kickoff()
            self.state.answer = result.raw
            return result

        @listen("other")
        def give_up(self, route: str) -> str:
            return "not my job"

        @listen(solve)
        def report(self, result: Any) -> str:
            return f"Answer: {result.raw}"

    return ResearchFlow()


RESEARCH_TREE: list[Any] = [
    ("chain", "ResearchFlow", [
        ("chain", "read_ticket", []),
        ("chain", "triage", []),
        ("chain", "solve", [
            ("run", "crew", [
                ("chain", "Add 1 and 2", [("agent", "Calculator", [("llm_invoke", "gpt-4o-mini", [])])]),
            ]),
        ]),
        ("chain", "report", []),
    ]),
]  # fmt: skip


def _kickoff(flow: Any, inputs: dict[str, Any]) -> Any:
    return flow.kickoff(inputs=inputs)


def _kickoff_async(flow: Any, inputs: dict[str, Any]) -> Any:
    return asyncio.run(flow.kickoff_async(inputs=inputs))


# -- the tree -------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", [_kickoff, _kickoff_async], ids=lambda f: f.__name__)
def test_a_flow_is_a_chain_with_a_chain_per_method_and_its_crew_under_the_method(
    instrumented, server, llm, run
):
    server.add(Reply.text("3", prompt_tokens=10, completion_tokens=2))
    flow = research_flow(llm())

    result = run(flow, {"topic": "the sum of 1 and 2"})

    assert result == "Answer: 3"
    assert tree_of(instrumented) == RESEARCH_TREE
    flow_run = instrumented.one(name="ResearchFlow")
    read_ticket, triage, solve, report = instrumented.children(flow_run)
    [crew] = instrumented.children(solve)
    [task] = instrumented.children(crew)
    [agent] = instrumented.children(task)
    [call] = instrumented.children(agent)
    assert len(instrumented.events) == 9
    assert {event.trace_id for event in instrumented.events} == {flow_run.trace_id}

    state = {"topic": "the sum of 1 and 2", "answer": "", "id": flow.flow_id}
    check_event(
        flow_run, type="chain", name="ResearchFlow", input={"topic": "the sum of 1 and 2"},
        output="Answer: 3", metadata={"flow_id": flow.flow_id},
    )  # fmt: skip
    check_event(
        read_ticket, type="chain", name="read_ticket", parent_span_id=flow_run.span_id,
        input={"state": state}, output="the sum of 1 and 2",
    )  # fmt: skip
    check_event(
        triage, type="chain", name="triage", parent_span_id=flow_run.span_id,
        input={"params": {"_0": "the sum of 1 and 2"}, "state": state}, output="math",
        metadata={"route": "math"},
    )  # fmt: skip
    check_event(
        solve, type="chain", name="solve", parent_span_id=flow_run.span_id,
        input={"params": {"_0": "math"}, "state": state}, output="3",
    )  # fmt: skip
    check_event(
        report, type="chain", name="report", parent_span_id=flow_run.span_id,
        input={"params": {"_0": "3"}, "state": {**state, "answer": "3"}}, output="Answer: 3",
    )  # fmt: skip
    check_event(
        crew, type="run", name="crew", parent_span_id=solve.span_id, output="3",
        usage={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
        metadata={"process": "sequential", "agents": ["Calculator"], "tasks": 1},
    )  # fmt: skip
    assert (task.parent_span_id, agent.parent_span_id, call.parent_span_id) == (
        crew.span_id,
        task.span_id,
        agent.span_id,
    )
    assert (agent.agent, call.agent, call.output) == ("Calculator", "Calculator", "3")
    # CrewAI's agent executor is itself a flow: it stays a scope, its LLM call is the agent's
    assert "AgentExecutor" not in {event.name for event in instrumented.events}
    assert open_spans() == 0


def test_or_and_and_listeners_are_chains_of_a_flow_named_by_its_name(instrumented):
    class Digest(Flow):
        @start()
        def fetch_news(self) -> str:
            return "news"

        @start()
        def fetch_weather(self) -> str:
            return "sun"

        @listen(or_(fetch_news, fetch_weather))
        def announce(self, first: str) -> str:
            return f"first: {first}"

        @listen(and_(fetch_news, fetch_weather))
        def compose(self) -> str:
            return "digest"

    flow = Digest(name="morning-digest")

    assert asyncio.run(flow.kickoff_async()) == "digest"

    flow_run = instrumented.one(name="morning-digest")
    check_event(
        flow_run, type="chain", name="morning-digest", output="digest",
        metadata={"flow_id": flow.flow_id},
    )  # fmt: skip
    methods = {event.name: event for event in instrumented.children(flow_run)}
    assert sorted(methods) == ["announce", "compose", "fetch_news", "fetch_weather"]
    assert len(instrumented.events) == 5
    state = {"id": flow.flow_id}
    for name, output in (("fetch_news", "news"), ("fetch_weather", "sun"), ("compose", "digest")):
        check_event(
            methods[name], type="chain", name=name, parent_span_id=flow_run.span_id,
            input={"state": state}, output=output,
        )  # fmt: skip
    first = methods["announce"].input["params"]["_0"]
    assert first in ("news", "sun")
    check_event(
        methods["announce"], type="chain", name="announce", parent_span_id=flow_run.span_id,
        input={"params": {"_0": first}, "state": state}, output=f"first: {first}",
    )  # fmt: skip


class Verdict(Enum):
    APPROVED = "approved"
    REJECTED = "rejected"


def test_a_routers_choice_is_its_route_and_only_that_route_runs(instrumented):
    class Review(Flow):
        @start()
        def draft(self) -> str:
            return "a fine draft"

        @router(draft)
        def judge(self, text: str) -> Verdict:
            return Verdict.APPROVED if "fine" in text else Verdict.REJECTED

        @listen(Verdict.APPROVED.value)
        def publish(self) -> str:
            return "published"

        @listen(Verdict.REJECTED.value)
        def rewrite(self) -> str:
            return "rewritten"

    Review().kickoff()

    assert tree_of(instrumented) == [
        ("chain", "Review", [
            ("chain", "draft", []), ("chain", "judge", []), ("chain", "publish", []),
        ]),
    ]  # fmt: skip
    review = instrumented.one(name="Review")
    check_event(
        instrumented.one(name="judge"), type="chain", name="judge",
        parent_span_id=review.span_id,
        input={"params": {"_0": "a fine draft"}, "state": {"id": review.metadata["flow_id"]}},
        output="approved", metadata={"route": "approved"},
    )  # fmt: skip
    assert {e.name: e.metadata for e in instrumented.events} == {
        "Review": {"flow_id": ANY}, "draft": {}, "judge": {"route": "approved"}, "publish": {},
    }  # fmt: skip


def test_a_flow_id_the_user_chose_is_kept_cut_to_64_characters(instrumented):
    class Keyed(Flow):
        @start()
        def only(self) -> str:
            return "done"

    chosen = "order-" + "x" * 100

    Keyed().kickoff(inputs={"id": chosen})

    assert instrumented.one(name="Keyed").metadata == {"flow_id": chosen[:63] + "…"}


# -- failures -------------------------------------------------------------------------------------


def test_a_failing_method_is_an_orchestration_error_that_fails_the_flow(instrumented):
    class Fragile(Flow):
        @start()
        def load(self) -> str:
            return "loaded"

        @listen(load)
        def parse(self, text: str) -> str:
            raise ValueError(f"cannot parse {text!r}")

        @listen(parse)
        def never(self, parsed: str) -> str:
            return parsed

    flow = Fragile()
    with pytest.raises(ValueError, match="cannot parse"):
        flow.kickoff()

    assert tree_of(instrumented) == [
        ("chain", "Fragile", [("chain", "load", []), ("chain", "parse", [])]),
    ]  # fmt: skip
    flow_run, load, parse = (instrumented.one(name=n) for n in ("Fragile", "load", "parse"))
    error = Subset(kind="orchestration", type="ValueError", message="cannot parse 'loaded'")
    check_event(
        flow_run, type="chain", name="Fragile", status="error", error=error,
        metadata={"flow_id": flow.flow_id},
    )  # fmt: skip
    check_event(
        load, type="chain", name="load", parent_span_id=flow_run.span_id,
        input={"state": {"id": flow.flow_id}}, output="loaded",
    )  # fmt: skip
    check_event(
        parse, type="chain", name="parse", parent_span_id=flow_run.span_id, status="error",
        input={"params": {"_0": "loaded"}, "state": {"id": flow.flow_id}}, error=error,
    )  # fmt: skip
    assert "ValueError" in parse.error.stack
    assert open_spans() == 0


def test_a_model_failure_in_a_crew_fails_its_method_and_the_flow_as_orchestration(
    instrumented, server, llm
):
    server.add(Reply.http_error(500, "the model is down"))

    with pytest.raises(openai.InternalServerError):
        research_flow(llm()).kickoff(inputs={"topic": "the sum of 1 and 2"})

    assert tree_of(instrumented) == [
        ("chain", "ResearchFlow", [
            ("chain", "read_ticket", []),
            ("chain", "triage", []),
            ("chain", "solve", RESEARCH_TREE[0][2][2][2]),
        ]),
    ]  # fmt: skip
    outcome = {
        e.name: (e.status.value, e.error.kind if e.error else None) for e in instrumented.events
    }
    assert outcome == {
        "ResearchFlow": ("error", "orchestration"),
        "read_ticket": ("ok", None),
        "triage": ("ok", None),
        "solve": ("error", "orchestration"),
        "crew": ("error", "orchestration"),
        "Add 1 and 2": ("error", "orchestration"),
        "Calculator": ("error", "orchestration"),
        "gpt-4o-mini": ("error", "model"),
    }
    for name in ("ResearchFlow", "solve", "crew", "Add 1 and 2"):
        assert instrumented.one(name=name).error.type == "InternalServerError"
    assert open_spans() == 0


# -- content --------------------------------------------------------------------------------------

CANARY = "canary-5e1f0b"


def test_with_content_capture_off_no_input_state_result_or_message_leaves(private, server, llm):
    server.add(Reply.text(f"3, says {CANARY}"))

    class Secretive(Flow[Ticket]):
        @start()
        def read_ticket(self) -> str:
            self.state.answer = f"{CANARY} in the state"
            return f"{CANARY} as a result"

        @router(read_ticket)
        def triage(self, text: str) -> str:
            return "math"  # a route the flow declares: a name

        @router(read_ticket)
        def improvise(self, text: str) -> str:
            return f"{CANARY} as a route"  # nobody listens: text, not a name

        @listen("math")
        def solve(self) -> Any:
            return calculator_crew(llm(), tools=[]).kickoff()

        @listen(solve)
        def finish(self, result: Any) -> str:
            raise ValueError(f"{result.raw} and {CANARY} in an error")

    flow = Secretive()
    with pytest.raises(ValueError):
        flow.kickoff(inputs={"topic": f"{CANARY} as an input", "id": f"{CANARY}-id"})

    wire = json.dumps([event.to_dict() for event in private.events])
    assert CANARY not in wire
    flow_run = private.one(name="Secretive")
    names = sorted(event.name for event in private.children(flow_run))
    assert names == ["finish", "improvise", "read_ticket", "solve", "triage"]
    error = Subset(kind="orchestration", type="ValueError", message="")
    check_event(flow_run, type="chain", name="Secretive", status="error", error=error)
    check_event(
        private.one(name="finish"), type="chain", name="finish",
        parent_span_id=flow_run.span_id, status="error", error=error,
    )  # fmt: skip
    check_event(
        private.one(name="triage"), type="chain", name="triage",
        parent_span_id=flow_run.span_id, metadata={"route": "math"},
    )  # fmt: skip
    for name in ("read_ticket", "improvise", "solve"):
        check_event(
            private.one(name=name), type="chain", name=name, parent_span_id=flow_run.span_id
        )
    assert private.one(type="run").parent_span_id == private.one(name="solve").span_id


# -- pauses, interruptions, nesting ---------------------------------------------------------------


def test_a_flow_paused_for_human_feedback_ends_its_spans_as_paused(instrumented):
    class Publishing(Flow):
        @start()
        @human_feedback(message="Approve the draft?", provider=LaterReviewer())
        def draft(self) -> str:
            return "the draft"

        @listen(draft)
        def publish(self, reviewed: Any) -> str:
            return "published"

    flow = Publishing()

    assert isinstance(flow.kickoff(), HumanFeedbackPending)

    assert tree_of(instrumented) == [("chain", "Publishing", [("chain", "draft", [])])]
    flow_run = instrumented.one(name="Publishing")
    check_event(
        flow_run, type="chain", name="Publishing", output="Approve the draft?",
        metadata={"flow_id": flow.flow_id, "paused": True, "paused_method": "draft"},
    )  # fmt: skip
    check_event(
        instrumented.one(name="draft"), type="chain", name="draft",
        parent_span_id=flow_run.span_id, input={"state": {"id": flow.flow_id}},
        output="Approve the draft?", metadata={"paused": True},
    )  # fmt: skip
    assert open_spans() == 0


def test_a_cancelled_flow_kickoff_async_is_exported_as_errors(instrumented):
    async def cancel_while_a_method_waits() -> None:
        waiting = asyncio.Event()

        class Patient(Flow):
            @start()
            async def wait(self) -> str:
                waiting.set()
                await asyncio.sleep(30)
                return "never"

        kickoff = asyncio.create_task(Patient().kickoff_async())
        await waiting.wait()
        kickoff.cancel()
        with pytest.raises(asyncio.CancelledError):
            await kickoff

    asyncio.run(cancel_while_a_method_waits())
    sightline_crewai.flush()

    assert tree_of(instrumented) == [("chain", "Patient", [("chain", "wait", [])])]
    cancelled = Subset(kind="orchestration", type="CancelledError")
    flow_run = instrumented.one(name="Patient")
    check_event(
        flow_run, type="chain", name="Patient", status="error", error=cancelled,
        metadata={"flow_id": ANY, "incomplete": True},
    )  # fmt: skip
    check_event(
        instrumented.one(name="wait"), type="chain", name="wait",
        parent_span_id=flow_run.span_id, status="error", error=cancelled,
        input={"state": {"id": flow_run.metadata["flow_id"]}}, metadata={"incomplete": True},
    )  # fmt: skip
    assert open_spans() == 0


def test_a_flow_in_a_sightline_trace_and_a_monitored_call_in_a_method_nest(instrumented):
    class Lookup(Flow):
        @start()
        def look_up(self) -> int:
            return db_lookup(3)

    with sightline.trace("request", session_id="s-1") as request:
        assert Lookup().kickoff() == 6

    flow_run, method = instrumented.one(name="Lookup"), instrumented.one(name="look_up")
    monitored, query = instrumented.one(name="db_lookup"), instrumented.one(name="query")
    assert (flow_run.trace_id, flow_run.parent_span_id) == (request.trace_id, request.span_id)
    assert (method.trace_id, method.parent_span_id) == (request.trace_id, flow_run.span_id)
    assert (monitored.trace_id, monitored.parent_span_id) == (request.trace_id, method.span_id)
    assert query.parent_span_id == monitored.span_id
    assert {flow_run.session_id, method.session_id, monitored.session_id} == {"s-1"}


# -- order of arrival, malformed events -----------------------------------------------------------


@pytest.fixture(scope="module")
def flow_run_events() -> list[Recorded]:
    with ScriptedOpenAIServer([Reply.text("3", prompt_tokens=10, completion_tokens=2)]) as srv:
        llm = LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
        return record_events(
            lambda: research_flow(llm).kickoff(inputs={"topic": "the sum of 1 and 2"})
        )


def replayed(events: list[Recorded]) -> list[Any]:
    """The tree, and what each event carries, after replaying ``events`` into a new tree."""
    with capture() as cap:
        tree = SpanTree()
        replay(events, tree)
        assert tree.pending() == 0
        assert tree.open_spans() == 0
        by_span = {event.span_id: event for event in cap.events}
        carried = sorted(
            (e.name, by_span[e.parent_span_id].name if e.parent_span_id in by_span else None,
             e.status.value, repr(e.usage), repr(e.output), repr(e.metadata.get("route")))
            for e in cap.events
        )  # fmt: skip
        return [tree_of(cap), carried]


def test_a_flow_builds_the_same_tree_whatever_order_its_events_arrive_in(flow_run_events):
    in_order = replayed(flow_run_events)

    assert in_order[0] == RESEARCH_TREE
    assert ("triage", "ResearchFlow", "ok", "None", "'math'", "'math'") in in_order[1]
    assert replayed(list(reversed(flow_run_events))) == in_order
    for seed in range(4):
        shuffled = list(flow_run_events)
        random.Random(seed).shuffle(shuffled)
        assert replayed(shuffled) == in_order


class InternalFlow:
    """Stands for a flow CrewAI runs itself (its agent executor)."""

    is_crewai_internal = True


def test_a_flow_end_whose_start_never_arrived_is_recorded_from_the_end():
    def end(flow_name: str) -> FlowFinishedEvent:
        return FlowFinishedEvent(
            flow_name=flow_name, result="done", state={}, started_event_id=str(uuid4())
        )

    with capture() as cap:
        tree = SpanTree()
        tree.receive("FlowFinishedEvent", RULES["FlowFinishedEvent"], end("Orphan"), object())
        tree.receive(
            "FlowFinishedEvent", RULES["FlowFinishedEvent"], end("AgentExecutor"), InternalFlow()
        )
        tree.flush()

        check_event(
            cap.one(), type="chain", name="Orphan", output="done",
            metadata={"start_missing": True},
        )  # fmt: skip
