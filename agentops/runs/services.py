"""One write path per run state change: create, enqueue, halt, cancel, finish."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agentops.agents.models import Agent, Trigger
from agentops.audit.services import actor_label_of, audit_record
from agentops.guardrails.daily import daily_consume
from agentops.guardrails.killswitch import kill_switch_engaged
from agentops.runs.models import ACTIVE_STATUSES, Run, RunStatus, StepKind
from agentops.runs.steps import step_record

log = logging.getLogger(__name__)

Actor = AbstractBaseUser | str | None


class RunRefused(Exception):
    """A run was not started; the reason is recorded in the audit log."""


def _refuse(*, agent: Agent, actor: Actor, reason: str, trigger_kind: str, fingerprint: str | None) -> RunRefused:
    audit_record(
        actor=actor,
        action="run.refused",
        target=agent,
        after={"trigger_kind": trigger_kind, "fingerprint": fingerprint},
        detail=reason,
    )
    return RunRefused(reason)


def run_create(
    *,
    agent: Agent,
    input: str,
    actor: Actor = None,
    trigger: Trigger | None = None,
    trigger_kind: str = "manual",
    context: dict[str, Any] | None = None,
    fingerprint: str | None = None,
    planner_kind: str | None = None,
    enqueue: bool = True,
) -> Run:
    """Start a run, or raise RunRefused (kill switch, paused agent, daily run cap, duplicate problem)."""
    if kill_switch_engaged():
        raise _refuse(agent=agent, actor=actor, reason="kill switch engaged", trigger_kind=trigger_kind, fingerprint=fingerprint)
    agent.refresh_from_db(fields=["paused"])
    if agent.paused:
        raise _refuse(agent=agent, actor=actor, reason="agent paused", trigger_kind=trigger_kind, fingerprint=fingerprint)
    if fingerprint and Run.objects.filter(fingerprint=fingerprint, status__in=ACTIVE_STATUSES).exists():
        raise _refuse(agent=agent, actor=actor, reason="a run for this problem is already active", trigger_kind=trigger_kind, fingerprint=fingerprint)
    policy = agent.policy
    if not daily_consume(agent_id=agent.pk, key="runs", amount=1, cap=policy.daily_max_runs):
        raise _refuse(agent=agent, actor=actor, reason=f"daily run cap reached ({policy.daily_max_runs})", trigger_kind=trigger_kind, fingerprint=fingerprint)
    kind = resolve_planner_kind(planner_kind or agent.config.get("planner") or "auto")
    try:
        with transaction.atomic():
            run = Run.objects.create(
                agent=agent,
                trigger=trigger,
                trigger_kind=trigger_kind,
                input=input,
                context=context or {},
                fingerprint=fingerprint,
                planner_kind=kind,
                model=agent.model,
            )
            step_record(
                run=run,
                kind=StepKind.INPUT,
                payload={"text": input, "trigger": trigger_kind, "by": actor_label_of(actor), "planner": kind},
            )
            audit_record(actor=actor, action="run.create", target=run, after={"agent": agent.slug, "trigger": trigger_kind})
            if enqueue:
                transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    except IntegrityError:
        # The partial unique index on fingerprint: another trigger won the race for this problem.
        from agentops.guardrails.daily import daily_add

        daily_add(agent_id=agent.pk, key="runs", amount=-1)
        raise _refuse(agent=agent, actor=actor, reason="a run for this problem is already active", trigger_kind=trigger_kind, fingerprint=fingerprint) from None
    return run


def run_start_by_person(*, agent: Agent, input: str, actor: Actor) -> Run:
    """A person's Start (dashboard, API): attributed to the agent's manual trigger when it has one."""
    from agentops.agents.models import TriggerKind

    return run_create(
        agent=agent,
        input=input,
        actor=actor,
        trigger=agent.triggers.filter(kind=TriggerKind.MANUAL, enabled=True).first(),
        trigger_kind=TriggerKind.MANUAL,
    )


def resolve_planner_kind(kind: str) -> str:
    """`auto`: Claude when an API key is configured, else the agent's recorded script."""
    from django.conf import settings

    if kind == "auto":
        return "anthropic" if settings.ANTHROPIC_API_KEY else "scripted"
    if kind not in ("anthropic", "scripted"):
        raise ValueError(f"unknown planner {kind!r}")
    return kind


