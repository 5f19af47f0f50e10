"""The extractors of ``sightline_langchain.mapping``, on the values LangChain hands to callbacks."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue

from sightline.event import EventType
from sightline_langchain import mapping


@pytest.mark.parametrize(
    ("serialized", "invocation", "metadata", "expected"),
    [
        (None, {"model": "gpt-4o", "_type": "openai-chat"}, {"ls_provider": "openai"}, ("gpt-4o", "openai")),
        (None, {"model_name": "claude-3"}, None, ("claude-3", None)),
        (None, {"_type": "fake"}, {"ls_model_name": "llama3"}, ("llama3", "fake")),
        ({"kwargs": {"model_name": "text-davinci"}}, {}, None, ("text-davinci", None)),
        ({"id": ["x"]}, None, None, (None, None)),
        ("not a dict", "nor this", 42, (None, None)),
    ],
)  # fmt: skip
def test_model_and_provider_come_from_invocation_params_metadata_or_constructor(
    serialized: Any, invocation: Any, metadata: Any, expected: tuple[Any, Any]
) -> None:
    assert mapping.llm_identity(serialized, invocation, metadata) == expected


def test_run_name_prefers_the_run_name_then_the_serialized_name_then_the_class() -> None:
    assert mapping.run_name({"name": "Serialized"}, "given", "default") == "given"
    assert mapping.run_name({"name": "Serialized"}, None, "default") == "Serialized"
    assert mapping.run_name({"id": ["langchain", "chat", "ChatOpenAI"]}, None, "d") == "ChatOpenAI"
    assert mapping.run_name(None, None, "default") == "default"


def test_agent_classification() -> None:
    graph_node_tags = ["graph:step:3"]
    assert mapping.chain_event_type("AgentExecutor", None, None) is EventType.AGENT
    assert mapping.chain_event_type("step", ["agent:planner"], None) is EventType.AGENT
    assert (
        mapping.chain_event_type("LangGraph", [], {"ls_integration": "langgraph"})
        is EventType.AGENT
    )
    node_metadata = {"ls_integration": "langgraph", "langgraph_node": "tools"}
    assert mapping.chain_event_type("tools", graph_node_tags, node_metadata) is EventType.AGENT
    # Inside a node: LangGraph's metadata is inherited, but the run is not the node itself.
    assert (
        mapping.chain_event_type("RunnableSequence", ["seq:step:1"], node_metadata)
        is EventType.CHAIN
    )
    assert mapping.chain_event_type("RunnableSequence", ["seq:step:1"], None) is EventType.CHAIN


def test_langgraph_state_messages_are_made_small_one_level_down() -> None:
    state = {
        "messages": [SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello")],
        "step": 2,
    }
    assert mapping.compact_value(state) == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
        "step": 2,
    }
    plain = {"question": "refund?", "n": 1}
    assert mapping.compact_value(plain) is plain  # nothing to convert: the same object
    prompt = ChatPromptValue(messages=[HumanMessage("hi")])
    assert mapping.compact_value(prompt) == [{"role": "user", "content": "hi"}]
    assert mapping.compact_value(StringPromptValue(text="Say hi")) == "Say hi"


def test_retrieval_output_is_bounded() -> None:
    documents = [Document(page_content="x" * 1000, id=f"d{i}") for i in range(25)]
    count, summaries = mapping.documents_summary(documents)
    assert count == 25
    assert summaries is not None and len(summaries) == mapping.RETRIEVAL_PREVIEW_DOCUMENTS
    assert all(len(s["preview"]) == mapping.RETRIEVAL_PREVIEW_CHARS + 1 for s in summaries)
    assert [s["id"] for s in summaries[:2]] == ["d0", "d1"]


def test_internal_tags_and_metadata_are_dropped_user_ones_kept() -> None:
    assert mapping.user_tags(["seq:step:1", "prod", "graph:step:2", "langsmith:hidden"]) == ["prod"]
    assert mapping.user_tags(["seq:step:1"]) is None
    metadata = {
        "ls_provider": "openai",
        "lc_agent_name": "bot",
        "langgraph_node": "model",
        "langgraph_step": 3,
        "langgraph_path": ("a",),
        "sightline_session_id": "s",
        "customer": "acme",
    }
    assert mapping.user_metadata(metadata) == {
        "customer": "acme",
        "langgraph_node": "model",
        "langgraph_step": 3,
    }
