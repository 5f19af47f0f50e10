"""LLM, embedding and tool calls made directly, streams included."""

from __future__ import annotations

import gc

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import outline, wire
from tests.llamaindex.scripted import MODEL, ScriptedLLM, answer

HELLO = [ChatMessage(role="user", content="hello")]
COMMON = {"status": "ok", "agent": None, "session_id": None, "framework": "llamaindex",
          "cost_usd": None, "error": None, "tags": []}  # fmt: skip


def scripted(text: str = "hi there") -> ScriptedLLM:
    return ScriptedLLM(response_generator=lambda messages, **kwargs: answer(text))


def test_chat_is_one_llm_invoke_with_messages_answer_usage_and_model(traced):
    scripted().chat(HELLO)

    assert wire(traced.one()) == {
        **COMMON, "type": "llm_invoke", "name": "ScriptedLLM.chat",
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "output": {"role": "assistant", "content": "hi there"},
        "model": MODEL, "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
        "metadata": {},
    }  # fmt: skip


async def test_achat_calling_chat_is_recorded_once(traced):
    response = await scripted().achat(HELLO)

    assert response.message.content == "hi there"
    [event] = traced.events
    assert (event.type.value, event.name, event.usage.total_tokens) == (
        "llm_invoke",
        "ScriptedLLM.achat",
        17,
    )


def test_model_falls_back_to_the_raw_payload_when_metadata_has_none(traced):
    from tests.llamaindex.scripted import ScriptedLLM as Base

    class Anonymous(Base):
        @property
        def metadata(self):
            from llama_index.core.base.llms.types import LLMMetadata

            return LLMMetadata(is_function_calling_model=True)  # model_name "unknown"

    Anonymous(response_generator=lambda messages, **kwargs: answer()).chat(HELLO)

    assert traced.one().model == f"{MODEL}-2026"


def test_completion_records_prompt_and_text(traced):
    MockLLM(max_tokens=2).complete("Say hi")

    assert wire(traced.one()) == {
        **COMMON, "type": "llm_invoke", "name": "MockLLM.complete",
        "input": {"prompt": "Say hi"}, "output": {"text": "text text"},
        "model": None, "usage": None, "metadata": {},
    }  # fmt: skip


def test_predict_calling_complete_is_recorded_once(traced):
    MockLLM(max_tokens=1).predict(PromptTemplate("Greet {name}"), name="Ada")

    [event] = traced.events
    assert (event.name, event.input, event.output) == (
        "MockLLM.predict",
        {"prompt": "Greet Ada"},
        {"text": "text"},
    )


class Ticket(BaseModel):
    category: str
    urgent: bool


def test_structured_predict_is_one_llm_invoke_with_the_parsed_object(traced):
    def classify(messages, **kwargs):
        return ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="t1", tool_name="Ticket",
                                  tool_kwargs={"category": "refund", "urgent": True})],
        )  # fmt: skip

    llm = ScriptedLLM(response_generator=classify)
    ticket = llm.structured_predict(Ticket, PromptTemplate("Classify: {text}"), text="late refund")

    assert ticket == Ticket(category="refund", urgent=True)
    # The program, its chat call and the parsing "tool" are all part of the one call.
    assert wire(traced.one()) == {
        **COMMON, "type": "llm_invoke", "name": "ScriptedLLM.structured_predict",
        "input": {"messages": [{"role": "user", "content": "Classify: late refund"}]},
        "output": {"category": "refund", "urgent": True},
        "model": MODEL, "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
        "metadata": {"output_cls": "Ticket", "tools": ["Ticket"], "tool_calls": ["Ticket"]},
    }  # fmt: skip


async def test_consumed_stream_ends_the_event_with_the_full_answer_and_usage(traced):
    stream = await scripted("streamed answer").astream_chat(HELLO)
    assert traced.events == []  # the call is not over until the stream is
    deltas = [chunk.delta async for chunk in stream]

    assert "".join(deltas) == "streamed answer"
    assert wire(traced.one()) == {
        **COMMON, "type": "llm_invoke", "name": "ScriptedLLM.astream_chat",
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "output": {"role": "assistant", "content": "streamed answer"},
        "model": MODEL, "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
        "metadata": {},
    }  # fmt: skip


def test_stream_closed_early_is_ok_and_marked(traced):
    stream = scripted().stream_chat(HELLO)
    next(stream)
    stream.close()

    event = traced.one()
    assert (event.status.value, event.metadata) == ("ok", {"stream_closed_early": True})
    assert OPEN_SPANS.streams == {}


