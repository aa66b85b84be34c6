"""Loop detection over a run's actions: a model retrying the same broken call burns money quietly.

Incremental (constant work per action), so a 1,000-step run pays no more per step than a short one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

SAME_FAILING_CALL_LIMIT = 3
IDENTICAL_PAIR_LIMIT = 4
ALTERNATION_WINDOW = 6


def action_key(tool: str, arguments: Any) -> str:
    return tool + ":" + json.dumps(arguments, sort_keys=True, default=str)


def observation_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:16]


@dataclass(frozen=True)
class Action:
    key: str
    observation_hash: str
    failed: bool


class LoopDetector:
    def __init__(self) -> None:
        self.failures: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.recent: deque[str] = deque(maxlen=ALTERNATION_WINDOW)
        self.tripped: str | None = None

    def add(self, action: Action) -> None:
        if action.failed:
            self.failures[action.key] += 1
            if self.failures[action.key] >= SAME_FAILING_CALL_LIMIT:
                self.tripped = f"the same tool call failed {self.failures[action.key]} times: {action.key[:200]}"
        pair = (action.key, action.observation_hash)
        self.pairs[pair] += 1
        if self.pairs[pair] >= IDENTICAL_PAIR_LIMIT and self.tripped is None:
            self.tripped = f"{self.pairs[pair]} identical action/observation pairs: {action.key[:200]}"
        self.recent.append(action.key)

    def check(self, proposed_key: str | None = None) -> str | None:
        """The reason to stop before the next action (proposed_key), or None."""
        if self.tripped:
            return self.tripped
        if proposed_key is None:
            return None
        window = list(self.recent)[-(ALTERNATION_WINDOW - 1) :] + [proposed_key]
        if len(window) == ALTERNATION_WINDOW:
            a, b = window[0], window[1]
            if a != b and all(k == (a if i % 2 == 0 else b) for i, k in enumerate(window)):
                return f"A-B-A-B pattern over {ALTERNATION_WINDOW} steps: {a[:100]} / {b[:100]}"
        return None


def detect_loop(history: list[Action], proposed_key: str | None = None) -> str | None:
    detector = LoopDetector()
    for action in history:
        detector.add(action)
    return detector.check(proposed_key)
