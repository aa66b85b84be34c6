"""What a guard says when a run must end: ``StopRun``, raised by the controller and its guards."""

from __future__ import annotations

from typing import Any

from agentops.runs.models import RunOutcome

# The outcome a stop gets when its guard does not name one.
OUTCOME_OF_GUARD = {
    "budget": RunOutcome.BUDGET,
    "daily_cap": RunOutcome.BUDGET,
    "daily_cost_cap": RunOutcome.BUDGET,
    "loop_detector": RunOutcome.LOOP,
    "kill_switch": RunOutcome.KILLED_BY_SWITCH,
    "paused": RunOutcome.STOPPED_BY_PERSON,
    "stopped_by_person": RunOutcome.STOPPED_BY_PERSON,
    "infrastructure": RunOutcome.INFRASTRUCTURE,
    "lease": RunOutcome.INFRASTRUCTURE,
    "stop_check": RunOutcome.INFRASTRUCTURE,
}


class StopRun(Exception):
    """Ends the run. ``recorded``: a step explaining the stop was already written; otherwise the
    controller writes a guardrail step for it before finishing (every stop explains itself)."""

    def __init__(
        self, status: str, reason: str, *, guard: str = "stop", outcome: str = "", recorded: bool = False, payload: dict[str, Any] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.guard = guard
        self.outcome = outcome
        self.recorded = recorded
        self.payload = payload or {}

    @property
    def final_outcome(self) -> str:
        return self.outcome or OUTCOME_OF_GUARD.get(self.guard, "")
