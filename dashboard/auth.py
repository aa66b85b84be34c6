"""Sign-in throttling's side of the audit log: django-axes decides and refuses; we record.

django-axes reports a lock-out only through its signal, so this receiver is the one place that
turns it into an audit entry (imported by DashboardConfig.ready)."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.dispatch import receiver

from agentops.audit.services import audit_record


@receiver(user_locked_out, dispatch_uid="agentops-audit-lockout")
def audit_lockout(sender: Any, request: Any = None, username: str | None = None, ip_address: str | None = None, **_: Any) -> None:
    # axes also sends this for every try refused while locked; only the moment of locking is an
    # event (its failure count is set then), so a flood of refused tries stays one entry.
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None:
        return
    audit_record(
        actor=f"login:{username or '?'}"[:150],
        action="auth.lockout",
        detail=f"sign-in locked after {failures} failed attempts for username {username!r} from {ip_address or 'an unknown address'}",
        after={"username": username or "", "ip_address": ip_address or "", "failures": failures},
    )
