"""One write path per run state change: create, enqueue, halt, cancel, finish."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import django_q.tasks
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agentops.agents.models import Agent, Trigger, TriggerKind
from agentops.audit.services import actor_label_of, audit_record
from agentops.guardrails.daily import daily_add, daily_consume
from agentops.guardrails.stop_state import kill_switch_engaged
from agentops.runs.models import ACTIVE_STATUSES, Run, RunStatus, StepKind
from agentops.runs.steps import step_record
from agentops.runs.transitions import default_outcome, request_cancel
from agentops.runs.transitions import finish as run_finish
from agentops.sandbox import kill_run_sandboxes

__all__ = ["RunRefused", "default_outcome", "halt_runs", "run_cancel", "run_create", "run_enqueue", "run_finish", "runs_reconcile"]

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
                # Only once the row is visible to a worker. A failed hand-off never undoes the run:
                # it stays queued and the reconciler (tasks.reap) gives it a job; `run.dispatched`
                # tells the caller which of the two happened.
                def hand_off() -> None:
                    run.dispatched = run_enqueue(run_id=run.pk)

                transaction.on_commit(hand_off)
    except IntegrityError:
        # The partial unique index on fingerprint: another trigger won the race for this problem.
        daily_add(agent_id=agent.pk, key="runs", amount=-1)
        raise _refuse(agent=agent, actor=actor, reason="a run for this problem is already active", trigger_kind=trigger_kind, fingerprint=fingerprint) from None
    except DatabaseError:
        # Nothing was created (the transaction rolled back): give the day's run back if we still can.
        try:
            daily_add(agent_id=agent.pk, key="runs", amount=-1)
        except DatabaseError:
            log.warning("could not return the daily run count of agent %s", agent.pk, exc_info=True)
        raise
    return run


def run_start_by_person(*, agent: Agent, input: str, actor: Actor) -> Run:
    """A person's Start (dashboard, API): attributed to the agent's manual trigger when it has one."""
    return run_create(
        agent=agent,
        input=input,
        actor=actor,
        trigger=agent.triggers.filter(kind=TriggerKind.MANUAL, enabled=True).first(),
        trigger_kind=TriggerKind.MANUAL,
    )


def resolve_planner_kind(kind: str) -> str:
    """`auto`: Claude when an API key is configured, else the agent's recorded script."""
    if kind == "auto":
        return "anthropic" if settings.ANTHROPIC_API_KEY else "scripted"
    if kind not in ("anthropic", "scripted"):
        raise ValueError(f"unknown planner {kind!r}")
    return kind


def run_enqueue(*, run_id: int) -> bool:
    """Give a run a job on the broker. Never raises: a broker that cannot be reached leaves the run
    queued (or orphaned), which the reconciler retries every reaper period. A duplicate job is
    harmless: only one worker wins claim_run's conditional UPDATE."""
    try:
        # Looked up on its module at each call: the tests stand a broker in at this boundary.
        django_q.tasks.async_task("agentops.runs.tasks.execute_run", run_id, task_name=f"run-{run_id}-{timezone.now().timestamp():.0f}", group="runs")
    except Exception:
        log.warning("run %s: the task broker refused the job; the reconciler will retry", run_id, exc_info=True)
        return False
    try:
        # For a queued run, heartbeat_at records its last hand-off: the reconciler gives a new job
        # only to runs whose last one is older than the grace period (a worker's claim overwrites it).
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(heartbeat_at=timezone.now())
    except DatabaseError:
        log.warning("run %s: could not record its hand-off", run_id, exc_info=True)
    return True


def runs_reconcile(*, grace_s: float) -> dict[str, int]:
    """Give a job to every run that should have a live one and may not: queued runs whose last
    hand-off (or creation) is older than the grace period and that no worker claimed (the job was
    never enqueued, lost with a broker, taken by a killed cluster, or consumed by a worker that could
    not reach the database), and running runs whose worker stopped renewing its lease."""
    now = timezone.now()
    stale = now - timedelta(seconds=grace_s)
    counts = {"requeued": 0, "redispatched": 0}
    queued = Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=stale).filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale))
    for run_id in list(queued.values_list("pk", flat=True)):
        log.warning("run %s is queued without a live job; enqueueing it again", run_id)
        if run_enqueue(run_id=run_id):
            counts["redispatched"] += 1
    orphaned = Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    for run_id in list(orphaned.values_list("pk", flat=True)):
        # Only re-enqueue: the next worker claims it with the same conditional UPDATE as any other.
        log.warning("run %s lost its worker; handing it to another", run_id)
        if run_enqueue(run_id=run_id):
            counts["requeued"] += 1
    return counts


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
            for run_id in running:
                kill_run_sandboxes(str(run_id))
        except Exception:
            log.warning("cancelling sandbox commands failed", exc_info=True)
    return halted


def run_cancel(*, run: Run, actor: Actor, reason: str) -> bool:
    """Stop one run (a person's Stop button)."""
    reason = (reason or "").strip() or "stopped by a person"
    audit_record(actor=actor, action="run.cancel", target=run, detail=reason)
    run_ids = [run.pk]
    request_cancel(run.pk)
    halt_runs(status=RunStatus.KILLED, reason=f"stopped by {actor_label_of(actor)}: {reason}", run_ids=run_ids)
    return True
