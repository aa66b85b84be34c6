"""Human decisions: one write path for every kind (an approval, possibly edited; a budget extension;
a question the agent asked; a loop escalation; a two-admin configuration change), used by the
dashboard, the API, the CLI, Slack, the MCP server and the expiry sweep alike.

Exactly one decision wins: the decision is a conditional UPDATE on `status = pending`, so a double
click, two people at once, a click racing the expiry or the kill switch change the row once; the
loser gets AlreadyDecided. Exactly one execution follows: the resume is enqueued only by the winner,
and the action itself goes through the idempotency ledger.

Who may decide is one rule, `may_decide`: the permission, the approver group the decision is routed
to, and separation of duties (whoever started the run, or changed the agent's grants or policy
recently, does not decide its decisions; a configuration change needs a second admin).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NoReturn

from django.contrib.auth.models import AbstractBaseUser, PermissionsMixin
from django.db import transaction
from django.utils import timezone

from agentops.agents.models import Agent
from agentops.agents.spec import SpecError, apply_config_change
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind
from agentops.approvals.notifications import decisions_notify
from agentops.approvals.requests import (
    CONFIG_CHANGE_TIMEOUT_S,
    Actor,
    approval_request,
    config_change_request,
    decision_evidence,
    decision_request,
    decisions_changed,
    policy_of,
)
from agentops.approvals.serializers import noun
from agentops.audit.models import AuditEvent
from agentops.audit.services import actor_label_of, audit_record
from agentops.runs.calls import validate_call as controller_validate_call
from agentops.runs.models import Run, StepKind
from agentops.runs.services import run_enqueue
from agentops.runs.steps import step_record
from agentops.runs.transitions import resume_after_decision

if TYPE_CHECKING:
    from collections.abc import Iterable

# The write path of asking lives in agentops.approvals.requests (below the configuration writers,
# which ask for a second admin); it is part of this module's interface.
__all__ = [
    "CONFIG_CHANGE_TIMEOUT_S",
    "AlreadyDecided",
    "ApprovalError",
    "CommentRequired",
    "InvalidDecision",
    "NotAllowed",
    "approval_decide",
    "approval_request",
    "approvals_expire",
    "can_decide",
    "config_change_request",
    "decision_evidence",
    "decision_request",
    "decisions_changed",
    "may_decide",
    "validate_call",
]

# The permission to decide anything; a configuration change also needs these (an admin's).
DECIDE_PERMISSION = "approvals.decide_approval"
ADMIN_PERMISSIONS = ("agents.change_agent", "agents.add_toolgrant", "agents.change_toolgrant")
# Audit actions that change what an agent may do: whoever did one recently does not decide its runs.
CONFIG_ACTIONS = (
    "agent.create",
    "agent.update",
    "policy.update",
    "grant.create",
    "grant.update",
    "grant.delete",
    "mcp_server.create",
    "mcp_server.update",
    "mcp_server.delete",
    "config_change.request",
)
# A budget extension may add at most this many times the cap it extends, at once.
MAX_EXTENSION_FACTOR = 10
# Caps counted in whole units (the others are money).
WHOLE_CAPS = ("tokens", "tool_calls", "iterations", "wall_clock")
LOOP_ANSWERS = ("continue", "stop")
MAX_ANSWER = 4000


class ApprovalError(Exception):
    pass


class AlreadyDecided(ApprovalError):
    pass


class NotAllowed(ApprovalError):
    pass


class CommentRequired(ApprovalError):
    pass


class InvalidDecision(ApprovalError):
    """The decision's content is not acceptable (edited arguments, answer, amount): a 4xx, nothing changed."""


# --- who may decide ---------------------------------------------------------------------------


def is_host_operator(actor: Actor) -> bool:
    # Non-user actors: the CLI run by an operator on the host, the expiry sweep. They act as the system.
    return isinstance(actor, str) and actor.startswith(("cli:", "system"))


def can_decide(actor: Actor) -> bool:
    """The permission alone (a Slack link, a menu): `may_decide` is the rule for one decision."""
    if isinstance(actor, AbstractBaseUser):
        return actor.is_active and isinstance(actor, PermissionsMixin) and actor.has_perm(DECIDE_PERMISSION)
    return is_host_operator(actor)


