"""An offline AutoGen team recorded by Sightline: a support agent with a tool, and a writer.

The same two-agent ``RoundRobinGroupChat`` runs twice:

1. on ``ReplayChatCompletionClient`` (scripted answers), its model client wrapped with
   ``instrument_model_client`` — the replay client does not log its calls, the wrapper does;
2. on ``OpenAIChatCompletionClient`` pointed at the scripted OpenAI-compatible server of the test
   suite on 127.0.0.1 — unwrapped: the global instrumentation reads the client's own event log.

``sightline.init()`` switches the AutoGen instrumentation on (the package is installed), so each
run is a ``run`` span with one ``agent`` span per turn, the model calls and the tool call inside.
Everything lands in the embedded store (``SIGHTLINE_DB`` or ``./.sightline/sightline.db``)::

    python examples/autogen_agent.py
    sightline show <trace id printed below>

Run it from a checkout of this repository (``make demo`` runs it): it uses the scripted server
of ``tests/support`` and ``autogen-ext[openai]`` beside ``sightline[autogen]`` (both in the
workspace's dev dependencies).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

import sightline
from sightline_autogen import instrument_model_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.openai_server import Reply, ScriptedOpenAIServer

ORDERS = {"A-1001": "delivered on Monday", "B-2002": "in transit, due Friday"}
TASK = "Where is my order A-1001? Please write me a short note."
MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "gpt-4o",
    "structured_output": False,
}


def lookup_order(order_id: str) -> str:
    """Look an order up in the order service (a sync tool: AutoGen runs it in a thread)."""
    return f"order {order_id}: {ORDERS.get(order_id, 'unknown')}"


def build_team(
    support_client: ChatCompletionClient, writer_client: ChatCompletionClient
) -> RoundRobinGroupChat:
    support = AssistantAgent(
        "support",
        model_client=support_client,
        tools=[lookup_order],
        reflect_on_tool_use=True,
        system_message="You answer order questions with the lookup_order tool.",
    )
    writer = AssistantAgent(
        "writer",
        model_client=writer_client,
        system_message="You turn the support agent's answer into a short, friendly note.",
    )
    return RoundRobinGroupChat([support, writer], termination_condition=MaxMessageTermination(3))


async def run_on_replay() -> str:
    support_model = ReplayChatCompletionClient(
        [
            CreateResult(
                finish_reason="function_calls",
                content=[
                    FunctionCall(
                        id="call_1", name="lookup_order", arguments='{"order_id": "A-1001"}'
                    )
                ],
                usage=RequestUsage(prompt_tokens=64, completion_tokens=18),
                cached=False,
            ),
            "Order A-1001 was delivered on Monday.",
        ],
        model_info=MODEL_INFO,
    )
    writer_model = ReplayChatCompletionClient(
        ["Hi! Good news: your order A-1001 was delivered on Monday. Enjoy!"], model_info=MODEL_INFO
    )
    team = build_team(instrument_model_client(support_model), instrument_model_client(writer_model))
    with sightline.trace("autogen-demo-replay", agent="support-team", tags=["demo"]) as run:
        result = await team.run(task=TASK)
    print(f"replay team:  {result.messages[-1].content}")
    return run.trace_id


async def run_on_scripted_openai_server() -> str:
    script = [
        Reply.tool_call(
            "lookup_order",
            {"order_id": "A-1001"},
            call_id="call_1",
            prompt_tokens=64,
            completion_tokens=18,
        ),
        Reply.text("Order A-1001 was delivered on Monday.", prompt_tokens=96, completion_tokens=11),
        Reply.text(
            "Hi! Your order A-1001 arrived on Monday. Enjoy!",
            prompt_tokens=120,
            completion_tokens=14,
        ),
    ]
    with ScriptedOpenAIServer(script, model="gpt-4o-mini-2024-07-18") as server:
        model = OpenAIChatCompletionClient(
            model="gpt-4o-mini", base_url=server.base_url, api_key="sk-offline-demo"
        )
        team = build_team(model, model)
        with sightline.trace("autogen-demo-openai", agent="support-team", tags=["demo"]) as run:
            result = await team.run(task=TASK)
        await model.close()
    print(f"openai team:  {result.messages[-1].content}")
    return run.trace_id


async def main() -> list[str]:
    return [await run_on_replay(), await run_on_scripted_openai_server()]


if __name__ == "__main__":
    logging.getLogger("autogen_core.events").setLevel(logging.ERROR)  # the replay client's chatter
    sightline.init(project="examples")
    trace_ids = asyncio.run(main())
    sightline.shutdown()
    for trace_id in trace_ids:
        print(f"trace: {trace_id}   (sightline show {trace_id})")
