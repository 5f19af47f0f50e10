"""CrewAI adapter, review 7: each run's own tokens, no prompt in event names with content
capture off, finished kickoffs forgotten, and tool governance before a tool runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.events import crewai_event_bus
from crewai.tools import tool

import sightline_crewai
from sightline import Decision
from sightline.testing import capture
from sightline_crewai import SightlineCrewCallback
from sightline_crewai.instrumentation import active_listener
from sightline_crewai.mapping import RULES
from sightline_crewai.tree import SpanTree
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    DrainingCapture,
    Recorded,
    Subset,
    calculator_crew,
    check_event,
    record_events,
    replay,
    tree_of,
)
from tests.support.governance import Policy, count_enforced, policies
from tests.support.openai_server import Reply, ScriptedOpenAIServer, tool_then_answer

pytestmark = CREWAI_WARNINGS

ADD_ONCE = {"prompt_tokens": 40, "completion_tokens": 7}  # two calls per kickoff: 94 tokens
RUN_USAGE = {"input_tokens": 80, "output_tokens": 14, "total_tokens": 94}


def own_llm_usage(cap: Any, run: Any) -> dict[str, int]:
    """The sum of the usage of the llm_invoke events in ``run``'s trace."""
    calls = [e for e in cap.events if e.trace_id == run.trace_id and e.type.value == "llm_invoke"]
    return {
        key: sum(getattr(call.usage, key) for call in calls)
        for key in ("input_tokens", "output_tokens", "total_tokens")
    }


def runs_by_start(cap: Any) -> list[Any]:
    return sorted(cap.find(type="run"), key=lambda e: e.start_ns)


# -- 1. a run's usage is its own ----------------------------------------------------------------


