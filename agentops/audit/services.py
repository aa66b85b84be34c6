from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from agentops.audit.models import AuditEvent


def actor_label_of(actor: AbstractBaseUser | str | None) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def audit_record(
    *,
    actor: AbstractBaseUser | str | None,
    action: str,
    target: Any = None,
    before: Any = None,
    after: Any = None,
    detail: str = "",
) -> AuditEvent:
    # before/after/detail/target_label are redacting fields: no secret is stored, whoever records.
    return AuditEvent.objects.create(
        actor=actor if isinstance(actor, get_user_model()) else None,
        actor_label=actor_label_of(actor),
        action=action,
        target_type=type(target)._meta.model_name if hasattr(target, "_meta") else (type(target).__name__ if target is not None else ""),
        target_id=str(getattr(target, "pk", "") or ""),
        target_label=str(target)[:200] if target is not None else "",
        before=before,
        after=after,
        detail=detail,
    )
