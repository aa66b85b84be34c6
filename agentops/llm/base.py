"""The planner interface: one model turn in, one ModelTurn out.

Everything here is plain Python so the controller, the worker and tests can use it without a
database. The controller owns the conversation; a planner only turns it into the next turn.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PLANNER_ERROR_KINDS = frozenset(
    {
        "rate_limited",
        "server_error",
        "overloaded",
        "timeout",
        "connection",
        "bad_request",
        "auth",
        "malformed",
        "unknown_price",
        "budget_stop",
        "script_exhausted",
    }
)


@dataclass(frozen=True)
class ToolCall:
    id: str  # tool_use id from the model
    name: str
    # The tool_use input, unvalidated (not even known to be an object): the model's request is
    # data, never authority.
    arguments: Any


@dataclass
class ModelTurn:
    text: str  # concatenated text blocks (the "plan")
    tool_calls: list[ToolCall]
    stop_reason: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    latency_ms: int
    scripted: bool
    content: list[dict]  # assistant content blocks as plain dicts, to append to the conversation verbatim
    thinking: str = ""  # concatenated thinking blocks, when the model returned readable ones
    # Usage values that could not be believed (then the counts above are 0 and cost_usd is 0: the
    # controller charges what it reserved for the call instead).
    usage_problems: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def as_message(self) -> dict:
        """The assistant message to append to the conversation."""
        return {"role": "assistant", "content": self.content}


@dataclass(frozen=True)
class RetryInfo:
    attempt: int  # 1-based attempt that failed
    status: int | None  # HTTP status, None for timeout/connection
    error: str  # short description
    wait_s: float  # backoff before the next attempt


class PlannerError(Exception):
    """The model call finally failed; ``kind`` says why (see PLANNER_ERROR_KINDS)."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, retryable: bool = False) -> None:
        if kind not in PLANNER_ERROR_KINDS:
            raise ValueError(f"unknown PlannerError kind {kind!r}")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"PlannerError({self.message!r}, kind={self.kind!r}, status={self.status!r})"


OnRetry = Callable[[RetryInfo], bool]


class Planner(ABC):
    kind: str  # "anthropic" | "scripted"

    @abstractmethod
    def next_turn(
        self,
        *,
        system: str,
        messages: list[dict],
        tools: list[dict],
        model: str,
        max_tokens: int = 4096,
        on_retry: OnRetry | None = None,
    ) -> ModelTurn:
        """Ask for the next assistant turn.

        ``messages`` are in Anthropic Messages format; ``tools`` are Anthropic tool definitions.
        ``on_retry`` is called before each retry; returning False stops with
        PlannerError(kind="budget_stop"). Raises PlannerError when the call finally fails.
        """


# Context windows in tokens, from the model overview pages on platform.claude.com (checked
# 2026-11). Used only for compaction decisions; an unknown model gets the conservative default.
DEFAULT_CONTEXT_WINDOW = 200_000
_CONTEXT_WINDOWS: dict[str, int] = {
    "claude-haiku-4-5": 200_000,
    "claude-haiku-4-5-20251001": 200_000,
    "claude-opus-4-5": 200_000,
    "claude-opus-4-5-20251101": 200_000,
    "claude-opus-4-6": 1_000_000,
    "claude-sonnet-4-6": 1_000_000,
    "claude-opus-4-7": 1_000_000,
    "claude-opus-4-8": 1_000_000,
    "claude-sonnet-5": 1_000_000,
    "claude-opus-5": 1_000_000,
    "claude-fable-5": 1_000_000,
    "claude-mythos-5": 1_000_000,
    "claude-fable-5-1": 1_000_000,
    "claude-mythos-5-1": 1_000_000,
    "claude-sonnet-5-5": 1_000_000,
    "claude-opus-5-5": 1_000_000,
    "claude-haiku-5-5": 1_000_000,
    "claude-fable-5-2": 1_000_000,
    "claude-mythos-5-2": 1_000_000,
}


def context_window(model: str) -> int:
    return _CONTEXT_WINDOWS.get(model, DEFAULT_CONTEXT_WINDOW)


def _content_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for block in content:
            if isinstance(block, dict):
                for key in ("text", "thinking"):
                    if isinstance(block.get(key), str):
                        total += len(block[key])
                if block.get("type") == "tool_use":
                    total += len(str(block.get("name", ""))) + len(json.dumps(block.get("input"), default=str))
                elif block.get("type") == "tool_result":
                    total += _content_chars(block.get("content", ""))
            else:
                total += len(str(block))
        return total
    return len(json.dumps(content, default=str)) if content is not None else 0


def count_tokens_estimate(messages: list[dict], system: str = "") -> int:
    """A cheap chars/4 estimate (rounded up) for compaction decisions — not for billing."""
    chars = len(system or "")
    for msg in messages:
        chars += _content_chars(msg.get("content") if isinstance(msg, dict) else msg)
    return math.ceil(chars / 4)


def setting(name: str, default: object = None) -> object:
    """A Django setting when settings are available, else ``default``: this package must work
    (and be tested) without Django configured."""
    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return default
    try:
        return getattr(settings, name, default)
    except (ImportError, ImproperlyConfigured):  # settings module missing or broken (yet)
        return default


def text_of(content: list[dict], block_type: str = "text", key: str = "text") -> str:
    return "\n".join(b[key] for b in content if b.get("type") == block_type and isinstance(b.get(key), str) and b[key])


__all__ = [
    "PLANNER_ERROR_KINDS",
    "ToolCall",
    "ModelTurn",
    "RetryInfo",
    "PlannerError",
    "Planner",
    "OnRetry",
    "count_tokens_estimate",
    "context_window",
    "DEFAULT_CONTEXT_WINDOW",
]
