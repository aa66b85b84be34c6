"""The one JSON shape of an Approval, shared by the API and anything else that shows one outside the browser."""

from __future__ import annotations

from typing import Any, TypedDict

from agentops.approvals.models import Approval


class ApprovalDict(TypedDict):
    id: int
    run_id: int
    tool: str
    arguments: Any
    risk_class: str
    reason: str
    why_needed: str
    status: str
    requested_at: str
    expires_at: str
    decided_at: str | None
    decided_by: str | None
    comment: str


def approval_to_dict(approval: Approval) -> ApprovalDict:
    return {
        "id": approval.pk,
        "run_id": approval.run_id,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "risk_class": approval.risk_class,
        "reason": approval.reason,
        "why_needed": approval.why_needed,
        "status": approval.status,
        "requested_at": approval.requested_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "decided_by": approval.decided_by_label or None,
        "comment": approval.comment,
    }
