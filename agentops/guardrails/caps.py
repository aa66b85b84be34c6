"""Per-run caps and their alarms: tokens, cost, iterations, tool calls, wall clock.

Spent measures (tokens, cost, wall clock) stop the run once they reach the cap. Counted ones stop it
when the next call would pass the cap: iterations before a model call, tool calls before a new tool
call. An alarm is raised once per measure, when it reaches its threshold below the cap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentops.guardrails.budgets import Budget
from agentops.runs.models import Run


@dataclass(frozen=True)
class Crossing:
    measure: str
    value: Any
    limit: Any


@dataclass(frozen=True)
class CapVerdict:
    alarms: list[Crossing]  # newly passed alarm thresholds, in the order of the measures
    cap: Crossing | None  # the cap that stops the run, if any


class RunCaps:
    def __init__(self, budget: Budget, alarms_raised: Iterable[str]) -> None:
        self.budget = budget
        self.alarms_raised = set(alarms_raised)

    def check(self, run: Run, wall_clock_s: float, moment: str) -> CapVerdict:
        """moment: "model" (a model call is next), "tool" (a new tool call is next) or "after"
        (something was just spent). The caller records each alarm found and marks it raised."""
        b = self.budget
        measures = (
            ("tokens", run.total_tokens, b.max_tokens, b.alarm_tokens, True),
            ("cost_usd", run.cost_usd, b.max_cost_usd, b.alarm_cost_usd, True),
            ("iterations", run.iterations, b.max_iterations, b.alarm_iterations, moment == "model"),
            ("tool_calls", run.tool_calls, b.max_tool_calls, b.alarm_tool_calls, moment == "tool"),
            ("wall_clock_s", int(wall_clock_s), b.max_wall_clock_s, b.alarm_wall_clock_s, True),
        )
        alarms: list[Crossing] = []
        for name, value, cap, alarm, applies in measures:
            if alarm is not None and value >= alarm and name not in self.alarms_raised:
                alarms.append(Crossing(name, value, alarm))
            if applies and value >= cap:
                return CapVerdict(alarms, Crossing(name, value, cap))
        return CapVerdict(alarms, None)

    def mark_raised(self, measure: str) -> list[str]:
        """The alarms raised so far, this one included (as ``Run.alarms_raised`` stores them)."""
        self.alarms_raised.add(measure)
        return sorted(self.alarms_raised)
