"""The tree is right whatever order CrewAI's handler pool delivers the events in.

The events are real: recorded from real crews on ``crewai_event_bus``, then replayed into a
:class:`SpanTree` in other orders (ends before starts, children before parents, from several
threads at once).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from crewai import Agent, Crew, Task

from sightline.testing import capture
from sightline_crewai.listener import event_classes
from sightline_crewai.mapping import RULES
from sightline_crewai.tree import SpanTree
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    Recorded,
    calculator_crew,
    record_events,
    replay,
    tree_of,
)
from tests.support.openai_server import Reply

pytestmark = CREWAI_WARNINGS


def shape_with_usage(cap: Any) -> list[Any]:
    """The tree plus what the ends carry (status, tokens, output), for comparison."""
    by_span = {event.span_id: event for event in cap.events}
    parents = sorted(
        (event.type.value, event.name, by_span[event.parent_span_id].name if event.parent_span_id in by_span else None,
         event.status.value, repr(event.usage), repr(event.output))
        for event in cap.events
    )  # fmt: skip
    return [tree_of(cap), parents]


@pytest.fixture(scope="module")
def two_task_run() -> list[Recorded]:
    from crewai import LLM

    from tests.support.openai_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(
        [
            Reply.tool_call("add", {"a": 1, "b": 2}, prompt_tokens=40, completion_tokens=7),
            Reply.text("The sum is 3", prompt_tokens=60, completion_tokens=5),
            Reply.text("Report: 3", prompt_tokens=30, completion_tokens=2),
        ]
    ) as srv:

        def make_llm() -> Any:
            return LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")

        def kickoff() -> None:
            crew = calculator_crew(make_llm())
            writer = Agent(role="Writer", goal="Report", backstory="clear", llm=make_llm())
            crew = Crew(
                agents=[*crew.agents, writer],
                tasks=[
                    *crew.tasks,
                    Task(description="Report it", expected_output="A report", agent=writer),
                ],
            )
            crew.kickoff()

        return record_events(kickoff)


def build(events: list[Recorded], *, threads: int = 1) -> list[Any]:
    with capture() as cap:
        tree = SpanTree()
        if threads == 1:
            replay(events, tree)
        else:
            chunks = [events[i::threads] for i in range(threads)]
            workers = [threading.Thread(target=replay, args=(chunk, tree)) for chunk in chunks]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        assert tree.pending() == 0
        return shape_with_usage(cap)


def test_in_order_replay_builds_the_expected_tree(two_task_run):
    tree, _ = build(two_task_run)

    assert tree == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [
                ("agent", "Calculator", [
                    ("llm_invoke", "gpt-4o-mini", []),
                    ("tool_call", "add", []),
                    ("llm_invoke", "gpt-4o-mini", []),
                ]),
            ]),
            ("chain", "Report it", [("agent", "Writer", [("llm_invoke", "gpt-4o-mini", [])])]),
        ]),
    ]  # fmt: skip


def test_reversed_order_builds_the_same_tree(two_task_run):
    assert build(list(reversed(two_task_run))) == build(two_task_run)


@pytest.mark.parametrize("seed", range(8))
def test_shuffled_order_builds_the_same_tree(two_task_run, seed):
    shuffled = list(two_task_run)
    random.Random(seed).shuffle(shuffled)

    assert build(shuffled) == build(two_task_run)


def test_events_from_several_threads_build_the_same_tree(two_task_run):
    shuffled = list(two_task_run)
    random.Random(42).shuffle(shuffled)

    assert build(shuffled, threads=6) == build(two_task_run)


def root(event: Any) -> Any:
    """The event as if emitted outside any CrewAI scope."""
    return event.model_copy(update={"parent_event_id": None})


def test_an_end_before_its_start_keeps_the_start_time_and_both_halves(two_task_run):
    [start] = [root(e) for n, _, e in two_task_run if n == "ToolUsageStartedEvent"]
    [end] = [e for n, _, e in two_task_run if n == "ToolUsageFinishedEvent"]
    with capture() as cap:
        tree = SpanTree()
        tree.receive("ToolUsageFinishedEvent", RULES["ToolUsageFinishedEvent"], end)
        assert tree.pending() == 1
        tree.receive("ToolUsageStartedEvent", RULES["ToolUsageStartedEvent"], start)

        [tool_call] = cap.events
    assert tree.pending() == 0
    assert (tool_call.input, tool_call.output) == ({"a": 1, "b": 2}, "3")
    assert tool_call.duration_ms == pytest.approx(
        (end.timestamp - start.timestamp).total_seconds() * 1000, abs=0.01
    )


def test_an_end_without_started_event_id_pairs_by_call_id_and_emission_sequence(two_task_run):
    starts = [root(e) for n, _, e in two_task_run if n == "LLMCallStartedEvent"]
    ends = [e for n, _, e in two_task_run if n == "LLMCallCompletedEvent"]
    with capture() as cap:
        tree = SpanTree()
        for start in starts:
            tree.receive("LLMCallStartedEvent", RULES["LLMCallStartedEvent"], start)
        for end in reversed(ends):
            anonymous = end.model_copy(update={"started_event_id": None})
            tree.receive("LLMCallCompletedEvent", RULES["LLMCallCompletedEvent"], anonymous)

        calls = sorted(cap.events, key=lambda e: e.start_ns)
    assert [call.metadata["call_id"] for call in calls] == [start.call_id for start in starts]
    assert [call.output for call in calls] == [end.response for end in ends]
    assert [call.usage.total_tokens for call in calls] == [47, 65, 32]


def test_a_child_whose_parent_never_arrives_is_recorded_on_flush(two_task_run):
    [tool_start] = [e for n, _, e in two_task_run if n == "ToolUsageStartedEvent"]
    [tool_end] = [e for n, _, e in two_task_run if n == "ToolUsageFinishedEvent"]
    with capture() as cap:
        tree = SpanTree()
        tree.receive("ToolUsageStartedEvent", RULES["ToolUsageStartedEvent"], tool_start)
        tree.receive("ToolUsageFinishedEvent", RULES["ToolUsageFinishedEvent"], tool_end)
        assert tree.pending() == 2
        assert cap.events == []

        tree.flush()

        [tool_call] = cap.events
    assert tree.pending() == 0
    assert (tool_call.name, tool_call.parent_span_id, tool_call.output) == ("add", None, "3")


def test_an_event_waiting_too_long_is_recorded_when_the_next_event_arrives(two_task_run):
    [tool_start] = [e for n, _, e in two_task_run if n == "ToolUsageStartedEvent"]
    [tool_end] = [e for n, _, e in two_task_run if n == "ToolUsageFinishedEvent"]
    with capture() as cap:
        tree = SpanTree(wait_seconds=0.0)
        tree.receive("ToolUsageStartedEvent", RULES["ToolUsageStartedEvent"], tool_start)
        tree.receive("ToolUsageFinishedEvent", RULES["ToolUsageFinishedEvent"], tool_end)

        [tool_call] = cap.events
    assert (tool_call.name, tool_call.output, tool_call.status.value) == ("add", "3", "ok")


def test_an_end_whose_start_never_arrives_is_recorded_from_the_end_alone(two_task_run):
    [llm_end] = [e for n, _, e in two_task_run if n == "LLMCallCompletedEvent"][-1:]
    with capture() as cap:
        tree = SpanTree()
        tree.receive("LLMCallCompletedEvent", RULES["LLMCallCompletedEvent"], llm_end)
        tree.flush()

        [call] = cap.events
    assert (call.type.value, call.name, call.output) == ("llm_invoke", "gpt-4o-mini", "Report: 3")
    assert call.usage.to_dict() == {"input_tokens": 30, "output_tokens": 2, "total_tokens": 32}
    assert call.metadata["start_missing"] is True
    assert call.duration_ms == 0


def test_memory_stays_bounded_when_ends_never_come(two_task_run):
    starts = [(n, e) for n, _, e in two_task_run if n == "LLMCallStartedEvent"]
    with capture():
        tree = SpanTree(max_nodes=100)
        for i in range(1000):
            for name, event in starts:
                copy = event.model_copy(update={"event_id": f"{name}-{i}", "parent_event_id": None})
                tree.receive(name, RULES[name], copy)
        assert len(tree._nodes) <= 100


def test_event_classes_skip_what_this_crewai_lacks_and_add_its_other_scopes():
    import crewai.events

    listened = {name: rule for _cls, name, rule in event_classes()}

    missing = [name for name in RULES if not hasattr(crewai.events, name)]
    assert missing == ["LLMGuardrailFailedEvent"]  # CrewAI 1.15 has no such class
    assert set(RULES) - set(missing) <= set(listened)
    scopes = {name for name, rule in listened.items() if rule.event_type is None}
    assert {
        "FlowStartedEvent",
        "MethodExecutionStartedEvent",
        "MCPToolExecutionStartedEvent",
    } <= scopes


def test_an_end_naming_the_wrong_start_never_closes_another_span(two_task_run):
    # After a failed LLM call CrewAI emits the failure twice; the second pops the enclosing
    # scope, so its started_event_id names a start of another kind.
    [agent_start] = [root(e) for n, _, e in two_task_run if n == "AgentExecutionStartedEvent"][:1]
    [agent_end] = [e for n, _, e in two_task_run if n == "AgentExecutionCompletedEvent"][:1]
    [llm_end] = [e for n, _, e in two_task_run if n == "LLMCallCompletedEvent"][:1]
    stray = llm_end.model_copy(update={"started_event_id": agent_start.event_id})
    with capture() as cap:
        tree = SpanTree()
        tree.receive("AgentExecutionStartedEvent", RULES["AgentExecutionStartedEvent"], agent_start)
        tree.receive("LLMCallCompletedEvent", RULES["LLMCallCompletedEvent"], stray)
        assert cap.events == []
        tree.receive(
            "AgentExecutionCompletedEvent", RULES["AgentExecutionCompletedEvent"], agent_end
        )

        [agent] = cap.events
    assert (agent.type.value, agent.usage, agent.output) == ("agent", None, "The sum is 3")
