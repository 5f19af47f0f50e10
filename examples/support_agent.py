"""An offline support agent in plain Python, recorded by Sightline.

A scripted "model" plans, a decorated tool searches a tiny knowledge base, a flaky tool fails
once with a timeout and succeeds when retried, and the model writes the answer. Everything lands
in the embedded store; then look at it with ``sightline runs`` and ``sightline show latest``.

    python examples/support_agent.py
"""

from __future__ import annotations

import sightline
from sightline import EventType

KNOWLEDGE_BASE = {
    "refund": "Refunds are issued within 5 business days to the original payment method.",
    "shipping": "Standard shipping takes 3-7 days; express ships next day.",
}


class FlakyNetwork:
    """Fails the first call, like a real network sometimes does."""

    calls = 0


@sightline.monitor(type=EventType.TOOL_CALL)
def search_kb(query: str, limit: int = 2) -> list[str]:
    """Search the knowledge base for articles mentioning a word of the query."""
    words = query.lower().split()
    return [text for key, text in KNOWLEDGE_BASE.items() if key in words][:limit]


@sightline.monitor(type=EventType.TOOL_CALL)
def lookup_order(order_id: str) -> dict[str, str]:
    """Look an order up in the (flaky) order service."""
    FlakyNetwork.calls += 1
    if FlakyNetwork.calls == 1:
        raise TimeoutError("order service did not answer within 2s")
    return {"order_id": order_id, "status": "delivered", "api_key": "sk-this-is-masked-123456789"}


def scripted_model(step: str, prompt: str) -> tuple[str, int, int]:
    """A stand-in for an LLM: a canned answer and token counts for each step."""
    answers = {
        "plan": "1. search the knowledge base 2. look up the order 3. answer",
        "respond": "Your order A-1001 was delivered; refunds take 5 business days.",
    }
    return answers[step], len(prompt.split()) * 4, len(answers[step].split()) * 4


def handle_ticket(ticket: str) -> str:
    with sightline.trace(
        "support-ticket", agent="support-bot", session_id="demo-session", tags=["demo"],
        input={"ticket": ticket},
    ) as run:  # fmt: skip
        with run.step("plan", "plan") as plan:
            text, tokens_in, tokens_out = scripted_model("plan", ticket)
            plan.set_model("scripted-model-1").set_output(text)
            plan.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)
        articles = search_kb(ticket)
        for attempt in (1, 2):
            try:
                order = lookup_order("A-1001")
                break
            except TimeoutError:
                run.add_metadata({"retried_lookup": attempt})
        with run.step("respond", "respond", model="scripted-model-1") as respond:
            prompt = f"{ticket}\n{articles}\n{order}"
            answer, tokens_in, tokens_out = scripted_model("respond", prompt)
            respond.set_input(prompt).set_output(answer)
            respond.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)
            respond.set_cost(0.00042)
        run.set_output(answer)
        return run.trace_id


def main() -> None:
    sightline.init(agent="support-bot")
    trace_id = handle_ticket("Where is my refund for order A-1001? It was a shipping problem.")
    sightline.shutdown()
    print(f"recorded trace {trace_id}")


if __name__ == "__main__":
    main()
