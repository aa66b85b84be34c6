"""The one JSON shape of a decision (an Approval row of any kind), shared by the API, the CLI, the MCP
server, the consumers, and the words every channel (page, Slack, email) uses to say what is asked."""

from __future__ import annotations

import json
from typing import Any, TypedDict

from agentops.agents.models import Policy
from agentops.approvals.models import Approval, DecisionKind


class ApprovalDict(TypedDict):
    id: int
    kind: str
    run_id: int | None
    agent_id: int | None
    agent: str | None
    asked: str
    tool: str
    arguments: Any
    edited_arguments: Any
    risk_class: str
    reason: str
    why_needed: str
    request: Any
    evidence: Any
    answer: str
    options: list[str]
    approver_group: str
    who_may_decide: str
    on_expiry: str
    requested_by: str | None
    status: str
    requested_at: str
    expires_at: str
    decided_at: str | None
    decided_by: str | None
    comment: str


def noun(approval: Approval) -> str:
    return "approval" if approval.kind == DecisionKind.APPROVAL else "decision"


def _request(approval: Approval) -> dict[str, Any]:
    return approval.request if isinstance(approval.request, dict) else {}


def options_of(approval: Approval) -> list[str]:
    """What a person may answer: a question's options (none: free text), continue/stop for a loop."""
    if approval.kind == DecisionKind.QUESTION:
        options = _request(approval).get("options")
        return [str(o) for o in options] if isinstance(options, list) else []
    if approval.kind == DecisionKind.LOOP_ESCALATION:
        return ["continue", "stop"]
    return []


CAP_UNITS = {"cost": "$", "tokens": " tokens", "tool_calls": " tool calls", "iterations": " iterations", "wall_clock": " s"}


def cap_amount(cap: Any, value: Any) -> str:
    unit = CAP_UNITS.get(str(cap), "")
    return f"${value}" if unit == "$" else f"{value}{unit}"


def asked(approval: Approval) -> str:
    """What exactly is asked, in one line (the title of every channel)."""
    agent = approval.agent.name if approval.agent_id is not None and approval.agent is not None else "an agent"
    request = _request(approval)
    if approval.kind == DecisionKind.BUDGET_EXTENSION:
        cap = request.get("cap", "?")
        return (
            f"{agent}: {cap} cap {cap_amount(cap, request.get('limit', '?'))} reached "
            f"(used {cap_amount(cap, request.get('used', '?'))}); extend by {cap_amount(cap, request.get('extend_by', '?'))}?"
        )
    if approval.kind == DecisionKind.QUESTION:
        return f"{agent} asks: {request.get('question', '')}"
    if approval.kind == DecisionKind.LOOP_ESCALATION:
        return f"{agent} repeats itself ({request.get('pattern', 'a loop')}): continue or stop?"
    if approval.kind == DecisionKind.CONFIG_CHANGE:
        who = approval.requested_by_label or "an admin"
        return f"{who} asks to change {agent}: {request.get('summary') or json.dumps(request.get('change', {}), sort_keys=True)}"
    return f"{agent} asks to run {approval.tool}"


def who_may_decide(approval: Approval, *, policy: Policy | None = None) -> str:
    """Who may decide, as `may_decide` judges it, in words."""
    if approval.kind == DecisionKind.CONFIG_CHANGE:
        return f"a second admin, signed in to agentops (not {approval.requested_by_label or 'whoever asked'})"
    who = f"members of '{approval.approver_group}' with the approver role" if approval.approver_group else "anyone with the approver role"
    if policy is None:
        policy = (Policy.objects.filter(agent_id=approval.agent_id).first() if approval.agent_id is not None else None) or Policy()
    if not policy.self_approval_allowed:
        who += f", except whoever started the run or changed this agent's grants or policy in the last {policy.grant_change_cooldown_h} h"
    return who


def on_expiry_text(approval: Approval) -> str:
    if approval.kind == DecisionKind.CONFIG_CHANGE:
        return "nothing is applied"
    if approval.on_expiry == "continue":
        return "the run goes on; the agent is told nobody decided in time"
    if approval.kind == DecisionKind.BUDGET_EXTENSION:
        return "the run ends: budget exceeded"
    return "the run halts"


def approval_to_dict(approval: Approval) -> ApprovalDict:
    return {
        "id": approval.pk,
        "kind": approval.kind,
        "run_id": approval.run_id,
        "agent_id": approval.agent_id,
        "agent": approval.agent.slug if approval.agent_id is not None and approval.agent is not None else None,
        "asked": asked(approval),
        "tool": approval.tool,
        "arguments": approval.arguments,
        "edited_arguments": approval.edited_arguments,
        "risk_class": approval.risk_class,
        "reason": approval.reason,
        "why_needed": approval.why_needed,
        "request": approval.request,
        "evidence": approval.evidence,
        "answer": approval.answer,
        "options": options_of(approval),
        "approver_group": approval.approver_group,
        "who_may_decide": who_may_decide(approval),
        "on_expiry": approval.on_expiry,
        "requested_by": approval.requested_by_label or None,
        "status": approval.status,
        "requested_at": approval.requested_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "decided_by": approval.decided_by_label or None,
        "comment": approval.comment,
    }