def test_a_crew_kicked_off_again_reports_each_runs_own_tokens(instrumented, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3", **ADD_ONCE))
    shared = llm()
    crew = calculator_crew(shared)

    crew.kickoff()
    crew.kickoff()
    calculator_crew(shared).kickoff()  # another crew, the same LLM object

    runs = runs_by_start(instrumented)
    assert [run.usage.to_dict() for run in runs] == [RUN_USAGE] * 3
    assert [own_llm_usage(instrumented, run) for run in runs] == [RUN_USAGE] * 3


@pytest.mark.parametrize("concurrent", [False, True], ids=["for_each", "for_each_async"])
def test_kickoffs_for_each_input_report_their_own_tokens(instrumented, server, llm, concurrent):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3", **ADD_ONCE))
    crew = calculator_crew(llm())

    if concurrent:
        outputs = asyncio.run(crew.kickoff_for_each_async([{}, {}, {}]))
    else:
        outputs = crew.kickoff_for_each([{}, {}, {}])

    assert len(outputs) == 3
    runs = runs_by_start(instrumented)
    assert len({run.trace_id for run in runs}) == 3
    assert [run.usage.to_dict() for run in runs] == [RUN_USAGE] * 3


@pytest.fixture(scope="module")
def second_kickoff() -> list[Recorded]:
    """The events of the second kickoff of a crew (its LLM object already counted 94 tokens)."""
    with ScriptedOpenAIServer() as srv:
        from crewai import LLM

        srv.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3", **ADD_ONCE))
        crew = calculator_crew(LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-t"))
        crew.kickoff()
        return record_events(crew.kickoff)


def test_a_runs_end_handled_before_its_last_call_ends_waits_for_that_call(second_kickoff):
    # CrewAI's pool may run the kickoff's end handler before the last LLM call's end handler.
    [last_call_end] = [e for e in second_kickoff if e[0] == "LLMCallCompletedEvent"][-1:]
    reordered = [e for e in second_kickoff if e is not last_call_end] + [last_call_end]
    assert reordered[-2][0] == "CrewKickoffCompletedEvent"
    with capture() as cap:
        tree = SpanTree()
        replay(reordered[:-1], tree)
        assert cap.find(type="run") == []  # the run's end waits for its call still open
        replay(reordered[-1:], tree)

        run = cap.one(type="run")
        assert run.usage.to_dict() == RUN_USAGE
        assert own_llm_usage(cap, run) == RUN_USAGE
        assert tree.open_spans() == 0


def test_a_runs_end_waits_at_most_wait_seconds_for_a_call_that_never_ends(second_kickoff):
    [last_call_end] = [e for e in second_kickoff if e[0] == "LLMCallCompletedEvent"][-1:]
    with capture() as cap:
        tree = SpanTree(wait_seconds=0.05)
        replay([e for e in second_kickoff if e is not last_call_end], tree)
        time.sleep(0.1)
        tree.settle()
        run = cap.one(type="run")
        # Only the call that ended counts: 40 + 7.
        assert run.usage.to_dict() == {"input_tokens": 40, "output_tokens": 7, "total_tokens": 47}
        assert run.status.value == "ok"


# -- 2. capture_content=False: no prompt in a name ------------------------------------------------

PATIENT_TASK = "Summarise the medical record of patient Jane Roe, born 1980-02-03"
PATIENT_GUARD = "Reject any answer that names patient Jane Roe"


def guarded_answers(request: dict[str, Any]) -> Reply:
    """The agent's answer, and the LLM guardrail's verdict on it."""
    body = json.dumps(request)
    if "valid" in body and "feedback" in body:
        return Reply.text('{"valid": true, "feedback": null}')
    return Reply.text("A summary without names")


def guarded_crew(llm: Any, *, name: str | None = None, description: str = PATIENT_TASK) -> Crew:
    clerk = Agent(role="Clerk", goal="Summarise records", backstory="careful", llm=llm)
    task = Task(
        description=description,
        expected_output="a summary",
        agent=clerk,
        guardrail=PATIENT_GUARD,
        **({"name": name} if name else {}),
    )
    return Crew(agents=[clerk], tasks=[task])


def test_with_content_capture_off_no_task_or_guardrail_prompt_leaves_as_a_name(
    private, server, llm
):
    server.set_responder(guarded_answers)

    guarded_crew(llm()).kickoff()

    wire = json.dumps([event.to_dict() for event in private.events])
    assert "Jane Roe" not in wire
    assert tree_of(private) == [
        ("run", "crew", [
            ("chain", "task", [
                ("agent", "Clerk", [("llm_invoke", "gpt-4o-mini", [])]),
                ("decision", "guardrail:llm", [
                    ("agent", "Guardrail Agent", [("llm_invoke", "gpt-4o-mini", [])]),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    check_event(
        private.one(type="decision"), type="decision", name="guardrail:llm",
        parent_span_id=private.one(type="chain").span_id,
        metadata={"guardrail_type": "llm", "retry_count": 0, "success": True},
    )  # fmt: skip


def test_with_content_capture_off_no_goal_and_no_made_up_tool_name_leaves(private, server, llm):
    made_up = "wire_money_to_account_4242"  # the model's invention: model output, not a name
    server.set_responder(tool_then_answer(made_up, {"amount": 5}, "41"))

    calculator_crew(llm(), tools=[counted_add]).kickoff()

    wire = json.dumps([event.to_dict() for event in private.events])
    assert "4242" not in wire.lower() and "wire_money" not in wire.lower()
    [agent] = private.find(type="agent")
    assert "goal" not in agent.metadata and agent.metadata["role"] == "Calculator"
    calls = private.find(type="tool_call")
    assert calls and {call.name for call in calls} == {"unknown_tool"}


def test_with_content_capture_off_real_tools_keep_their_names(private, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))

    calculator_crew(llm(), tools=[counted_add]).kickoff()

    [call] = private.find(type="tool_call")
    assert (call.name, call.status.value) == ("add", "ok")


def test_with_content_capture_off_a_named_task_keeps_its_name(private, server, llm):
    server.set_responder(guarded_answers)

    guarded_crew(llm(), name="summarise-record").kickoff()

    assert private.one(type="chain").name == "summarise-record"
    assert "Jane Roe" not in json.dumps([event.to_dict() for event in private.events])


def test_with_content_capture_on_names_keep_only_the_start_of_a_long_prompt(
    instrumented, server, llm
):
    server.set_responder(guarded_answers)
    description = "Summarise   the record\nof patient Jane Roe: " + "details " * 40

    guarded_crew(llm(), description=description).kickoff()

    chain = instrumented.one(type="chain")
    one_line = "Summarise the record of patient Jane Roe: " + "details " * 10
    assert chain.name == one_line[:79] + "…"
    assert len(chain.name) == 80
    assert chain.input["description"] == description  # the content itself is still recorded
    assert instrumented.one(type="decision").name == f"guardrail:{PATIENT_GUARD}"


def test_callback_task_name_with_content_capture_off_is_not_the_description(server, llm):
    server.add(Reply.text("A summary without names"))
    callback = SightlineCrewCallback()
    clerk = Agent(role="Clerk", goal="Summarise", backstory="careful", llm=llm())
    task = Task(description=PATIENT_TASK, expected_output="a summary", agent=clerk)
    crew = Crew(agents=[clerk], tasks=[task], task_callback=callback.task_callback)

    with capture(capture_content=False) as cap:
        crew.kickoff()
        crewai_event_bus.flush(10.0)
        assert [(e.type.value, e.name) for e in cap.events] == [("chain", "task")]
        assert "Jane Roe" not in json.dumps([event.to_dict() for event in cap.events])


# -- 3. finished kickoffs are forgotten ---------------------------------------------------------


def test_a_finished_kickoff_keeps_no_span_and_is_forgotten_after_wait_seconds(
    instrumented, server, llm
):
    listener = active_listener()
    assert listener is not None
    tree = listener.tree
    tree.wait_seconds = 0.2
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))

    calculator_crew(llm()).kickoff()
    sightline_crewai.flush()

    assert len(instrumented.events) == 6
    # Ended spans are not kept (their payloads go with them), nor is anything that waited.
    assert tree._nodes and all(node.span is None for node in tree._nodes.values())
    assert (len(tree._waiting), tree.pending(), tree._deferred) == (0, 0, [])
    time.sleep(0.3)
    sightline_crewai.flush()
    assert (tree._nodes, tree._members) == ({}, {})


@pytest.fixture(scope="module")
def first_kickoff() -> list[Recorded]:
    with ScriptedOpenAIServer() as srv:
        from crewai import LLM

        srv.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3", **ADD_ONCE))
        llm = LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-t")
        return record_events(calculator_crew(llm).kickoff)


def test_a_tool_call_handled_after_its_kickoff_ended_still_nests_and_nothing_is_kept(
    first_kickoff,
):
    tool_events = [e for e in first_kickoff if e[0].startswith("ToolUsage")]
    late = [e for e in first_kickoff if e not in tool_events] + tool_events
    with capture() as cap:
        tree = SpanTree(wait_seconds=0.05)
        replay(late, tree)

        agent, call = cap.one(type="agent"), cap.one(type="tool_call")
        assert (call.trace_id, call.parent_span_id) == (agent.trace_id, agent.span_id)
        assert all(node.span is None for node in tree._nodes.values())
        time.sleep(0.1)
        tree.settle()
        assert tree._nodes == {}


def test_an_orphan_placed_under_its_parent_no_longer_waits(first_kickoff):
    [agent_start] = [e for n, _, e in first_kickoff if n == "AgentExecutionStartedEvent"]
    [task_start] = [e for n, _, e in first_kickoff if n == "TaskStartedEvent"]
    assert agent_start.parent_event_id == task_start.event_id
    with capture() as cap:
        tree = SpanTree()
        tree.receive("AgentExecutionStartedEvent", RULES["AgentExecutionStartedEvent"], agent_start)
        assert (tree.pending(), len(tree._waiting)) == (1, 1)
        root_task = task_start.model_copy(update={"parent_event_id": None})
        tree.receive("TaskStartedEvent", RULES["TaskStartedEvent"], root_task)
        # Placed under its task: nothing of it stays waiting (the event, its source).
        assert (tree.pending(), len(tree._waiting)) == (0, 0)
        assert cap.events == []


# -- 6. governance --------------------------------------------------------------------------------

ran: list[tuple[int, int]] = []


@tool("add")
def counted_add(a: int, b: int) -> int:
    """Add two integers."""
    ran.append((a, b))
    return a + b


@pytest.fixture
def policy(instrumented: DrainingCapture) -> Iterator[Callable[[Any], Policy]]:
    ran.clear()
    with policies(instrumented.client) as install:
        yield install


DENIED = "tool 'add' denied: no tools today"


def test_a_denied_tool_does_not_run_and_the_agent_reads_the_denial(
    instrumented, server, llm, policy
):
    plugin = policy(Decision(False, "no tools today"))
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "I may not add"))

    result = calculator_crew(llm(), tools=[counted_add]).kickoff()

    assert ran == []
    assert plugin.asked == [("add", {"a": 1, "b": 2})]
    assert result.raw == "I may not add"
    # CrewAI turns the ToolDenied raised where the tool would run into the tool's answer.
    [tool_message] = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_message["content"] == f"Error executing tool: {DENIED}"
    agent, call = instrumented.one(type="agent"), instrumented.one(type="tool_call")
    decision = instrumented.one(type="decision")
    check_event(
        call, type="tool_call", name="add", parent_span_id=agent.span_id, agent="Calculator",
        status="error", input={"a": 1, "b": 2},
        error=Subset(kind="guardrail", type="ToolDenied", message=DENIED),
        metadata={"run_attempts": 0, "agent_role": "Calculator"},
    )  # fmt: skip
    check_event(
        decision, type="decision", name="authorize:add", parent_span_id=call.span_id,
        status="error", input={"tool": "add", "arguments": {"a": 1, "b": 2}},
        output={"decision": "deny", "reason": "no tools today"},
        error=Subset(kind="guardrail", message=DENIED), metadata={"governance": True},
        agent="Calculator",
    )  # fmt: skip
    assert decision.trace_id == call.trace_id
    assert plugin.contexts == [
        {"trace_id": call.trace_id, "span_id": call.span_id, "agent": "Calculator",
         "framework": "crewai"},
    ]  # fmt: skip
    assert (instrumented.one(type="run").status.value, agent.status.value) == ("ok", "ok")


def test_a_policy_replacing_the_arguments_runs_the_tool_with_them(
    instrumented, server, llm, policy
):
    policy(lambda _tool, arguments: Decision(True, "b is capped", {**arguments, "b": 40}))
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "41"))

    calculator_crew(llm(), tools=[counted_add]).kickoff()

    assert ran == [(1, 40)]
    [tool_message] = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_message["content"] == "41"
    call, decision = instrumented.one(type="tool_call"), instrumented.one(type="decision")
    assert (call.status.value, call.input, call.output) == ("ok", {"a": 1, "b": 40}, "41")
    check_event(
        decision, type="decision", name="authorize:add", parent_span_id=call.span_id,
        input={"tool": "add", "arguments": {"a": 1, "b": 40}},
        output={"decision": "allow_redacted", "reason": "b is capped"},
        metadata={"governance": True}, agent="Calculator",
    )  # fmt: skip


def test_in_the_react_loop_each_attempt_of_a_denied_tool_is_asked_once(
    instrumented, server, llm, policy
):
    # Without native function calling ("o1" models), CrewAI retries a failing tool: three
    # attempts, each a tool_call denied once (CrewAI's second invoke inside an attempt, with
    # the same arguments, is denied without asking again).
    plugin = policy(Decision(False, "no tools today"))
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "I may not add"))

    calculator_crew(llm("o1-mini"), tools=[counted_add]).kickoff()

    assert ran == []
    assert len(plugin.asked) == 3
    calls = sorted(instrumented.find(type="tool_call"), key=lambda e: e.start_ns)
    assert [(c.metadata["run_attempts"], c.error.kind, c.error.type) for c in calls] == [
        (1, "guardrail", "ToolDenied"),
        (2, "guardrail", "ToolDenied"),
        (3, "guardrail", "ToolDenied"),
    ]
    decisions = instrumented.find(type="decision", name="authorize:add")
    assert sorted(d.parent_span_id for d in decisions) == sorted(c.span_id for c in calls)


