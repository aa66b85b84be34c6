"""A run's budget: the policy's caps, the one rule that derives cost limits from history, and the
extensions a person granted to one run.

seeds/001: the cost alarm sits at 10x and the hard stop at 50x the median cost of the agent's recent
successful runs, unless a person set the cost budget. The controller enforces that rule and the agent
page suggests it; both read it from here, so the page never suggests a limit the controller does not
enforce.

A per-run cap the policy lists in ``extendable_caps`` does not end the run when reached: the
controller asks a person to extend it (a ``budget_extension`` decision). ``run_budget`` is the one
place the effective caps of a run are computed (the policy's, plus the extensions approved for that
run); the caps guard and the run page's meters both read it. Daily caps are never extendable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from statistics import median
from typing import Any

from agentops.agents.models import Agent, Policy
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind
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
    # Extensions a person granted to this run, by cap name (see CAP_FIELDS), already added to the caps.
    extensions: dict[str, Decimal] = field(default_factory=dict)

    def limit(self, cap: str) -> Any:
        """The cap's current limit, by the name decisions use ("cost", "tokens", ...)."""
        return getattr(self, CAP_FIELDS[cap])


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


# The per-run caps by the name decisions and Policy.extendable_caps use: the Budget field, and the
# measure name the caps guard reports (guardrails/caps.py).
CAP_FIELDS = {"cost": "max_cost_usd", "tokens": "max_tokens", "tool_calls": "max_tool_calls", "iterations": "max_iterations", "wall_clock": "max_wall_clock_s"}
CAP_OF_MEASURE = {"cost_usd": "cost", "tokens": "tokens", "tool_calls": "tool_calls", "iterations": "iterations", "wall_clock_s": "wall_clock"}
_CENT = Decimal("0.01")


def approved_extensions(run: Run | int) -> dict[str, Decimal]:
    """The extensions people approved for this run, summed per cap."""
    total: dict[str, Decimal] = {}
    rows = Approval.objects.filter(run=run, kind=DecisionKind.BUDGET_EXTENSION, status=ApprovalStatus.APPROVED).values_list("request", "answer")
    for request, answer in rows:
        cap = (request or {}).get("cap")
        try:
            amount = Decimal(str(answer).strip())
        except ArithmeticError:
            continue  # the write path accepts only amounts > 0; anything else extends nothing
        if cap in CAP_FIELDS and amount.is_finite() and amount > 0:
            total[cap] = total.get(cap, Decimal("0")) + amount
    return total


def run_budget(run: Run, policy: Policy | None = None) -> Budget:
    """The effective caps of one run: the policy's (``effective_budget``) plus the extensions
    approved for this run only."""
    budget = effective_budget(policy if policy is not None else run.agent.policy)
    for cap, amount in approved_extensions(run).items():
        name = CAP_FIELDS[cap]
        current = getattr(budget, name)
        setattr(budget, name, current + amount if isinstance(current, Decimal) else current + int(amount))
        budget.extensions[cap] = amount
    return budget


def default_extension(cap: str, limit: Any) -> Decimal:
    """The amount a budget extension proposes: half the cap's current limit (at least one unit)."""
    if cap == "cost":
        return max(_CENT, (Decimal(limit) / 2).quantize(_CENT))
    return Decimal(max(1, int(limit) // 2))


# How a person reads each cap's name in a question ("tool-call cap 100 reached ...").
CAP_LABELS = {"cost": "cost", "tokens": "token", "tool_calls": "tool-call", "iterations": "iteration", "wall_clock": "wall-clock"}


def describe_amount(cap: str, value: Any) -> str:
    """A cap's amount as a person reads it ("$2.00", "120,000", "60 s")."""
    if cap == "cost":
        amount = Decimal(value)
        return f"${amount.quantize(_CENT)}" if amount >= _CENT or not amount else f"${amount}"
    number = f"{int(Decimal(value)):,}"
    return f"{number} s" if cap == "wall_clock" else number


def extension_question(cap: str, *, limit: Any, used: Any, extend_by: Any) -> str:
    """What a budget extension asks: "cost cap $2.00 reached (spent $2.01); extend by $1.00?"."""
    verb = "spent" if cap == "cost" else "used"
    return f"{CAP_LABELS[cap]} cap {describe_amount(cap, limit)} reached ({verb} {describe_amount(cap, used)}); extend by {describe_amount(cap, extend_by)}?"
