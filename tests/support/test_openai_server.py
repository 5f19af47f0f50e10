"""Tests of ``tests.support.openai_server`` against real clients, fully offline.

Clients exercised: the ``openai`` SDK (sync, async, streaming), autogen-ext's
``OpenAIChatCompletionClient`` (+ an ``AssistantAgent``) and crewAI 1.15 crews.
An autouse guard fails any test that opens a socket to a non-loopback address.

How crewAI 1.15 must be configured to hit the server
----------------------------------------------------
* ``crewai.LLM(model="gpt-4o-mini" | "openai/gpt-4o-mini", base_url=srv.base_url,
  api_key="sk-test")`` returns the NATIVE provider
  ``crewai.llms.providers.openai.completion.OpenAICompletion`` (``openai/`` is
  stripped; requests carry ``"model": "gpt-4o-mini"``). An unknown name works
  too (``"openai/my-model"`` -> ``custom_openai=True``; bare ``"my-model"`` is
  inferred as openai). litellm is NOT installed: ``is_litellm=True`` or an
  unroutable model raises ``ImportError``.
* Requests go to ``POST /v1/chat/completions`` (``api="completions"`` default;
  on a non-api.openai.com base_url crewAI never calls ``/v1/responses`` nor the
  token-count endpoint). ``LLM(..., stream=True)`` streams with
  ``stream_options.include_usage=true``.
* Offline env: ``CREWAI_DISABLE_TELEMETRY=true`` (or ``CREWAI_DISABLE_TRACKING``/
  ``OTEL_SDK_DISABLED``), ``CREWAI_TRACING_ENABLED=false``,
  ``CREWAI_DISABLE_VERSION_CHECK=true``; ``CREWAI_STORAGE_DIR=<abs tmp dir>``
  keeps ``latest_kickoff_task_outputs.db`` out of ``~/.local/share/<cwd name>``.

Quirks (crewAI)
---------------
* A tool-less task = 1 LLM call; system prompt ``"You are {role}. {backstory}\\nYour
  personal goal is: {goal}"``. The reply needs no ``Final Answer:`` (a leading
  ``Final Answer:`` is stripped from ``result.raw``).
* Tools + gpt-4o-mini = native function calling (``tools`` + ``tool_choice:
  "auto"``, ``strict: true`` schemas): call 1 -> ``tool_calls``; call 2 carries
  the ``role: "tool"`` result -> plain final text. 2 calls.
* ReAct text mode happens when ``llm.supports_function_calling()`` is False
  (an ``OpenAICompletion`` subclass overriding it, or any model name containing
  ``"o1"``, which also turns the system prompt into a ``"System: ..."`` user
  message) or when the server answers a tools request with an error whose
  message contains e.g. ``"does not support tools"`` (crewAI then retries in
  text mode within the same kickoff: 1 failed + 2 calls). Prompt: tool list +
  ``Thought/Action/Action Input/Observation`` format. Crew runs the tool and
  appends ``"\\nObservation: <result>"`` to the assistant message, then adds a
  user message "Analyze the tool result...". Stop words are NOT sent to the
  server: crewAI truncates the reply client-side at ``"\\nObservation:"``.
  The final reply must contain ``Final Answer: ...``.
* :func:`tool_then_answer` scripts both modes.
* crewAI retries a failed LLM call itself: an agent makes ``1 + max_retry_limit``
  (default 2) = 3 calls before kickoff raises the ``openai`` error (the SDK
  itself does not retry: the server sends ``x-should-retry: false``).
* Repeating the same tool call with identical args 5x aborts the task
  (``ToolExecutionFailedError``: "not making progress").

How autogen-ext 0.7.5 is configured
-----------------------------------
``OpenAIChatCompletionClient(model="gpt-4o-mini", base_url=srv.base_url,
api_key="sk-test")`` needs no ``model_info`` for known OpenAI names; unknown
names need ``model_info={"vision": False, "function_calling": True,
"json_output": False, "family": "unknown", "structured_output": False}``.
``create`` warns "Resolved model mismatch" unless the response model equals the
dated name -> use ``ScriptedOpenAIServer(model="gpt-4o-mini-2024-07-18")``.
``create_stream`` reports usage 0/0 unless ``include_usage=True``.
``AssistantAgent`` with a tool: 1 call (``ToolCallSummaryMessage``), 2 with
``reflect_on_tool_use=True``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import ipaddress
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import (
    Reply,
    ScriptedOpenAIServer,
    ToolCall,
    tool_then_answer,
)

# crewAI reads these at run time; set before any crewAI import (never OTEL_SDK_DISABLED).
for _key, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "CREWAI_TRACING_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "hi"}]


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse (and record) any socket connection to a non-loopback address."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        try:
            return ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            return address[0] == "localhost"

    def connect(sock: socket.socket, address: Any) -> None:
        if not allowed(sock, address):
            attempts.append(address)
            raise OSError(101, f"network blocked in tests: {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not allowed(sock, address):
            attempts.append(address)
            return 101
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert not attempts, f"external network connections attempted: {attempts}"


@pytest.fixture
def crewai_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point crewAI's kickoff-output SQLite DB at a temp dir."""
    monkeypatch.setenv("CREWAI_STORAGE_DIR", str(tmp_path))
    return tmp_path


