"""A planner that replays recorded turns: offline runs, demos, drills and controller tests.

Stateless on purpose: the next turn is chosen by counting the assistant messages already in the
conversation, so a run rebuilt from its steps after a crash continues from the right turn in any
process.

Script format (YAML or JSON), a list of turns (or ``{"turns": [...]}``):

    - text: "Reading the stack trace first."
      tool_calls:
        - name: read_file
          arguments: {path: app/views.py}
          id: toolu_1            # optional; default toolu_scripted_<turn>_<call>, both 0-based
      stop_reason: tool_use       # optional; default tool_use when there are calls, else end_turn
      input_tokens: 1200          # optional token counts, priced like real ones when the model
      output_tokens: 80           #   has a price (so budget caps can be exercised offline)
      cache_read_tokens: 0
      cache_write_tokens: 0
      delay_s: 0.2                # optional simulated model latency

or a mapping ``{turns: [...], pace_s: 2}``, where ``pace_s`` is the delay of every turn that names
none (a demo paced for a person watching it live) and ``turns`` may name another script file,
relative to this one (the demo replays the agent's recorded turns without copying them).
"""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from pathlib import Path

import yaml

from .base import ModelTurn, OnRetry, Planner, PlannerError, ToolCall, text_of
from .prices import UnknownModelPrice, cost_of

FINISHED_TEXT = "Script finished."
_TURN_KEYS = {
    "text",
    "tool_calls",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "delay_s",
}
_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class ScriptError(ValueError):
    """The script file or list is not a valid script."""


