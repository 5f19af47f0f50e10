"""Review fixes: a streamed LLM call open at exit ends ``incomplete`` whatever else the process
did; a stream that stops partway keeps the response it had received; an agent run that fails,
times out or is cancelled lists the tools it ran."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ToolCallBlock
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow.errors import WorkflowCancelledByUser, WorkflowTimeoutError

from sightline.testing import Capture
from sightline_llamaindex.handlers import OPEN_SPANS
from tests.llamaindex.events import fields, outline
from tests.llamaindex.scripted import (
    MODEL,
    ScriptedLLM,
    WordsLLM,
    answer,
    tool_call,
    turn_script,
)

ANSWER = "Refunds are paid within 5 business days."
HELLO = [ChatMessage(role="user", content="hello")]


def words_llm() -> WordsLLM:
    return WordsLLM(response_generator=lambda messages, **kwargs: answer(ANSWER))


def llm_event(name: str, input: Any, output: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """The :func:`fields` of an ``ok`` LLM call of ``WordsLLM`` (no usage)."""
    return {
        "type": "llm_invoke", "name": name, "status": "ok", "agent": None, "session_id": None,
        "framework": "llamaindex", "input": input, "output": output, "model": MODEL,
        "usage": None, "cost_usd": None, "error": None, "metadata": metadata, "tags": [],
    }  # fmt: skip


CHAT_INPUT = {"messages": [{"role": "user", "content": "hello"}]}
TWO_WORDS = {"role": "assistant", "content": "Refunds are"}


# -- 1. a streamed LLM call open at exit, in a process that streamed nothing else ------------

EXIT_SCRIPT = """
    import sys
    import sightline
    from llama_index.core.base.llms.types import ChatMessage
    from sightline.exporters.jsonl import JsonlExporter
    from tests.llamaindex.scripted import WordsLLM, answer

    sightline.init(exporters=[JsonlExporter(sys.argv[1])])
    llm = WordsLLM(response_generator=lambda messages, **kwargs: answer(sys.argv[3]))
    if sys.argv[2] == "chat":
        stream = llm.stream_chat([ChatMessage(role="user", content="hello")])
    else:
        stream = llm.stream_complete("hello")
    next(stream), next(stream)
    # the process exits with the stream half-read, still referenced
