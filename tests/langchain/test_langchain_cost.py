"""A LangChain model call's cost: the adapter records the model and its tokens, the core prices
them (sightline.pricing), for a call through an explicit handler, through global
instrumentation and streamed; an unknown model keeps no cost; the user's prices win."""

from __future__ import annotations

import pytest

from sightline.testing import Capture, capture
from sightline_langchain import SightlineCallbackHandler
from tests.langchain.langchain_events import only
from tests.langchain.langchain_scripted import chat_model, reply

# gpt-4o-mini: $0.15 input, $0.60 output per million tokens
COST = (1200 * 0.15 + 80 * 0.60) / 1_000_000


def answer() -> object:
    return reply("Refunds take five days.", input_tokens=1200, output_tokens=80)


def test_an_explicit_handlers_model_call_is_priced(cap: Capture) -> None:
    model = chat_model(answer(), model_name="gpt-4o-mini-2024-07-18")
    model.invoke("How long do refunds take?", config={"callbacks": [SightlineCallbackHandler()]})
    event = only(cap.events)
    assert (event.type.value, event.model, event.usage.input_tokens, event.usage.output_tokens) == (
        "llm_invoke",
        "gpt-4o-mini-2024-07-18",
        1200,
        80,
    )
    assert event.cost_usd == pytest.approx(COST)


def test_a_streamed_call_under_global_instrumentation_is_priced(global_cap: Capture) -> None:
    model = chat_model(answer(), model_name="gpt-4o-mini")
    text = "".join(chunk.content for chunk in model.stream("How long do refunds take?"))
    assert text == "Refunds take five days."
    event = global_cap.one(type="llm_invoke")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1200, 80)
    assert event.cost_usd == pytest.approx(COST)


def test_an_unknown_model_has_no_cost_until_the_user_prices_it() -> None:
    handler = SightlineCallbackHandler()
    with capture() as cap:
        chat_model(answer(), model_name="house-model").invoke("q", config={"callbacks": [handler]})
    assert only(cap.events).cost_usd is None
    with capture(model_prices={"house-model": (1.0, 10.0)}) as cap:
        chat_model(answer(), model_name="house-model").invoke("q", config={"callbacks": [handler]})
    assert only(cap.events).cost_usd == pytest.approx((1200 * 1.0 + 80 * 10.0) / 1_000_000)


def test_a_prompt_read_from_the_cache_is_priced_at_the_cached_price(cap: Capture) -> None:
    message = reply("Refunds take five days.", input_tokens=1200, output_tokens=80)
    message.usage_metadata["input_token_details"] = {"cache_read": 1000}
    model = chat_model(message, model_name="gpt-4o-mini")
    model.invoke("How long do refunds take?", config={"callbacks": [SightlineCallbackHandler()]})
    event = only(cap.events)
    assert event.metadata["usage_details"] == {"cache_read_tokens": 1000}
    # gpt-4o-mini: cached input at $0.075 per million, half the input price
    assert event.cost_usd == pytest.approx((200 * 0.15 + 1000 * 0.075 + 80 * 0.60) / 1e6)
