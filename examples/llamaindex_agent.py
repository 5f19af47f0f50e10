"""A LlamaIndex FunctionAgent recorded by Sightline, offline.

A support agent answers a refund question: it searches the help centre (a retrieval tool over a
small ``VectorStoreIndex``), looks the order up -- the first lookup fails because the model
drops the order prefix, and the agent recovers -- then answers. The embedding model is
``MockEmbedding`` and the LLM is ``MockFunctionCallingLLM`` with a scripted response generator,
so no network and no API key are needed.

No handler is passed anywhere: ``sightline.init()`` instruments LlamaIndex globally because
``sightline-llamaindex`` is installed. The agent runs inside a ``sightline.trace`` so the whole
request is one trace; the agent run, every workflow step, LLM call (with the tool calls it asks
for), tool call, retrieval and query embedding, and the tool error land in the embedded store
(``SIGHTLINE_DB`` or ``./.sightline/sightline.db``)::

    python examples/llamaindex_agent.py
    sightline show <trace id printed at the end>
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.schema import TextNode
from llama_index.core.tools import FunctionTool

import sightline

ARTICLES = {
    "refund-policy": "Delivered orders can be refunded within 30 days. Refunds are paid to "
    "the original card within 5 business days.",
    "refund-limits": "Refunds above 500 EUR need a supervisor's approval.",
    "shipping": "Standard shipping takes 3 to 7 days; express ships the next day.",
}
ORDERS = {"A-1001": {"status": "delivered", "total_eur": 42.5, "customer": "Ada"}}
QUESTION = "Can I get a refund for order 1001? It arrived broken."


def build_index() -> VectorStoreIndex:
    """The help centre: three articles embedded with a mock (offline) embedding model."""
    nodes = [TextNode(id_=key, text=text) for key, text in ARTICLES.items()]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=16))


def build_tools(index: VectorStoreIndex) -> list[FunctionTool]:
    retriever = index.as_retriever(similarity_top_k=2)

    async def search_help_centre(query: str) -> str:
        """Search the help-centre articles for the query."""
        return "\n".join(node.get_content() for node in await retriever.aretrieve(query))

    def check_order(order_id: str) -> dict[str, Any]:
        """Look an order up by its id (like A-1001)."""
        if order_id not in ORDERS:
            raise KeyError(f"no order {order_id!r}; order ids look like A-1001")
        return {"order_id": order_id, **ORDERS[order_id]}

    return [FunctionTool.from_defaults(async_fn=search_help_centre),
            FunctionTool.from_defaults(check_order)]  # fmt: skip


def scripted_model(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
    """A stand-in for a function-calling LLM: the next move depends on the tool results so far."""
    results = [m for m in messages if m.role == MessageRole.TOOL]

    def call(call_id: str, tool: str, **arguments: Any) -> ChatMessage:
        block = ToolCallBlock(tool_call_id=call_id, tool_name=tool, tool_kwargs=arguments)
        return ChatMessage(role="assistant", blocks=[block])

    if len(results) == 0:
        return call("call-1", "search_help_centre", query="refund broken delivered order")
    if len(results) == 1:
        return call("call-2", "check_order", order_id="1001")  # wrong: the prefix is missing
    if len(results) == 2:
        return call("call-3", "check_order", order_id="A-1001")
    return ChatMessage(
        role="assistant",
        content="Yes: order A-1001 was delivered, so it can be refunded within 30 days. The "
        "refund is paid to your card within 5 business days.",
    )


async def handle_ticket(agent: FunctionAgent) -> tuple[str, str]:
    with sightline.trace("support-ticket", agent="support-bot", input={"question": QUESTION},
                         tags=["demo", "llamaindex"]) as run:  # fmt: skip
        answer = str(await agent.run(user_msg=QUESTION))
        run.set_output(answer)
        return run.trace_id, answer


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    index = build_index()  # before init(): building the index is set-up, not the request
    sightline.init()
    agent = FunctionAgent(
        name="support-bot",
        description="Answers customer questions about orders and refunds.",
        system_prompt="You are a helpful support agent. Use the tools.",
        tools=build_tools(index),
        llm=MockFunctionCallingLLM(response_generator=scripted_model),
    )
    trace_id, answer = asyncio.run(handle_ticket(agent))
    sightline.shutdown()
    print(f"agent: {answer}")
    print(f"recorded trace {trace_id}")
    print(f"see it with: sightline show {trace_id}")


if __name__ == "__main__":
    main()