def _client(srv: ScriptedOpenAIServer, **kwargs: Any) -> Any:
    return openai.OpenAI(base_url=srv.base_url, api_key="sk-test", **kwargs)


# --------------------------------------------------------------------------- #
# openai SDK
# --------------------------------------------------------------------------- #


def test_sync_text_completion_exact_fields() -> None:
    with ScriptedOpenAIServer([Reply.text("hello", prompt_tokens=3, completion_tokens=4)]) as srv:
        result = _client(srv).chat.completions.create(model="gpt-4o-mini", messages=USER)
        assert srv.requests == [{"model": "gpt-4o-mini", "messages": USER}]
        assert srv.remaining == 0
    assert result.id == "chatcmpl-scripted-1"
    assert result.object == "chat.completion"
    assert result.model == "gpt-4o-mini"
    choice = result.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "hello")
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)
    assert result.usage.total_tokens == 7


def test_defaults_model_override_and_finish_reason() -> None:
    with ScriptedOpenAIServer(
        [Reply.text("a"), Reply.text("b", model="gpt-x", finish_reason="length")],
        model="gpt-4o-mini-2024-07-18",
    ) as srv:
        client = _client(srv)
        first = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        second = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert first.model == "gpt-4o-mini-2024-07-18"
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (10, 5)
    assert (second.model, second.choices[0].finish_reason) == ("gpt-x", "length")


def test_tool_calls_single_and_parallel() -> None:
    replies = [
        Reply.tool_call("add", {"a": 1, "b": 2}, call_id="call_x"),
        Reply.parallel_tool_calls(
            ToolCall("search", {"q": "x"}),
            ("lookup", {"id": 7}),
            ("raw", '{"not": json', "call_raw"),
            content="thinking",
        ),
    ]
    with ScriptedOpenAIServer(replies) as srv:
        client = _client(srv)
        tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
        one = client.chat.completions.create(model="m", messages=USER, tools=tools)
        many = client.chat.completions.create(model="m", messages=USER)
        assert srv.requests[0]["tools"] == tools
    [call] = one.choices[0].message.tool_calls or []
    assert (call.id, call.function.name) == ("call_x", "add")
    assert json.loads(call.function.arguments) == {"a": 1, "b": 2}
    assert one.choices[0].finish_reason == "tool_calls"
    assert one.choices[0].message.content is None
    calls = many.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [
        ("call_1", "search"),
        ("call_2", "lookup"),
        ("call_raw", "raw"),
    ]
    assert calls[2].function.arguments == '{"not": json'
    assert many.choices[0].message.content == "thinking"


