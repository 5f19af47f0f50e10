"""The global integration: real CrewAI crews against the scripted server, exact event trees."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest.mock import ANY

import openai
import pytest
from crewai import Agent, Crew, Task
from crewai.hooks.dispatch import InterceptionPoint, _resolve_hooks
from crewai.memory import Memory

import sightline
import sightline_crewai
from sightline.testing import capture
from sightline_crewai import SightlineEventListener
from sightline_crewai.kickoff import _execution_ended
from tests.crewai.crewai_support import (
    CREWAI_WARNINGS,
    DrainingCapture,
    Subset,
    add,
    calculator_crew,
    check_event,
    divide,
    tree_of,
)
from tests.support.openai_server import Reply, ScriptedOpenAIServer, tool_then_answer

pytestmark = CREWAI_WARNINGS

REPO = Path(__file__).resolve().parents[2]


def test_kickoff_records_the_exact_tree_with_token_counts_and_tool_arguments(
    instrumented, server, llm
):
    server.add(
        Reply.tool_call(
            "add", {"a": 1, "b": 2}, call_id="call_1", prompt_tokens=40, completion_tokens=7
        ),
        Reply.text("The sum is 3", prompt_tokens=60, completion_tokens=5),
    )

    result = calculator_crew(llm()).kickoff()

    assert result.raw == "The sum is 3"
    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [
                ("agent", "Calculator", [
                    ("llm_invoke", "gpt-4o-mini", []),
                    ("tool_call", "add", []),
                    ("llm_invoke", "gpt-4o-mini", []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    run = instrumented.one(type="run")
    [task] = instrumented.children(run)
    [agent] = instrumented.children(task)
    first_call, tool_call, second_call = instrumented.children(agent)
    assert len(instrumented.events) == 6
    assert {event.trace_id for event in instrumented.events} == {run.trace_id}

    check_event(
        run, type="run", name="crew", output="The sum is 3",
        usage={"input_tokens": 100, "output_tokens": 12, "total_tokens": 112},
        metadata={"process": "sequential", "agents": ["Calculator"], "tasks": 1},
    )  # fmt: skip
    check_event(
        task, type="chain", name="Add 1 and 2", parent_span_id=run.span_id,
        input={"description": "Add 1 and 2", "expected_output": "The sum"},
        output="The sum is 3",
        metadata={"task_id": ANY, "agent_role": "Calculator", "output_format": "raw"},
    )  # fmt: skip
    check_event(
        agent, type="agent", name="Calculator", parent_span_id=task.span_id, agent="Calculator",
        input=ANY, output="The sum is 3",
        metadata={
            "role": "Calculator", "goal": "Add numbers", "tools": ["add"],
            "model": "gpt-4o-mini", "task_id": task.metadata["task_id"],
        },
    )  # fmt: skip
    assert "Add 1 and 2" in agent.input
    llm_metadata = {
        "call_id": ANY, "tools": ["add"], "stream": False, "stop_sequences": ["\nObservation:"],
        "provider": "openai",
    }  # fmt: skip
    check_event(
        first_call, type="llm_invoke", name="gpt-4o-mini", parent_span_id=agent.span_id,
        agent="Calculator", model="gpt-4o-mini", input=ANY,
        output=[{"id": "call_1", "type": "function",
                 "function": {"name": "add", "arguments": '{"a":1,"b":2}'}}],
        usage={"input_tokens": 40, "output_tokens": 7, "total_tokens": 47},
        cost_usd=pytest.approx((40 * 0.15 + 7 * 0.60) / 1e6),  # gpt-4o-mini's list price
        metadata={**llm_metadata, "finish_reason": "tool_calls",
                  "response_id": "chatcmpl-scripted-1", "call_type": "tool_call"},
    )  # fmt: skip
    assert [m["role"] for m in first_call.input] == ["system", "user"]
    check_event(
        tool_call, type="tool_call", name="add", parent_span_id=agent.span_id,
        agent="Calculator", input={"a": 1, "b": 2}, output="3",
        metadata={"run_attempts": 0, "agent_role": "Calculator", "from_cache": False},
    )  # fmt: skip
    check_event(
        second_call, type="llm_invoke", name="gpt-4o-mini", parent_span_id=agent.span_id,
        agent="Calculator", model="gpt-4o-mini", input=ANY, output="The sum is 3",
        usage={"input_tokens": 60, "output_tokens": 5, "total_tokens": 65},
        cost_usd=pytest.approx((60 * 0.15 + 5 * 0.60) / 1e6),
        metadata={**llm_metadata, "finish_reason": "stop",
                  "response_id": "chatcmpl-scripted-2", "call_type": "llm_call"},
    )  # fmt: skip
    assert [m["role"] for m in second_call.input] == ["system", "user", "assistant", "tool"]


def test_failing_tool_is_recorded_with_kind_tool_and_the_run_goes_on(instrumented, server, llm):
    server.add(Reply.tool_call("divide", {"a": 1, "b": 0}), Reply.text("Cannot divide by zero"))

    result = calculator_crew(llm(), tools=[divide]).kickoff()

    assert result.raw == "Cannot divide by zero"
    tool_call = instrumented.one(type="tool_call")
    check_event(
        tool_call, type="tool_call", name="divide", parent_span_id=ANY, agent="Calculator",
        status="error", input={"a": 1, "b": 0},
        error=Subset(kind="tool", type="ZeroDivisionError", message="division by zero"),
        metadata={"run_attempts": 0, "agent_role": "Calculator"},
    )  # fmt: skip
    assert "ZeroDivisionError" in tool_call.error.stack
    assert [e.status.value for e in instrumented.events if e is not tool_call] == ["ok"] * 5


def test_crew_with_two_tasks_records_two_chains_in_order(instrumented, server, llm):
    server.add(
        Reply.text("Fact: the answer is 42", prompt_tokens=11, completion_tokens=3),
        Reply.text("Report: 42", prompt_tokens=22, completion_tokens=4),
    )
    # One LLM object per agent: CrewAI counts a shared one once per agent in the crew's total.
    researcher = Agent(role="Researcher", goal="Find facts", backstory="curious", llm=llm())
    writer = Agent(role="Writer", goal="Write reports", backstory="clear", llm=llm())
    research = Task(description="Find the answer", expected_output="A fact", agent=researcher)
    report = Task(description="Write the report", expected_output="A report", agent=writer)

    Crew(agents=[researcher, writer], tasks=[research, report]).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Find the answer", [("agent", "Researcher", [("llm_invoke", "gpt-4o-mini", [])])]),
            ("chain", "Write the report", [("agent", "Writer", [("llm_invoke", "gpt-4o-mini", [])])]),
        ]),
    ]  # fmt: skip
    run = instrumented.one(type="run")
    assert run.usage.to_dict() == {"input_tokens": 33, "output_tokens": 7, "total_tokens": 40}
    assert run.metadata["agents"] == ["Researcher", "Writer"]
    first, second = instrumented.children(run)
    assert first.output == "Fact: the answer is 42"
    assert second.input == {
        "description": "Write the report",
        "expected_output": "A report",
        "context": "Fact: the answer is 42",
    }
    assert second.output == "Report: 42"
    writer_call = instrumented.one(type="llm_invoke", agent="Writer")
    assert writer_call.usage.to_dict() == {
        "input_tokens": 22,
        "output_tokens": 4,
        "total_tokens": 26,
    }


def test_model_failure_is_kind_model_and_fails_agent_task_and_run(instrumented, server, llm):
    server.add(Reply.http_error(500, "the model is down"))

    with pytest.raises(openai.InternalServerError):
        calculator_crew(llm()).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [("agent", "Calculator", [("llm_invoke", "gpt-4o-mini", [])])]),
        ]),
    ]  # fmt: skip
    by_type = {event.type.value: event for event in instrumented.events}
    assert {t: (e.status.value, e.error.kind) for t, e in by_type.items()} == {
        "llm_invoke": ("error", "model"),
        "agent": ("error", "orchestration"),
        "chain": ("error", "orchestration"),
        "run": ("error", "orchestration"),
    }
    assert "the model is down" in by_type["llm_invoke"].error.message
    assert by_type["chain"].error.type == "InternalServerError"
    # The run names the exception its caller got (CrewAI's failed event carries the message
    # only); the agent and the model call have CrewAI's message alone.
    assert by_type["run"].error.type == "InternalServerError"
    assert "the model is down" in by_type["run"].error.message
    assert (by_type["agent"].error.type, by_type["llm_invoke"].error.type) == ("Error", "Error")


def test_kickoff_nests_under_the_ambient_sightline_span(instrumented, server, llm):
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("3"))

    with sightline.trace("support-ticket") as outer:
        calculator_crew(llm()).kickoff()

    run = instrumented.one(type="run", name="crew")
    assert run.parent_span_id == outer.span_id
    assert {event.trace_id for event in instrumented.events} == {outer.trace_id}
    assert tree_of(instrumented)[0][:2] == ("run", "support-ticket")


def test_memory_retrieval_is_recorded_as_retrieval_under_the_task(
    instrumented, server, llm, tmp_path
):
    def embed(texts: list[str]) -> list[list[float]]:
        return [ScriptedOpenAIServer.embedding_for(text) for text in texts]

    model = llm()
    storage = str(tmp_path / "memory")
    Memory(llm=model, storage=storage, embedder=embed).remember(
        "The capital of France is Paris.", scope="/facts", categories=["geo"], importance=0.9
    )
    memory = Memory(
        llm=model, storage=storage, embedder=embed, read_only=True, exploration_budget=0
    )
    instrumented.clear()
    server.add(Reply.text("Paris"))
    geographer = Agent(role="Geographer", goal="Answer", backstory="geo", llm=model)
    question = Task(
        description="What is the capital of France?", expected_output="A city", agent=geographer
    )

    Crew(agents=[geographer], tasks=[question], memory=memory).kickoff()

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "What is the capital of France?", [
                ("retrieval", "memory", [("retrieval", "memory_query", [])]),
                ("agent", "Geographer", [("llm_invoke", "gpt-4o-mini", [])]),
            ]),
        ]),
    ]  # fmt: skip
    query = instrumented.one(type="retrieval", name="memory_query")
    assert query.input == "What is the capital of France?"
    assert query.output[0]["record"]["content"] == "The capital of France is Paris."
    assert query.metadata == {"limit": 5, "source_type": "unified_memory"}
    retrieval = instrumented.one(type="retrieval", name="memory")
    assert "The capital of France is Paris." in retrieval.output


def test_a_broken_client_never_raises_into_crewai(cap, server, llm):
    class BrokenClient:
        enabled = True

        def start_span(self, *args, **kwargs):
            raise RuntimeError("sightline is broken")

    listener = SightlineEventListener(client=BrokenClient())
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("The sum is 3"))
    try:
        result = calculator_crew(llm()).kickoff()
    finally:
        listener.close()

    assert result.raw == "The sum is 3"
    assert cap.events == []


def test_client_flush_waits_for_the_handlers_crewais_bus_still_runs(instrumented, server, llm):
    """CrewAI runs its handlers on a pool of its own; kickoff() may return before they ran.
    client.flush() waits for them (the sightline_flush hook), so a flush mid-process, not only
    shutdown, delivers the whole run."""
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("3"))
    calculator_crew(llm()).kickoff()  # loads the listener
    instrumented.clear()
    tree = sightline_crewai.instrumentation.active_listener().tree
    receive = tree.receive

    def slow_receive(*args: object) -> None:
        time.sleep(0.05)  # a busy handler pool
        receive(*args)

    tree.receive = slow_receive
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("3"))
    try:
        calculator_crew(llm()).kickoff()
        assert instrumented.client.flush(10) is True
        exported = list(instrumented.exporter.events)  # read without draining the bus
    finally:
        tree.receive = receive
    assert sorted(e.type.value for e in exported) == sorted(
        ["run", "chain", "agent", "llm_invoke", "tool_call", "llm_invoke"]
    )


def test_uninstrument_stops_recording_and_instrument_is_idempotent(cap, server, llm):
    sightline_crewai.instrument()
    sightline_crewai.instrument()
    server.add(Reply.tool_call("add", {"a": 1, "b": 2}), Reply.text("3"), Reply.text("4"))
    try:
        calculator_crew(llm()).kickoff()
        assert _resolve_hooks(InterceptionPoint.EXECUTION_END).count(_execution_ended) == 1
    finally:
        sightline_crewai.uninstrument()
        sightline_crewai.uninstrument()

    assert len(cap.find(type="run")) == 1
    assert len(cap.events) == 6
    cap.clear()
    calculator_crew(llm(), tools=[]).kickoff()
    assert cap.events == []
    assert not sightline_crewai.is_instrumented()
    # The execution_end hook that names a failed kickoff's exception is gone too.
    assert _execution_ended not in _resolve_hooks(InterceptionPoint.EXECUTION_END)


def test_disabled_sightline_records_nothing(server, llm):
    with sightline.Client(enabled=False) as client:
        listener = SightlineEventListener(client=client)
        server.add(Reply.text("3"))
        try:
            assert calculator_crew(llm(), tools=[]).kickoff().raw == "3"
        finally:
            listener.close()
        assert listener.tree.pending() == 0


def test_init_before_importing_crewai_instruments_it_when_it_loads(tmp_path):
    """``sightline.init()`` must not import CrewAI (seconds), yet instrument it once imported."""
    script = textwrap.dedent(
        """
        import json, sys
        from sightline.testing import capture
        from tests.support.openai_server import Reply, ScriptedOpenAIServer

        with capture() as cap:
            cap.client.instrument(["crewai"])          # what sightline.init() does
            loaded_before = "crewai" in sys.modules
            from crewai import LLM, Agent, Crew, Task
            from crewai.events import crewai_event_bus

            with ScriptedOpenAIServer([Reply.text("hello")]) as srv:
                llm = LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
                agent = Agent(role="Greeter", goal="Greet", backstory="kind", llm=llm)
                task = Task(description="Say hello", expected_output="A greeting", agent=agent)
                Crew(agents=[agent], tasks=[task]).kickoff()
            crewai_event_bus.flush()
            print(json.dumps({
                "loaded_before": loaded_before,
                "events": sorted(e.type.value for e in cap.events),
            }))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_VERSION_CHECK": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "CREWAI_STORAGE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "loaded_before": False,
        "events": ["agent", "chain", "llm_invoke", "run"],
    }


