"""A two-agent CrewAI crew with one tool, recorded by Sightline, offline.

A researcher looks an order up with a tool, a writer drafts the reply to the customer. The
"model" is the scripted OpenAI-compatible server of the test suite on 127.0.0.1, so CrewAI's own
OpenAI provider runs for real without a network or an API key. ``sightline.init()`` comes
before CrewAI is imported (both orders work); the crew's run, tasks, agents, LLM calls (with
token counts) and the tool call land in the embedded store:

    python examples/crewai_agent.py
    sightline show <trace id printed at the end>

Run it from a checkout of this repository (``make demo`` runs it): it uses the scripted server
of ``tests/support``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# CrewAI, before it is imported: no telemetry, no version check, no cloud tracing, its own
# files out of the home directory.
os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["CREWAI_DISABLE_VERSION_CHECK"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-example-"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

import sightline
from tests.support.openai_server import Reply, ScriptedOpenAIServer

ORDERS = {"A-1001": {"status": "delivered", "delivered_on": "2024-05-02", "carrier": "UPS"}}

SCRIPT = [
    # researcher: look the order up, then report what it found
    Reply.tool_call(
        "lookup_order", {"order_id": "A-1001"}, prompt_tokens=182, completion_tokens=19
    ),
    Reply.text(
        "Order A-1001 was delivered by UPS on 2024-05-02.", prompt_tokens=236, completion_tokens=17
    ),
    # writer: draft the answer from the researcher's findings
    Reply.text(
        "Hello! Your order A-1001 was delivered by UPS on 2024-05-02. If it has not reached "
        "you, reply to this message and we will open a carrier claim.",
        prompt_tokens=205,
        completion_tokens=38,
    ),
]


def build_crew(base_url: str) -> Any:
    """The crew; CrewAI is imported here, after ``sightline.init()``."""
    from crewai import LLM, Agent, Crew, Task
    from crewai.tools import tool

    @tool("lookup_order")
    def lookup_order(order_id: str) -> dict[str, str]:
        """Look an order up by its id: status, delivery date and carrier."""
        return ORDERS.get(order_id, {"status": "unknown"})

    def model() -> LLM:
        return LLM(model="gpt-4o-mini", base_url=base_url, api_key="sk-offline-example")

    researcher = Agent(
        role="Order researcher",
        goal="Find the facts about a customer's order",
        backstory="You know the order system inside out.",
        llm=model(),
        tools=[lookup_order],
    )
    writer = Agent(
        role="Support writer",
        goal="Write short, friendly answers to customers",
        backstory="You turn facts into clear replies.",
        llm=model(),
    )
    research = Task(
        description="Where is order A-1001? The customer says it has not arrived.",
        expected_output="The order's status, delivery date and carrier",
        agent=researcher,
    )
    reply = Task(
        description="Write the reply to the customer about order A-1001.",
        expected_output="A two-sentence reply",
        agent=writer,
    )
    return Crew(name="support-crew", agents=[researcher, writer], tasks=[research, reply])


def main() -> None:
    logging.getLogger("crewai").setLevel(logging.ERROR)  # token-count estimates, not ours
    sightline.init(agent="support-crew")
    with ScriptedOpenAIServer(SCRIPT) as server:
        crew = build_crew(server.base_url)
        # The crew's run nests under the ambient span: here, the ticket being handled.
        with sightline.trace("support-ticket", session_id="demo-session", tags=["demo"]) as ticket:
            ticket.set_input({"ticket": "Where is my order A-1001?"})
            answer = crew.kickoff().raw
            ticket.set_output(answer)
    sightline.shutdown()
    print(answer)
    print(f"trace: {ticket.trace_id}")
    print(f"see it with: sightline show {ticket.trace_id}")


if __name__ == "__main__":
    main()
