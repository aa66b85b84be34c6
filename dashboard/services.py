"""Write paths the dashboard owns (API tokens) and the budget suggestion its agent pages show.
Agent configuration is written by agentops.agents.services.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from agentops.agents.models import Agent
from agentops.audit.services import audit_record
from dashboard.models import ApiToken

Actor = AbstractBaseUser | str | None


def budget_history(agent: Agent, *, sample: int = 500) -> dict[str, Any]:
    """Suggested cost limits from history (seeds/001): the median cost of the agent's recent
    succeeded runs; 10x as the alarm, 50x as the hard stop."""
    from agentops.runs.models import Run, RunStatus

    costs = list(
        Run.objects.filter(agent=agent, status=RunStatus.SUCCEEDED).order_by("-created_at").values_list("cost_usd", flat=True)[:sample]
    )
    if not costs:
        return {"runs": 0, "median": None, "alarm": None, "hard_stop": None}
    median = Decimal(statistics.median(costs)).quantize(Decimal("0.000001"))
    return {"runs": len(costs), "median": median, "alarm": median * 10, "hard_stop": median * 50}


# --- API tokens ------------------------------------------------------------------------------

TOKEN_PREFIX = "aop_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Returns the token row and the raw token, which is shown once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name.strip()[:100] or "token", prefix=raw[:10], key_hash=_hash(raw))
    audit_record(actor=user, action="api_token.create", target=token)
    return token, raw


def api_token_revoke(*, token: ApiToken, actor: Actor) -> None:
    if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_record(actor=actor, action="api_token.revoke", target=token)


def api_token_user(raw: str) -> AbstractBaseUser | None:
    if not raw.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(raw), revoked_at__isnull=True).first()
    if token is None or not token.user.is_active:
        return None
    # Coarse last-used time: at most one write a minute per token.
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