def test_without_a_policy_a_tool_runs_unchanged_after_one_enforced_check(
    instrumented, server, llm, monkeypatch
):
    from sightline_crewai import governance

    checks = count_enforced(monkeypatch, governance)
    monkeypatch.setattr(governance, "authorize", lambda *a, **k: pytest.fail("asked"))
    ran.clear()
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))

    calculator_crew(llm(), tools=[counted_add]).kickoff()

    assert ran == [(1, 2)]
    assert checks == [instrumented.client]
    assert instrumented.find(type="decision") == []
    call = instrumented.one(type="tool_call")
    assert (call.status.value, call.input, call.output) == ("ok", {"a": 1, "b": 2}, "3")


def test_uninstrument_puts_crewais_tool_methods_back(cap):
    from crewai.tools.base_tool import BaseTool, Tool
    from crewai.tools.structured_tool import CrewStructuredTool

    before = [
        BaseTool.run, BaseTool.arun, Tool.run, Tool.arun,
        CrewStructuredTool.invoke, CrewStructuredTool.ainvoke,
    ]  # fmt: skip
    sightline_crewai.instrument()
    try:
        from sightline_crewai import governance

        assert governance.installed() == [
            "BaseTool.arun", "BaseTool.run", "CrewStructuredTool.ainvoke",
            "CrewStructuredTool.invoke", "Tool.arun", "Tool.run",
        ]  # fmt: skip
        assert Tool.run is not before[2]
    finally:
        sightline_crewai.uninstrument()
    after = [
        BaseTool.run, BaseTool.arun, Tool.run, Tool.arun,
        CrewStructuredTool.invoke, CrewStructuredTool.ainvoke,
    ]  # fmt: skip
    assert after == before
