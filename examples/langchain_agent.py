"""A LangChain tool-calling agent recorded by Sightline, offline.

A support agent (``langchain.agents.create_agent``) answers a refund request: it searches the
refund policy (a retriever behind a tool), looks the order up — the first lookup fails with a
typo in the order id, and the agent recovers — then issues the refund. The "model" is a
scripted chat model (``GenericFakeChatModel`` with ``bind_tools``), so no network and no API key
are needed.

No callback handler is passed anywhere: ``sightline.init()`` instruments LangChain globally
because ``sightline-langchain`` is installed. The agent runs inside a ``sightline.trace`` so the
whole request is one trace; every graph step, model call (with token counts), tool call, the
retrieval and the tool error land in the embedded store (``SIGHTLINE_DB`` or
``./.sightline/sightline.db``)::

    python examples/langchain_agent.py
    sightline show <trace id printed at the end>

Beside ``sightline[langchain]`` it needs ``langchain`` (for ``create_agent``; in the workspace's
dev dependencies, so ``make demo`` has it): ``pip install langchain``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import ToolException, tool

import sightline

ORDERS = {"A-1001": {"status": "delivered", "total": 42.50, "customer": "Ada"}}

POLICY = [
    Document(
        id="refunds-1",
        page_content="Delivered orders can be refunded within 30 days. Refunds are paid to the "
        "original card within 5 business days.",
        metadata={"source": "policies/refunds.md", "section": "eligibility"},
    ),
    Document(
        id="refunds-2",
        page_content="Refunds above 500 EUR need a supervisor's approval.",
        metadata={"source": "policies/refunds.md", "section": "limits"},
    ),
]


class PolicyRetriever(BaseRetriever):
    """The knowledge base: a real LangChain retriever over two policy documents."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(query.lower().split())
        return [doc for doc in POLICY if words & set(doc.page_content.lower().split())]


policy_retriever = PolicyRetriever()


@tool
def search_policy(query: str) -> str:
    """Search the support policies."""
    documents = policy_retriever.invoke(query)
    return "\n".join(doc.page_content for doc in documents) or "nothing found"


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up by its id."""
    order = ORDERS.get(order_id)
    if order is None:
        raise ToolException(f"no order with id {order_id!r}")
    return {"order_id": order_id, **order}


lookup_order.handle_tool_error = True  # the error goes back to the model, which retries


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order to the customer's card."""
    return f"refund of {amount:.2f} EUR for {order_id} issued"


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that answers from a script, accepts tools and names its model."""

    model_name: str = "gpt-4o-mini"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="openai", ls_model_name=self.model_name, ls_model_type="chat"
        )


def step(
    content: str = "", tool: str | None = None, args: Any = None, *, usage: tuple[int, int]
) -> AIMessage:
    calls = (
        [{"name": tool, "args": args, "id": f"call_{tool}_{usage[0]}", "type": "tool_call"}]
        if tool
        else []
    )
    return AIMessage(
        content=content,
        tool_calls=calls,
        usage_metadata={
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "total_tokens": sum(usage),
        },
        response_metadata={"finish_reason": "tool_calls" if tool else "stop"},
    )


def script() -> Iterator[AIMessage]:
    yield step(tool="search_policy", args={"query": "refund delivered orders"}, usage=(212, 18))
    yield step(tool="lookup_order", args={"order_id": "A-1010"}, usage=(301, 16))  # a typo
    yield step(tool="lookup_order", args={"order_id": "A-1001"}, usage=(339, 16))
    yield step(tool="issue_refund", args={"order_id": "A-1001", "amount": 42.5}, usage=(402, 22))
    yield step(
        "Hi Ada, your order A-1001 was delivered, so it qualifies: I have refunded 42.50 EUR to "
        "your card. It will arrive within 5 business days.",
        usage=(451, 41),
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    sightline.init(agent="support-bot")
    agent = create_agent(
        ScriptedChatModel(messages=script()),
        tools=[search_policy, lookup_order, issue_refund],
        system_prompt="You are a support agent. Check the policy and the order before refunding.",
        name="support-bot",
    )
    request = "Hello, I'd like a refund for my order A-1001 please."
    with sightline.trace("refund-request", session_id="ticket-8812", input=request) as ticket:
        result = agent.invoke({"messages": [("user", request)]})
        answer = result["messages"][-1].content
        ticket.set_output(answer)
    sightline.shutdown()
    print(answer)
    print(f"trace: {ticket.trace_id}")
    print(f"see it with: sightline show {ticket.trace_id}")


if __name__ == "__main__":
    main()
