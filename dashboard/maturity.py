"""An agent's maturity tier, after seeds/001 "Production Agent Maturity".

Production-grade: budget caps + approvals on irreversible actions + tool scopes + trace logs + a
kill switch tested in a passed drill within the last 30 days. Beta-ready: budget caps + logging +
narrow scope. Internal tool only: logging, but scopes are not narrow. Don't ship: no budget caps,
or an irreversible tool that can act without a person.

The seed's "Internal tool only = logging only, no hard caps" overlaps "Don't ship = no budget
caps"; we let Don't ship win (fail closed) and use Internal for an agent that has caps but a
grant without a narrow, valid scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from agentops.guardrails.models import Drill, DrillStatus
from agentops.tools.registry import get_tool

PRODUCTION = "Production-grade"
BETA = "Beta-ready"
INTERNAL = "Internal tool only"
DONT_SHIP = "Don't ship"

TIER_CSS = {PRODUCTION: "ok", BETA: "info", INTERNAL: "warn", DONT_SHIP: "bad"}
DRILL_MAX_AGE = timedelta(days=30)
_UNSET: Any = object()
_CAP_FIELDS = ("max_tokens", "max_cost_usd", "max_tool_calls", "max_iterations", "max_wall_clock_s")


def last_passed_drill_at() -> datetime | None:
    return Drill.objects.filter(status=DrillStatus.PASSED).order_by("-started_at").values_list("started_at", flat=True).first()


def _risk_class(tool_name: str) -> str:
    tool = get_tool(tool_name)
    # An unknown tool is treated as the most dangerous kind: fail closed.
    return tool.risk_class if tool is not None else "irreversible"


def _scope_problems(tool_name: str, scope: Any) -> list[str]:
    tool = get_tool(tool_name)
    if tool is None:
        return ["unknown tool"]
    # A tool with nothing to narrow (it only ever acts on the run's own work) is as narrow as it gets.
    if not scope and tool.scope_schema.get("properties"):
        return ["no scope"]
    return tool.scope_errors(scope)


def maturity_tier(
    agent: Any,
    *,
    policy: Any = _UNSET,
    grants: Iterable[Any] | None = None,
    drill_passed_at: datetime | None = _UNSET,
    now: datetime | None = None,
) -> tuple[str, list[str]]:
    """(tier, reasons). Pass policy/grants/drill_passed_at to avoid queries when listing agents."""
    if policy is _UNSET:
        policy = getattr(agent, "policy", None) if _has_policy(agent) else None
    if grants is None:
        grants = list(agent.grants.all())
    if drill_passed_at is _UNSET:
        drill_passed_at = last_passed_drill_at()
    now = now or timezone.now()

    reasons: list[str] = []
    has_caps = policy is not None and all(getattr(policy, f, None) for f in _CAP_FIELDS)
    if not has_caps:
        reasons.append("no per-run budget caps (tokens, cost, tool calls, iterations, time)")
    unattended = [g.tool for g in grants if _risk_class(g.tool) == "irreversible" and g.approval == "never"]
    if unattended:
        reasons.append(f"irreversible tool without a person: {', '.join(sorted(unattended))}")
    if reasons:
        return DONT_SHIP, reasons

    unscoped = [g.tool for g in grants if _scope_problems(g.tool, g.scope)]
    if unscoped:
        return INTERNAL, [f"tool without a narrow, valid scope: {', '.join(sorted(unscoped))}"]

    if drill_passed_at is None:
        return BETA, ["kill switch never proven in a passed drill"]
    if now - drill_passed_at > DRILL_MAX_AGE:
        return BETA, [f"last passed drill is older than 30 days ({drill_passed_at:%Y-%m-%d})"]
    return PRODUCTION, ["budget caps, approvals on irreversible actions, scoped tools, traces, drill passed"]


def _has_policy(agent: Any) -> bool:
    try:
        agent.policy
    except ObjectDoesNotExist:
        return False
    return True
