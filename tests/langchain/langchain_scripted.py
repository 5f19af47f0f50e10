"""Offline stand-ins for the parts of a LangChain app that would call out: a chat model, a text
model and a retriever that answer from a script, plus a few tools.

They are real LangChain components (subclasses of LangChain's own fakes and base classes), so
every callback the tests observe comes from LangChain itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, Generation, LLMResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import ToolException, tool
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_none,
)

# -- models -----------------------------------------------------------------------------------


def reply(
    content: str = "",
    *,
    tool_calls: Iterable[tuple[str, dict[str, Any], str]] = (),
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    finish_reason: str | None = None,
) -> AIMessage:
    """An assistant message for the script: text, tool calls ``(name, args, id)``, usage."""
    message = AIMessage(
        content=content,
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in tool_calls],
    )
    if input_tokens is not None or output_tokens is not None:
        message.usage_metadata = {
            "input_tokens": input_tokens or 0,
            "output_tokens": output_tokens or 0,
            "total_tokens": (input_tokens or 0) + (output_tokens or 0),
        }
    if finish_reason:
        message.response_metadata = {"finish_reason": finish_reason}
    return message


class TransientError(Exception):
    """What a flaky provider raises; ScriptedChatModel retries it."""


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model answering from a script of messages, strings or exceptions.

    It binds tools (so agents accept it), names its model and provider the way real integrations
    do (``_get_ls_params`` and ``_identifying_params``), streams word by word with the tool calls
    and the usage on the last chunk, and retries ``TransientError`` with tenacity, reporting each
    retry through ``run_manager.on_retry`` as LangChain's own integrations do.
    """

    model_name: str = "scripted-1"
    temperature: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="scripted",
            ls_model_name=self.model_name,
            ls_model_type="chat",
            ls_temperature=self.temperature,
        )

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _next(self, run_manager: CallbackManagerForLLMRun | None) -> AIMessage:
        def attempt() -> AIMessage:
            item = next(self.messages)
            if isinstance(item, BaseException):
                raise item
            return AIMessage(content=item) if isinstance(item, str) else item

        def before_sleep(state: RetryCallState) -> None:
            if run_manager is not None:
                run_manager.on_retry(state)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(3),
            wait=wait_none(),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        from langchain_core.outputs import ChatGeneration

        return ChatResult(generations=[ChatGeneration(message=self._next(run_manager))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next(run_manager)
        words = message.content.split(" ") if isinstance(message.content, str) else []
        for index, word in enumerate(w for w in words if w):
            token = word if index == 0 else " " + word
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        last = AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
        chunk = ChatGenerationChunk(message=last)
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=chunk)
        yield chunk


def chat_model(*items: Any, **fields: Any) -> ScriptedChatModel:
    """A ScriptedChatModel answering ``items`` in order."""
    return ScriptedChatModel(messages=iter(items), **fields)


class ScriptedTextModel(BaseLLM):
    """A text-completion model whose provider reports usage in ``llm_output`` (not on messages)."""

    answer: str = "Paris"
    # ``llm_output["token_usage"]`` as the provider reports it (OpenAI's shape by default)
    token_usage: dict[str, Any] = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}

    @property
    def _llm_type(self) -> str:
        return "scripted-text"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "scripted-text-1"}

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return LLMResult(
            generations=[
                [Generation(text=self.answer, generation_info={"finish_reason": "length"})]
                for _ in prompts
            ],
            llm_output={"token_usage": self.token_usage},
        )


# -- retrieval ----------------------------------------------------------------------------------

POLICY_DOCS = [
    Document(
        id="policy-1",
        page_content="Refunds are paid within 5 business days. " * 40,
        metadata={"source": "refunds.md"},
    ),
    Document(
        id="policy-2", page_content="Exchanges are free.", metadata={"source": "exchanges.md"}
    ),
]


class PolicyRetriever(BaseRetriever):
    """Returns its documents for any query; ``fail=True`` makes it raise."""

    documents: list[Document] = POLICY_DOCS
    fail: bool = False

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.fail:
            raise ConnectionError("vector store unreachable")
        return list(self.documents)


# -- tools --------------------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def lookup_order(order_id: str) -> str:
    """Look an order up by its id."""
    if order_id == "missing":
        raise ToolException(f"order {order_id} not found")
    return f"order {order_id}: shipped"


lookup_order.handle_tool_error = True  # errors come back to the model as a message


@tool
def charge_card(amount: int) -> str:
    """Charge the customer's card."""
    raise ValueError("card declined")


class Receipt:
    """A tool result that is not JSON: the adapter must still record it."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"Receipt(number={self.number})"


@tool
def print_receipt(number: int) -> Any:
    """Print a receipt."""
    return Receipt(number)
