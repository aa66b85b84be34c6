"""The global kill switch and the per-agent pause: one write path each, audited."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agentops.agents.models import Agent
from agentops.audit.services import actor_label_of, audit_record
from agentops.guardrails.models import ControlState
from agentops.live import broadcast

Actor = AbstractBaseUser | str | None


class ReasonRequired(ValueError):
    pass


def control_state() -> ControlState:
    state, _ = ControlState.objects.get_or_create(pk=1)
    return state


def kill_switch_engaged() -> bool:
    # One indexed read of a one-row table: cheap enough to do before every action.
    return ControlState.objects.filter(pk=1, engaged=True).exists()


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
            state.engaged_by = actor if isinstance(actor, AbstractBaseUser) else None
            state.engaged_by_label = actor_label_of(actor)
            state.reason = reason
            state.save()
            audit_record(actor=actor, action="kill_switch.engage", target=state, detail=reason)
    if not already:
        from agentops.runs.services import halt_runs

        halt_runs(status="killed", reason=f"kill switch engaged by {state.engaged_by_label}: {reason}")
        broadcast("overview", {"type": "kill_switch.changed", "engaged": True})
        from agentops.notify import notify

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
            state.released_by = actor if isinstance(actor, AbstractBaseUser) else None
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
            paused_by=actor if isinstance(actor, AbstractBaseUser) else None,
        )
        if updated:
            audit_record(actor=actor, action="agent.pause", target=agent, detail=reason)
    agent.refresh_from_db()
    if updated:
        from agentops.runs.services import halt_runs

        halt_runs(status="killed", reason=f"agent paused by {actor_label_of(actor)}: {reason}", agent=agent)
    return agent


def agent_resume(*, agent: Agent, actor: Actor) -> Agent:
    with transaction.atomic():
        if Agent.objects.filter(pk=agent.pk, paused=True).update(paused=False, paused_reason="", paused_at=None, paused_by=None):
            audit_record(actor=actor, action="agent.resume", target=agent)
    agent.refresh_from_db()
    return agent
