"""Deciding an approval: one function for the dashboard, the API, the CLI and the expiry sweep.

Exactly one decision wins: the decision is a conditional UPDATE on `status = pending`, so a double
click or two people at once change the row once; the loser gets AlreadyDecided. Exactly one
execution follows: the resume is enqueued only by the winner, and the action itself goes through
the idempotency ledger.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agentops.approvals.models import Approval, ApprovalStatus
from agentops.audit.services import actor_label_of, audit_record
from agentops.runs.models import Run, StepKind
from agentops.runs.steps import step_record
from agentops.runs.transitions import resume_after_decision

Actor = AbstractBaseUser | str | None


class ApprovalError(Exception):
    pass


class AlreadyDecided(ApprovalError):
    pass


class NotAllowed(ApprovalError):
    pass


class CommentRequired(ApprovalError):
    pass


def can_decide(actor: Actor) -> bool:
    if isinstance(actor, AbstractBaseUser):
        return actor.is_active and actor.has_perm("approvals.decide_approval")
    # Non-user actors (the CLI run by an operator on the host, the expiry sweep) act as the system.
    return isinstance(actor, str) and actor.startswith(("cli:", "system"))


def approval_request(
    *, run: Run, step_id: int | None, tool_call_id: str, tool: str, arguments: dict[str, Any], risk_class: str, reason: str, why_needed: str, timeout_s: int
) -> Approval:
    approval = Approval.objects.create(
        run=run,
        step_id=step_id,
        tool_call_id=tool_call_id,
        tool=tool,
        arguments=arguments,
        risk_class=risk_class,
        reason=reason[:4000],
        why_needed=why_needed[:200],
        expires_at=timezone.now() + timedelta(seconds=timeout_s),
    )
    step_record(
        run=run,
        kind=StepKind.APPROVAL_REQUEST,
        payload={
            "approval_id": approval.pk,
            "tool": tool,
            "tool_call_id": tool_call_id,
            "arguments": arguments,
            "risk_class": risk_class,
            "why_needed": why_needed,
            "expires_at": approval.expires_at.isoformat(),
        },
    )
    return approval


def approval_decide(*, approval: Approval, actor: Actor, approve: bool, comment: str = "") -> Approval:
    if not can_decide(actor):
        raise NotAllowed("you are not allowed to decide approvals")
    comment = (comment or "").strip()
    if not approve and not comment:
        raise CommentRequired("a comment is required to reject")
    now = timezone.now()
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING, expires_at__gt=now).update(
            status=status,
            decided_at=now,
            decided_by=actor if isinstance(actor, AbstractBaseUser) else None,
            decided_by_label=actor_label_of(actor),
            comment=comment,
        )
        if won:
            approval.refresh_from_db()
            _after_decision(approval)
            audit_record(
                actor=actor, action=f"approval.{status}", target=approval, after={"tool": approval.tool, "arguments": approval.arguments}, detail=comment
            )
            return approval
    approval.refresh_from_db()
    if approval.status == ApprovalStatus.PENDING:
        # Pending but past its expiry: it expires now, and the late click loses.
        _expire(approval)
        raise AlreadyDecided("this approval expired before the decision")
    raise AlreadyDecided(f"this approval was already {approval.status} by {approval.decided_by_label}")


def _after_decision(approval: Approval) -> None:
    step_record(
        run=approval.run_id,
        kind=StepKind.APPROVAL_DECISION,
        payload={
            "approval_id": approval.pk,
            "tool_call_id": approval.tool_call_id,
            "status": approval.status,
            "by": approval.decided_by_label,
            "comment": approval.comment,
        },
    )
    # The run resumes only if it is still waiting: a killed run stays killed.
    if resume_after_decision(approval.run_id):
        from agentops.runs.services import run_enqueue

        run_id = approval.run_id
        transaction.on_commit(lambda: run_enqueue(run_id=run_id))


def _expire(approval: Approval) -> None:
    with transaction.atomic():
        if Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.EXPIRED, decided_at=timezone.now(), decided_by_label="system", comment="expired without a decision"
        ):
            approval.refresh_from_db()
            _after_decision(approval)
            audit_record(actor="system", action="approval.expired", target=approval)


def approvals_expire() -> int:
    """Reject every pending approval past its expiry (run by the reaper schedule)."""
    expired = 0
    for approval in Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=timezone.now()):
        _expire(approval)
        expired += 1
    return expired
