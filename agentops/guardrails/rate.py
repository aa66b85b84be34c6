"""The rate limit: at most N tool calls a minute per run, over a sliding window."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class RateLimit:
    def __init__(self, limit_per_minute: int | None, started: Iterable[float] = ()) -> None:
        self.limit = limit_per_minute
        self.started: deque[float] = deque(started)  # when each tool call started (time.time())

    def note(self, at: float) -> None:
        self.started.append(at)

    def wait_s(self, now: float) -> float | None:
        """Seconds to wait before the next call may start; None when it may start now."""
        if not self.limit:
            return None
        while self.started and self.started[0] < now - 60:
            self.started.popleft()
        if len(self.started) < self.limit:
            return None
        return self.started[0] + 60 - now
