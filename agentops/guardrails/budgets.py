"""A run's budget: the policy's caps, and the one rule that derives cost limits from history.

seeds/001: the cost alarm sits at 10x and the hard stop at 50x the median cost of the agent's recent
successful runs, unless a person set the cost budget. The controller enforces that rule and the agent
page suggests it; both read it from here, so the page never suggests a limit the controller does not
enforce.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from statistics import median
from typing import Any

from agentops.agents.models import Agent, Policy
from agentops.runs.models import Run, RunStatus

HISTORY_SAMPLE = 100  # the most recent successful runs the median is taken over
HISTORY_MIN_RUNS = 5  # successful runs before history-based budget defaults apply
ALARM_FACTOR = 10
HARD_STOP_FACTOR = 50
_MONEY = Decimal("0.000001")


@dataclass(frozen=True)
class BudgetHistory:
    runs: int
    median: Decimal | None
    alarm: Decimal | None
    hard_stop: Decimal | None

    @property
    def applies(self) -> bool:
        """Whether the controller uses these limits (for an agent whose budget no person set)."""
        return self.runs >= HISTORY_MIN_RUNS

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "median": self.median,
            "alarm": self.alarm,
            "hard_stop": self.hard_stop,
            "applies": self.applies,
            "min_runs": HISTORY_MIN_RUNS,
        }


def cost_history(agent: Agent | int) -> list[Decimal]:
    """Costs of the agent's most recent successful runs that cost something (a free run, scripted or
    replayed, says nothing about what a real one costs)."""
    return list(
        Run.objects.filter(agent=agent, status=RunStatus.SUCCEEDED, cost_usd__gt=0).order_by("-finished_at").values_list("cost_usd", flat=True)[:HISTORY_SAMPLE]
    )


def budget_history(agent: Agent | int) -> BudgetHistory:
    costs = cost_history(agent)
    if not costs:
        return BudgetHistory(runs=0, median=None, alarm=None, hard_stop=None)
    typical = Decimal(median(costs))
    return BudgetHistory(
        runs=len(costs),
        median=typical.quantize(_MONEY),
        alarm=(typical * ALARM_FACTOR).quantize(_MONEY),
        hard_stop=(typical * HARD_STOP_FACTOR).quantize(_MONEY),
    )


@dataclass
class Budget:
    max_tokens: int
    max_cost_usd: Decimal
    max_tool_calls: int
    max_iterations: int
    max_wall_clock_s: int
    alarm_tokens: int | None
    alarm_cost_usd: Decimal | None
    alarm_tool_calls: int | None
    alarm_iterations: int | None
    alarm_wall_clock_s: int | None
    source: str = "policy"


def effective_budget(policy: Policy) -> Budget:
    """The policy's caps, with the cost alarm and cap following the agent's history unless a person
    set them."""
    budget = Budget(
        max_tokens=policy.max_tokens,
        max_cost_usd=policy.max_cost_usd,
        max_tool_calls=policy.max_tool_calls,
        max_iterations=policy.max_iterations,
        max_wall_clock_s=policy.max_wall_clock_s,
        alarm_tokens=policy.alarm_tokens,
        alarm_cost_usd=policy.alarm_cost_usd,
        alarm_tool_calls=policy.alarm_tool_calls,
        alarm_iterations=policy.alarm_iterations,
        alarm_wall_clock_s=policy.alarm_wall_clock_s,
    )
    if not policy.budget_set_by_person:
        history = budget_history(policy.agent_id)
        if history.applies and history.alarm is not None and history.hard_stop is not None:
            budget.alarm_cost_usd = history.alarm
            budget.max_cost_usd = history.hard_stop
            budget.source = f"history: median ${history.median:.4f} over {history.runs} runs"
    return budget
