"""Cost estimates of model calls: token counts times the model's list price.

A model call recorded with a model name and both token counts but no cost (every adapter's
``llm_invoke`` events: frameworks report tokens, not dollars) gets ``cost_usd`` from a table of
prices in US dollars per million tokens, on the background worker
(:class:`CostProcessor`, a built-in processor; ``estimate_cost=False`` turns it off). A cost
that was set (``span.set_cost``, ``log_event(cost_usd=...)``) is never replaced.

The estimate is the input tokens at the input price, the output tokens at the output price,
and the parts of the input that the adapter says came from the provider's prompt cache
(``metadata["usage_details"]["cache_read_tokens"]``) or were written to it
(``cache_creation_tokens``) at the cache's prices (OpenAI: a quarter to a half of the input
price, a tenth for GPT-5; Anthropic: a tenth to read, 1.25 times to write). Batch discounts and
surcharges of long prompts are not applied.

Model names are read as providers and frameworks write them: in any case, with a provider
prefix (``openai/gpt-4o``, ``models/gemini-2.0-flash``, Bedrock's ``us.anthropic.…``), and with
a date or version after the name (``gpt-4o-2024-08-06``, ``claude-3-5-sonnet-20241022``,
``claude-3-5-sonnet-v2@20241022``, ``…-v1:0``, ``gemini-2.0-flash-001``, ``…-latest``). Anything
else after a known name means another model (``gpt-4o-realtime-preview``, ``gpt-5.4``): it is
not priced rather than priced as its neighbour.

Prices of the table (:data:`BUILTIN_PRICES`) are the providers' published list prices for
standard (non-batch) calls at the time of this release; they change. ``model_prices`` (or
``SIGHTLINE_MODEL_PRICES``) adds models, replaces a price, or removes one (``None``); a price is
``(input, output)`` or ``(input, output, cache_read, cache_write)`` (the cache at the input
price when not given)::

    sightline.init(model_prices={"my-finetune": (3.0, 12.0), "gpt-4o": None})
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sightline.errors import ConfigError
from sightline.event import Event, EventType
from sightline.hookspecs import hookimpl

__all__ = ["BUILTIN_PRICES", "CostProcessor", "PriceTable", "price_pairs"]

Price = tuple[float, float, float, float]
"""US dollars per million tokens: (input, output, input read from the prompt cache, input
written to the prompt cache)."""


def _openai(input: float, output: float, cached: float | None = None) -> Price:
    """OpenAI's price: cached input at ``cached`` (the input price where there is no discount);
    writing the cache costs nothing more."""
    return (input, output, input if cached is None else cached, input)


def _anthropic(input: float, output: float) -> Price:
    """Anthropic's price: cache reads at a tenth of the input price, cache writes (5-minute) at
    1.25 times it."""
    return (input, output, input * 0.1, input * 1.25)


# Standard list prices, USD per million tokens. Models priced by prompt length (Gemini 2.5 Pro,
# for one) are left out: one price would be wrong for some calls.
BUILTIN_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5": _openai(1.25, 10.0, 0.125),
    "gpt-5-mini": _openai(0.25, 2.0, 0.025),
    "gpt-5-nano": _openai(0.05, 0.40, 0.005),
    "gpt-5-pro": _openai(15.0, 120.0),
    "gpt-5.1": _openai(1.25, 10.0, 0.125),
    "gpt-4.1": _openai(2.0, 8.0, 0.50),
    "gpt-4.1-mini": _openai(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _openai(0.10, 0.40, 0.025),
    "gpt-4o": _openai(2.50, 10.0, 1.25),
    "gpt-4o-2024-05-13": _openai(5.0, 15.0),  # the first gpt-4o, dearer than the later ones
    "gpt-4o-mini": _openai(0.15, 0.60, 0.075),
    "gpt-4-turbo": _openai(10.0, 30.0),
    "o1": _openai(15.0, 60.0, 7.50),
    "o1-pro": _openai(150.0, 600.0),
    "o3": _openai(2.0, 8.0, 0.50),
    "o3-pro": _openai(20.0, 80.0),
    "o3-mini": _openai(1.10, 4.40, 0.55),
    "o4-mini": _openai(1.10, 4.40, 0.275),
    # Anthropic
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-haiku": _anthropic(0.80, 4.0),
    "claude-3-opus": _anthropic(15.0, 75.0),
    "claude-3-haiku": _anthropic(0.25, 1.25),
    # Google (context caching: cached input at a quarter of the input price)
    "gemini-2.5-flash": _openai(0.30, 2.50, 0.075),
    "gemini-2.5-flash-lite": _openai(0.10, 0.40, 0.025),
    "gemini-2.0-flash": _openai(0.10, 0.40, 0.025),
    "gemini-2.0-flash-lite": _openai(0.075, 0.30),
}

# What may follow a known name and still be that model: a date (2024-08-06, 20241022), a
# "latest" alias, Google's "-001", a version ("-v2", "-v1:0") and Vertex's "@20241022".
_VERSION = re.compile(
    r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|latest|\d{3}))?(?:-v\d+(?::\d+)?)?(?:@\d{8})?"
)
# A provider in front of the name: "openai/", "models/", Bedrock's "anthropic." and
# "us.anthropic." (a region first).
_BEDROCK_PREFIX = re.compile(r"(?:[a-z]{2,4}\.)?(?:anthropic|openai|google|meta|mistral)\.")
_MEMO_SIZE = 1024


class PriceTable:
    """Prices by model name: :data:`BUILTIN_PRICES` with ``overrides`` applied (pairs of name
    and price, ``None`` to remove a model), each name looked up as the module doc says."""

    def __init__(self, overrides: Iterable[tuple[str, Price | None]] = ()) -> None:
        prices = dict(BUILTIN_PRICES)
        for name, price in overrides:
            key = _normal(name)
            if price is None:
                prices.pop(key, None)
            else:
                prices[key] = price
        self._prices = prices
        self._memo: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The (input, output) price of ``model`` per million tokens, or ``None`` when the
        table does not know it."""
        memo = self._memo
        try:
            return memo[model]
        except KeyError:
            pass
        found = self._find(_normal(model))
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[model] = found
        return found

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
    ) -> float | None:
        """The estimated cost in US dollars of a call, or ``None`` for a model not in the table.

        ``cache_read_tokens`` and ``cache_creation_tokens`` are parts of ``input_tokens`` (as
        adapters record them in ``metadata["usage_details"]``), priced at the cache's prices;
        parts larger than the whole are cut to it."""
        price = self.price(model)
        if price is None:
            return None
        read = min(cache_read_tokens, input_tokens)
        created = min(cache_creation_tokens, input_tokens - read)
        return (
            (input_tokens - read - created) * price[0]
            + output_tokens * price[1]
            + read * price[2]
            + created * price[3]
        ) / 1_000_000

    def _find(self, name: str) -> Price | None:
        prices = self._prices
        exact = prices.get(name)
        if exact is not None:
            return exact
        # The longest known name that the rest of ``name`` only dates or versions.
        best: str | None = None
        for known in prices:
            if (
                name.startswith(known)
                and (best is None or len(known) > len(best))
                and _VERSION.fullmatch(name, len(known))
            ):
                best = known
        return prices[best] if best is not None else None


