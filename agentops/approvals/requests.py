"""Asking a person: the write path that creates a decision of any kind (re-exported by
`agentops.approvals.services`, the decisions' interface). It sits below the agent configuration
writers, which ask here for a second admin, and below the deciding (which applies configuration)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.utils import timezone

from agentops.agents.models import Agent, OnExpiry, Policy, ToolGrant
from agentops.approvals.models import RUN_KINDS, Approval, ApprovalStatus, DecisionKind
from agentops.approvals.notifications import decisions_notify
from agentops.audit.services import actor_label_of, audit_record
from agentops.guardrails.budgets import run_budget
from agentops.runs.models import Run, Step, StepKind
from agentops.runs.steps import step_record

Actor = AbstractBaseUser | str | None

# A two-admin change waits this long for the second admin, then expires (nothing applied).
CONFIG_CHANGE_TIMEOUT_S = 7 * 24 * 3600
EVIDENCE_TRACE_STEPS = 8
EVIDENCE_DIFF_CHARS = 20_000


def policy_of(agent_id: int | None) -> Policy:
    # An agent without a policy row has the defaults (the strict ones: no self-approval).
    return (Policy.objects.filter(agent_id=agent_id).first() if agent_id is not None else None) or Policy()


def _summary(step: Step) -> dict[str, Any]:
    payload = step.payload if isinstance(step.payload, dict) else {}
    text = ""
    if step.kind == StepKind.TOOL_CALL:
        text = f"{payload.get('tool', '?')}({json.dumps(payload.get('arguments', {}), sort_keys=True, default=str)[:200]})"
    else:
        for key in ("text", "output", "reason", "status", "tool"):
            if isinstance(payload.get(key), str) and payload[key]:
                text = payload[key]
                break
    return {"seq": step.seq, "kind": step.kind, "summary": text[:300]}


def decision_evidence(run: Run) -> dict[str, Any]:
    """What a person needs to decide about a run: its spend against its caps (this run's: the policy's
    plus any extension a person already granted it), the last steps, its diff."""
    budget = run_budget(run, policy_of(run.agent_id))
    spend = {
        "cost_usd": f"{run.cost_usd.normalize():f}",
        "max_cost_usd": f"{budget.max_cost_usd.normalize():f}",
        "tokens": run.total_tokens,
        "max_tokens": budget.max_tokens,
        "tool_calls": run.tool_calls,
        "max_tool_calls": budget.max_tool_calls,
        "iterations": run.iterations,
        "max_iterations": budget.max_iterations,
    }
    steps = list(Step.objects.filter(run_id=run.pk).order_by("-seq")[:EVIDENCE_TRACE_STEPS])
    result = run.result if isinstance(run.result, dict) else {}
    diff = next((result[k] for k in ("diff", "patch") if isinstance(result.get(k), str) and result[k]), "")
    return {"spend": spend, "trace": [_summary(s) for s in reversed(steps)], "diff": diff[:EVIDENCE_DIFF_CHARS]}


def _grant_routing(agent_id: int | None, tool: str) -> tuple[str, str]:
    """(approver_group, on_timeout) of the agent's grant of `tool`: a tool call's decision follows its grant."""
    row = ToolGrant.objects.filter(agent_id=agent_id, tool=tool).values_list("approver_group", "on_timeout").first() if tool and agent_id is not None else None
    return (row[0], row[1]) if row else ("", OnExpiry.HALT)


def decision_request(
    *,
    kind: str,
    run: Run | None = None,
    agent: Agent | None = None,
    tool_call_id: str = "",
    tool: str = "",
    arguments: dict[str, Any] | None = None,
    risk_class: str = "read",
    reason: str = "",
    why_needed: str,
    request: dict[str, Any] | None = None,
    evidence: dict[str, Any] | None = None,
    approver_group: str | None = None,
    on_expiry: str | None = None,
    timeout_s: int,
    requested_by: Actor = None,
    step_id: int | None = None,
) -> Approval:
    """Ask a person. Records the approval_request step (kinds with a run), audits a configuration
    change, and notifies (email deep link + Slack) once committed. `approver_group` and `on_expiry`
    left None follow the grant of `tool` (tool calls and questions), else "" and halt (fail closed)."""
    if kind not in DecisionKind.values:
        raise ValueError(f"unknown decision kind {kind!r}")
    if kind in RUN_KINDS and run is None:
        raise ValueError(f"a {kind} decision belongs to a run")
    if kind == DecisionKind.CONFIG_CHANGE and (run is not None or agent is None):
        raise ValueError("a config_change decision names its agent and no run")
    agent_id = agent.pk if agent is not None else run.agent_id if run is not None else None
    grant_group, grant_timeout = _grant_routing(agent_id, tool) if kind in (DecisionKind.APPROVAL, DecisionKind.QUESTION) else ("", OnExpiry.HALT)
    group = grant_group if approver_group is None else approver_group
    expiry = grant_timeout if on_expiry is None else on_expiry
    if expiry not in OnExpiry.values:
        raise ValueError(f"on_expiry must be one of {', '.join(OnExpiry.values)}")
    if evidence is None:
        evidence = decision_evidence(run) if run is not None else {}
    approval = Approval.objects.create(
        kind=kind,
        run=run,
        agent_id=agent_id,
        step_id=step_id,
        tool_call_id=tool_call_id,
        tool=tool,
        arguments=arguments or {},
        risk_class=risk_class,
        reason=reason[:4000],
        why_needed=why_needed[:200],
        request=request or {},
        evidence=evidence,
        approver_group=group,
        on_expiry=expiry,
        requested_by=requested_by if isinstance(requested_by, User) else None,
        requested_by_label=actor_label_of(requested_by) if requested_by is not None else "",
        expires_at=timezone.now() + timedelta(seconds=max(1, int(timeout_s))),
    )
    if run is not None:
        step_record(
            run=run,
            kind=StepKind.APPROVAL_REQUEST,
            payload={
                "approval_id": approval.pk,
                "kind": kind,
                "tool": tool,
                "tool_call_id": tool_call_id,
                "arguments": arguments or {},
                "risk_class": risk_class,
                "why_needed": why_needed,
                "request": approval.request,
                "approver_group": group,
                "on_expiry": expiry,
                "expires_at": approval.expires_at.isoformat(),
            },
        )
    else:
        audit_record(actor=requested_by, action=f"{kind}.request", target=agent, after={"decision": approval.pk, **approval.request}, detail=reason)
    _notify_on_commit(approval_id=approval.pk)
    return approval


def approval_request(
    *, run: Run, step_id: int | None, tool_call_id: str, tool: str, arguments: dict[str, Any], risk_class: str, reason: str, why_needed: str, timeout_s: int
) -> Approval:
    """A tool call waits for a person (kind=approval); routed and timed out as its grant says."""
    return decision_request(
        kind=DecisionKind.APPROVAL,
        run=run,
        agent=run.agent,
        step_id=step_id,
        tool_call_id=tool_call_id,
        tool=tool,
        arguments=arguments,
        risk_class=risk_class,
        reason=reason,
        why_needed=why_needed,
        timeout_s=timeout_s,
    )


def config_change_request(*, agent: Agent, actor: Actor, change: dict[str, Any], summary: str, reason: str = "") -> Approval:
    """A change one admin may not make alone waits for a second admin (kind=config_change); asking
    again for the very same change returns the decision already waiting."""
    waiting = [
        a
        for a in Approval.objects.filter(kind=DecisionKind.CONFIG_CHANGE, agent=agent, status=ApprovalStatus.PENDING, expires_at__gt=timezone.now())
        if isinstance(a.request, dict) and a.request.get("change") == change
    ]
    if waiting:
        return waiting[0]
    return decision_request(
        kind=DecisionKind.CONFIG_CHANGE,
        agent=agent,
        reason=reason,
        why_needed="two-admin rule: a second admin must approve this change",
        request={"agent_id": agent.pk, "change": change, "summary": summary},
        evidence={},
        approver_group="",
        on_expiry=OnExpiry.HALT,
        timeout_s=CONFIG_CHANGE_TIMEOUT_S,
        requested_by=actor,
    )


def _notify_on_commit(*, approval_id: int | None = None, run_id: int | None = None) -> None:
    # After commit only: a notification that fails cannot undo the decision, and what it reads is committed.
    transaction.on_commit(lambda: decisions_notify(approval_id=approval_id, run_id=run_id))


def decisions_changed(*, run_id: int) -> None:
    """For writers that decide a run's decisions in bulk (a run ending rejects its pending ones):
    their Slack messages say so once committed."""
    _notify_on_commit(run_id=run_id)
