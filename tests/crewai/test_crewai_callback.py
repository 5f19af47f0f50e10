"""The per-constructor integration, alone and together with the global one."""

from __future__ import annotations

from crewai import Agent, Crew, Task

import sightline
from sightline_crewai import SightlineCrewCallback
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    add,
    calculator_crew,
    check_event,
    tree_of,
)
from tests.support.openai_server import Reply

pytestmark = CREWAI_WARNINGS

REACT_TOOL_CALL = 'Thought: I should add them\nAction: add\nAction Input: {"a": 1, "b": 2}'


def callbacks(callback: SightlineCrewCallback) -> dict:
    return {"step_callback": callback.step_callback, "task_callback": callback.task_callback}


def test_callback_alone_records_the_task_and_the_final_answer(cap, server, llm):
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("The sum is 3"))
    callback = SightlineCrewCallback(agent="math-crew", session_id="session-1")

    calculator_crew(llm(), **callbacks(callback)).kickoff()

    assert tree_of(cap) == [("chain", "Add 1 and 2", [("decision", "agent_finish", [])])]
    task = cap.one(type="chain")
    finish = cap.one(type="decision")
    check_event(
        task, type="chain", name="Add 1 and 2", agent="math-crew", session_id="session-1",
        input={"description": "Add 1 and 2", "expected_output": "The sum"},
        output="The sum is 3", metadata={"agent_role": "Calculator", "output_format": "raw"},
    )  # fmt: skip
    check_event(
        finish, type="decision", name="agent_finish", parent_span_id=task.span_id,
        agent="math-crew", session_id="session-1", output="The sum is 3",
    )  # fmt: skip
    assert finish.trace_id == task.trace_id
    assert task.start_ns < finish.start_ns <= task.end_ns


def test_callback_alone_in_react_mode_records_the_action_and_the_tool_call(cap, server, llm):
    # A model without native function calling ("o1" in the name): CrewAI's ReAct text loop,
    # where step_callback receives the ToolResult, then the AgentAction that asked for it.
    server.add(Reply.text(REACT_TOOL_CALL), Reply.text("Thought: done\nFinal Answer: 3"))
    callback = SightlineCrewCallback()

    calculator_crew(llm("o1-mini"), **callbacks(callback)).kickoff()

    assert tree_of(cap) == [
        ("chain", "Add 1 and 2", [("tool_call", "add", []), ("decision", "agent_action", [])]),
    ]
    task = cap.one(type="chain")
    check_event(
        cap.one(type="tool_call"), type="tool_call", name="add", parent_span_id=task.span_id,
        input={"a": 1, "b": 2}, output="3", metadata={"result_as_answer": False},
    )  # fmt: skip
    check_event(
        cap.one(type="decision"), type="decision", name="agent_action",
        parent_span_id=task.span_id, input="Thought: I should add them",
        output={"tool": "add", "tool_input": {"a": 1, "b": 2}},
    )  # fmt: skip
    assert task.output == "3"


def test_callback_puts_each_step_under_its_own_task(cap, server, llm):
    server.add(Reply.text("Fact: 42"), Reply.text("Report: 42"))
    callback = SightlineCrewCallback()
    model = llm()
    # With tools, CrewAI uses native function calling and reports AgentFinish to step_callback
    # (its ReAct loop without tools reports no steps).
    researcher = Agent(role="Researcher", goal="Find", backstory="curious", llm=model, tools=[add])
    writer = Agent(role="Writer", goal="Write", backstory="clear", llm=model, tools=[add])

    Crew(
        agents=[researcher, writer],
        tasks=[
            Task(description="Find the answer", expected_output="A fact", agent=researcher),
            Task(description="Write the report", expected_output="A report", agent=writer),
        ],
        **callbacks(callback),
    ).kickoff()

    assert tree_of(cap) == [
        ("chain", "Find the answer", [("decision", "agent_finish", [])]),
        ("chain", "Write the report", [("decision", "agent_finish", [])]),
    ]
    first, second = sorted(cap.find(type="chain"), key=lambda e: e.start_ns)
    assert [c.output for c in cap.children(first)] == ["Fact: 42"]
    assert [c.output for c in cap.children(second)] == ["Report: 42"]
    assert first.trace_id == second.trace_id  # one kickoff, one trace


