"""The planner (model) layer: the controller asks a Planner for the next turn of a run."""

from __future__ import annotations

from .base import (
    ModelTurn,
    Planner,
    PlannerError,
    RetryInfo,
    ToolCall,
    context_window,
    count_tokens_estimate,
)
from .prices import DEFAULT_MODEL, UnknownModelPrice, cost_of, known_models, price_for
from .scripted import ScriptedPlanner

PLANNER_KINDS = ("anthropic", "scripted")


def get_planner(kind: str, **kw) -> Planner:
    """``get_planner("anthropic", api_key=...)`` or ``get_planner("scripted", script=path)``."""
    if kind == "anthropic":
        from .anthropic_planner import AnthropicPlanner  # lazy: importing the anthropic SDK takes over a second

        return AnthropicPlanner(**kw)
    if kind == "scripted":
        return ScriptedPlanner(**kw)
    raise ValueError(f"unknown planner kind {kind!r} (expected one of {', '.join(PLANNER_KINDS)})")


__all__ = [
    "DEFAULT_MODEL",
    "PLANNER_KINDS",
    "ModelTurn",
    "Planner",
    "PlannerError",
    "RetryInfo",
    "ToolCall",
    "UnknownModelPrice",
    "context_window",
    "cost_of",
    "count_tokens_estimate",
    "get_planner",
    "known_models",
    "price_for",
]
