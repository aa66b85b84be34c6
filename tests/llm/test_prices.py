from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from anthropic._data import DEPRECATED_MODELS

from agentops.llm import context_window, count_tokens_estimate
from agentops.llm.prices import (
    DEFAULT_MODEL,
    DEFAULT_PRICES,
    UnknownModelPrice,
    cost_of,
    known_models,
    model_retirement,
    price_for,
)

SDK_MODELS = set(typing.get_args(typing.get_args(anthropic.types.Model)[0]))


def test_sdk_model_list_is_readable():
    assert "claude-haiku-4-5" in SDK_MODELS and len(SDK_MODELS) > 5


def test_every_priced_model_is_an_sdk_model():
    # A deprecated model keeps its price until it retires: agents on it warn, they do not break.
    for model in DEFAULT_PRICES:
        assert model in SDK_MODELS, model


def test_a_deprecated_model_reports_its_retirement_date_and_a_current_one_none():
    deprecated = next(iter(DEPRECATED_MODELS))
    assert model_retirement(deprecated) == DEPRECATED_MODELS[deprecated]
    assert model_retirement(DEFAULT_MODEL) is None


def test_the_default_model_is_a_current_priced_sonnet():
    assert "sonnet" in DEFAULT_MODEL
    assert DEFAULT_MODEL in SDK_MODELS and DEFAULT_MODEL not in DEPRECATED_MODELS
    assert DEFAULT_MODEL in known_models()
    assert price_for(DEFAULT_MODEL).input > 0


def test_known_models_is_sorted_and_complete():
    models = known_models()
    assert models == sorted(models)
    assert set(models) >= set(DEFAULT_PRICES)


@pytest.mark.parametrize(
    "model, inp, out, write, read",
    [
        ("claude-sonnet-4-6", "3", "15", "3.75", "0.30"),
        ("claude-haiku-4-5", "1", "5", "1.25", "0.10"),
        ("claude-opus-4-5", "5", "25", "6.25", "0.50"),
        ("claude-opus-5-5", "4", "20", "5", "0.20"),
    ],
)
def test_list_prices(model, inp, out, write, read):
    price = price_for(model)
    assert (price.input, price.output, price.cache_write, price.cache_read) == tuple(Decimal(v) for v in (inp, out, write, read))


def test_cache_write_is_125_percent_and_read_10_percent_of_input_for_standard_models():
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-5-5"):
        price = price_for(model)
        assert price.cache_write == price.input * Decimal("1.25")
        assert price.cache_read == price.input * Decimal("0.1")


def test_cost_of_adds_every_kind_of_token():
    # 1M input at $3 + 1M output at $15 + 1M cache read at $0.30 + 1M cache write at $3.75
    assert cost_of("claude-sonnet-4-6", 1_000_000, 1_000_000, 1_000_000, 1_000_000) == Decimal("22.050000")
    assert cost_of("claude-sonnet-4-6", input_tokens=1) == Decimal("0.000003")
    assert cost_of("claude-sonnet-4-6") == Decimal("0")


def test_cost_is_quantized_to_a_millionth_of_a_dollar():
    cost = cost_of("claude-haiku-4-5", cache_read_tokens=1)  # $0.0000001
    assert cost == Decimal("0.000000")
    assert cost.as_tuple().exponent == -6
    assert cost_of("claude-haiku-4-5", cache_read_tokens=5) == Decimal("0.000001")  # 0.0000005 rounds half up


def test_haiku_5_5_long_prompts_are_billed_at_the_higher_tier():
    short = cost_of("claude-haiku-5-5", input_tokens=100_000, output_tokens=1_000)
    long = cost_of("claude-haiku-5-5", input_tokens=90_000, output_tokens=1_000, cache_read_tokens=10_001)
    assert short == Decimal("0.010500")  # 100k*0.10 + 1k*0.50
    assert long == Decimal("0.048000")  # (90k*0.50 + 1k*2.50 + 10001*0.05) per million, rounded


@pytest.mark.parametrize("model", ["claude-unknown-9", "claude-sonnet-4-5", "claude-mythos-preview", ""])
def test_an_unpriced_model_fails_closed(model):
    with pytest.raises(UnknownModelPrice):
        price_for(model)
    with pytest.raises(UnknownModelPrice):
        cost_of(model, 1, 1)


def test_negative_tokens_are_refused():
    with pytest.raises(ValueError):
        cost_of("claude-sonnet-4-6", input_tokens=-1)


def test_settings_can_add_and_override_prices():
    # A separate interpreter, so configuring Django here cannot leak into other tests.
    script = textwrap.dedent(
        """
        from decimal import Decimal
        from django.conf import settings
        settings.configure(AGENTOPS_MODEL_PRICES={
            "claude-fable-5-2": {"input": "10", "output": "50"},
            "claude-sonnet-4-6": {"input": 6, "output": 30, "cache_write": 7, "cache_read": "0.5"},
            "claude-broken": {"input": "lots", "output": "1"},
        })
        from agentops.llm.prices import UnknownModelPrice, cost_of, known_models, price_for
        p = price_for("claude-fable-5-2")
        assert (p.cache_write, p.cache_read) == (Decimal("12.50"), Decimal("1.0")), p
        assert cost_of("claude-sonnet-4-6", 1_000_000) == Decimal("6"), cost_of("claude-sonnet-4-6", 1_000_000)
        assert "claude-fable-5-2" in known_models() and "claude-broken" not in known_models()
        try:
            price_for("claude-broken")
        except UnknownModelPrice:
            pass
        else:
            raise AssertionError("a broken price must fail closed")
        print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# -- helpers in base.py --------------------------------------------------------------------------


def test_context_window_has_a_table_and_a_default():
    assert context_window("claude-haiku-4-5") == 200_000
    assert context_window("claude-sonnet-5-5") == 1_000_000
    assert context_window("claude-unknown-9") == 200_000


def test_count_tokens_estimate_is_chars_over_four():
    assert count_tokens_estimate([], "") == 0
    assert count_tokens_estimate([{"role": "user", "content": "a" * 400}], system="b" * 400) == 200
    blocks = [
        {"role": "assistant", "content": [{"type": "text", "text": "x" * 40}, {"type": "tool_use", "id": "t", "name": "n", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "y" * 400}]},
    ]
    estimate = count_tokens_estimate(blocks)
    assert 110 <= estimate <= 115  # 40 + 400 chars of text plus the tool call's name and input
