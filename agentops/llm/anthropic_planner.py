"""The planner that calls the Anthropic Messages API through the official SDK.

Retries are ours, not the SDK's (the client is built with ``max_retries=0``): every failed attempt
is reported to the controller through ``on_retry`` before we wait, so it can record a step, count
the attempt against the run's budgets, and stop us.
"""

from __future__ import annotations

import copy
import email.utils
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import anthropic

from .base import ModelTurn, OnRetry, Planner, PlannerError, RetryInfo, ToolCall, setting, text_of
from .checks import usage_value
from .prices import UnknownModelPrice, cost_of, price_for

RETRYABLE_STATUS = {408: "timeout", 429: "rate_limited", 500: "server_error", 502: "server_error", 503: "server_error", 504: "server_error", 529: "overloaded"}
_AUTH_STATUS = {401, 402, 403}
_CACHE_CONTROL = {"type": "ephemeral"}  # 5-minute TTL, priced as cache_write in prices.py


class AnthropicPlanner(Planner):
    kind = "anthropic"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        *,
        cache_prompt: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``api_key``/``base_url`` default to settings.ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL when
        Django is configured, else to the environment variables of those names (read by the SDK).

        ``cache_prompt`` marks the system prompt and the newest message with 5-minute cache
        breakpoints, so each turn of a run re-reads the earlier conversation from the cache.
        """
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.api_key = api_key
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.cache_prompt = cache_prompt
        self._sleep = sleep
        self._random = random.Random()
        self._client: anthropic.Anthropic | None = None

    # -- client ---------------------------------------------------------------------------------

    def _get_client(self) -> anthropic.Anthropic:
        if self._client is None:
            try:
                # Both settings are read with env_str (agentops/settings.py): a string or None.
                self._client = anthropic.Anthropic(
                    api_key=cast("str | None", self.api_key or setting("ANTHROPIC_API_KEY")),
                    base_url=cast("str | None", self.base_url or setting("ANTHROPIC_BASE_URL")),
                    timeout=self.timeout_s,
                    max_retries=0,
                )
            except anthropic.AnthropicError as exc:  # e.g. no credentials anywhere
                raise PlannerError(f"cannot build Anthropic client: {exc}", kind="auth") from exc
        return self._client

    # -- the call -------------------------------------------------------------------------------

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
        try:
            price_for(model)  # fail closed before spending anything
        except UnknownModelPrice as exc:
            raise PlannerError(str(exc), kind="unknown_price") from exc
        client = self._get_client()
        params = self._request_params(system=system, messages=messages, tools=tools, model=model, max_tokens=max_tokens)

        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = client.messages.create(**params)
            except anthropic.APIError as exc:
                kind, status, retryable, retry_after, description = _classify(exc)
            except anthropic.AnthropicError as exc:
                raise PlannerError(f"Anthropic client error: {exc}", kind="auth") from exc
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                # The SDK could not parse the body (e.g. invalid JSON raises JSONDecodeError).
                raise PlannerError(f"malformed response: {type(exc).__name__}: {exc}", kind="malformed") from exc
            else:
                latency_ms = int((time.monotonic() - started) * 1000)
                return self._to_turn(response, requested_model=model, latency_ms=latency_ms)

            if not retryable:
                raise PlannerError(description, kind=kind, status=status, retryable=False)
            if attempt > self.max_retries:
                raise PlannerError(f"{description} (gave up after {attempt} attempts)", kind=kind, status=status, retryable=True)
            wait_s = self._backoff(attempt, retry_after)
            if on_retry is not None and on_retry(RetryInfo(attempt=attempt, status=status, error=description, wait_s=wait_s)) is False:
                raise PlannerError(f"stopped before retry {attempt} after: {description}", kind="budget_stop", status=status)
            self._sleep(wait_s)

    def _request_params(self, *, system: str, messages: list[dict], tools: list[dict], model: str, max_tokens: int) -> dict:
        params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
        if tools:
            params["tools"] = tools
        if system:
            params["system"] = [{"type": "text", "text": system, "cache_control": _CACHE_CONTROL}] if self.cache_prompt else system
        if self.cache_prompt and messages:
            params["messages"] = _with_cache_breakpoint(messages)
        return params

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.backoff_max_s))
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return ceiling * self._random.uniform(0.5, 1.0)

    # -- response -------------------------------------------------------------------------------

    def _to_turn(self, response: object, *, requested_model: str, latency_ms: int) -> ModelTurn:
        blocks = getattr(response, "content", None)
        usage = getattr(response, "usage", None)
        if not isinstance(response, anthropic.types.Message) or not isinstance(blocks, list):
            raise PlannerError("malformed response: no content list", kind="malformed")
        if usage is None:
            # Without usage we cannot count the cost: fail closed.
            raise PlannerError("malformed response: no usage", kind="malformed")
        try:
            content = [b.model_dump(mode="json", exclude_none=True) if hasattr(b, "model_dump") else dict(b) for b in blocks]
        except (TypeError, ValueError) as exc:
            raise PlannerError(f"malformed response: content block: {exc}", kind="malformed") from exc

        # Bad usage values are a problem of the turn (the controller charges its reservation
        # instead), not an exception: a negative count must never reach the cost arithmetic.
        problems: list[str] = []
        input_tokens = usage_value(getattr(usage, "input_tokens", None), "input_tokens", problems)
        output_tokens = usage_value(getattr(usage, "output_tokens", None), "output_tokens", problems)
        cache_read = usage_value(getattr(usage, "cache_read_input_tokens", None), "cache_read_input_tokens", problems, optional=True)
        cache_write = usage_value(getattr(usage, "cache_creation_input_tokens", None), "cache_creation_input_tokens", problems, optional=True)
        tool_calls = [
            ToolCall(id=b["id"], name=b["name"], arguments=b.get("input"))
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("id"), str) and isinstance(b.get("name"), str)
        ]
        cost = Decimal("0") if problems else cost_of(requested_model, input_tokens, output_tokens, cache_read, cache_write)
        model = getattr(response, "model", None)
        return ModelTurn(
            text=text_of(content),
            tool_calls=tool_calls,
            stop_reason=getattr(response, "stop_reason", None),
            model=model if isinstance(model, str) and model else requested_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            # Billed at the price of the model we asked for (and checked before calling).
            cost_usd=cost,
            latency_ms=latency_ms,
            scripted=False,
            content=content,
            thinking=text_of(content, "thinking", "thinking"),
            usage_problems=problems,
        )


def _with_cache_breakpoint(messages: list[dict]) -> list[dict]:
    """A copy of ``messages`` with a cache breakpoint on the last block of the newest message,
    unless the caller placed breakpoints of its own (the API allows four per request)."""
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and "cache_control" in b for b in content):
            return messages
    last = messages[-1]
    if not isinstance(last, dict):
        return messages
    content = last.get("content")
    blocks: list[dict[str, Any]]
    if isinstance(content, str):
        if not content:
            return messages
        blocks = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content and isinstance(content[-1], dict):
        blocks = copy.deepcopy(content)
    else:
        return messages
    if blocks[-1].get("type") in {"thinking", "redacted_thinking"}:
        return messages  # cannot carry cache_control
    blocks[-1]["cache_control"] = dict(_CACHE_CONTROL)
    return [*messages[:-1], {**last, "content": blocks}]


def _classify(exc: anthropic.APIError) -> tuple[str, int | None, bool, float | None, str]:
    """(kind, status, retryable, retry_after_s, description) for an SDK error."""
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout", None, True, None, "request timed out"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection", None, True, None, f"connection error: {exc.__cause__ or exc}"
    if isinstance(exc, anthropic.APIResponseValidationError):
        return "malformed", exc.status_code, False, None, f"malformed response: {exc.message}"
    if not isinstance(exc, anthropic.APIStatusError):
        return "malformed", None, False, None, f"unexpected API error: {exc}"

    status = exc.status_code
    api_message = exc.api_message or exc.message
    description = (f"HTTP {status}" + (f" {exc.type}" if exc.type else "") + f": {api_message}")[:300]
    headers = exc.response.headers
    if status in RETRYABLE_STATUS:
        kind, retryable = RETRYABLE_STATUS[status], True
    elif exc.type == "overloaded_error":
        kind, retryable = "overloaded", True
    elif status in _AUTH_STATUS:
        kind, retryable = "auth", False
    elif status >= 500:
        kind, retryable = "server_error", False
    else:
        kind, retryable = "bad_request", False
    should_retry = (headers.get("x-should-retry") or "").lower()
    if should_retry in {"true", "false"}:
        retryable = should_retry == "true"
    return kind, status, retryable, _retry_after(headers), description


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if present."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None