"""


@pytest.mark.parametrize(
    ("method", "input", "output"),
    [
        ("stream_chat", CHAT_INPUT, TWO_WORDS),
        ("stream_complete", {"prompt": "hello"}, {"text": "Refunds are"}),
    ],
)
def test_a_half_read_llm_stream_open_at_exit_ends_incomplete_with_what_it_received(
    tmp_path: Path, method: str, input: Any, output: Any
) -> None:
    # No streamed engine response anywhere in the process: the stream alone ends at exit.
    path = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    root = Path(__file__).resolve().parents[2]
    kind = "chat" if method == "stream_chat" else "complete"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), str(path), kind, ANSWER],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "after the client was closed" not in done.stderr
    (event,) = map(json.loads, path.read_text().splitlines())
    for key in ("id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
                "duration_ms", "schema_version"):  # fmt: skip
        event.pop(key)
    assert event == llm_event(f"WordsLLM.{method}", input, output, {"incomplete": True})


# -- 2. a stream that stops partway keeps what it received --------------------------------------


def test_an_llm_stream_closed_half_read_keeps_the_text_received(traced: Capture) -> None:
    stream = words_llm().stream_chat(HELLO)
    next(stream), next(stream)
    stream.close()

    assert fields(traced.one()) == llm_event(
        "WordsLLM.stream_chat", CHAT_INPUT, TWO_WORDS, {"stream_closed_early": True}
    )
    assert OPEN_SPANS.streams == {}


def test_a_completion_stream_closed_half_read_keeps_the_text_received(traced: Capture) -> None:
    stream = words_llm().stream_complete("hello")
    next(stream), next(stream)
    stream.close()

    assert fields(traced.one()) == llm_event(
        "WordsLLM.stream_complete",
        {"prompt": "hello"},
        {"text": "Refunds are"},
        {"stream_closed_early": True},
    )


async def test_an_async_llm_stream_closed_half_read_keeps_the_text_received(
    traced: Capture,
) -> None:
    stream = await words_llm().astream_chat(HELLO)
    await stream.__anext__(), await stream.__anext__()
    await stream.aclose()

    assert fields(traced.one()) == llm_event(
        "WordsLLM.astream_chat", CHAT_INPUT, TWO_WORDS, {"stream_closed_early": True}
    )


def test_an_llm_stream_dropped_half_read_is_incomplete_with_the_text_received(
    traced: Capture,
) -> None:
    stream = words_llm().stream_chat(HELLO)
    next(stream), next(stream)
    del stream
    gc.collect()

    assert fields(traced.one()) == llm_event(
        "WordsLLM.stream_chat", CHAT_INPUT, TWO_WORDS, {"incomplete": True}
    )
    assert OPEN_SPANS.streams == {}


def test_an_llm_stream_read_to_its_end_ends_with_its_last_chunk(traced: Capture) -> None:
    assert len(list(words_llm().stream_chat(HELLO))) == 7

    assert fields(traced.one()) == llm_event(
        "WordsLLM.stream_chat", CHAT_INPUT, {"role": "assistant", "content": ANSWER}, {}
    )


class ProviderDown(ConnectionError):
    """What a stream cut by the provider raises."""


class CutStreamLLM(WordsLLM):
    """Streams two words of its answer, then fails (``stall`` unset) or sets ``stall`` and
    waits (to be cancelled)."""

    stall: Any = None

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        texts, stall = self._texts(messages), self.stall

        async def chunks() -> AsyncGenerator[ChatResponse, None]:
            for text in texts[:2]:
                yield ChatResponse(message=ChatMessage(role="assistant", content=text))
            if stall is None:
                raise ProviderDown("stream reset by provider")
            stall.set()
            await asyncio.sleep(30)

        return chunks()


async def test_an_llm_stream_failing_midway_keeps_the_text_received(traced: Capture) -> None:
    stream = await CutStreamLLM(response_generator=lambda m, **k: answer(ANSWER)).astream_chat(
        HELLO
    )
    with pytest.raises(ProviderDown):
        async for _ in stream:
            pass

    assert fields(traced.one()) == {
        **llm_event("CutStreamLLM.astream_chat", CHAT_INPUT, TWO_WORDS, {}),
        "status": "error",
        "error": {"type": "ProviderDown", "message": "stream reset by provider", "kind": "model"},
    }


async def test_the_stream_a_cancelled_agent_run_cut_keeps_the_text_received(
    traced: Capture,
) -> None:
    stalled = asyncio.Event()
    llm = CutStreamLLM(response_generator=lambda m, **k: answer(ANSWER), stall=stalled)
    handler = FunctionAgent(name="support", description="d", tools=[], llm=llm).run(
        user_msg="hello"
    )
    await stalled.wait()
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler

    cut = fields(traced.one(type="llm_invoke"))
    assert (cut["status"], cut["error"]["type"], cut["output"]) == (
        "error",
        "CancelledError",
        TWO_WORDS,
    )


# -- 3. an agent run that does not return lists the tools it ran ----------------------------------


def ops_tools(refunding: asyncio.Event) -> list[Any]:
    """``lookup`` (answers at once) and ``refund`` (sets ``refunding``, then takes long)."""

    async def lookup(order_id: str) -> str:
        """Look an order up."""
        return "shipped"

    async def refund(order_id: str) -> str:
        """Refund an order."""
        refunding.set()
        await asyncio.sleep(30)
        return "refunded"

    return [FunctionTool.from_defaults(async_fn=f) for f in (lookup, refund)]


def agent_event(error: dict[str, Any], tool_calls: list[str]) -> dict[str, Any]:
    """The :func:`fields` of the failed run of the agent ``ops`` (question "where is A-1?")."""
    return {
        "type": "agent", "name": "ops", "status": "error", "agent": "ops", "session_id": None,
        "framework": "llamaindex", "input": "where is A-1?", "output": None, "model": None,
        "usage": None, "cost_usd": None, "error": error,
        "metadata": {"agent_type": "FunctionAgent", "tools": ["lookup", "refund"],
                     "tool_calls": tool_calls},
        "tags": [],
    }  # fmt: skip


def ops_agent(script: Any, refunding: asyncio.Event | None = None, **options: Any) -> FunctionAgent:
    tools = ops_tools(refunding or asyncio.Event())
    llm = ScriptedLLM(response_generator=script)
    return FunctionAgent(name="ops", description="d", tools=tools, llm=llm, **options)


async def test_a_failed_agent_run_lists_the_tools_it_ran(traced: Capture) -> None:
    turns = iter([tool_call("c1", "lookup", order_id="A-1")])

    def script(messages: Any, **kwargs: Any) -> ChatMessage:
        turn = next(turns, None)
        if turn is None:
            raise ProviderDown("provider down")
        return turn

    with pytest.raises(ProviderDown):
        await ops_agent(script).run(user_msg="where is A-1?")

    run = traced.one(type="agent")
    assert fields(run) == agent_event(
        {"type": "ProviderDown", "message": "provider down", "kind": "model"}, ["lookup"]
    )
    assert [e.name for e in traced.find(type="tool_call")] == ["lookup"]


def lookup_then_refund() -> Any:
    refund = ChatMessage(
        role="assistant",
        blocks=[
            ToolCallBlock(tool_call_id="c2", tool_name="refund", tool_kwargs={"order_id": "A-1"})
        ],
    )
    return turn_script(tool_call("c1", "lookup", order_id="A-1"), refund, answer("done"))


async def test_a_timed_out_agent_run_lists_the_tools_it_ran_and_the_one_it_cut(
    traced: Capture,
) -> None:
    with pytest.raises(WorkflowTimeoutError):
        await ops_agent(lookup_then_refund(), timeout=1.0).run(user_msg="where is A-1?")

    timeout = "Operation timed out after 1.0 seconds. Currently active steps: call_tool"
    assert fields(traced.one(type="agent")) == agent_event(
        {"type": "WorkflowTimeoutError", "message": timeout, "kind": "timeout"},
        ["lookup", "refund"],
    )
    assert [(e.name, e.status.value) for e in traced.find(type="tool_call")] == [
        ("lookup", "ok"),
        ("refund", "error"),
    ]


async def test_a_cancelled_agent_run_lists_the_tools_it_ran_and_the_one_it_cut(
    traced: Capture,
) -> None:
    refunding = asyncio.Event()
    handler = ops_agent(lookup_then_refund(), refunding).run(user_msg="where is A-1?")
    await refunding.wait()
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler

    assert fields(traced.one(type="agent")) == agent_event(
        {"type": "WorkflowCancelledByUser", "message": "workflow cancelled by user",
         "kind": "orchestration"},
        ["lookup", "refund"],
    )  # fmt: skip
    assert outline(traced.find(type="tool_call")) == [
        ("tool_call", "lookup", "ok", []),
        ("tool_call", "refund", "error", []),
    ]


async def test_a_successful_run_lists_the_tool_calls_its_output_lists(traced: Capture) -> None:
    script = turn_script(tool_call("c1", "lookup", order_id="A-1"), answer("shipped"))
    await ops_agent(script).run(user_msg="where is A-1?")

    assert traced.one(type="agent").metadata == {
        "agent_type": "FunctionAgent",
        "tools": ["lookup", "refund"],
        "tool_calls": ["lookup"],
    }