def test_stream_dropped_unconsumed_is_closed_as_incomplete(traced):
    stream = scripted().stream_chat(HELLO)
    assert len(OPEN_SPANS.streams) == 1
    del stream
    gc.collect()

    event = traced.one()
    assert (event.name, event.status.value, event.metadata) == (
        "ScriptedLLM.stream_chat",
        "ok",
        {"incomplete": True},
    )
    assert OPEN_SPANS.streams == {}


def test_stream_failing_midway_is_an_error_of_kind_model(traced):
    def chunks(messages, **kwargs):
        yield answer("partial")
        raise ConnectionResetError("stream reset by peer")

    stream = ScriptedLLM(response_generator=chunks).stream_chat(HELLO)
    with pytest.raises(ConnectionResetError):
        list(stream)

    event = traced.one()
    assert (event.status.value, event.error.type, event.error.kind) == (
        "error",
        "ConnectionResetError",
        "model",
    )


def test_text_embedding_batch_records_model_count_and_dimensions(traced):
    embed = MockEmbedding(embed_dim=4, model_name="mock-embed-4")
    embed.get_text_embedding_batch(["one", "two", "three", "four", "x" * 300])

    assert wire(traced.one()) == {
        **COMMON, "type": "embedding", "name": "MockEmbedding.get_text_embedding_batch",
        "input": {"texts": ["one", "two", "three"], "more": 2}, "output": None,
        "model": "mock-embed-4", "usage": None,
        "metadata": {"text_count": 5, "dimensions": 4},
    }  # fmt: skip


def test_function_tool_call_records_name_kwargs_and_output(traced):
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    tool = FunctionTool.from_defaults(add)
    assert tool(a=2, b=3).raw_output == 5  # __call__ calling call: one tool call

    assert wire(traced.one()) == {
        **COMMON, "type": "tool_call", "name": "add", "input": {"a": 2, "b": 3}, "output": "5",
        "model": None, "usage": None, "metadata": {"is_error": False},
    }  # fmt: skip


async def test_function_tool_raising_is_a_tool_error(traced):
    async def charge(amount: int) -> str:
        """Charge the card."""
        raise PermissionError("card declined")

    tool = FunctionTool.from_defaults(async_fn=charge)
    with pytest.raises(PermissionError):
        await tool.acall(amount=12)

    event = traced.one()
    assert (event.type.value, event.name, event.status.value, event.input) == (
        "tool_call",
        "charge",
        "error",
        {"amount": 12},
    )
    assert (event.error.type, event.error.message, event.error.kind) == (
        "PermissionError",
        "card declined",
        "tool",
    )


def test_predict_and_call_is_a_chain_of_the_llm_call_and_the_tool(traced):
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def pick(messages, **kwargs):
        return ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1, "b": 2})
            ],
        )

    llm = ScriptedLLM(response_generator=pick)
    response = llm.predict_and_call([FunctionTool.from_defaults(add)], user_msg="1+2?")

    assert response.response == "3"
    assert outline(traced.events) == [
        ("chain", "ScriptedLLM.predict_and_call", "ok", [
            ("llm_invoke", "ScriptedLLM.chat", "ok", []),
            ("tool_call", "add", "ok", []),
        ]),
    ]  # fmt: skip


async def test_lazy_async_stream_of_a_custom_llm_is_recorded_once(traced):
    # CustomLLM.astream_chat calls stream_chat only when its stream is read, in the reader's
    # context: still one call.
    stream = await MockLLM(max_tokens=2).astream_chat(HELLO)
    assert [chunk.delta async for chunk in stream] == ["text ", "text"]

    assert wire(traced.one()) == {
        **COMMON, "type": "llm_invoke", "name": "MockLLM.astream_chat",
        "input": {"messages": [{"role": "user", "content": "hello"}]},
        "output": {"role": "assistant", "content": "text"},
        "model": None, "usage": None, "metadata": {},
    }  # fmt: skip


def test_token_stream_is_one_call_ending_with_its_stream(traced):
    tokens = MockLLM(max_tokens=3).stream(PromptTemplate("Greet {name}"), name="Ada")
    assert traced.events == []
    assert list(tokens) == ["text ", "text ", "text"]

    [event] = traced.events
    assert (event.name, event.input, event.metadata) == (
        "MockLLM.stream",
        {"prompt": "Greet Ada"},
        {},
    )
