"""Cost estimates (sightline.pricing): a model call recorded with a model and its token counts
gets ``cost_usd`` from the price table, on the worker, through a real client; the names
providers and frameworks write are recognised, neighbours of a known model are not priced as
it, and users add, replace and remove prices (arguments, variables, a JSON file)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sightline import Client, ConfigError
from sightline.config import Config
from sightline.event import Event
from sightline.hookspecs import hookimpl
from sightline.pricing import BUILTIN_PRICES, PriceTable, price_pairs
from sightline.testing import InMemoryExporter


def record(calls: list[dict[str, Any]], plugins: Any = (), **options: Any) -> list[Event]:
    """Log one event per dict of ``log_event`` arguments (an ``llm_invoke`` unless a type is
    given) on a new client configured by ``options``; what was exported, in order."""
    exporter = InMemoryExporter()
    client = Client(exporters=[exporter], flush_interval=0.05, **options)
    try:
        for index, plugin in enumerate(plugins):
            client.plugins.register(plugin, f"test-plugin-{index}")
        for fields in calls:
            fields = dict(fields)
            client.log_event(fields.pop("type", "llm_invoke"), fields.pop("name", "call"), **fields)
        assert client.flush(5.0) is True
        return list(exporter.events)
    finally:
        client.close()


def costs(models: list[str], **options: Any) -> list[float | None]:
    """The cost recorded for a call of each of ``models`` with 1,000 input and 100 output
    tokens."""
    calls = [{"model": m, "usage": {"input_tokens": 1000, "output_tokens": 100}} for m in models]
    return [event.cost_usd for event in record(calls, **options)]


# -- names as providers and frameworks write them ---------------------------------------------

NAMES = [
    # (model name as recorded, the table entry it must be priced as, or None)
    ("gpt-4o", "gpt-4o"),
    ("GPT-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # its own, higher price
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest name, not gpt-4o
    ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
    ("o3-mini", "o3-mini"),
    ("o3-pro-2025-06-10", "o3-pro"),
    ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
    ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),  # Vertex AI
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),  # Bedrock
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),  # Bedrock, a region
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),  # not claude-sonnet-4
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
    ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    # neighbours of known models are other models: not priced as them
    ("gpt-4o-realtime-preview", None),
    ("gpt-4o-mini-audio-preview-2024-12-17", None),
    ("gpt-5.4", None),
    ("gpt-5-chat", None),
    ("o3-deep-research", None),
    ("claude-sonnet-4-6", None),
    ("gemini-2.5-pro", None),  # priced by prompt length: left out of the table
    ("gemini-2.5-flash-preview-05-20", None),
    ("llama3.1:8b", None),
    ("", None),
]


@pytest.mark.parametrize(("model", "entry"), NAMES)
def test_a_model_name_is_priced_as_the_entry_it_names(model: str, entry: str | None) -> None:
    assert PriceTable().price(model) == (BUILTIN_PRICES[entry] if entry else None)


def test_every_call_is_priced_with_the_list_price_of_its_input_and_output_tokens() -> None:
    # gpt-4o: $2.50 / $10 per million; claude-3-5-haiku: $0.80 / $4; gpt-4o-2024-05-13: $5 / $15
    assert costs(["gpt-4o", "claude-3-5-haiku-20241022", "gpt-4o-2024-05-13"]) == [
        pytest.approx(0.0035),  # 1000 * 2.5e-6 + 100 * 10e-6
        pytest.approx(0.0012),  # 1000 * 0.8e-6 + 100 * 4e-6
        pytest.approx(0.0065),  # 1000 * 5e-6 + 100 * 15e-6
    ]
    assert PriceTable().cost("gpt-4o-mini", 2_000_000, 1_000_000) == pytest.approx(0.9)


# -- prompt caches ------------------------------------------------------------------------------


def cached_call(model: str, **details: int) -> dict[str, Any]:
    """A call of 10,000 input and 500 output tokens, ``details`` its ``usage_details``."""
    return {
        "model": model,
        "usage": {"input_tokens": 10_000, "output_tokens": 500},
        "metadata": {"usage_details": details} if details else None,
    }


def test_input_read_from_or_written_to_the_prompt_cache_is_priced_at_the_caches_prices() -> None:
    events = record(
        [
            # claude-sonnet-4-5: $3 input, $15 output; cache reads $0.30, writes $3.75
            cached_call("claude-sonnet-4-5", cache_read_tokens=8_000, cache_creation_tokens=1_500),
            # gpt-4o: $2.50 input, cached $1.25; reasoning tokens are output like any other
            cached_call("gpt-4o", cache_read_tokens=6_000, reasoning_tokens=200),
            # gpt-5-mini: cached input at a tenth
            cached_call("gpt-5-mini", cache_read_tokens=10_000),
            # gpt-4-turbo has no cache discount
            cached_call("gpt-4-turbo", cache_read_tokens=10_000),
            cached_call("gpt-4o"),
        ]
    )
    assert [event.cost_usd for event in events] == [
        pytest.approx((500 * 3 + 8_000 * 0.30 + 1_500 * 3.75 + 500 * 15) / 1e6),
        pytest.approx((4_000 * 2.50 + 6_000 * 1.25 + 500 * 10) / 1e6),
        pytest.approx((10_000 * 0.025 + 500 * 2) / 1e6),
        pytest.approx((10_000 * 10 + 500 * 30) / 1e6),
        pytest.approx((10_000 * 2.50 + 500 * 10) / 1e6),
    ]


@pytest.mark.parametrize(
    ("details", "cost"),
    [
        # parts larger than the whole are cut to it: everything read from the cache
        ({"cache_read_tokens": 50_000}, (10_000 * 1.25 + 500 * 10) / 1e6),
        (
            {"cache_read_tokens": 9_000, "cache_creation_tokens": 5_000},
            (9_000 * 1.25 + 1_000 * 2.50 + 500 * 10) / 1e6,
        ),
        # counts that are not whole numbers of tokens are ignored
        ({"cache_read_tokens": "9000"}, (10_000 * 2.50 + 500 * 10) / 1e6),
        ({"cache_read_tokens": -5}, (10_000 * 2.50 + 500 * 10) / 1e6),
        ({"cache_read_tokens": True}, (10_000 * 2.50 + 500 * 10) / 1e6),
    ],
)
def test_malformed_cache_counts_never_make_a_cost_wrong_or_negative(
    details: dict[str, Any], cost: float
) -> None:
    (event,) = record([cached_call("gpt-4o", **details)])
    assert event.cost_usd == pytest.approx(cost)


def test_usage_details_that_are_not_a_mapping_are_ignored() -> None:
    call = cached_call("gpt-4o")
    call["metadata"] = {"usage_details": [1, 2]}
    (event,) = record([call])
    assert event.cost_usd == pytest.approx((10_000 * 2.50 + 500 * 10) / 1e6)


def test_a_users_price_may_give_the_caches_prices() -> None:
    prices = {
        "house-model": (1.0, 2.0, 0.1, 1.5),
        "plain-model": {"input": 1.0, "output": 2.0},  # the cache at the input price
        "read-only": {"input": 1.0, "output": 2.0, "cache_read": 0.5},
    }
    details = {"cache_read_tokens": 4_000, "cache_creation_tokens": 1_000}
    events = record([cached_call(model, **details) for model in prices], model_prices=prices)
    assert [event.cost_usd for event in events] == [
        pytest.approx((5_000 * 1.0 + 4_000 * 0.1 + 1_000 * 1.5 + 500 * 2.0) / 1e6),
        pytest.approx((10_000 * 1.0 + 500 * 2.0) / 1e6),
        pytest.approx((6_000 * 1.0 + 4_000 * 0.5 + 500 * 2.0) / 1e6),
    ]


# -- what is priced and what is left ----------------------------------------------------------


def test_only_model_calls_with_a_model_and_both_token_counts_and_no_cost_are_priced() -> None:
    usage = {"input_tokens": 1000, "output_tokens": 100}
    events = record(
        [
            {"name": "priced", "model": "gpt-4o", "usage": usage},
            {"name": "cost given", "model": "gpt-4o", "usage": usage, "cost_usd": 0.5},
            {"name": "cost zero", "model": "gpt-4o", "usage": usage, "cost_usd": 0.0},
            {"name": "no model", "usage": usage},
            {"name": "no usage", "model": "gpt-4o"},
            {"name": "no output count", "model": "gpt-4o", "usage": {"input_tokens": 1000}},
            {"name": "no input count", "model": "gpt-4o", "usage": {"output_tokens": 100}},
            {"name": "an agent's sum", "type": "agent", "model": "gpt-4o", "usage": usage},
            {"name": "failed", "model": "gpt-4o", "usage": usage, "status": "error"},
        ]
    )
    assert {event.name: event.cost_usd for event in events} == {
        "priced": pytest.approx(0.0035),
        "cost given": 0.5,
        "cost zero": 0.0,
        "no model": None,
        "no usage": None,
        "no output count": None,
        "no input count": None,
        "an agent's sum": None,  # an aggregate: its calls are priced, it would count twice
        "failed": pytest.approx(0.0035),  # a failed call that used tokens is billed
    }


def test_token_counts_given_as_text_are_priced_once_the_redaction_has_read_them() -> None:
    usage = {"prompt_tokens": "1000", "completion_tokens": 100.0}  # OpenAI's names, loose types
    (event,) = record([{"model": "gpt-4o", "usage": usage}])
    assert (event.usage.input_tokens, event.usage.output_tokens) == (1000, 100)
    assert event.cost_usd == pytest.approx(0.0035)


def test_estimate_cost_false_prices_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert costs(["gpt-4o"], estimate_cost=False) == [None]
    monkeypatch.setenv("SIGHTLINE_ESTIMATE_COST", "false")
    assert costs(["gpt-4o"]) == [None]
    monkeypatch.setenv("SIGHTLINE_ESTIMATE_COST", "maybe")
    with pytest.raises(ConfigError, match="SIGHTLINE_ESTIMATE_COST"):
        Client(exporters=[InMemoryExporter()])
    with pytest.raises(ConfigError, match="estimate_cost must be True or False"):
        Config.resolve(environ={}, estimate_cost="no")


class CostReader:
    """A plugin's processor: it sees the estimate (built-in processors run first) and may
    replace it."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []

    @hookimpl(tryfirst=True)
    def sightline_process_event(self, event: Event) -> None:
        self.seen.append(event.cost_usd)
        event.cost_usd = 0.25


