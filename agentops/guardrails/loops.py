"""Loop detection over a run's actions: a model retrying the same broken call burns money quietly.

Incremental (constant work per action), so a 1,000-step run pays no more per step than a short one.
Every call the model makes counts, refused or not: a refusal is a failed action like any other.
Patterns caught: the same call failing, identical action/observation pairs, A-B-A-B alternation,
near-identical calls (the same call with only numbers changed, e.g. read_file start_line 1, 2, 3),
a long streak of failures of any kind, and asking again for what a person already rejected.

What the controller does at a detection is the policy's ``loop_escalation`` (``escalation``): stop at
once, or first nudge the model (the detection is resolved and the pattern's counters stay, so the next
detection stops), and with ``nudge_ask`` then ask a person, whose "continue" starts the repetition
counters again. A call that only waits (``Tool.waits``), a run waiting for a person, and the progress a
long-running call streams are never actions here: the detector counts finished calls only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

SAME_FAILING_CALL_LIMIT = 3
IDENTICAL_PAIR_LIMIT = 4
ALTERNATION_WINDOW = 6
# Distinct variants of one call differing only in numbers (a paging or counting loop).
NEAR_DUPLICATE_LIMIT = 8
# Consecutive failed or refused calls, whatever they were.
FAILURE_STREAK_LIMIT = 10
# Failed calls of one tool answered with the very same error, whatever their arguments.
SAME_ERROR_LIMIT = 5
# Rejections by a person of calls of one tool: the model is told no; asking on is a loop.
REJECTION_LIMIT = 3
_DIGITS = re.compile(r"[0-9]+")


def action_key(tool: str, arguments: Any) -> str:
    return tool + ":" + json.dumps(arguments, sort_keys=True, default=str)


def _masked(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return "#"
    if isinstance(value, str):
        return _DIGITS.sub("#", value)
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return str(value)


def shape_key(tool: str, arguments: Any) -> str:
    """The call with every number masked: calls that differ only in numbers share a shape."""
    return tool + ":" + json.dumps(_masked(arguments), sort_keys=True, default=str)


def observation_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:16]


# What the controller does at each detection, in turn, per Policy.loop_escalation; then it stops.
ESCALATION_LADDERS: dict[str, tuple[str, ...]] = {"stop": (), "nudge": ("nudge",), "nudge_ask": ("nudge", "ask")}


def escalation(mode: str, handled: int) -> str:
    """What to do at a detection ("nudge", "ask" or "stop") when ``handled`` earlier ones were nudged
    or asked about. An unknown mode stops (fail closed)."""
    ladder = ESCALATION_LADDERS.get(mode, ())
    return ladder[handled] if handled < len(ladder) else "stop"


def nudge_text(reason: str) -> str:
    """The controller's message to the model at its first detection."""
    return f"The controller detected a loop: {reason}. Change approach or finish; the next detection stops the run."


@dataclass(frozen=True)
class Detection:
    """A loop found: ``pattern`` names the rule, ``key`` the counter that tripped it (to reset it)."""

    pattern: str
    key: tuple[str, ...]
    reason: str

    def as_payload(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "key": list(self.key), "reason": self.reason}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Detection:
        return cls(str(payload.get("pattern", "")), tuple(str(k) for k in payload.get("key") or ()), str(payload.get("reason", "")))


@dataclass(frozen=True)
class Action:
    key: str
    observation_hash: str
    failed: bool
    shape: str = ""  # shape_key of the call; empty: not checked for near-duplicates


