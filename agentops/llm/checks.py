"""Checks on what a model returned, before the controller believes any of it.

A model turn is data from outside (the API, a proxy, a hostile or broken model). Anything the API
itself would refuse when we send it back (bad tool-use ids, duplicate ids, unknown block types,
empty text) and anything the database or the budget cannot hold (negative, huge or non-numeric
token counts) is found here, as a list of problems, never as an exception deep in the controller.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# The Messages API's pattern for tool_use ids (tool_result.tool_use_id must match it) and tool
# names; 64 characters at most for both.
TOOL_USE_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# No model has a context of this many tokens: a larger count is a broken response, and would
# overflow the cost columns besides.
MAX_USAGE_TOKENS = 10_000_000
MAX_TEXT_CHARS = 2_000_000
MAX_INPUT_CHARS = 1_000_000
MAX_INPUT_DEPTH = 64
# Stop reasons after which the turn is whole and may be acted on.
COMPLETE_STOP_REASONS = frozenset({"end_turn", "tool_use", "stop_sequence"})
# Cut off: the last block may be partial, so nothing in the turn is acted on.
TRUNCATED_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded", "pause_turn"})
# Assistant block types the API accepts back in a conversation, with the fields each needs.
ECHOABLE_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, counted without recursion (a hostile input may nest thousands deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _input_problem(arguments: dict) -> str | None:
    if _depth(arguments, MAX_INPUT_DEPTH) > MAX_INPUT_DEPTH:
        return f"input nested deeper than {MAX_INPUT_DEPTH} levels"
    size = len(json.dumps(arguments, default=str))
    if size > MAX_INPUT_CHARS:
        return f"input of {size} characters (at most {MAX_INPUT_CHARS})"
    return None


def usage_value(value: Any, name: str, problems: list[str], *, optional: bool = False) -> int:
    """A token count as an int, or 0 with a problem noted."""
    if value is None and optional:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"usage.{name} is not an integer: {str(value)[:40]!r}")
        return 0
    if value < 0 or value > MAX_USAGE_TOKENS:
        problems.append(f"usage.{name} is out of range: {value}")
        return 0
    return value


@dataclass
class CheckedCall:
    id: str
    name: str
    arguments: dict


@dataclass
class TurnCheck:
    """What may be believed of one turn. ``problems`` non-empty: nothing in the turn is acted on."""

    calls: list[CheckedCall] = field(default_factory=list)
    content: list[dict] = field(default_factory=list)  # blocks safe to send back to the API
    problems: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # block types removed (not fatal)
    truncated: bool = False

    @property
    def acceptable(self) -> bool:
        return not self.problems and not self.truncated


def check_turn(content: Any, stop_reason: Any, *, seen_ids: set[str] | frozenset[str] = frozenset()) -> TurnCheck:
    """Validate a turn's content blocks and stop reason. ``seen_ids``: tool-use ids of earlier turns
    of the run (an id reused across turns would resume someone else's call)."""
    check = TurnCheck()
    if not isinstance(content, list):
        check.problems.append("the content is not a list of blocks")
        return check
    ids: set[str] = set()
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in ECHOABLE_BLOCKS:
            check.dropped.append(str(kind)[:40] if kind is not None else type(block).__name__)
            continue
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                check.problems.append(f"block {index}: text is not a string")
            elif len(text) > MAX_TEXT_CHARS:
                check.problems.append(f"block {index}: text of {len(text)} characters")
            elif text.strip():  # the API refuses empty text blocks
                check.content.append({"type": "text", "text": text})
            continue
        if kind == "thinking":
            if isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str):
                check.content.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
            else:
                check.dropped.append("thinking")
            continue
        if kind == "redacted_thinking":
            if isinstance(block.get("data"), str):
                check.content.append({"type": "redacted_thinking", "data": block["data"]})
            else:
                check.dropped.append("redacted_thinking")
            continue
        # tool_use
        call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
        where = f"block {index} (tool_use)"
        if not isinstance(call_id, str) or not TOOL_USE_ID_RE.match(call_id):
            shown = call_id[:40] + "..." if isinstance(call_id, str) and len(call_id) > 40 else call_id
            check.problems.append(f"{where}: invalid id {shown!r} (1-64 of a-z A-Z 0-9 _ -)")
            continue
        if call_id in ids:
            check.problems.append(f"{where}: id {call_id!r} used twice in one turn")
            continue
        if call_id in seen_ids:
            check.problems.append(f"{where}: id {call_id!r} was already used earlier in this run")
            continue
        ids.add(call_id)
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            check.problems.append(f"{where}: invalid tool name {str(name)[:80]!r}")
            continue
        if not isinstance(arguments, dict):
            check.problems.append(f"{where}: input is not a JSON object")
            continue
        size_problem = _input_problem(arguments)
        if size_problem:
            check.problems.append(f"{where}: {size_problem}")
            continue
        check.calls.append(CheckedCall(call_id, name, arguments))
        check.content.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    if stop_reason in TRUNCATED_STOP_REASONS:
        check.truncated = True
    elif stop_reason not in COMPLETE_STOP_REASONS:
        if stop_reason != "refusal":
            check.problems.append(f"unexpected stop_reason {str(stop_reason)[:40]!r}")
    return check


def text_only(content: list[dict]) -> list[dict]:
    """The blocks of a turn that need no answer (no tool_use): what the conversation keeps of a turn
    the controller did not act on."""
    return [b for b in content if b.get("type") == "text"]
