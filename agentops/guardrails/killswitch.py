"""The global kill switch and the per-agent pause: one write path each, audited.

Reading the switch (``kill_switch_engaged``) lives with the rest of the stop state
(``guardrails/stop_state.py``), below the run services that both this module and it use.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.utils import timezone

from agentops.agents.models import Agent
from agentops.audit.services import actor_label_of, audit_record
from agentops.guardrails.models import ControlState
from agentops.guardrails.stop_state import kill_switch_engaged
from agentops.live import broadcast
from agentops.notify import notify
from agentops.runs.services import halt_runs

__all__ = ["ReasonRequired", "agent_pause", "agent_resume", "control_state", "kill_switch_engage", "kill_switch_engaged", "kill_switch_release", "person_of"]

Actor = AbstractBaseUser | str | None


def person_of(actor: Actor) -> User | None:
    """The signed-in person behind an actor; None for the system or a named process (``"cli"``)."""
    return actor if isinstance(actor, User) else None


class ReasonRequired(ValueError):
    pass


def control_state() -> ControlState:
    state, _ = ControlState.objects.get_or_create(pk=1)
    return state


def kill_switch_engage(*, actor: Actor, reason: str) -> ControlState:
    """Stop everything: running runs halt before their next action (and their sandbox commands are
    cancelled), waiting runs are killed with their approvals rejected, queued runs are refused."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("a reason is required to engage the kill switch")
    with transaction.atomic():
        state = ControlState.objects.select_for_update().filter(pk=1).first() or ControlState.objects.create(pk=1)
        already = state.engaged
        if not already:
            state.engaged = True
            state.engaged_at = timezone.now()
            state.engaged_by = person_of(actor)
            state.engaged_by_label = actor_label_of(actor)
            state.reason = reason
            state.save()
            audit_record(actor=actor, action="kill_switch.engage", target=state, detail=reason)
    if not already:
        halt_runs(status="killed", reason=f"kill switch engaged by {state.engaged_by_label}: {reason}")
        broadcast("overview", {"type": "kill_switch.changed", "engaged": True})
        notify(event="kill_switch", subject="Kill switch engaged", text=f"{state.engaged_by_label}: {reason}", path="/")
    return state


def kill_switch_release(*, actor: Actor, reason: str) -> ControlState:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("a reason is required to release the kill switch")
    with transaction.atomic():
        state = ControlState.objects.select_for_update().filter(pk=1).first() or ControlState.objects.create(pk=1)
        if state.engaged:
            state.engaged = False
            state.released_at = timezone.now()
            state.released_by = person_of(actor)
            state.released_by_label = actor_label_of(actor)
            state.release_reason = reason
            state.save()
            audit_record(actor=actor, action="kill_switch.release", target=state, detail=reason)
    broadcast("overview", {"type": "kill_switch.changed", "engaged": False})
    return state


def agent_pause(*, agent: Agent, actor: Actor, reason: str) -> Agent:
    """Pause one agent: its runs stop like under the kill switch, and it starts no new ones."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("a reason is required to pause an agent")
    with transaction.atomic():
        updated = Agent.objects.filter(pk=agent.pk, paused=False).update(
            paused=True,
            paused_reason=reason,
            paused_at=timezone.now(),
            paused_by=person_of(actor),
        )
        if updated:
            audit_record(actor=actor, action="agent.pause", target=agent, detail=reason)
    agent.refresh_from_db()
    if updated:
        halt_runs(status="killed", reason=f"agent paused by {actor_label_of(actor)}: {reason}", agent=agent)
    return agent


def agent_resume(*, agent: Agent, actor: Actor) -> Agent:
    with transaction.atomic():
        if Agent.objects.filter(pk=agent.pk, paused=True).update(paused=False, paused_reason="", paused_at=None, paused_by=None):
            audit_record(actor=actor, action="agent.resume", target=agent)
    agent.refresh_from_db()
    return agent
