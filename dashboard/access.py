"""Who may see and do what. Every view goes through one of these; a template hiding a button is
never the check."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django_htmx.middleware import HtmxDetails

ROLE_GROUPS = ("viewer", "approver", "admin")

# What each action needs (a Django permission); the roles migration grants them to the groups.
DECIDE = "approvals.decide_approval"
KILL_SWITCH = "guardrails.operate_killswitch"
DRILL = "guardrails.run_drill"
CONFIGURE = "agents.change_agent"
CHANGE_POLICY = "agents.change_policy"
ADD_GRANT = "agents.add_toolgrant"
CHANGE_GRANT = "agents.change_toolgrant"
DELETE_GRANT = "agents.delete_toolgrant"
ADD_TRIGGER = "agents.add_trigger"
CHANGE_TRIGGER = "agents.change_trigger"
# Starting a run spends money and acts: the people who decide what agents do may start one.
START_RUN = DECIDE
# Merging, closing and commenting on the local forge's pull requests is deciding what ships.
REVIEW_PULL_REQUEST = DECIDE
# An error project's DSN is a credential: only whoever may change the project sees it.
SEE_ERROR_PROJECT_DSN = "triggers.change_errorproject"

AnyUser = User | AnonymousUser
_MEMBER_CACHE = "_agentops_member"


class AuthedRequest(HttpRequest):
    """The request a view behind member_required receives: its user is signed in (a User, never
    AnonymousUser), and HtmxMiddleware has said whether htmx sent it. For annotations only; Django
    builds the request."""

    user: User
    htmx: HtmxDetails


def is_member(user: AnyUser) -> bool:
    """A viewer at least: signed in, active, and in a role group (or staff)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff or user.is_superuser:
        return True
    # Cached on the user object for the rest of the request, as Django caches its permissions.
    cached: bool | None = getattr(user, _MEMBER_CACHE, None)
    if cached is None:
        cached = user.groups.filter(name__in=ROLE_GROUPS).exists()
        setattr(user, _MEMBER_CACHE, cached)
    return cached


def require_perm(user: AnyUser, perm: str) -> None:
    if not allowed(user, perm):
        raise PermissionDenied(f"this needs the permission {perm}")


def allowed(user: AnyUser, perm: str) -> bool:
    return is_member(user) and user.has_perm(perm)


def member_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed in (else redirect to sign-in) and in a role (else 403)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_member(request.user):
            raise PermissionDenied("you are signed in but have no role here")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def roles_of(user: AnyUser) -> dict[str, bool]:
    """For templates: which buttons to offer (the views check again)."""
    member = is_member(user)
    return {
        "member": member,
        "can_decide": member and user.has_perm(DECIDE),
        "can_kill": member and user.has_perm(KILL_SWITCH),
        "can_drill": member and user.has_perm(DRILL),
        "can_configure": member and user.has_perm(CONFIGURE),
    }