class LoopDetector:
    def __init__(self) -> None:
        self.failures: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.recent: deque[str] = deque(maxlen=ALTERNATION_WINDOW)
        self.variants: dict[str, set[str]] = {}
        self.same_errors: Counter[tuple[str, str]] = Counter()
        self.streak = 0
        self.rejected_keys: set[str] = set()
        self.rejections: Counter[str] = Counter()
        self.tripped: Detection | None = None
        self.handled = 0  # detections the controller nudged or asked about (the escalation ladder's rung)

    def _trip(self, pattern: str, key: tuple[str, ...], reason: str, *, override: bool = False) -> None:
        if self.tripped is None or override:
            self.tripped = Detection(pattern, key, reason)

    def rejected(self, tool: str, key: str) -> None:
        """A person rejected this call."""
        self.rejected_keys.add(key)
        self.rejections[tool] += 1
        if self.rejections[tool] >= REJECTION_LIMIT:
            self._trip("rejections", (tool,), f"{self.rejections[tool]} calls of {tool} rejected by a person")

    def was_rejected(self, key: str) -> bool:
        return key in self.rejected_keys

    def add(self, action: Action) -> None:
        if action.failed:
            error = (action.key.split(":", 1)[0], action.observation_hash)
            self.same_errors[error] += 1
            if self.same_errors[error] >= SAME_ERROR_LIMIT:
                self._trip("same_error", error, f"{self.same_errors[error]} calls of {error[0]} failed with the same error")
            self.failures[action.key] += 1
            if self.failures[action.key] >= SAME_FAILING_CALL_LIMIT:
                self._trip(
                    "same_failing_call", (action.key,), f"the same tool call failed {self.failures[action.key]} times: {action.key[:200]}", override=True
                )
        pair = (action.key, action.observation_hash)
        self.pairs[pair] += 1
        if self.pairs[pair] >= IDENTICAL_PAIR_LIMIT:
            self._trip("identical_pairs", pair, f"{self.pairs[pair]} identical action/observation pairs: {action.key[:200]}")
        self.recent.append(action.key)
        self.streak = self.streak + 1 if action.failed else 0
        if self.streak >= FAILURE_STREAK_LIMIT:
            self._trip("failure_streak", (), f"{self.streak} failed or refused calls in a row")
        if action.shape and action.shape != action.key:
            variants = self.variants.setdefault(action.shape, set())
            if len(variants) < NEAR_DUPLICATE_LIMIT:
                variants.add(action.key)
            if len(variants) >= NEAR_DUPLICATE_LIMIT:
                self._trip("near_duplicates", (action.shape,), f"{len(variants)} near-identical calls differing only in numbers: {action.shape[:200]}")

    def detect(self, proposed_key: str | None = None) -> Detection | None:
        """The loop found before the next action (proposed_key), or None."""
        if self.tripped:
            return self.tripped
        if proposed_key is None:
            return None
        window = list(self.recent)[-(ALTERNATION_WINDOW - 1) :] + [proposed_key]
        if len(window) == ALTERNATION_WINDOW:
            a, b = window[0], window[1]
            if a != b and all(k == (a if i % 2 == 0 else b) for i, k in enumerate(window)):
                return Detection("alternation", (a, b), f"A-B-A-B pattern over {ALTERNATION_WINDOW} steps: {a[:100]} / {b[:100]}")
        return None

    def check(self, proposed_key: str | None = None) -> str | None:
        """The reason to stop before the next action (proposed_key), or None."""
        found = self.detect(proposed_key)
        return found.reason if found else None

    def resolved(self, detection: Detection, *, reset: bool) -> None:
        """The controller dealt with a detection without stopping (a nudge, a question to a person):
        it climbs one rung, and the detector goes on. Without ``reset`` the counters stay, so the next
        repeat is the next detection. With ``reset`` (a person said continue) the repetition counters
        start again: the pattern's, and the others the same repetition fed (a call failing the same
        way also counts as identical pairs and as the same error); what a person rejected stays
        rejected."""
        self.tripped = None
        if not reset:
            self.handled += 1
            return
        self.failures.clear()
        self.pairs.clear()
        self.recent.clear()
        self.variants.clear()
        self.same_errors.clear()
        self.streak = 0
        self.rejections.clear()


def detect_loop(history: list[Action], proposed_key: str | None = None) -> str | None:
    detector = LoopDetector()
    for action in history:
        detector.add(action)
    return detector.check(proposed_key)
