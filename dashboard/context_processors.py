from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from agentops.guardrails.models import ControlState
from dashboard.access import roles_of


def control_room(request: HttpRequest) -> dict[str, Any]:
    """The kill-switch state for the banner and the button on every page, and the viewer's role."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"control_state": ControlState.objects.filter(pk=1).first(), "roles": roles_of(user)}
