"""django-q2 task entry points. Each is a thin call into a domain function."""

from __future__ import annotations

import logging

from django.utils import timezone

from agentops.runs.models import ACTIVE_STATUSES, Run, RunStatus

log = logging.getLogger(__name__)


def execute_run(run_id: int) -> str:
    from agentops.runs.controller import execute_run as run_loop

    return run_loop(run_id)


def reap() -> dict[str, int]:
    """Every minute (and at worker start): hand runs of dead workers to live ones, expire
    approvals, remove sandboxes of finished runs, fire due schedules."""
    from agentops.approvals.services import approvals_expire
    from agentops.guardrails.killswitch import kill_switch_engaged
    from agentops.runs.services import halt_runs, run_enqueue

    counts = {"requeued": 0, "expired_approvals": approvals_expire(), "sandboxes_removed": 0, "schedules_fired": 0}
    if kill_switch_engaged():
        halt_runs(status=RunStatus.KILLED, reason="kill switch engaged")
    orphaned = Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=timezone.now())
    for run_id in orphaned.values_list("pk", flat=True):
        # Only re-enqueue: the next worker claims it with the same conditional UPDATE as any other.
        log.warning("run %s lost its worker; handing it to another", run_id)
        run_enqueue(run_id=run_id)
        counts["requeued"] += 1
    try:
        from agentops.sandbox.reaper import reap_sandboxes

        active = {str(pk) for pk in Run.objects.filter(status__in=ACTIVE_STATUSES).values_list("pk", flat=True)}
        # Young sandboxes are left alone: their run may be starting or finishing right now.
        counts["sandboxes_removed"] = reap_sandboxes(lambda run_id: run_id.split("-")[0] in active, min_age_s=300)
    except Exception:
        log.warning("sandbox reaping failed", exc_info=True)
    try:
        from agentops.triggers.schedules import fire_due_schedules

        counts["schedules_fired"] = len(fire_due_schedules(timezone.now()))
    except ImportError:
        pass
    return counts