def run_enqueue(*, run_id: int) -> None:
    from django_q.tasks import async_task

    async_task("agentops.runs.tasks.execute_run", run_id, task_name=f"run-{run_id}-{timezone.now().timestamp():.0f}", group="runs")


def _reject_pending_approvals(runs: QuerySet[Run], reason: str) -> None:
    from agentops.approvals.models import Approval, ApprovalStatus

    Approval.objects.filter(run__in=runs, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.REJECTED, decided_at=timezone.now(), decided_by_label="system", comment=reason
    )


def halt_runs(*, status: str, reason: str, agent: Agent | None = None, run_ids: list[int] | None = None) -> int:
    """End runs that no worker holds (queued, waiting for approval, or with a dead worker), and cancel
    the sandbox commands of running ones. Running runs with a live worker halt themselves before
    their next action: the worker re-checks the kill switch, the pause and the run row every time."""
    active = Run.objects.filter(status__in=ACTIVE_STATUSES)
    if agent is not None:
        active = active.filter(agent=agent)
    if run_ids is not None:
        active = active.filter(pk__in=run_ids)
    now = timezone.now()
    # A running run without a live lease has no worker to stop it: halt it here (fail closed).
    unheld = active.filter(
        Q(status__in=[RunStatus.QUEUED, RunStatus.WAITING_APPROVAL])
        | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        | Q(status=RunStatus.RUNNING, lease_expires_at__isnull=True)
    )
    halted = 0
    for run_id in list(unheld.values_list("pk", flat=True)):
        if run_finish(run_id=run_id, status=status, reason=reason, from_statuses=ACTIVE_STATUSES, only_unheld=True):
            halted += 1
    running = list(active.filter(status=RunStatus.RUNNING).values_list("pk", flat=True))
    if running:
        # Cancelling the commands is what makes "halt" immediate for a run stuck in `sleep 60`.
        try:
            from agentops.sandbox import kill_run_sandboxes

            for run_id in running:
                kill_run_sandboxes(str(run_id))
        except Exception:
            log.warning("cancelling sandbox commands failed", exc_info=True)
    return halted


def run_finish(
    *,
    run_id: int,
    status: str,
    reason: str = "",
    from_statuses: tuple[str, ...] | list[str] = ACTIVE_STATUSES,
    lease_owner: str | None = None,
    only_unheld: bool = False,
    error: str = "",
    result: dict[str, Any] | None = None,
) -> bool:
    """Move a run to a final status exactly once (a conditional UPDATE) and record why."""
    now = timezone.now()
    with transaction.atomic():
        rows = Run.objects.filter(pk=run_id, status__in=from_statuses)
        if lease_owner is not None:
            rows = rows.filter(lease_owner=lease_owner)
        if only_unheld:
            rows = rows.exclude(status=RunStatus.RUNNING, lease_expires_at__gte=now)
        fields: dict[str, Any] = {
            "status": status,
            "status_reason": reason,
            "finished_at": now,
            "lease_owner": "",
            "lease_expires_at": None,
        }
        if error:
            fields["final_error"] = error
        if result is not None:
            fields["result"] = result
        if rows.update(**fields) != 1:
            return False
        finished = Run.objects.filter(pk=run_id)
        _reject_pending_approvals(finished, reason or status)
        step_record(run=run_id, kind=StepKind.STATUS, payload={"status": status, "reason": reason})
    return True


def run_cancel(*, run: Run, actor: Actor, reason: str) -> bool:
    """Stop one run (a person's Stop button)."""
    reason = (reason or "").strip() or "stopped by a person"
    audit_record(actor=actor, action="run.cancel", target=run, detail=reason)
    run_ids = [run.pk]
    Run.objects.filter(pk=run.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
    halt_runs(status=RunStatus.KILLED, reason=f"stopped by {actor_label_of(actor)}: {reason}", run_ids=run_ids)
    return True