def test_callback_nests_under_the_ambient_span(cap, server, llm):
    server.add(Reply.text("3"))
    callback = SightlineCrewCallback()

    with sightline.trace("ticket") as outer:
        calculator_crew(llm(), **callbacks(callback)).kickoff()

    task = cap.one(type="chain")
    assert task.parent_span_id == outer.span_id
    assert {e.trace_id for e in cap.events} == {outer.trace_id}
    assert cap.one(type="decision").parent_span_id == task.span_id


def test_agent_step_callback_alone_records_decisions(cap, server, llm):
    server.add(Reply.text(REACT_TOOL_CALL), Reply.text("Thought: done\nFinal Answer: 3"))
    callback = SightlineCrewCallback()
    agent = Agent(
        role="Calculator", goal="Add numbers", backstory="math", llm=llm("o1-mini"),
        tools=[add], step_callback=callback.step_callback,
    )  # fmt: skip
    Crew(
        agents=[agent], tasks=[Task(description="Add", expected_output="Sum", agent=agent)]
    ).kickoff()

    # Without task_callback there is no task event: the steps name it as their parent anyway.
    assert sorted((e.type.value, e.name) for e in cap.events) == [
        ("decision", "agent_action"),
        ("tool_call", "add"),
    ]
    assert len({e.parent_span_id for e in cap.events}) == 1


def test_callback_and_listener_together_record_nothing_twice(instrumented, server, llm):
    server.add(
        Reply.tool_call("add", {"a": 1, "b": 2}, prompt_tokens=40, completion_tokens=7),
        Reply.text("The sum is 3", prompt_tokens=60, completion_tokens=5),
    )
    callback = SightlineCrewCallback(session_id="session-1")

    calculator_crew(llm(), **callbacks(callback)).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [
                ("agent", "Calculator", [
                    ("llm_invoke", "gpt-4o-mini", []),
                    ("tool_call", "add", []),
                    ("llm_invoke", "gpt-4o-mini", []),
                    ("decision", "agent_finish", []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    agent = instrumented.one(type="agent")
    check_event(
        instrumented.one(type="decision"), type="decision", name="agent_finish",
        parent_span_id=agent.span_id, agent="Calculator", session_id="session-1",
        output="The sum is 3",
    )  # fmt: skip
    assert instrumented.one(type="tool_call").input == {"a": 1, "b": 2}


def test_callback_and_listener_together_in_react_mode_record_nothing_twice(
    instrumented, server, llm
):
    server.add(Reply.text(REACT_TOOL_CALL), Reply.text("Thought: done\nFinal Answer: 3"))
    callback = SightlineCrewCallback()

    calculator_crew(llm("o1-mini"), **callbacks(callback)).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [
                ("agent", "Calculator", [
                    ("llm_invoke", "o1-mini", []),
                    ("tool_call", "add", []),
                    ("decision", "agent_action", []),
                    ("llm_invoke", "o1-mini", []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    tool_call = instrumented.one(type="tool_call")
    assert (tool_call.input, tool_call.output) == ({"a": 1, "b": 2}, "3")
    assert instrumented.one(type="decision").output == {
        "tool": "add",
        "tool_input": {"a": 1, "b": 2},
    }


def test_callbacks_never_raise(cap):
    class BrokenClient:
        enabled = True

        def start_span(self, *args, **kwargs):
            raise RuntimeError("sightline is broken")

    for client in (BrokenClient(), None):
        callback = SightlineCrewCallback(client=client)
        callback.step_callback(object())
        callback.step_callback(None)
        callback.task_callback(None)
        callback.task_callback(object())
    assert [(e.type.value, e.name) for e in cap.events] == [("chain", "task"), ("chain", "task")]