def test_streaming_text_with_include_usage() -> None:
    reply = Reply.text("streamed answer!", prompt_tokens=21, completion_tokens=8)
    with ScriptedOpenAIServer([reply]) as srv:
        stream = _client(srv).chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 2 and "".join(pieces) == "streamed answer!"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (21, 8)
    assert usage_chunk.usage.total_tokens == 29
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_has_no_usage_chunk() -> None:
    with ScriptedOpenAIServer(["abc"]) as srv:
        chunks = list(_client(srv).chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_streaming_tool_calls_accumulate() -> None:
    reply = Reply.parallel_tool_calls(
        ("add", {"a": 1, "b": 2}, "call_a"), ("mul", {"x": [1, 2, 3]}, "call_b")
    )
    with ScriptedOpenAIServer([reply]) as srv:
        client = _client(srv)
        with client.chat.completions.stream(
            model="m", messages=USER, stream_options={"include_usage": True}
        ) as stream:
            for _event in stream:
                pass
            final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "add", {"a": 1, "b": 2}),
        ("call_b", "mul", {"x": [1, 2, 3]}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 15


def test_async_client_plain_and_streaming() -> None:
    async def run(srv: ScriptedOpenAIServer) -> tuple[Any, list[Any]]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test") as client:
            plain = await client.chat.completions.create(model="m", messages=USER)
            stream = await client.chat.completions.create(
                model="m", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            return plain, chunks

    replies = [
        Reply.text("async hi", prompt_tokens=5, completion_tokens=2),
        Reply.tool_call("f", {"k": "v"}, call_id="call_f", prompt_tokens=6, completion_tokens=1),
    ]
    with ScriptedOpenAIServer(replies) as srv:
        plain, chunks = asyncio.run(run(srv))
    assert plain.choices[0].message.content == "async hi"
    assert plain.usage is not None and plain.usage.total_tokens == 7
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_f" and deltas[0].function.name == "f"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"k": "v"}
    assert chunks[-1].usage.prompt_tokens == 6 and chunks[-1].usage.completion_tokens == 1


def test_http_errors_are_not_retried_and_carry_body() -> None:
    with ScriptedOpenAIServer(
        [Reply.http_error(400, "bad tools", code="invalid_tools"), Reply.http_error(500)]
    ) as srv:
        client = _client(srv)  # default max_retries=2: x-should-retry=false wins
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=USER, stream=True)
        assert len(srv.requests) == 2
    assert bad.value.status_code == 400
    assert bad.value.body == {
        "message": "bad tools",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_tools",
    }


def test_retryable_error_is_retried_by_sdk() -> None:
    replies: list[Reply | str] = [
        Reply.http_error(429, "slow down", retryable=True, retry_after_ms=1),
        "ok",
    ]
    with ScriptedOpenAIServer(replies) as srv:
        result = _client(srv, max_retries=1).chat.completions.create(model="m", messages=USER)
        assert len(srv.requests) == 2
    assert result.choices[0].message.content == "ok"


def test_exhausted_script_answers_500_and_records_it() -> None:
    with ScriptedOpenAIServer(["only one"]) as srv:
        client = _client(srv)
        client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="m", messages=USER)
        assert len(srv.requests) == 2  # no SDK retries
        [error] = srv.errors
    assert "script exhausted" in error and "#2" in error
    assert isinstance(exc.value.body, dict) and exc.value.body["type"] == "script_exhausted"


def test_responder_after_script_and_its_failures() -> None:
    def responder(request: dict[str, Any]) -> Reply | str:
        last = request["messages"][-1]["content"]
        if last == "boom":
            raise RuntimeError("responder bug")
        return f"echo: {last}"

    with ScriptedOpenAIServer(["scripted first"], responder=responder) as srv:
        client = _client(srv)

        def ask(text: str) -> str | None:
            messages = [{"role": "user", "content": text}]
            return (
                client.chat.completions.create(model="m", messages=messages)
                .choices[0]
                .message.content
            )

        assert ask("a") == "scripted first"
        assert ask("b") == "echo: b"
        with pytest.raises(openai.InternalServerError, match="responder bug"):
            ask("boom")
        srv.add(Reply.text("added later"))
        assert ask("c") == "added later"
        assert "RuntimeError" in srv.errors[0]


def test_tool_then_answer_drives_native_and_react_loops() -> None:
    respond = tool_then_answer("mul", {"a": 2}, "4", call_id="c1")
    native = respond({"messages": USER, "tools": [{"type": "function"}]})
    assert native.tool_calls == (ToolCall("mul", {"a": 2}, "c1"),)
    done = respond({"messages": [*USER, {"role": "tool", "content": "4"}]})
    assert done.content == "4"
    react = respond({"messages": USER})
    assert react.content is not None and 'Action: mul\nAction Input: {"a": 2}' in react.content
    final = respond({"messages": [{"role": "assistant", "content": "x\nObservation: 4"}]})
    assert final.content is not None and final.content.endswith("Final Answer: 4")


