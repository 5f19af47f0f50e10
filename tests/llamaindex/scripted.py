"""Offline LlamaIndex fixtures for the adapter tests: a scripted function-calling LLM that
reports a model and provider-style token usage, a small index, and an agent built on them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.schema import TextNode
from llama_index.core.tools import FunctionTool
from llama_index.core.tools.types import BaseTool

MODEL = "scripted-fc-1"
EMBED_MODEL = "mock-embed-8"
ANSWER = "Refunds are paid within 5 business days."
ARTICLES = {
    "refunds": "Refunds are paid within 5 business days.",
    "shipping": "Shipping is free above 50 euros.",
}


def usage_for(messages: Sequence[ChatMessage]) -> dict[str, int]:
    """The usage the scripted provider reports: 10 prompt tokens per message, 7 completion."""
    prompt = 10 * len(messages)
    return {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}


class ScriptedLLM(MockFunctionCallingLLM):
    """``MockFunctionCallingLLM`` with a model name and an OpenAI-shaped raw payload (usage).

    ``achat`` calls ``chat`` (two nested LlamaIndex spans, one LLM call); ``astream_chat``
    streams the answer in two chunks, the usage in the last one (as OpenAI's
    ``stream_options.include_usage`` does).
    """

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, is_function_calling_model=True)

    def _reply(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        return self._get_response_generator()(messages, **kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        message = self._reply(messages, **kwargs)
        raw = {"id": "chatcmpl-1", "model": f"{MODEL}-2026", "usage": usage_for(messages)}
        return ChatResponse(message=message, raw=raw)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        message = self._reply(messages, **kwargs)
        text = message.content or ""
        usage = usage_for(messages)

        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            half = len(text) // 2
            first = ChatMessage(role="assistant", content=text[:half])
            yield ChatResponse(message=first, delta=text[:half], raw={"choices": []})
            yield ChatResponse(message=message, delta=text[half:], raw={"usage": usage})

        return chunks()


class WordsLLM(ScriptedLLM):
    """A ``ScriptedLLM`` whose streams (``stream_chat``, ``astream_chat``, ``stream_complete``)
    yield its answer a word at a time, each chunk carrying the text so far (as LlamaIndex's
    integrations' chunks do), and no usage."""

    def _texts(self, messages: Sequence[ChatMessage]) -> list[str]:
        words = (self._reply(messages).content or "").split(" ")
        return [" ".join(words[: n + 1]) for n in range(len(words))]

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        texts = self._texts(messages)

        def chunks() -> Generator[ChatResponse, None, None]:
            for text in texts:
                yield ChatResponse(message=ChatMessage(role="assistant", content=text))

        return chunks()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        texts = self._texts(messages)

        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            for text in texts:
                yield ChatResponse(message=ChatMessage(role="assistant", content=text))

        return chunks()

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        texts = self._texts([ChatMessage(role="user", content=prompt)])

        def chunks() -> Generator[CompletionResponse, None, None]:
            for text in texts:
                yield CompletionResponse(text=text)

        return chunks()


def turn_script(*turns: ChatMessage) -> Any:
    """A response generator answering turn ``n`` (the number of tool results so far)."""

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        done = sum(1 for m in messages if m.role == MessageRole.TOOL)
        return turns[min(done, len(turns) - 1)]

    return respond


def call_script(*turns: ChatMessage) -> Any:
    """A response generator answering the ``n``-th call with ``turns[n]`` (then the last one)."""
    calls = iter(range(len(turns)))

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        return turns[next(calls, len(turns) - 1)]

    return respond


def tool_call(call_id: str, name: str, **arguments: Any) -> ChatMessage:
    """An assistant message asking for one tool call."""
    return ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=arguments)],
    )


def answer(text: str = ANSWER) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


CARD = "4111111111114242"