def _kickoff(crew) -> None:
    crew.kickoff()


def _kickoff_async(crew) -> None:
    asyncio.run(crew.kickoff_async())


def _akickoff(crew) -> None:
    asyncio.run(crew.akickoff())


@pytest.mark.parametrize("run", [_kickoff, _kickoff_async, _akickoff], ids=lambda f: f.__name__)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_way_of_kicking_off_records_the_same_tree(instrumented, server, llm, run, stream):
    server.set_responder(
        tool_then_answer("add", {"a": 1, "b": 2}, "3", prompt_tokens=40, completion_tokens=7)
    )

    run(calculator_crew(llm(stream=stream)))

    assert tree_of(instrumented) == [
        ("run", "crew", [
            ("chain", "Add 1 and 2", [
                ("agent", "Calculator", [
                    ("llm_invoke", "gpt-4o-mini", []),
                    ("tool_call", "add", []),
                    ("llm_invoke", "gpt-4o-mini", []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    calls = sorted(instrumented.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert [c.usage.total_tokens for c in calls] == [47, 47]
    assert calls[-1].output == "3"


def test_kickoff_for_each_records_one_run_per_input(instrumented, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))

    calculator_crew(llm()).kickoff_for_each([{}, {}])

    runs = instrumented.find(type="run")
    assert len(runs) == 2
    assert len({run.trace_id for run in runs}) == 2
    assert all(len(instrumented.children(run)) == 1 for run in runs)


def test_agent_kickoff_without_a_crew_records_the_agent_as_root(instrumented, server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))
    agent = Agent(role="Calculator", goal="Add", backstory="math", llm=llm(), tools=[add])

    assert agent.kickoff("Add 1 and 2").raw == "3"

    assert tree_of(instrumented) == [
        ("agent", "Calculator", [
            ("llm_invoke", "gpt-4o-mini", []),
            ("tool_call", "add", []),
            ("llm_invoke", "gpt-4o-mini", []),
        ]),
    ]  # fmt: skip
    root = instrumented.one(type="agent")
    assert (root.input, root.output, root.agent) == ("Add 1 and 2", "3", "Calculator")
    assert root.metadata == {
        "role": "Calculator",
        "goal": "Add",
        "tools": ["add"],
        "model": "gpt-4o-mini",
    }


def test_a_rejecting_guardrail_is_a_decision_with_kind_guardrail(instrumented, server, llm):
    server.add(Reply.text("Hi there"), Reply.text("Hello again"))

    def says_hello(output):
        said = "hello" in output.raw.lower()
        return said, output.raw if said else "Say hello"

    greeter = Agent(role="Greeter", goal="Greet", backstory="kind", llm=llm())
    greet = Task(
        description="Greet", expected_output="A greeting", agent=greeter, guardrail=says_hello
    )
    Crew(agents=[greeter], tasks=[greet]).kickoff()

    task = instrumented.one(type="chain")
    assert [(e.type.value, e.status.value) for e in instrumented.children(task)] == [
        ("agent", "ok"),
        ("decision", "error"),
        ("agent", "ok"),
        ("decision", "ok"),
    ]
    rejected, accepted = instrumented.find(type="decision", name="guardrail:says_hello")
    if rejected.status.value == "ok":
        rejected, accepted = accepted, rejected
    assert rejected.error.to_dict() == {
        "type": "GuardrailRejected", "message": "Say hello", "stack": None, "kind": "guardrail",
    }  # fmt: skip
    assert rejected.metadata == {"guardrail_type": "function", "retry_count": 0, "success": False}
    assert accepted.output == "Hello again"


def test_instrumenting_again_with_another_client_switches_to_it(server, llm):
    server.set_responder(tool_then_answer("add", {"a": 1, "b": 2}, "3"))
    with capture() as first, capture() as second:
        sightline_crewai.instrument(first.client)
        try:
            sightline_crewai.instrument(second.client)
            calculator_crew(llm()).kickoff()
        finally:
            sightline_crewai.uninstrument()
        assert len(DrainingCapture(second).events) == 6
        assert first.events == []