def load_script(source: list[dict] | dict | str | Path) -> list[dict]:
    """Read and validate a script from a list, a ``{"turns": [...]}`` dict, or a .yaml/.yml/.json path."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScriptError(f"cannot read script {path}: {exc}") from exc
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ScriptError(f"script {path} does not parse: {exc}") from exc
    else:
        path = None
        data = source
    return _validate(_resolve(data, path))


def _resolve(data: object, path: Path | None) -> object:
    """Apply a mapping's ``pace_s`` and read its ``turns`` from another file when they name one."""
    if not (isinstance(data, dict) and "turns" in data):
        return data
    unknown = set(data) - {"turns", "pace_s"}
    if unknown:
        raise ScriptError(f"a script mapping has unknown keys: {', '.join(sorted(unknown))}")
    turns = data["turns"]
    if isinstance(turns, str):
        if path is None:
            raise ScriptError("turns may name a file only in a script read from a file")
        other = (path.parent / turns).resolve()
        try:
            turns = yaml.safe_load(other.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ScriptError(f"cannot read the turns of {path} from {other}: {exc}") from exc
        # One level only: the named file holds turns, never another reference.
        if isinstance(turns, dict):
            turns = turns.get("turns")
        if not isinstance(turns, list):
            raise ScriptError(f"{other} holds no list of turns")
    pace = data.get("pace_s", 0)
    if not isinstance(pace, (int, float)) or isinstance(pace, bool) or not 0 <= pace <= 60:
        raise ScriptError("pace_s must be a number of seconds between 0 and 60")
    if pace and isinstance(turns, list):
        turns = [{**turn, "delay_s": pace} if isinstance(turn, dict) and "delay_s" not in turn else turn for turn in turns]
    return turns


def parse_script(text: str) -> list[dict]:
    """A script given inline as YAML (JSON is valid YAML), e.g. stored on an agent."""
    try:
        return _validate(_resolve(yaml.safe_load(text), None))
    except yaml.YAMLError as exc:
        raise ScriptError(f"script does not parse: {exc}") from exc


def _validate(data: object) -> list[dict]:
    if isinstance(data, dict) and "turns" in data:
        data = data["turns"]
    if not isinstance(data, list):
        raise ScriptError("a script is a list of turns")
    turns = []
    for n, turn in enumerate(data):
        if not isinstance(turn, dict):
            raise ScriptError(f"turn {n} must be a mapping")
        unknown = set(turn) - _TURN_KEYS
        if unknown:
            raise ScriptError(f"turn {n} has unknown keys: {', '.join(sorted(unknown))}")
        if not isinstance(turn.get("text", ""), str):
            raise ScriptError(f"turn {n}: text must be a string")
        calls = turn.get("tool_calls") or []
        if not isinstance(calls, list):
            raise ScriptError(f"turn {n}: tool_calls must be a list")
        for i, call in enumerate(calls):
            # Arguments are deliberately not checked: scripts may feed the controller bad input.
            if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
                raise ScriptError(f"turn {n}, tool call {i}: needs a name")
            if "id" in call and not isinstance(call["id"], str):
                raise ScriptError(f"turn {n}, tool call {i}: id must be a string")
        for key in _TOKEN_KEYS:
            value = turn.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ScriptError(f"turn {n}: {key} must be an integer >= 0")
        delay = turn.get("delay_s", 0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            raise ScriptError(f"turn {n}: delay_s must be a number >= 0")
        turns.append(turn)
    return turns


class ScriptedPlanner(Planner):
    kind = "scripted"

    def __init__(self, script: list[dict] | dict | str | Path, *, strict: bool = False) -> None:
        """``strict``: raise PlannerError(kind="script_exhausted") past the end instead of
        returning a final "Script finished." turn."""
        self.turns = load_script(script)
        self.strict = strict
        # (list identity, length, assistant count) of the conversation seen last: a conversation
        # that only grew since is counted from where we stopped, so long runs stay linear.
        self._seen: tuple[int, int, int] | None = None

    def _assistant_turns(self, messages: list[dict]) -> int:
        start, count = 0, 0
        if self._seen is not None and self._seen[0] == id(messages) and self._seen[1] <= len(messages):
            start, count = self._seen[1], self._seen[2]
        count += sum(1 for m in messages[start:] if isinstance(m, dict) and m.get("role") == "assistant")
        self._seen = (id(messages), len(messages), count)
        return count

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
        started = time.monotonic()
        index = self._assistant_turns(messages)
        if index >= len(self.turns):
            if self.strict:
                raise PlannerError(f"script exhausted: {len(self.turns)} turns, asked for turn {index + 1}", kind="script_exhausted")
            turn: dict = {"text": FINISHED_TEXT, "stop_reason": "end_turn"}
        else:
            turn = self.turns[index]
        if turn.get("delay_s"):
            time.sleep(turn["delay_s"])

        content: list[dict] = []
        if turn.get("text"):
            content.append({"type": "text", "text": turn["text"]})
        calls = []
        for i, spec in enumerate(turn.get("tool_calls") or []):
            call = ToolCall(
                id=spec.get("id") or f"toolu_scripted_{index}_{i}",
                name=spec["name"],
                # Copies: the controller may keep or alter what it is given; the script must not change.
                arguments=copy.deepcopy(spec.get("arguments", {})),
            )
            calls.append(call)
            content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": copy.deepcopy(call.arguments)})

        tokens = {key: turn.get(key, 0) for key in _TOKEN_KEYS}
        cost = Decimal("0")
        if any(tokens.values()):
            try:
                cost = cost_of(model, **tokens)
            except UnknownModelPrice:
                pass  # a scripted run spends nothing real
        return ModelTurn(
            text=text_of(content),
            tool_calls=calls,
            stop_reason=turn.get("stop_reason") or ("tool_use" if calls else "end_turn"),
            model=model,
            input_tokens=tokens["input_tokens"],
            output_tokens=tokens["output_tokens"],
            cache_read_tokens=tokens["cache_read_tokens"],
            cache_write_tokens=tokens["cache_write_tokens"],
            cost_usd=cost,
            latency_ms=int((time.monotonic() - started) * 1000),
            scripted=True,
            content=content,
        )
