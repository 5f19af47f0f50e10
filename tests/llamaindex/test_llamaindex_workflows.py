"""Workflows: plain workflows and their steps, ReActAgent and multi-agent AgentWorkflow runs."""

from __future__ import annotations

import pytest
from llama_index.core.agent.workflow import ReActAgent
from llama_index.core.workflow import Event, StartEvent, StopEvent, Workflow, step

from tests.llamaindex.events import outline, wire
from tests.llamaindex.scripted import (
    ScriptedLLM,
    answer,
    call_script,
    handoff_workflow,
    support_tools,
    turn_script,
)


class Planned(Event):
    topic: str


class Essay(Workflow):
    @step
    async def plan(self, ev: StartEvent) -> Planned:
        return Planned(topic=ev.topic)

    @step
    def write(self, ev: Planned) -> StopEvent:  # a sync step: LlamaIndex runs it in a thread
        if ev.topic == "nothing":
            raise ValueError("nothing to write about")
        return StopEvent(result=f"essay on {ev.topic}")


async def test_workflow_run_is_a_chain_with_one_chain_per_step(traced):
    assert await Essay().run(topic="otters") == "essay on otters"

    assert outline(traced.events) == [
        ("chain", "Essay", "ok", [
            ("chain", "plan", "ok", []),
            ("chain", "write", "ok", []),
        ]),
    ]  # fmt: skip
    assert wire(traced.one(name="Essay")) == {
        "type": "chain", "name": "Essay", "status": "ok", "agent": None, "session_id": None,
        "framework": "llamaindex", "input": {"topic": "otters"}, "output": "essay on otters",
        "model": None, "usage": None, "cost_usd": None, "error": None, "metadata": {},
        "tags": [],
    }  # fmt: skip
    assert wire(traced.one(name="write")) == {
        "type": "chain", "name": "write", "status": "ok", "agent": None, "session_id": None,
        "framework": "llamaindex", "input": None, "output": None,
        "model": None, "usage": None, "cost_usd": None, "error": None,
        "metadata": {"input_event": "Planned", "output_event": "StopEvent"}, "tags": [],
    }  # fmt: skip


async def test_failing_step_fails_the_step_and_the_workflow(traced):
    with pytest.raises(ValueError, match="nothing to write about"):
        await Essay().run(topic="nothing")

    assert outline(traced.events) == [
        ("chain", "Essay", "error", [
            ("chain", "plan", "ok", []),
            ("chain", "write", "error", []),
        ]),
    ]  # fmt: skip
    write = traced.one(name="write")
    assert (write.error.type, write.error.message, write.error.kind) == (
        "ValueError",
        "nothing to write about",
        "orchestration",
    )
    assert traced.one(name="Essay").error.type == "ValueError"


async def test_react_agent_run_is_an_agent_with_its_tool_calls(traced, index):
    llm = ScriptedLLM(
        response_generator=call_script(
            answer(
                "Thought: I need the docs.\nAction: search_docs\n"
                'Action Input: {"query": "refund delay"}'
            ),
            answer("Thought: I can answer.\nAnswer: Refunds take 5 business days."),
        )
    )
    agent = ReActAgent(name="react", tools=support_tools(index, use_async=False)[:1], llm=llm)

    assert str(await agent.run(user_msg="How long do refunds take?")) == (
        "Refunds take 5 business days."
    )
    turn = [
        ("chain", "setup_agent", "ok", []),
        ("chain", "run_agent_step", "ok", [("llm_invoke", "ScriptedLLM.astream_chat", "ok", [])]),
        ("chain", "parse_agent_output", "ok", []),
    ]
    assert outline(traced.events) == [
        ("agent", "react", "ok", [
            ("chain", "init_run", "ok", []),
            *turn,
            ("tool_call", "search_docs", "ok", [
                ("retrieval", "VectorIndexRetriever.retrieve", "ok", [
                    ("embedding", "MockEmbedding.get_query_embedding", "ok", []),
                ]),
            ]),
            ("chain", "aggregate_tool_results", "ok", []),
            *turn,
        ]),
    ]  # fmt: skip
    run = traced.one(type="agent")
    assert (run.input, run.output, run.metadata) == (
        "How long do refunds take?",
        "Refunds take 5 business days.",
        {"agent_type": "ReActAgent", "tools": ["search_docs"], "tool_calls": ["search_docs"]},
    )
    assert traced.one(type="tool_call").input == {"query": "refund delay"}


async def test_agent_workflow_is_one_agent_event_with_steps_per_agent(traced):
    workflow = handoff_workflow(turn_script(answer("Refunds take 5 days.")))

    assert str(await workflow.run(user_msg="Refund?")) == "Refunds take 5 days."

    def turn() -> list[tuple]:
        return [
            ("chain", "setup_agent", "ok", []),
            ("chain", "run_agent_step", "ok", [
                ("llm_invoke", "ScriptedLLM.astream_chat", "ok", []),
            ]),
            ("chain", "parse_agent_output", "ok", []),
        ]  # fmt: skip

    assert outline(traced.events) == [
        ("agent", "AgentWorkflow", "ok", [
            ("chain", "init_run", "ok", []),
            *turn(),
            ("tool_call", "handoff", "ok", []),
            ("chain", "aggregate_tool_results", "ok", []),
            *turn(),
        ]),
    ]  # fmt: skip
    run = traced.one(type="agent")
    assert run.metadata == {
        "agent_type": "AgentWorkflow",
        "agents": ["triage", "billing"],
        "root_agent": "triage",
        "tool_calls": ["handoff"],
    }
    # Each step and what it calls carry the agent that was running.
    llm_agents = [e.agent for e in sorted(traced.find(type="llm_invoke"), key=lambda e: e.start_ns)]
    assert llm_agents == ["triage", "billing"]


async def test_react_agent_on_a_custom_llm_records_each_streamed_turn_once(traced):
    from llama_index.core.base.llms.types import (
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback

    class TextLLM(CustomLLM):
        """A text-only LLM built the simple way: complete and stream_complete."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="text-llm-1", is_chat_model=True)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            return CompletionResponse(text="Thought: I can answer.\nAnswer: Hello!")

        @llm_completion_callback()
        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs
        ) -> CompletionResponseGen:
            def gen() -> CompletionResponseGen:
                text = "Thought: I can answer.\nAnswer: Hello!"
                yield CompletionResponse(text=text[:10], delta=text[:10])
                yield CompletionResponse(text=text, delta=text[10:])

            return gen()

    agent = ReActAgent(name="greeter", tools=[], llm=TextLLM())
    assert str(await agent.run(user_msg="Hi")) == "Hello!"

    assert outline(traced.events) == [
        ("agent", "greeter", "ok", [
            ("chain", "init_run", "ok", []),
            ("chain", "setup_agent", "ok", []),
            ("chain", "run_agent_step", "ok", [
                # astream_chat -> (while read) stream_chat -> stream_complete: one call
                ("llm_invoke", "TextLLM.astream_chat", "ok", []),
            ]),
            ("chain", "parse_agent_output", "ok", []),
        ]),
    ]  # fmt: skip
    llm = traced.one(type="llm_invoke")
    assert llm.model == "text-llm-1"
    assert llm.output == {
        "role": "assistant",
        "content": "Thought: I can answer.\nAnswer: Hello!",
    }