def test_delay_and_client_timeout() -> None:
    with ScriptedOpenAIServer([Reply.text("late", delay_s=1.0), "on time"]) as srv:
        client = _client(srv, max_retries=0, timeout=0.1)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m", messages=USER)
        assert time.monotonic() - started < 0.9
        # The server survives the client hanging up mid-delay.
        result = _client(srv).chat.completions.create(model="m", messages=USER)
    assert result.choices[0].message.content == "on time"


def test_keep_alive_reuses_one_connection() -> None:
    with ScriptedOpenAIServer(responder=lambda _req: "ok") as srv:
        client = _client(srv)
        for _ in range(5):
            client.chat.completions.create(model="m", messages=USER)
        clients = {entry.client for entry in srv.log}
    assert len(clients) == 1


def test_raw_http_keep_alive_and_chunked_stream() -> None:
    with ScriptedOpenAIServer(["first", "second"]) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        body = json.dumps({"model": "m", "messages": USER})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Content-Length")
        assert json.loads(first.read())["choices"][0]["message"]["content"] == "first"
        stream_body = json.dumps({"model": "m", "messages": USER, "stream": True})
        conn.request("POST", "/v1/chat/completions", stream_body)  # same socket
        second = conn.getresponse()
        assert second.getheader("Transfer-Encoding") == "chunked"
        events = [line for line in second.read().decode().split("\n\n") if line]
        conn.close()
        assert len({entry.client for entry in srv.log}) == 1
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads) == "second"


def test_concurrent_requests_each_get_one_reply() -> None:
    with ScriptedOpenAIServer([f"r{i}" for i in range(8)]) as srv:
        client = _client(srv)

        def ask(_: int) -> str | None:
            return (
                client.chat.completions.create(model="m", messages=USER).choices[0].message.content
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = sorted(a or "" for a in pool.map(ask, range(8)))
        assert srv.wait_for_requests(8, timeout=1) and srv.remaining == 0
    assert answers == sorted(f"r{i}" for i in range(8))


def test_embeddings_models_and_unknown_path() -> None:
    with ScriptedOpenAIServer(embedding_dim=4) as srv:
        client = _client(srv)
        default = client.embeddings.create(model="text-embedding-3-small", input=["a b c", "d"])
        floats = client.embeddings.create(
            model="text-embedding-3-small", input="a b c", encoding_format="float", dimensions=6
        )
        models = client.models.list()
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="m", input="hi")
        assert srv.embedding_requests[0]["encoding_format"] == "base64"  # SDK default
        assert len(srv.errors) == 1 and "/v1/responses" in srv.errors[0]
    expected = ScriptedOpenAIServer.embedding_for("a b c", 4)
    assert default.data[0].embedding == pytest.approx(expected, abs=1e-6)
    assert len(default.data) == 2 and default.data[1].index == 1
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (4, 4)
    assert floats.data[0].embedding == pytest.approx(ScriptedOpenAIServer.embedding_for("a b c", 6))
    assert [m.id for m in models.data] == ["gpt-4o-mini"]


# --------------------------------------------------------------------------- #
# autogen-ext
# --------------------------------------------------------------------------- #