def charging_tool(use_async: bool = False) -> tuple[FunctionTool, list[tuple[str, int]]]:
    """A ``charge(card, amount)`` tool (its function async with ``use_async``), and the list of
    the charges it made."""
    ran: list[tuple[str, int]] = []

    def charge(card: str, amount: int) -> str:
        """Charge a card."""
        ran.append((card, amount))
        return f"charged {amount}"

    async def acharge(card: str, amount: int) -> str:
        """Charge a card."""
        return charge(card, amount)

    if use_async:
        return FunctionTool.from_defaults(async_fn=acharge, name="charge"), ran
    return FunctionTool.from_defaults(charge), ran


def shop(tool: BaseTool, call_id: str, **arguments: Any) -> FunctionAgent:
    """The agent ``shop``: its model calls ``tool`` once (``call_id``, ``arguments``), then
    answers "ok"."""
    llm = ScriptedLLM(
        response_generator=turn_script(
            tool_call(call_id, tool.metadata.name or "", **arguments), answer("ok")
        )
    )
    return FunctionAgent(name="shop", description="d", tools=[tool], llm=llm)


def build_index() -> VectorStoreIndex:
    """Two articles with fixed node ids, embedded by ``MockEmbedding`` (every score is 1.0)."""
    nodes = [TextNode(id_=key, text=text) for key, text in ARTICLES.items()]
    embed = MockEmbedding(embed_dim=8, model_name=EMBED_MODEL)
    return VectorStoreIndex(nodes, embed_model=embed)


class OrderLookupError(RuntimeError):
    """What the failing tool raises."""


def support_tools(index: VectorStoreIndex, use_async: bool) -> list[FunctionTool]:
    """``search_docs`` (a retrieval over ``index``) and ``lookup_order`` (always fails)."""
    retriever = index.as_retriever(similarity_top_k=2)

    def search_docs(query: str) -> str:
        """Search the help-centre articles."""
        return "\n".join(n.get_content() for n in retriever.retrieve(query))

    async def asearch_docs(query: str) -> str:
        """Search the help-centre articles."""
        return "\n".join(n.get_content() for n in await retriever.aretrieve(query))

    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        raise OrderLookupError(f"order {order_id} not found")

    async def alookup_order(order_id: str) -> str:
        """Look an order up."""
        raise OrderLookupError(f"order {order_id} not found")

    if use_async:
        return [
            FunctionTool.from_defaults(async_fn=asearch_docs, name="search_docs"),
            FunctionTool.from_defaults(async_fn=alookup_order, name="lookup_order"),
        ]
    return [FunctionTool.from_defaults(search_docs), FunctionTool.from_defaults(lookup_order)]


def support_agent(index: VectorStoreIndex, *, streaming: bool, use_async: bool) -> FunctionAgent:
    """Turn 1: search the docs; turn 2: look the order up (fails); turn 3: answer."""
    llm = ScriptedLLM(
        response_generator=turn_script(
            tool_call("call-1", "search_docs", query="refund delay"),
            tool_call("call-2", "lookup_order", order_id="A-17"),
            answer(),
        )
    )
    return FunctionAgent(
        name="support",
        description="Answers customer questions.",
        tools=support_tools(index, use_async),
        llm=llm,
        streaming=streaming,
    )


def handoff_workflow(billing_script: Any, billing_tools: Sequence[Any] = ()) -> Any:
    """An ``AgentWorkflow`` whose ``triage`` agent hands the question off to ``billing``, which
    answers with ``billing_script`` (a ``turn_script`` / ``call_script``) and ``billing_tools``."""
    from llama_index.core.agent.workflow import AgentWorkflow

    triage = FunctionAgent(
        name="triage",
        description="Routes questions.",
        can_handoff_to=["billing"],
        llm=ScriptedLLM(
            response_generator=turn_script(
                tool_call("h1", "handoff", to_agent="billing", reason="refund question")
            )
        ),
    )
    billing = FunctionAgent(
        name="billing",
        description="Answers billing questions.",
        tools=list(billing_tools),
        llm=ScriptedLLM(response_generator=billing_script),
    )
    return AgentWorkflow(agents=[triage, billing], root_agent="triage")