def test_a_plugin_processor_sees_the_estimate_and_may_replace_it() -> None:
    reader = CostReader()
    events = record(
        [{"model": "gpt-4o", "usage": {"input_tokens": 1000, "output_tokens": 100}}],
        plugins=[reader],
    )
    assert reader.seen == [pytest.approx(0.0035)]
    assert [event.cost_usd for event in events] == [0.25]


# -- the user's prices ------------------------------------------------------------------------


def test_model_prices_add_replace_and_remove_models() -> None:
    prices = {
        "my-finetune": (3.0, 12.0),
        "GPT-4o": {"input": 1.0, "output": 2.0},  # names in any case
        "claude-3-haiku": None,
    }
    assert costs(
        ["my-finetune-2025-01-01", "gpt-4o-2024-08-06", "claude-3-haiku-20240307", "gpt-4o-mini"],
        model_prices=prices,
    ) == [
        pytest.approx(0.0042),  # 1000 * 3e-6 + 100 * 12e-6
        pytest.approx(0.0012),  # the replaced price, for its dated names too
        None,  # removed
        pytest.approx(0.00021),  # the rest of the table stays
    ]


def test_sightline_model_prices_takes_json_text_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("SIGHTLINE_MODEL_PRICES", '{"house-model": [1, 1]}')
    assert costs(["house-model"]) == [pytest.approx(0.0011)]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"house-model": {"input": 2, "output": 0}}))
    monkeypatch.setenv("SIGHTLINE_MODEL_PRICES", str(path))
    assert costs(["house-model"]) == [pytest.approx(0.002)]
    # an argument wins over the variable
    assert costs(["house-model"], model_prices={"house-model": [0, 10]}) == [pytest.approx(0.001)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", r"model_prices is not valid JSON .*\(set by SIGHTLINE_MODEL_PRICES\)"),
        ("[1, 2]", r"must be a mapping of model name .* got list"),
        ('{"m": [1]}', r"model_prices\['m'\] must be \(input, output\)"),
        ('{"m": [1, -2]}', r"model_prices\['m'\]: a price must be .* at least 0; got -2"),
        ('{"m": ["1", 2]}', r"a price must be a number .* got '1'"),
        ('{"m": {"input": 1}}', r"model_prices\['m'\] must be"),
        ('{"m": {"input": 1, "output": 2, "cached": 1}}', r"model_prices\['m'\] must be"),
        ('{"m": [1, 2, 3]}', r"model_prices\['m'\] must be \(input, output\)"),
        ("/no/such/prices.json", r"cannot read the price file '/no/such/prices.json'"),
    ],
)
def test_a_malformed_price_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("SIGHTLINE_MODEL_PRICES", value)
    with pytest.raises(ConfigError, match=message) as failure:
        Client(exporters=[InMemoryExporter()])
    assert "SIGHTLINE_MODEL_PRICES" in str(failure.value)


@pytest.mark.parametrize(
    "prices",
    [
        {"m": (1.0, float("nan"))},
        {"m": (1.0, float("inf"))},
        {"m": (True, 1.0)},
        {"": (1.0, 1.0)},
        {3: (1.0, 1.0)},
        [("m", (1.0, 1.0))],
    ],
)
def test_a_malformed_price_argument_is_a_config_error(prices: Any) -> None:
    with pytest.raises(ConfigError, match="model_prices"):
        price_pairs(prices)
    with pytest.raises(ConfigError, match="model_prices"):
        Config.resolve(environ={}, model_prices=prices)


def test_a_price_file_that_is_not_json_names_the_file(tmp_path: Any) -> None:
    path = tmp_path / "prices.json"
    path.write_text("house-model: 1, 1")
    with pytest.raises(ConfigError, match=r"the price file '.*prices.json' is not valid JSON"):
        Config.resolve(environ={}, model_prices=str(path))
