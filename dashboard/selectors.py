"""Reads shared by the dashboard's views, its JSON API and its live consumers: one place that knows which
rows a page, an endpoint or a websocket message is built from (writes go through the services)."""

from __future__ import annotations

from typing import Any

from django.db.models import Max, QuerySet

from agentops.approvals.models import Approval
from agentops.guardrails.models import ControlState
from agentops.runs.models import Run, Step
from dashboard import timeline


def runs_with_agent() -> QuerySet[Run]:
    return Run.objects.select_related("agent")


def runs_page(*, status: str | None, agent_slug: str | None, before_id: int | None, limit: int) -> list[Run]:
    """Newest first; ``before_id`` pages backwards (keyset, so new runs do not shift a page)."""
    qs = runs_with_agent().order_by("-id")
    if status:
        qs = qs.filter(status=status)
    if agent_slug:
        qs = qs.filter(agent__slug=agent_slug)
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    return list(qs[:limit])


def approvals_with_status(status: str, *, limit: int, kind: str | None = None) -> list[Approval]:
    """Decisions: pending ones by deadline (soonest first); decided ones newest decision first."""
    items = Approval.objects.filter(status=status).select_related("run", "agent")
    if kind is not None:
        items = items.filter(kind=kind)
    return list(items.order_by("expires_at" if status == "pending" else "-decided_at")[:limit])


def run_exists(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id).exists()


def newest_step_seq(run_id: int) -> int:
    next_seq = Run.objects.filter(pk=run_id).values_list("next_seq", flat=True).first()
    return (next_seq or 1) - 1


def run_with_policy(run_id: int) -> Run:
    return Run.objects.select_related("agent__policy").get(pk=run_id)


def run_context(run: Run) -> dict[str, Any]:
    """What the run page's summary shows: the run, its budget bars against the policy, its step count."""
    policy = timeline.policy_of(run.agent)
    return {"run": run, "bars": timeline.budget_bars(run, policy), "policy": policy, "total_steps": run.next_seq - 1}


def overview_state() -> tuple[bool, int]:
    """Whether the kill switch is engaged, and the id of the newest step anywhere (changes when any run moves)."""
    engaged = ControlState.objects.filter(pk=1, engaged=True).exists()
    return engaged, Step.objects.aggregate(newest=Max("id"))["newest"] or 0