def test_autogen_create_and_create_stream() -> None:
    models = pytest.importorskip("autogen_ext.models.openai")
    from autogen_core import FunctionCall
    from autogen_core.models import RequestUsage, UserMessage
    from autogen_core.tools import FunctionTool

    def add(a: int, b: int) -> int:
        return a + b

    tool = FunctionTool(add, description="Add two integers.")
    msgs = [UserMessage(content="hi", source="user")]
    replies = [
        Reply.text("plain", prompt_tokens=12, completion_tokens=4),
        Reply.tool_call(
            "add", {"a": 1, "b": 2}, call_id="call_1", prompt_tokens=9, completion_tokens=2
        ),
        Reply.text("streamed text", prompt_tokens=7, completion_tokens=3),
        Reply.tool_call(
            "add", {"a": 3, "b": 4}, call_id="call_2", prompt_tokens=8, completion_tokens=1
        ),
    ]

    async def run(srv: ScriptedOpenAIServer) -> list[Any]:
        client = models.OpenAIChatCompletionClient(
            model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test"
        )
        try:
            plain = await client.create(msgs)
            called = await client.create(msgs, tools=[tool])
            text_stream = [c async for c in client.create_stream(msgs, include_usage=True)]
            tool_stream = [
                c async for c in client.create_stream(msgs, tools=[tool], include_usage=True)
            ]
            return [plain, called, text_stream, tool_stream, client.total_usage()]
        finally:
            await client.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Resolved model mismatch" etc.
        with ScriptedOpenAIServer(replies, model="gpt-4o-mini-2024-07-18") as srv:
            plain, called, text_stream, tool_stream, total = asyncio.run(run(srv))
            requests = srv.requests

    assert plain.content == "plain" and plain.finish_reason == "stop"
    assert plain.usage == RequestUsage(prompt_tokens=12, completion_tokens=4)
    assert called.finish_reason == "function_calls"
    assert called.content == [FunctionCall(id="call_1", arguments='{"a":1,"b":2}', name="add")]
    assert called.usage == RequestUsage(prompt_tokens=9, completion_tokens=2)
    assert "".join(c for c in text_stream[:-1]) == "streamed text"
    assert text_stream[-1].content == "streamed text"
    assert text_stream[-1].usage == RequestUsage(prompt_tokens=7, completion_tokens=3)
    assert tool_stream[-1].content == [
        FunctionCall(id="call_2", arguments='{"a":3,"b":4}', name="add")
    ]
    assert tool_stream[-1].usage == RequestUsage(prompt_tokens=8, completion_tokens=1)
    assert total == RequestUsage(prompt_tokens=36, completion_tokens=10)
    assert requests[2]["stream_options"] == {"include_usage": True}
    assert requests[1]["tools"][0]["function"]["name"] == "add"


def test_autogen_assistant_agent_tool_loop_with_unknown_model() -> None:
    models = pytest.importorskip("autogen_ext.models.openai")
    agents = pytest.importorskip("autogen_agentchat.agents")
    calls: list[tuple[int, int]] = []

    async def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    async def run(srv: ScriptedOpenAIServer) -> Any:
        client = models.OpenAIChatCompletionClient(
            model="scripted-model",
            base_url=srv.base_url,
            api_key="sk-test",
            model_info={
                "vision": False,
                "function_calling": True,
                "json_output": False,
                "family": "unknown",
                "structured_output": False,
            },
        )
        agent = agents.AssistantAgent(
            "calc", model_client=client, tools=[add], reflect_on_tool_use=True
        )
        try:
            return await agent.run(task="What is 2 + 3?")
        finally:
            await client.close()

    respond = tool_then_answer("add", {"a": 2, "b": 3}, "The sum is 5", prompt_tokens=30)
    with ScriptedOpenAIServer(responder=respond) as srv:
        result = asyncio.run(run(srv))
        requests = srv.requests
    assert calls == [(2, 3)]
    assert len(requests) == 2 and requests[1]["messages"][-1]["role"] == "tool"
    assert result.messages[-1].content == "The sum is 5"
    assert result.messages[-1].models_usage.prompt_tokens == 30


# --------------------------------------------------------------------------- #
# crewAI
# --------------------------------------------------------------------------- #


def _crewai() -> Any:
    return pytest.importorskip("crewai")


def test_crewai_llm_routes_to_native_openai_provider() -> None:
    crewai = _crewai()
    from crewai.llms.providers.openai.completion import OpenAICompletion

    for model in ("gpt-4o-mini", "openai/gpt-4o-mini", "openai/my-model", "my-model"):
        llm = crewai.LLM(model=model, base_url="http://127.0.0.1:9/v1", api_key="sk-test")
        assert type(llm) is OpenAICompletion, model
        assert llm.model == model.removeprefix("openai/")
        assert llm.supports_function_calling()


def _one_task_crew(llm: Any, tools: list[Any] | None = None) -> Any:
    crewai = _crewai()
    agent = crewai.Agent(
        role="Calculator",
        goal="multiply numbers",
        backstory="You are precise.",
        llm=llm,
        tools=tools or [],
    )
    task = crewai.Task(description="What is 6 times 7?", expected_output="the product", agent=agent)
    return crewai.Crew(agents=[agent], tasks=[task])