def _ago(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 1:
        return "just now"
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"


def run_starter_id(run_id: int) -> int | None:
    """The user who started a run (its run.create audit entry), None for a trigger or the system."""
    return AuditEvent.objects.filter(action="run.create", target_type="run", target_id=str(run_id)).values_list("actor_id", flat=True).first()


def recent_config_change(*, user_id: int, agent_id: int, hours: int) -> AuditEvent | None:
    """The user's latest change of what the agent may do within the last `hours` hours, if any."""
    if hours <= 0:
        return None
    since = timezone.now() - timedelta(hours=hours)
    return (
        AuditEvent.objects.filter(actor_id=user_id, target_type="agent", target_id=str(agent_id), action__in=CONFIG_ACTIONS, at__gte=since)
        .order_by("-at")
        .first()
    )


def may_decide(actor: Actor, approval: Approval) -> tuple[bool, str]:
    """Whether `actor` may decide `approval`, and if not, why (said to the person as is). The one
    rule of the web, the API, the CLI, Slack and the MCP server."""
    if is_host_operator(actor):
        if approval.kind == DecisionKind.CONFIG_CHANGE:
            return False, "a configuration change needs a second admin signed in to agentops: decide it in the web"
        # The host operator can already do anything the database allows: decided as the system, as always.
        return True, ""
    if not isinstance(actor, AbstractBaseUser) or not isinstance(actor, PermissionsMixin) or not actor.is_active or not actor.has_perm(DECIDE_PERMISSION):
        return False, "you are not allowed to decide approvals"
    if approval.kind == DecisionKind.CONFIG_CHANGE:
        if not all(actor.has_perm(perm) for perm in ADMIN_PERMISSIONS):
            return False, "only an admin may approve a configuration change"
        if approval.requested_by_id is not None and approval.requested_by_id == actor.pk:
            return False, "you asked for this change; a second admin must decide it"
        # The CLI records the host account ("cli:alice"): the same name signed in is the same person.
        if approval.requested_by_id is None and approval.requested_by_label in (actor.get_username(), f"cli:{actor.get_username()}"):
            return False, "you asked for this change; a second admin must decide it"
        return True, ""
    if approval.approver_group and not actor.groups.filter(name=approval.approver_group).exists():
        return False, f"only members of '{approval.approver_group}' may decide this"
    policy = policy_of(approval.agent_id)
    if policy.self_approval_allowed:
        return True, ""
    if approval.run_id is not None and run_starter_id(approval.run_id) == actor.pk:
        return False, "you started this run; someone else must decide its decisions"
    if approval.agent_id is not None:
        changed = recent_config_change(user_id=actor.pk, agent_id=approval.agent_id, hours=policy.grant_change_cooldown_h)
        if changed is not None:
            return False, (
                f"you changed this agent's grants or policy {_ago(timezone.now() - changed.at)} ({changed.action}); "
                f"for {policy.grant_change_cooldown_h} h after a change someone else decides its runs"
            )
    return True, ""


# --- deciding ---------------------------------------------------------------------------------


def validate_call(*, run: Run, tool_name: str, arguments: Any) -> list[str]:
    """A person's edited call, checked exactly as a model's call is (the controller's checks)."""
    return controller_validate_call(run=run, tool_name=tool_name, arguments=arguments)


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _checked_content(approval: Approval, *, approve: bool, edited_arguments: Any, answer: Any) -> tuple[Any, str]:
    """(edited_arguments, answer) to store, or InvalidDecision saying what is wrong."""
    if answer is not None and not isinstance(answer, str):
        raise InvalidDecision("the answer must be text")
    answer = (answer or "").strip()
    if len(answer) > MAX_ANSWER or "\x00" in answer:
        raise InvalidDecision(f"the answer must be text of at most {MAX_ANSWER} characters")
    kind = approval.kind
    if edited_arguments is not None and kind != DecisionKind.APPROVAL:
        raise InvalidDecision("only an approval of a tool call has arguments to edit")
    if kind == DecisionKind.APPROVAL:
        if answer:
            raise InvalidDecision("an approval takes no answer (approve or reject, optionally with edited arguments)")
        if not approve or edited_arguments is None or edited_arguments == approval.arguments:
            return None, ""
        if not isinstance(edited_arguments, dict):
            raise InvalidDecision("the edited arguments must be a JSON object")
        if approval.run is None:
            raise InvalidDecision("this approval has no run to check the edited call against")
        errors = validate_call(run=approval.run, tool_name=approval.tool, arguments=edited_arguments)
        if errors:
            raise InvalidDecision("the edited arguments were refused, as a model's call would be: " + "; ".join(errors))
        return edited_arguments, ""
    if kind == DecisionKind.QUESTION:
        if not approve:
            return None, ""
        options = [str(o) for o in (approval.request.get("options") or [])] if isinstance(approval.request, dict) else []
        if not answer:
            raise InvalidDecision("an answer is required")
        if options and answer not in options:
            raise InvalidDecision(f"the answer must be one of: {', '.join(options)}")
        return None, answer
    if kind == DecisionKind.LOOP_ESCALATION:
        if answer and answer not in LOOP_ANSWERS:
            raise InvalidDecision("the answer must be continue or stop")
        wanted = "continue" if approve else "stop"
        if answer and answer != wanted:
            raise InvalidDecision(f"answer {answer!r} contradicts {'approve' if approve else 'reject'}: continue is an approval, stop a rejection")
        return None, wanted
    if kind == DecisionKind.BUDGET_EXTENSION:
        if not approve:
            return None, ""
        request = approval.request if isinstance(approval.request, dict) else {}
        amount = _decimal(answer if answer else request.get("extend_by"))
        if amount is None or amount <= 0:
            raise InvalidDecision("the extension must be a number greater than 0")
        cap = request.get("cap")
        if cap in WHOLE_CAPS and amount != amount.to_integral_value():
            raise InvalidDecision(f"the {cap} cap is counted in whole units: extend it by a whole number")
        limit = _decimal(request.get("limit"))
        if limit is None or limit <= 0:
            raise InvalidDecision("this request names no cap to extend")
        if amount > limit * MAX_EXTENSION_FACTOR:
            raise InvalidDecision(f"an extension may be at most {MAX_EXTENSION_FACTOR}x the cap ({limit * MAX_EXTENSION_FACTOR})")
        normal = amount.normalize()
        return None, str(normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal)
    if kind == DecisionKind.CONFIG_CHANGE:
        if answer:
            raise InvalidDecision("a configuration change takes no answer")
        return None, ""
    raise InvalidDecision(f"unknown decision kind {kind!r}")


def approval_decide(
    *,
    approval: Approval,
    actor: Actor,
    approve: bool,
    comment: str = "",
    via: str = "",
    edited_arguments: dict[str, Any] | None = None,
    answer: str | None = None,
) -> Approval:
    """Decide any kind of decision. ``via`` names where it was made when not this site itself (e.g.
    "slack"), for the audit. Raises NotAllowed (who), CommentRequired / InvalidDecision (what), or
    AlreadyDecided (too late)."""
    allowed, why = may_decide(actor, approval)
    if not allowed:
        raise NotAllowed(why)
    comment = (comment or "").strip()
    # A rejection that goes back to someone (the model, the first admin) says why; stopping a run
    # (a budget or a loop) needs no reason to be safe.
    if not approve and not comment and approval.kind in (DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.CONFIG_CHANGE):
        raise CommentRequired("a comment is required to reject")
    if not Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING, expires_at__gt=timezone.now()).exists():
        # Too late whatever it says: the person hears that first (the UPDATE below still decides races).
        _lost(approval)
    edited, answer_text = _checked_content(approval, approve=approve, edited_arguments=edited_arguments, answer=answer)
    now = timezone.now()
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING, expires_at__gt=now).update(
            status=status,
            decided_at=now,
            decided_by=actor if isinstance(actor, AbstractBaseUser) else None,
            decided_by_label=actor_label_of(actor),
            comment=comment,
            edited_arguments=edited,
            answer=answer_text,
        )
        if won:
            approval.refresh_from_db()
            if approval.kind == DecisionKind.CONFIG_CHANGE and approve:
                _apply_config_change(approval, actor=actor)  # raises (and rolls the decision back) if it no longer applies
            _after_decision(approval)
            audit_record(actor=actor, action=_audit_action(approval), target=approval, after=_audit_after(approval, via=via), detail=comment)
            return approval
    _lost(approval)


