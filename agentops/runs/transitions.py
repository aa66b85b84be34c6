"""Every change of a Run's status, each one conditional UPDATE.

The WHERE clause names the state the change starts from (and, for a worker, the lease it holds), so
two writers racing for the same run cannot both win: the one whose UPDATE matched zero rows learns
it lost and does nothing more. Nothing else in the code base writes ``Run.status``.

    queued ──claim──> running ──await_approval──> waiting_approval ──resume_after_decision──> queued
      │                  │ (lease expired: claim again)                    │
      └──────────────────┴───────────── finish (succeeded, failed, killed, ...) ┘
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agentops.approvals.models import Approval, ApprovalStatus
from agentops.approvals.notifications import decisions_notify
from agentops.runs.models import ACTIVE_STATUSES, Run, RunOutcome, RunStatus, StepKind
from agentops.runs.steps import step_record


def claim(run_id: int, owner: str) -> bool:
    """queued -> running, or running -> running for a new owner when the old one stopped renewing its
    lease. Two workers racing for the same run: the conditional UPDATE lets exactly one win."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.AGENTOPS_LEASE_TTL_S)
    claimable = Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    return (
        Run.objects.filter(claimable, pk=run_id).update(
            status=RunStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=expires,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
        == 1
    )


def await_approval(run_id: int, owner: str) -> bool:
    """running -> waiting_approval, by the worker holding the lease; the lease is given up (a person
    may take days, and the run is claimed afresh when the decision comes)."""
    return (
        Run.objects.filter(pk=run_id, lease_owner=owner, status=RunStatus.RUNNING).update(
            status=RunStatus.WAITING_APPROVAL, lease_owner="", lease_expires_at=None
        )
        == 1
    )


def resume_after_decision(run_id: int) -> bool:
    """waiting_approval -> queued once a person decided. Only if it is still waiting: a killed run
    stays killed."""
    return Run.objects.filter(pk=run_id, status=RunStatus.WAITING_APPROVAL).update(status=RunStatus.QUEUED) == 1


def request_cancel(run_id: int) -> bool:
    """Flag an active run for its worker to stop before its next action (the status is left to
    finish: by the worker, or by halt_runs for a run nobody holds)."""
    return Run.objects.filter(pk=run_id, status__in=ACTIVE_STATUSES).update(cancel_requested=True) == 1


def finish(
    *,
    run_id: int,
    status: str,
    reason: str = "",
    from_statuses: Iterable[str] = ACTIVE_STATUSES,
    lease_owner: str | None = None,
    only_unheld: bool = False,
    error: str = "",
    result: dict[str, Any] | None = None,
    outcome: str = "",
    outcome_detail: str = "",
) -> bool:
    """Move a run to a final status exactly once and record why, with its outcome (what the run
    achieved; derived from the status and reason when not given). ``lease_owner``: only while that
    worker holds the run; ``only_unheld``: only if no live worker holds it (halt, cancel, reaper)."""
    now = timezone.now()
    outcome = outcome or default_outcome(status, reason)
    outcome_detail = outcome_detail or reason
    with transaction.atomic():
        # Lock order: the run's pending decisions, then the run, the order a person's decision takes
        # them (approval_decide: the decision row, then the run it resumes). The other order
        # deadlocks a decision racing the kill switch, and PostgreSQL would abort one of them.
        list(Approval.objects.select_for_update().filter(run_id=run_id, status=ApprovalStatus.PENDING).values_list("pk", flat=True))
        rows = Run.objects.filter(pk=run_id, status__in=list(from_statuses))
        if lease_owner is not None:
            rows = rows.filter(lease_owner=lease_owner)
        if only_unheld:
            rows = rows.exclude(status=RunStatus.RUNNING, lease_expires_at__gte=now)
        fields: dict[str, Any] = {
            "status": status,
            "status_reason": reason,
            "outcome": outcome,
            "outcome_detail": outcome_detail,
            # A model call reserved and never settled (its worker died) is charged as spent.
            "cost_usd": F("cost_usd") + F("reserved_cost_usd"),
            "input_tokens": F("input_tokens") + F("reserved_input_tokens"),
            "output_tokens": F("output_tokens") + F("reserved_output_tokens"),
            "reserved_cost_usd": 0,
            "reserved_input_tokens": 0,
            "reserved_output_tokens": 0,
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
        if Approval.objects.filter(run_id=run_id, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.REJECTED, decided_at=now, decided_by_label="system", comment=reason or status
        ):
            # Announced after commit (the Slack messages that asked say so); a failure there changes nothing here.
            transaction.on_commit(partial(decisions_notify, run_id=run_id))
        step_record(run=run_id, kind=StepKind.STATUS, payload={"status": status, "reason": reason, "outcome": outcome})
    return True


def default_outcome(status: str, reason: str) -> str:
    """The outcome of a run ended from outside its worker (kill switch, a person, the reaper)."""
    if status == RunStatus.KILLED:
        return RunOutcome.KILLED_BY_SWITCH if "kill switch" in reason else RunOutcome.STOPPED_BY_PERSON
    if status == RunStatus.REJECTED:
        return RunOutcome.REJECTED
    if status == RunStatus.BUDGET_EXCEEDED:
        return RunOutcome.BUDGET
    if status == RunStatus.SUCCEEDED:
        return RunOutcome.ACTED
    return RunOutcome.ERROR