@pytest.mark.parametrize("stream", [False, True])
def test_crewai_single_task_crew(crewai_storage: Path, stream: bool) -> None:
    crewai = _crewai()
    reply = Reply.text("Final Answer: 42", prompt_tokens=11, completion_tokens=3)
    with ScriptedOpenAIServer([reply]) as srv:
        llm = crewai.LLM(
            model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test", stream=stream
        )
        result = _one_task_crew(llm).kickoff()
        [request] = srv.requests
    assert result.raw == "42"
    assert (result.token_usage.prompt_tokens, result.token_usage.completion_tokens) == (11, 3)
    assert result.token_usage.successful_requests == 1
    assert request["model"] == "gpt-4o-mini" and "tools" not in request
    assert request["messages"][0] == {
        "role": "system",
        "content": "You are Calculator. You are precise.\nYour personal goal is: multiply numbers",
    }
    assert "What is 6 times 7?" in request["messages"][1]["content"]
    if stream:
        assert request["stream"] is True
        assert request["stream_options"] == {"include_usage": True}
    assert (crewai_storage / "latest_kickoff_task_outputs.db").exists()


def _multiply_tool(calls: list[tuple[int, int]]) -> Any:
    from crewai.tools import BaseTool

    class Multiply(BaseTool):
        name: str = "multiply"
        description: str = "Multiply two integers a and b."

        def _run(self, a: int, b: int) -> str:
            calls.append((a, b))
            return str(a * b)

    return Multiply()


def test_crewai_native_function_calling_tool_crew(crewai_storage: Path) -> None:
    crewai = _crewai()
    calls: list[tuple[int, int]] = []
    respond = tool_then_answer(
        "multiply", {"a": 6, "b": 7}, "The product is 42", call_id="call_mul"
    )
    with ScriptedOpenAIServer(responder=respond) as srv:
        llm = crewai.LLM(model="openai/gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
        result = _one_task_crew(llm, [_multiply_tool(calls)]).kickoff()
        requests = srv.requests
    assert result.raw == "The product is 42"
    assert calls == [(6, 7)]
    assert len(requests) == 2
    assert requests[0]["tool_choice"] == "auto"
    assert requests[0]["tools"][0]["function"]["name"] == "multiply"
    assert requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_mul",
        "name": "multiply",
        "content": "42",
    }
    assert result.token_usage.successful_requests == 2


def test_crewai_react_text_tool_crew(crewai_storage: Path) -> None:
    _crewai()
    from crewai.llms.providers.openai.completion import OpenAICompletion
    from crewai.tools import tool

    calls: list[tuple[int, int]] = []

    @tool("multiply")
    def multiply(a: int, b: int) -> str:
        """Multiply two integers a and b."""
        calls.append((a, b))
        return str(a * b)

    class TextOnlyLLM(OpenAICompletion):
        def supports_function_calling(self) -> bool:
            return False

    respond = tool_then_answer("multiply", {"a": 6, "b": 7}, "The product is 42")
    with ScriptedOpenAIServer(responder=respond) as srv:
        llm = TextOnlyLLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
        result = _one_task_crew(llm, [multiply]).kickoff()
        requests = srv.requests
    assert result.raw == "The product is 42"
    assert calls == [(6, 7)]
    assert len(requests) == 2
    assert all("tools" not in r and "stop" not in r for r in requests)
    system = requests[0]["messages"][0]["content"]
    assert "Tool Name: multiply" in system and "Action Input:" in system
    assistant = requests[1]["messages"][-2]
    assert assistant["role"] == "assistant"
    assert assistant["content"].endswith("\nObservation: 42")


def test_crewai_falls_back_to_react_when_server_rejects_tools(crewai_storage: Path) -> None:
    crewai = _crewai()
    calls: list[tuple[int, int]] = []
    respond = tool_then_answer("multiply", {"a": 6, "b": 7}, "The product is 42")
    rejection = Reply.http_error(400, "This model does not support tools")
    with ScriptedOpenAIServer([rejection], responder=respond) as srv:
        llm = crewai.LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
        result = _one_task_crew(llm, [_multiply_tool(calls)]).kickoff()
        requests = srv.requests
    assert result.raw == "The product is 42"
    assert calls == [(6, 7)]
    assert len(requests) == 3
    assert "tools" in requests[0] and "tools" not in requests[1]


def test_crewai_retries_failed_llm_calls_then_raises(crewai_storage: Path) -> None:
    crewai = _crewai()
    with ScriptedOpenAIServer(responder=lambda _req: Reply.http_error(500, "down")) as srv:
        llm = crewai.LLM(model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test")
        with pytest.raises(openai.InternalServerError):
            _one_task_crew(llm).kickoff()
        assert len(srv.requests) == 3  # 1 + Agent.max_retry_limit (2)
