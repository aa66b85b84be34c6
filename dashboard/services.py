"""Write paths the dashboard owns (API tokens) and the budget suggestion its agent pages show.
Agent configuration is written by agentops.agents.services.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User
from django.utils import timezone

from agentops.agents.models import Agent
from agentops.audit.services import audit_record
from agentops.guardrails import budgets as guardrail_budgets
from dashboard import access
from dashboard.models import ApiToken, TokenScope

Actor = AbstractBaseUser | str | None


def budget_history(agent: Agent) -> dict[str, Any]:
    """Suggested cost limits from history: the controller's own rule (agentops.guardrails.budgets),
    so the page suggests exactly what a run would enforce."""
    return guardrail_budgets.budget_history(agent).as_dict()


# --- API tokens ------------------------------------------------------------------------------

TOKEN_PREFIX = "aop_"
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365


class TokenRefused(Exception):
    """Why a bearer token does not authenticate (always a 401: no hint which part was wrong
    beyond what its holder can already see on the tokens page)."""


class ScopeNotAllowed(Exception):
    pass


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_scopes_for(user: User) -> list[str]:
    """The scopes a person may give a token: never more than their own role can use."""
    scopes = [TokenScope.READ.value]
    if access.allowed(user, access.DECIDE):
        scopes.append(TokenScope.OPERATE.value)
    if access.allowed(user, access.KILL_SWITCH) and access.allowed(user, access.CONFIGURE):
        scopes.append(TokenScope.ADMIN.value)
    return scopes


def api_token_create(*, user: User, name: str, scope: str, expires_in_days: int = DEFAULT_TOKEN_DAYS) -> tuple[ApiToken, str]:
    """Returns the token row and the raw token, which is shown once and never stored."""
    if scope not in TokenScope.values:
        raise ScopeNotAllowed(f"scope must be one of {', '.join(TokenScope.values)}")
    if scope not in token_scopes_for(user):
        raise ScopeNotAllowed(f"your role cannot use the {scope} scope")
    if not isinstance(expires_in_days, int) or not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise ValueError(f"a token expires after 1 to {MAX_TOKEN_DAYS} days")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100] or "token",
        prefix=raw[:10],
        key_hash=_hash(raw),
        scope=scope,
        expires_at=timezone.now() + timedelta(days=expires_in_days),
    )
    audit_record(actor=user, action="api_token.create", target=token, after={"scope": token.scope, "expires_at": token.expires_at.isoformat()})
    return token, raw


def api_token_revoke(*, token: ApiToken, actor: Actor) -> None:
    if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_record(actor=actor, action="api_token.revoke", target=token, before={"scope": token.scope})


def api_token_authenticate(raw: str) -> ApiToken:
    """The live token for a raw bearer value, with its user loaded; raises TokenRefused."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        raise TokenRefused("a valid bearer token is required")
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(raw)).first()
    if token is None:
        raise TokenRefused("a valid bearer token is required")
    if token.revoked_at is not None:
        raise TokenRefused("this token was revoked")
    now = timezone.now()
    if token.expires_at <= now:
        raise TokenRefused("this token has expired")
    if not token.user.is_active:
        raise TokenRefused("this token's user is deactivated")
    # Coarse last-used time: at most one write a minute per token.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