def _lost(approval: Approval) -> NoReturn:
    """A decision that came too late: say why (and expire a pending one past its expiry)."""
    approval.refresh_from_db()
    if approval.status == ApprovalStatus.PENDING:
        # Pending but past its expiry: it expires now, and the late click loses.
        _expire(approval)
        raise AlreadyDecided(f"this {noun(approval)} expired before the decision")
    if approval.status == ApprovalStatus.EXPIRED:
        raise AlreadyDecided(f"this {noun(approval)} expired before the decision")
    raise AlreadyDecided(f"this {noun(approval)} was already {approval.status} by {approval.decided_by_label}")


def _audit_action(approval: Approval) -> str:
    return f"{approval.kind}.{approval.status}"


def _audit_after(approval: Approval, *, via: str = "") -> dict[str, Any]:
    after: dict[str, Any] = {"kind": approval.kind}
    if approval.kind == DecisionKind.APPROVAL:
        # Both versions: what the model asked, and what a person approved instead (if edited).
        after |= {"tool": approval.tool, "arguments": approval.arguments, "edited_arguments": approval.edited_arguments}
    else:
        after |= {"request": approval.request, "answer": approval.answer}
    if approval.kind == DecisionKind.CONFIG_CHANGE:
        after |= {"agent_id": approval.agent_id, "requested_by": approval.requested_by_label, "second_admin": approval.decided_by_label}
    if via:
        after["via"] = via
    return after


