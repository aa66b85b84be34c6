"""List prices per model, and the cost of one model call.

Fail closed: a model without a price cannot be used (``price_for`` raises UnknownModelPrice and the
planner refuses before calling the API), because a run whose spending we cannot count cannot be
held to its budget.

Prices are USD per million tokens: base input, output, 5-minute cache write, cache read (hits and
refreshes). Source: Anthropic's pricing page and per-model overview pages on platform.claude.com
(docs/about-claude/pricing, docs/models/<model>/overview), as read in November 2026, for the models
listed in the installed SDK's ``anthropic.types.Model`` (anthropic 2.12.0), excluding those in its
deprecation table (claude-mythos-preview, claude-sonnet-4-5*). Where sources disagreed we took the
higher rate, so a budget stops early rather than late: Claude Sonnet 5.5 cache reads were reported
cut from $0.20 to $0.10 on 2026-10-07; we keep $0.20. Claude Haiku 5.5 is billed by prompt length
(input + cache reads + cache writes above 100,000 tokens pays the higher rate on every token of that
request, output included); that tier is modelled with ``long_prompt``.

Not modelled: 1-hour cache writes (we only send 5-minute ``ephemeral`` breakpoints), batch discounts,
fast mode, regional (``inference_geo``) surcharges.

Operators add or override prices with ``settings.AGENTOPS_MODEL_PRICES``:
    {"claude-x": {"input": "3", "output": "15", "cache_write": "3.75", "cache_read": "0.30"}}
(``cache_write``/``cache_read`` default to 1.25x / 0.1x input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import cast

from .base import setting

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.000001")

# A current Sonnet from the SDK's model list.
DEFAULT_MODEL = "claude-sonnet-5-5"


class UnknownModelPrice(LookupError):
    """No (valid) price for this model: it cannot be used."""


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cache_write: Decimal  # 5-minute TTL
    cache_read: Decimal
    # Prompt-length tier: a request whose prompt exceeds long_prompt_threshold tokens is billed
    # entirely at long_prompt rates.
    long_prompt_threshold: int | None = None
    long_prompt: ModelPrice | None = None


def _d(value: object) -> Decimal:
    return Decimal(str(value))


def _price(inp: str, out: str, cache_write: str | None = None, cache_read: str | None = None, **tier) -> ModelPrice:
    i = _d(inp)
    return ModelPrice(
        input=i,
        output=_d(out),
        cache_write=_d(cache_write) if cache_write is not None else i * Decimal("1.25"),
        cache_read=_d(cache_read) if cache_read is not None else i * Decimal("0.1"),
        **tier,
    )


_OPUS_45 = _price("5", "25", "6.25", "0.50")
_FABLE_5 = _price("10", "50", "12.50", "1")
_FABLE_51 = _price("10", "50", "12.50", "0.25")
_SONNET_5 = _price("2", "10", "2.50", "0.20")

DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-haiku-4-5": _price("1", "5", "1.25", "0.10"),
    "claude-haiku-4-5-20251001": _price("1", "5", "1.25", "0.10"),
    "claude-sonnet-4-6": _price("3", "15", "3.75", "0.30"),
    "claude-opus-4-5": _OPUS_45,
    "claude-opus-4-5-20251101": _OPUS_45,
    "claude-opus-4-6": _OPUS_45,
    "claude-opus-4-7": _OPUS_45,
    "claude-opus-4-8": _OPUS_45,
    "claude-opus-5": _OPUS_45,
    "claude-sonnet-5": _SONNET_5,
    "claude-sonnet-5-5": _SONNET_5,
    "claude-opus-5-5": _price("4", "20", "5", "0.20"),
    "claude-haiku-5-5": _price(
        "0.10",
        "0.50",
        "0.125",
        "0.01",
        long_prompt_threshold=100_000,
        long_prompt=_price("0.50", "2.50", "0.625", "0.05"),
    ),
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-fable-5-1": _FABLE_51,
    "claude-mythos-5-1": _FABLE_51,
    # claude-fable-5-2 / claude-mythos-5-2 are in the SDK's list but we found no published price:
    # unpriced, so unusable until an operator sets AGENTOPS_MODEL_PRICES.
}


def _settings_overrides() -> dict[str, object]:
    # A mapping of model name to price (the module docstring); each value is checked by _parse_override.
    return dict(cast("Mapping[str, object]", setting("AGENTOPS_MODEL_PRICES") or {}))


def _parse_override(model: str, spec: object) -> ModelPrice:
    if isinstance(spec, ModelPrice):
        return spec
    if not isinstance(spec, dict) or "input" not in spec or "output" not in spec:
        raise UnknownModelPrice(f"AGENTOPS_MODEL_PRICES[{model!r}] must be a dict with at least input and output")
    try:
        price = _price(spec["input"], spec["output"], spec.get("cache_write"), spec.get("cache_read"))
    except (InvalidOperation, TypeError, ValueError):
        raise UnknownModelPrice(f"AGENTOPS_MODEL_PRICES[{model!r}] has a value that is not a number") from None
    for value in (price.input, price.output, price.cache_write, price.cache_read):
        if not value.is_finite() or value < 0:
            raise UnknownModelPrice(f"AGENTOPS_MODEL_PRICES[{model!r}] prices must be finite and >= 0")
    return price


def price_table() -> dict[str, ModelPrice]:
    """Every usable model and its price. An override that does not parse leaves its model out
    (price_for raises for it), so one bad entry cannot break the listing."""
    table = dict(DEFAULT_PRICES)
    for model, spec in _settings_overrides().items():
        try:
            table[model] = _parse_override(model, spec)
        except UnknownModelPrice:
            table.pop(model, None)
    return table


def model_retirement(model: str) -> str | None:
    """The retirement date the installed SDK announces for a deprecated model, else None.

    A deprecated model still works until that date: using it is a warning (in `apply` and on the
    agent page), never an error, so an SDK upgrade cannot turn a working installation red.
    """
    try:
        # The SDK keeps this table in a private module (it warns from it on every call); read it
        # defensively so a reshuffle of the SDK only loses the warning.
        from anthropic._data import DEPRECATED_MODELS  # lazy: importing the anthropic SDK takes over a second
    except ImportError:
        return None
    retires = DEPRECATED_MODELS.get(model)
    return str(retires) if retires else None


def known_models() -> list[str]:
    """Models that have a price, i.e. that may be used."""
    return sorted(price_table())


def price_for(model: str) -> ModelPrice:
    overrides = _settings_overrides()
    if model in overrides:
        return _parse_override(model, overrides[model])
    try:
        return DEFAULT_PRICES[model]
    except KeyError:
        raise UnknownModelPrice(f"no price for model {model!r}; add it to AGENTOPS_MODEL_PRICES to use it") from None


def cost_of(
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """USD cost of one call, quantized to 1e-6. ``input_tokens`` excludes cached tokens, as in the
    API's usage block."""
    for count in (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens):
        if count < 0:
            raise ValueError("token counts must be >= 0")
    price = price_for(model)
    prompt = input_tokens + cache_read_tokens + cache_write_tokens
    if price.long_prompt is not None and price.long_prompt_threshold is not None and prompt > price.long_prompt_threshold:
        price = price.long_prompt
    total = (
        input_tokens * price.input + output_tokens * price.output + cache_read_tokens * price.cache_read + cache_write_tokens * price.cache_write
    ) / MILLION
    return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "ModelPrice",
    "UnknownModelPrice",
    "price_for",
    "price_table",
    "cost_of",
    "known_models",
    "model_retirement",
]