def _normal(name: str) -> str:
    name = name.strip().lower()
    name = name.rpartition("/")[2]
    prefix = _BEDROCK_PREFIX.match(name)
    return name[prefix.end() :] if prefix else name


class CostProcessor:
    """Fills ``cost_usd`` of model calls from their token counts (see the module doc).

    A built-in processor: it runs after the redaction (token counts are integers by then) and
    before any plugin's processor, which sees the estimate and may replace it."""

    def __init__(self, overrides: Iterable[tuple[str, Price | None]] = ()) -> None:
        self.table = PriceTable(overrides)

    @hookimpl
    def sightline_process_event(self, event: Event) -> None:
        usage = event.usage
        if usage is None or event.cost_usd is not None or event.type is not EventType.LLM_INVOKE:
            return
        model = event.model
        input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        if type(model) is str and input_tokens is not None and output_tokens is not None:
            read = created = 0
            metadata = event.metadata
            details = metadata.get("usage_details") if type(metadata) is dict else None
            if type(details) is dict:
                read = _count(details.get("cache_read_tokens"))
                created = _count(details.get("cache_creation_tokens"))
            event.cost_usd = self.table.cost(model, input_tokens, output_tokens, read, created)


def _count(value: Any) -> int:
    """A token count of ``usage_details`` as a whole number (0 if it is not one)."""
    return value if type(value) is int and value > 0 else 0


def price_pairs(prices: Any) -> tuple[tuple[str, Price | None], ...]:
    """``model_prices`` as (model, price) pairs, each price checked: from a mapping of model →
    ``(input, output)``, ``(input, output, cache_read, cache_write)`` or ``{"input": ...,
    "output": ..., "cache_read": ..., "cache_write": ...}`` (the cache keys optional) in US
    dollars per million tokens (``None`` removes the model), from that mapping as JSON text, or from the path of a JSON
    file holding it (as ``SIGHTLINE_MODEL_PRICES`` may be). Raises :class:`ConfigError`."""
    if isinstance(prices, str):
        prices = _read_json(prices)
    if not isinstance(prices, Mapping):
        raise ConfigError(
            "model_prices must be a mapping of model name → (input, output) US dollars per "
            f"million tokens, got {type(prices).__name__}"
        )
    pairs: list[tuple[str, Price | None]] = []
    for name, price in prices.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"model_prices: a model name must be a non-empty string, got {name!r}"
            )
        pairs.append((name, _price(name, price)))
    return tuple(pairs)


def _read_json(text: str) -> Any:
    source = "model_prices"
    if not text.lstrip().startswith(("{", "[")):
        path = os.path.expanduser(text.strip())
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise ConfigError(
                f"model_prices: cannot read the price file {path!r} ({exc.strerror or exc}); "
                'give a JSON object such as {"my-model": [3.0, 12.0]} or the path of a file '
                "holding one"
            ) from None
        source = f"the price file {path!r}"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{source} is not valid JSON ({exc}); expected an object such as "
            '{"my-model": [3.0, 12.0]} (US dollars per million input and output tokens)'
        ) from None


def _price(name: str, price: Any) -> Price | None:
    if price is None:
        return None
    keys = ("input", "output", "cache_read", "cache_write")
    if isinstance(price, Mapping) and {"input", "output"} <= set(price) <= set(keys):
        values = [price.get(key) for key in keys]
    elif isinstance(price, (tuple, list)) and len(price) in (2, 4):
        values = [*price, None, None][:4]
    else:
        raise ConfigError(
            f"model_prices[{name!r}] must be (input, output), (input, output, cache_read, "
            "cache_write) or {'input': ..., 'output': ..., 'cache_read': ..., 'cache_write': ...} "
            f"in US dollars per million tokens, or None to remove the model; got {price!r}"
        )
    if values[2] is None:
        values[2] = values[0]  # no discount known: cached input at the input price
    if values[3] is None:
        values[3] = values[0]
    dollars: list[float] = []
    for value in values:
        if (
            not isinstance(value, numbers.Real)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(
                f"model_prices[{name!r}]: a price must be a number of US dollars per million "
                f"tokens, at least 0; got {value!r}"
            )
        dollars.append(float(value))
    return (dollars[0], dollars[1], dollars[2], dollars[3])