def _apply_config_change(approval: Approval, *, actor: Actor) -> None:
    request = approval.request if isinstance(approval.request, dict) else {}
    agent = Agent.objects.filter(pk=approval.agent_id).first() if approval.agent_id is not None else None
    if agent is None or not isinstance(request.get("change"), dict):
        raise InvalidDecision("the agent of this change no longer exists")
    try:
        apply_config_change(agent=agent, change=request["change"], actor=actor, approval=approval)
    except SpecError as exc:
        raise InvalidDecision("this change no longer applies (reject it and ask again): " + "; ".join(exc.errors)) from None


def _after_decision(approval: Approval) -> None:
    if approval.run_id is not None:
        step_record(
            run=approval.run_id,
            kind=StepKind.APPROVAL_DECISION,
            payload={
                "approval_id": approval.pk,
                "kind": approval.kind,
                "tool_call_id": approval.tool_call_id,
                "status": approval.status,
                "by": approval.decided_by_label,
                "comment": approval.comment,
                "edited_arguments": approval.edited_arguments,
                "answer": approval.answer,
                "on_expiry": approval.on_expiry,
            },
        )
        # The run resumes only if it is still waiting: a killed run stays killed.
        if resume_after_decision(approval.run_id):
            run_id = approval.run_id
            transaction.on_commit(lambda: run_enqueue(run_id=run_id))
    # After the resume: wherever the decision was asked (Slack), it now shows what was decided.
    approval_id = approval.pk
    transaction.on_commit(lambda: decisions_notify(approval_id=approval_id))


def _expire(approval: Approval) -> bool:
    with transaction.atomic():
        if Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.EXPIRED, decided_at=timezone.now(), decided_by_label="system", comment="expired without a decision"
        ):
            approval.refresh_from_db()
            # The run resumes either way: the controller halts it (on_expiry=halt) or tells the
            # model nobody decided in time (continue). Nothing of a configuration change applies.
            _after_decision(approval)
            audit_record(actor="system", action=_audit_action(approval), target=approval, after=_audit_after(approval))
            return True
    return False


def approvals_expire() -> int:
    """Expire every pending decision past its expiry (run by the reaper schedule)."""
    return sum(1 for approval in Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=timezone.now()) if _expire(approval))


def pending_for(actor: Actor, approvals: Iterable[Approval]) -> list[tuple[Approval, bool, str]]:
    """Each decision with whether `actor` may decide it and why not (for pages that offer buttons)."""
    return [(a, *may_decide(actor, a)) for a in approvals]
