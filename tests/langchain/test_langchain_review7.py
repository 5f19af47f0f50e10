"""Streams stopped early, LangGraph's Command and control flow, usage of n choices, subgraphs,
runs LangChain leaves without a parent, error kinds of several failed children and the fields
of custom events: on the real frameworks, offline."""

from __future__ import annotations

import asyncio
import operator
import time
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import dispatch_custom_event
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt

from sightline.testing import Capture
from sightline_langchain import SightlineCallbackHandler, mapping
from tests.langchain.langchain_events import only, tree, wire
from tests.langchain.langchain_scripted import (
    PolicyRetriever,
    ScriptedChatModel,
    add,
    chat_model,
    reply,
)


def handler_config(**more: Any) -> Any:
    return {"callbacks": [SightlineCallbackHandler()], **more}


def words_chain() -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return prompt | chat_model(reply("one two three four")) | StrOutputParser()


async def read_two_then_close(stream: Any) -> None:
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            break
    await stream.aclose()


# -- a stream the caller stops reading is not an error ------------------------------------------


def test_a_model_stream_stopped_early_is_ok_and_unfinished(cap: Capture) -> None:
    model = chat_model(reply("one two three four"))
    for number, _ in enumerate(model.stream("hi", config=handler_config())):
        if number == 1:
            break
    event = only(cap.events)
    data = wire(event)
    ttft = data["metadata"].pop("ttft_ms")
    assert ttft >= 0
    assert data == {
        "type": "llm_invoke", "name": "ScriptedChatModel", "status": "ok", "agent": None,
        "session_id": None, "framework": "langchain", "input": [{"role": "user", "content": "hi"}],
        "output": {"role": "assistant", "content": "one two"}, "model": "scripted-1",
        "usage": None, "cost_usd": None, "error": None,
        "metadata": {"provider": "scripted", "streamed_tokens": 2, "unfinished": True},
        "tags": [],
    }  # fmt: skip


def test_a_model_astream_closed_early_is_ok_and_unfinished(cap: Capture) -> None:
    model = chat_model(reply("one two three four"))
    asyncio.run(read_two_then_close(model.astream("hi", config=handler_config())))
    event = only(cap.events)
    assert (event.status.value, event.error, event.output) == (
        "ok",
        None,
        {"role": "assistant", "content": "one two"},
    )
    assert (event.metadata["unfinished"], event.metadata["streamed_tokens"]) == (True, 2)


def test_a_chain_astream_closed_early_is_ok_and_unfinished_throughout(cap: Capture) -> None:
    asyncio.run(read_two_then_close(words_chain().astream({"q": "x"}, config=handler_config())))
    assert tree(cap) == [
        (0, "chain", "RunnableSequence", "ok"),
        (1, "chain", "ChatPromptTemplate", "ok"),
        (1, "llm_invoke", "ScriptedChatModel", "ok"),
        (1, "chain", "StrOutputParser", "ok"),
    ]
    assert all(e.error is None for e in cap.events)
    unfinished = {e.name: e.metadata.get("unfinished") for e in cap.events}
    assert unfinished == {
        "RunnableSequence": True,
        "ChatPromptTemplate": None,  # it had finished
        "ScriptedChatModel": True,
        "StrOutputParser": True,
    }


def test_a_chain_stream_stopped_early_marks_its_root_unfinished_as_well(cap: Capture) -> None:
    for number, _ in enumerate(words_chain().stream({"q": "x"}, config=handler_config())):
        if number == 1:
            break
    assert tree(cap) == [
        (0, "chain", "RunnableSequence", "ok"),
        (1, "chain", "ChatPromptTemplate", "ok"),
        (1, "llm_invoke", "ScriptedChatModel", "ok"),
        (1, "chain", "StrOutputParser", "ok"),
    ]
    unfinished = {e.name: e.metadata.get("unfinished") for e in cap.events}
    assert unfinished == {
        "RunnableSequence": True,
        "ChatPromptTemplate": None,
        "ScriptedChatModel": True,
        "StrOutputParser": True,
    }


