"""With ``capture_content`` off, a tool name a model made up never leaves the process.

Names come only from code: a requested call naming none of the agent's tools (its tools,
handoffs and workbenches, or the tools its model was offered) is a ``tool_call`` named
``unknown_tool``; real tools keep their names. With ``capture_content`` on nothing changes.
Every test searches every field of every event for the canary of the invented name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import EVENT_LOGGER_NAME, CancellationToken
from autogen_core.logging import LLMCallEvent
from autogen_core.tools import (
    FunctionTool,
    TextResultContent,
    ToolResult,
    ToolSchema,
    Workbench,
)
from autogen_ext.models.replay import ReplayChatCompletionClient

import sightline_autogen
from sightline.testing import Capture, capture
from sightline_autogen import SightlineEventLogHandler
from sightline_autogen.event_log import EventLogTap
from tests.autogen.conftest import MODEL_INFO, calls, replay

CANARY = "CANARY_AG_5d1e"
INVENTED = f"made_up_{CANARY}"
ARGUMENTS = json.dumps({"query": CANARY})


def lookup(query: str) -> str:
    """Look an order up."""
    return "shipped"


def fails(query: str) -> str:
    """Fail."""
    raise ValueError("no such order")


def leaks(cap: Capture) -> list[dict[str, Any]]:
    """The events holding the canary in any field."""
    return [e.to_dict() for e in cap.events if CANARY in json.dumps(e.to_dict())]


def tool_names(cap: Capture) -> list[str]:
    return sorted(e.name for e in cap.find(type="tool_call"))


@pytest.fixture
def private() -> Iterator[Capture]:
    """A capturing global client with ``capture_content`` off and AutoGen instrumented."""
    with capture(capture_content=False) as cap:
        sightline_autogen.instrument(cap.client)
        try:
            yield cap
        finally:
            sightline_autogen.uninstrument()


def asking(*names: str) -> Any:
    """A model asking for the tools ``names`` (the canary in their arguments), then done."""
    return replay(calls(*((f"c{i}", n, ARGUMENTS) for i, n in enumerate(names))), "done")


async def test_an_invented_tool_name_is_recorded_as_unknown_tool(private: Capture) -> None:
    agent = AssistantAgent(
        "helper", model_client=asking("lookup", INVENTED, "fails"), tools=[lookup, fails]
    )
    await agent.run(task="where is my order?")
    assert tool_names(private) == ["fails", "lookup", "unknown_tool"]
    unknown = private.one(type="tool_call", name="unknown_tool")
    assert unknown.metadata == {"call_id": "c1"}
    assert unknown.status.value == "error"
    assert leaks(private) == []


async def test_with_content_captured_the_invented_name_is_kept(recorded: Capture) -> None:
    agent = AssistantAgent("helper", model_client=asking("lookup", INVENTED), tools=[lookup])
    await agent.run(task="where is my order?")
    assert tool_names(recorded) == sorted(["lookup", INVENTED])


async def test_an_invented_handoff_is_unknown_and_a_real_one_keeps_its_name(
    private: Capture,
) -> None:
    agent = AssistantAgent(
        "helper",
        model_client=asking("transfer_to_billing", f"transfer_to_{CANARY}"),
        handoffs=["billing"],
    )
    result = await agent.run(task="I want a refund")
    assert type(result.messages[-1]).__name__ == "HandoffMessage"
    assert tool_names(private) == ["transfer_to_billing", "unknown_tool"]
    assert leaks(private) == []


class ListedWorkbench(Workbench):
    """A workbench listing its tools only when awaited (as MCP's does)."""

    def __init__(self) -> None:
        self._listed = {
            t.name: t for t in (FunctionTool(lookup, "Look up."), FunctionTool(fails, "Fail."))
        }

    async def list_tools(self) -> list[ToolSchema]:
        return [tool.schema for tool in self._listed.values()]

    async def call_tool(
        self,
        name: str,
        arguments: Any = None,
        cancellation_token: Any = None,
        call_id: str | None = None,
    ) -> ToolResult:
        try:
            value = await self._listed[name].run_json(arguments or {}, CancellationToken())
        except Exception as exc:
            return ToolResult(
                name=name, result=[TextResultContent(content=str(exc))], is_error=True
            )
        return ToolResult(name=name, result=[TextResultContent(content=str(value))])

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def reset(self) -> None:
        pass

    async def save_state(self) -> dict[str, Any]:
        return {}

    async def load_state(self, state: Any) -> None:
        pass


class LoggingReplayClient(ReplayChatCompletionClient):
    """A scripted model client logging each call with the tools offered, as OpenAI's does."""

    async def create(self, messages: Any, *, tools: Any = (), **kwargs: Any) -> Any:
        result = await super().create(messages, tools=tools, **kwargs)
        logging.getLogger(EVENT_LOGGER_NAME).info(
            LLMCallEvent(
                messages=[], response={}, prompt_tokens=1, completion_tokens=1, tools=list(tools)
            )
        )
        return result


async def test_a_tool_the_agent_does_not_list_keeps_its_name_once_it_ran(
    private: Capture,
) -> None:
    # The agent cannot list the workbench's tools, nor does its model client log them: a call
    # is known to be real when the tool reports it ran (a failing one does not).
    agent = AssistantAgent(
        "helper", model_client=asking("lookup", INVENTED, "fails"), workbench=ListedWorkbench()
    )
    await agent.run(task="where is my order?")
    assert tool_names(private) == ["lookup", "unknown_tool", "unknown_tool"]
    assert leaks(private) == []


async def test_the_tools_a_model_client_logs_as_offered_keep_their_names(
    private: Capture,
) -> None:
    model = LoggingReplayClient(
        [calls(("c0", "lookup", ARGUMENTS), ("c1", INVENTED, ARGUMENTS), ("c2", "fails", "{}"))],
        model_info=MODEL_INFO,
    )
    agent = AssistantAgent("helper", model_client=model, workbench=ListedWorkbench())
    await agent.run(task="where is my order?")
    assert tool_names(private) == ["fails", "lookup", "unknown_tool"]
    assert leaks(private) == []


async def test_a_handler_attached_by_hand_names_only_the_tools_that_ran() -> None:
    with capture(capture_content=False) as cap:
        tap = EventLogTap(SightlineEventLogHandler())
        tap.attach()
        try:
            agent = AssistantAgent(
                "helper", model_client=asking("lookup", INVENTED, "fails"), tools=[lookup, fails]
            )
            await agent.run(task="where is my order?")
        finally:
            tap.detach()
        # No agent turn is seen: a tool is known by its own report, which a failing one
        # does not make.
        assert tool_names(cap) == ["lookup", "unknown_tool", "unknown_tool"]
        assert leaks(cap) == []