def test_an_agent_stream_stopped_early_is_ok_and_unfinished(cap: Capture) -> None:
    agent = create_agent(
        chat_model(reply("", tool_calls=[("add", {"a": 1, "b": 2}, "c1")]), reply("3")),
        tools=[add],
        name="support",
    )
    for _ in agent.stream(
        {"messages": [("user", "x")]}, config=handler_config(), stream_mode="updates"
    ):
        break  # the client of a streaming endpoint went away
    assert tree(cap) == [
        (0, "agent", "support", "ok"),
        (1, "agent", "model", "ok"),
        (2, "llm_invoke", "ScriptedChatModel", "ok"),
    ]
    root = cap.one(name="support")
    assert (root.error, root.metadata) == (None, {"unfinished": True})


# -- LangGraph's Command ------------------------------------------------------------------------


@tool
def transfer_to_billing(reason: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Hand the conversation to billing."""
    message = ToolMessage("transferred", tool_call_id=tool_call_id)
    return Command(update={"messages": [message]}, goto="billing", graph=Command.PARENT)


def test_a_create_agent_node_returning_a_command_records_it_compact(cap: Capture) -> None:
    agent = create_agent(
        chat_model(reply("1 + 2 = 3", input_tokens=55, output_tokens=6)),
        tools=[add],
        name="support",
    )
    agent.invoke({"messages": [("user", "What is 1+2?")]}, config=handler_config())
    node = cap.one(type="agent", name="model")
    assert wire(node)["output"] == [
        {"update": {"messages": [{"role": "assistant", "content": "1 + 2 = 3", "name": "support"}]}}
    ]


def test_a_tool_returning_a_command_keeps_its_tool_call_id(cap: Capture) -> None:
    output = transfer_to_billing.invoke(
        {
            "type": "tool_call",
            "name": "transfer_to_billing",
            "args": {"reason": "refund"},
            "id": "c7",
        },
        config=handler_config(),
    )
    assert isinstance(output, Command)
    event = only(cap.events)
    data = wire(event)
    assert data["output"] == {
        "update": {"messages": [{"role": "tool", "content": "transferred", "tool_call_id": "c7"}]},
        "goto": "billing",
        "graph": "__parent__",
    }
    assert (data["status"], data["error"], data["metadata"]) == (
        "ok",
        None,
        {"tool_call_id": "c7"},
    )


def test_a_tool_returning_an_error_command_is_a_handled_tool_error(cap: Capture) -> None:
    @tool
    def refuse(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Refuse."""
        message = ToolMessage("not allowed", tool_call_id=tool_call_id, status="error")
        return Command(update={"messages": [message]})

    refuse.invoke(
        {"type": "tool_call", "name": "refuse", "args": {}, "id": "c9"}, config=handler_config()
    )
    event = only(cap.events)
    assert (event.status.value, event.error.kind, event.error.type, event.error.message) == (
        "error",
        "tool",
        "ToolError",
        "not allowed",
    )
    assert event.metadata == {"tool_call_id": "c9"}


def test_a_command_is_made_compact_with_only_the_fields_set() -> None:
    assert mapping.compact_value(Command(resume="yes")) == {"resume": "yes"}
    command = Command(
        update=[("messages", [AIMessage("hi")]), ("step", 2)],
        goto=[Send("worker", {"task": "a"}), "finish"],
    )
    assert mapping.compact_value(command) == {
        "update": [("messages", [{"role": "assistant", "content": "hi"}]), ("step", 2)],
        "goto": [{"node": "worker", "arg": {"task": "a"}}, "finish"],
    }
    assert mapping.compact_value({"out": [Command(goto="a")]}) == {"out": [{"goto": "a"}]}


# -- usage of a response with n choices ---------------------------------------------------------


class TwoChoicesModel(ScriptedChatModel):
    """An OpenAI-style response of n=2 choices: the whole response's usage on every choice."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        generations = []
        for text in ("Paris.", "It is Paris."):
            message = AIMessage(content=text)
            message.usage_metadata = {"input_tokens": 12, "output_tokens": 10, "total_tokens": 22}
            generations.append(ChatGeneration(message=message))
        usage = {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}
        return ChatResult(generations=generations, llm_output={"token_usage": usage})


def test_a_response_of_n_choices_counts_its_usage_once(cap: Capture) -> None:
    TwoChoicesModel(messages=iter([])).invoke("capital of France?", config=handler_config())
    event = only(cap.events)
    assert event.usage.to_dict() == {"input_tokens": 12, "output_tokens": 10, "total_tokens": 22}
    assert event.output == [
        {"role": "assistant", "content": "Paris."},
        {"role": "assistant", "content": "It is Paris."},
    ]


def test_each_prompt_of_one_llm_call_counts_its_usage_once_and_the_prompts_add_up(
    cap: Capture,
) -> None:
    def choice(text: str, tokens: int) -> ChatGeneration:
        message = AIMessage(content=text)
        message.usage_metadata = {
            "input_tokens": tokens,
            "output_tokens": 1,
            "total_tokens": tokens + 1,
        }
        return ChatGeneration(message=message)

    handler = SightlineCallbackHandler()
    run_id = uuid.uuid4()
    handler.on_chat_model_start({"name": "m"}, [[("user", "a")], [("user", "b")]], run_id=run_id)
    result = LLMResult(
        generations=[[choice("a1", 5), choice("a2", 5)], [choice("b1", 7), choice("b2", 7)]]
    )
    handler.on_llm_end(result, run_id=run_id)
    event = only(cap.events)
    assert event.usage.to_dict() == {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14}


# -- graphs used as nodes are agents ------------------------------------------------------------


class Question(TypedDict, total=False):
    q: str


def shout_graph() -> Any:
    graph = StateGraph(Question)
    graph.add_node("shout", lambda state: {"q": state["q"] + "!"})
    graph.add_edge(START, "shout")
    graph.add_edge("shout", END)
    return graph.compile(name="sub")


def test_a_create_agent_agent_used_as_a_graph_node_is_an_agent(cap: Capture) -> None:
    team = StateGraph(MessagesState)
    team.add_node(
        "research_step",
        create_agent(chat_model(reply("research done")), tools=[add], name="researcher"),
    )
    team.add_edge(START, "research_step")
    team.add_edge("research_step", END)
    team.compile(name="team").invoke({"messages": [("user", "go")]}, config=handler_config())
    assert tree(cap) == [
        (0, "agent", "team", "ok"),
        (1, "agent", "research_step", "ok"),
        (2, "agent", "researcher", "ok"),
        (3, "agent", "model", "ok"),
        (4, "llm_invoke", "ScriptedChatModel", "ok"),
    ]
    assert cap.one(name="researcher").agent == "researcher"


def test_a_compiled_graph_used_as_a_node_is_an_agent(cap: Capture) -> None:
    outer = StateGraph(Question)
    outer.add_node("step", shout_graph())
    outer.add_node("tail", RunnableLambda(lambda s: {"q": s["q"]}, name="keep") | (lambda s: s))
    outer.add_edge(START, "step")
    outer.add_edge("step", "tail")
    outer.add_edge("tail", END)
    outer.compile(name="outer").invoke({"q": "x"}, config=handler_config())
    assert tree(cap) == [
        (0, "agent", "outer", "ok"),
        (1, "agent", "step", "ok"),
        (2, "agent", "sub", "ok"),
        (3, "agent", "shout", "ok"),
        (1, "agent", "tail", "ok"),
        (2, "chain", "keep", "ok"),  # runnables inside a node stay chains
        (2, "chain", "RunnableLambda", "ok"),
    ]


def test_a_graph_called_inside_a_node_function_is_an_agent(cap: Capture) -> None:
    sub = shout_graph()
    outer = StateGraph(Question)
    outer.add_node("step", lambda state: sub.invoke(state))
    outer.add_edge(START, "step")
    outer.add_edge("step", END)
    outer.compile(name="outer").invoke({"q": "x"}, config=handler_config())
    assert tree(cap) == [
        (0, "agent", "outer", "ok"),
        (1, "agent", "step", "ok"),
        (2, "agent", "sub", "ok"),
        (3, "agent", "shout", "ok"),
    ]


# -- runs LangChain starts without a parent -----------------------------------------------------


def fallback_model() -> Any:
    return chat_model(ConnectionError("provider down")).with_fallbacks([chat_model(reply("ok"))])


def assert_fallback_trace(cap: Capture) -> None:
    assert tree(cap) == [
        (0, "chain", "RunnableWithFallbacks", "ok"),
        (1, "llm_invoke", "ScriptedChatModel", "error"),
        (1, "llm_invoke", "ScriptedChatModel", "ok"),
    ]
    assert len({e.trace_id for e in cap.events}) == 1


def test_with_fallbacks_models_nest_under_it_with_an_explicit_handler(cap: Capture) -> None:
    fallback_model().invoke("hi", config=handler_config())
    assert_fallback_trace(cap)


def test_with_fallbacks_models_nest_under_it_with_an_explicit_handler_async(
    cap: Capture,
) -> None:
    asyncio.run(fallback_model().ainvoke("hi", config=handler_config()))
    assert_fallback_trace(cap)


def test_a_call_given_its_own_callbacks_inside_a_run_nests_under_that_run(cap: Capture) -> None:
    handler = SightlineCallbackHandler()

    def ask(question: str) -> Any:
        return chat_model(reply("ok")).invoke(question, config={"callbacks": [handler]})

    RunnableLambda(ask, name="ask").invoke("hi", config={"callbacks": [handler]})
    assert tree(cap) == [(0, "chain", "ask", "ok"), (1, "llm_invoke", "ScriptedChatModel", "ok")]


# -- an error passing through keeps its kind, whichever child raised it --------------------------


def test_with_fallbacks_all_failing_keeps_the_kind_of_the_first_error(cap: Capture) -> None:
    failing = chat_model(ConnectionError("down1")).with_fallbacks(
        [chat_model(TimeoutError("down2"))]
    )
    with pytest.raises(ConnectionError):
        failing.invoke("hi", config=handler_config())
    wrapper = cap.one(name="RunnableWithFallbacks")
    models = sorted(cap.find(type="llm_invoke"), key=lambda e: e.start_ns)
    assert [(m.error.kind, m.error.type) for m in models] == [
        ("model", "ConnectionError"),
        ("timeout", "TimeoutError"),
    ]
    assert (wrapper.error.kind, wrapper.error.type, wrapper.error.message) == (
        "model",
        "ConnectionError",
        "down1",
    )


def test_runnable_parallel_reraising_its_first_branch_error_keeps_its_kind(cap: Capture) -> None:
    def slow_retrieval(question: str) -> Any:
        time.sleep(0.1)  # fails after the model did
        return PolicyRetriever(fail=True).invoke(question)

    parallel = RunnableParallel(
        a=chat_model(ConnectionError("model down")), b=RunnableLambda(slow_retrieval)
    )
    with pytest.raises(ConnectionError, match="model down"):
        parallel.invoke("hi", config=handler_config())
    errors = {e.name: (e.error.kind, e.error.message) for e in cap.events}
    assert errors == {
        "RunnableParallel<a,b>": ("model", "model down"),
        "ScriptedChatModel": ("model", "model down"),
        "slow_retrieval": ("retrieval", "vector store unreachable"),
        "PolicyRetriever": ("retrieval", "vector store unreachable"),
    }


# -- LangGraph interrupts and handoffs ----------------------------------------------------------


@tool
def refund(amount: int) -> str:
    """Refund an amount once a human confirmed it."""
    return "refunded" if interrupt({"confirm": amount}) == "yes" else "cancelled"


def test_an_interrupted_turn_marks_its_root_and_shows_the_interrupt(cap: Capture) -> None:
    agent = create_agent(
        chat_model(reply("", tool_calls=[("refund", {"amount": 30}, "c1")]), reply("done")),
        tools=[refund],
        name="support",
        checkpointer=InMemorySaver(),
    )
    config = handler_config(configurable={"thread_id": "t"})
    result = agent.invoke({"messages": [("user", "refund")]}, config=config)
    [pending] = result["__interrupt__"]
    assert tree(cap) == [
        (0, "agent", "support", "ok"),
        (1, "agent", "model", "ok"),
        (2, "llm_invoke", "ScriptedChatModel", "ok"),
        (1, "agent", "tools", "ok"),
        (2, "tool_call", "refund", "ok"),
    ]
    interrupted = {e.name: e.metadata.get("interrupted") for e in cap.events}
    assert interrupted == {
        "support": "GraphInterrupt",
        "model": None,
        "ScriptedChatModel": None,
        "tools": "GraphInterrupt",
        "refund": "GraphInterrupt",
    }
    root = wire(cap.one(name="support"))
    assert root["output"]["__interrupt__"] == [
        {"value": {"confirm": 30}, "id": pending.id, "response_schema": None}
    ]
    assert root["metadata"] == {"thread_id": "t", "interrupted": "GraphInterrupt"}
    assert all(e.error is None for e in cap.events)

    cap.clear()
    agent.invoke(Command(resume="yes"), config=config)
    resumed = cap.one(name="support")
    assert (resumed.input, resumed.metadata) == ({"resume": "yes"}, {"thread_id": "t"})
    assert cap.one(type="tool_call").output == "refunded"


def test_an_interrupt_inside_a_subgraph_reaches_the_root_of_the_turn(cap: Capture) -> None:
    def ask(state: Question) -> Question:
        return {"q": interrupt("which one?")}

    inner = StateGraph(Question)
    inner.add_node("ask", ask)
    inner.add_edge(START, "ask")
    inner.add_edge("ask", END)
    outer = StateGraph(Question)
    outer.add_node("step", inner.compile(name="sub"))
    outer.add_edge(START, "step")
    outer.add_edge("step", END)
    app = outer.compile(name="outer", checkpointer=InMemorySaver())
    wrapper = RunnableLambda(lambda q: app.invoke(q, config={"configurable": {"thread_id": "s"}}))
    result = wrapper.with_config(run_name="turn").invoke({"q": "x"}, config=handler_config())
    assert "__interrupt__" in result
    assert {e.name: e.metadata.get("interrupted") for e in cap.events} == {
        "turn": "GraphInterrupt",
        "outer": "GraphInterrupt",
        "step": "GraphInterrupt",
        "sub": "GraphInterrupt",
        "ask": "GraphInterrupt",
    }
    assert tree(cap) == [
        (0, "chain", "turn", "ok"),
        (1, "agent", "outer", "ok"),
        (2, "agent", "step", "ok"),
        (3, "agent", "sub", "ok"),
        (4, "agent", "ask", "ok"),
    ]
    # The graph that swallowed the interrupt shows it; the lambda returned it itself.
    [pending] = result["__interrupt__"]
    interrupt_wire = [{"value": "which one?", "id": pending.id, "response_schema": None}]
    assert wire(cap.one(name="outer"))["output"] == {"q": "x", "__interrupt__": interrupt_wire}
    assert wire(cap.one(name="turn"))["output"] == {"q": "x", "__interrupt__": interrupt_wire}


class Answers(TypedDict, total=False):
    answers: Annotated[list[str], operator.add]


def test_parallel_branches_pausing_show_every_interrupt_on_the_root(cap: Capture) -> None:
    graph = StateGraph(Answers)
    graph.add_node("a", lambda state: {"answers": [interrupt("a?")]})
    graph.add_node("b", lambda state: {"answers": [interrupt("b?")]})
    graph.add_edge(START, "a")
    graph.add_edge(START, "b")
    graph.add_edge("a", END)
    graph.add_edge("b", END)
    app = graph.compile(name="fan", checkpointer=InMemorySaver())
    result = app.invoke({"answers": []}, config=handler_config(configurable={"thread_id": "f"}))
    assert len(result["__interrupt__"]) == 2
    root = wire(cap.one(name="fan"))
    assert root["metadata"] == {"thread_id": "f", "interrupted": "GraphInterrupt"}
    assert sorted(root["output"]["__interrupt__"], key=lambda i: i["value"]) == [
        {"value": i.value, "id": i.id, "response_schema": None}
        for i in sorted(result["__interrupt__"], key=lambda i: i.value)
    ]


def test_a_command_to_the_parent_graph_is_a_handoff_not_an_interrupt(cap: Capture) -> None:
    def hand_over(state: Question) -> Any:
        return Command(graph=Command.PARENT, goto="finish", update={"q": "handed"})

    inner = StateGraph(Question)
    inner.add_node("inner", hand_over)
    inner.add_edge(START, "inner")
    outer = StateGraph(Question)
    outer.add_node("sub_step", inner.compile(name="sub"), destinations=("finish",))
    outer.add_node("finish", lambda state: {"q": state["q"] + "!"})
    outer.add_edge(START, "sub_step")
    outer.add_edge("finish", END)
    assert outer.compile(name="outer").invoke({"q": "x"}, config=handler_config()) == {
        "q": "handed!"
    }
    marks = {
        e.name: {k: v for k, v in e.metadata.items() if k in ("interrupted", "handoff")}
        for e in cap.events
    }
    assert marks == {
        "outer": {},
        "sub_step": {"handoff": "finish"},
        "sub": {"handoff": "finish"},
        "inner": {"handoff": "finish"},
        "finish": {},
    }
    assert tree(cap) == [
        (0, "agent", "outer", "ok"),
        (1, "agent", "sub_step", "ok"),
        (2, "agent", "sub", "ok"),
        (3, "agent", "inner", "ok"),
        (1, "agent", "finish", "ok"),
    ]


def test_control_flow_tells_a_pause_a_handoff_and_a_stopped_stream_apart() -> None:
    from langgraph.errors import GraphInterrupt, ParentCommand

    assert mapping.control_flow(GraphInterrupt(())) == ("interrupted", "GraphInterrupt")
    handoff = ParentCommand(Command(graph=Command.PARENT, goto=Send("billing", {"x": 1})))
    assert mapping.control_flow(handoff) == ("handoff", {"node": "billing", "arg": {"x": 1}})
    assert mapping.control_flow(ParentCommand(Command(graph=Command.PARENT))) == (
        "handoff",
        True,
    )
    assert mapping.control_flow(GeneratorExit()) == ("unfinished", True)
    assert mapping.control_flow(ValueError("no")) is None


# -- custom events --------------------------------------------------------------------------------


def test_a_custom_event_takes_agent_session_and_tags_from_its_run(cap: Capture) -> None:
    def step(value: int) -> int:
        dispatch_custom_event("progress", {"pct": 50})
        return value

    handler = SightlineCallbackHandler(agent="default-bot", session_id="s0", tags=["handler"])
    RunnableLambda(step).invoke(
        1,
        config={
            "callbacks": [handler],
            "tags": ["checkout"],
            "metadata": {
                "sightline_agent": "refund-bot",
                "sightline_session_id": "ticket-9",
                "sightline_tags": ["vip"],
            },
        },
    )
    run = cap.one(type="chain")
    custom = cap.one(type="custom")
    assert custom.parent_span_id == run.span_id
    assert (custom.agent, custom.session_id, custom.tags) == (
        "refund-bot",
        "ticket-9",
        ["handler", "vip", "checkout"],
    )
    assert (run.agent, run.session_id, run.tags) == (custom.agent, custom.session_id, custom.tags)


def test_a_custom_event_in_a_create_agent_tool_has_the_agents_name(cap: Capture) -> None:
    @tool
    def lookup(q: str) -> str:
        """Look up."""
        dispatch_custom_event("cache_miss", {"q": q})
        return "found"

    agent = create_agent(
        chat_model(reply("", tool_calls=[("lookup", {"q": "x"}, "c1")]), reply("done")),
        tools=[lookup],
        name="support",
    )
    handler = SightlineCallbackHandler(agent="default-bot", tags=["handler"])
    agent.invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})
    custom = cap.one(type="custom")
    call = cap.one(type="tool_call")
    assert custom.parent_span_id == call.span_id
    assert wire(custom) == {
        "type": "custom", "name": "cache_miss", "status": "ok", "agent": "support",
        "session_id": None, "framework": "langchain", "input": {"q": "x"}, "output": None,
        "model": None, "usage": None, "cost_usd": None, "error": None, "metadata": {},
        "tags": ["handler"],
    }  # fmt: skip
