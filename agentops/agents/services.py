"""Write paths of agent configuration: the agent, its policy, its tool grants and its triggers.
Each is keyword-only, does one change in one transaction and audits it with before and after, so the
dashboard, the API and commands that change a configuration all go through the same path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from agentops.agents.models import Agent, OnExpiry, Policy, ToolGrant, Trigger
from agentops.agents.spec import agent_errors, export_agent, held_summary, mark_budget_set_by_person, plain_value, second_admin_changes
from agentops.approvals.requests import config_change_request
from agentops.audit.services import audit_record
from agentops.mcp.spec import is_mcp_tool, scope_shape_errors
from agentops.tools.registry import get_tool

if TYPE_CHECKING:
    from agentops.approvals.models import Approval

Actor = AbstractBaseUser | str | None

AGENT_FIELDS = ("name", "objective", "model", "trust_phase")
POLICY_FIELDS = (
    "max_tokens",
    "max_cost_usd",
    "max_tool_calls",
    "max_iterations",
    "max_wall_clock_s",
    "alarm_tokens",
    "alarm_cost_usd",
    "alarm_tool_calls",
    "alarm_iterations",
    "alarm_wall_clock_s",
    "daily_max_runs",
    "daily_max_cost_usd",
    "daily_action_caps",
    "rate_limit_per_minute",
    "approval_timeout_s",
    "extendable_caps",
    "max_extensions_per_run",
    "loop_escalation",
    "self_approval_allowed",
    "grant_change_cooldown_h",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return value


def _diff(obj: Any, changes: dict[str, Any], fields: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    before, after = {}, {}
    for name in fields:
        if name in changes and getattr(obj, name) != changes[name]:
            before[name] = _jsonable(getattr(obj, name))
            after[name] = _jsonable(changes[name])
    return before, after


def _field_of(error: str, fields: tuple[str, ...]) -> str:
    """The form field an error of `agent_errors` belongs to ("policy.max_cost_usd: ..." ->
    max_cost_usd), or the non-field key."""
    path = error.split(": ", 1)[0]
    for part in reversed(path.replace("[", ".").split(".")):
        if part in fields:
            return part
    return NON_FIELD_ERRORS


def check_agent_config(agent: Agent, change: Callable[[dict[str, Any]], None], *, fields: tuple[str, ...] = ()) -> None:
    """Raise ValidationError unless the agent's configuration, with `change` applied, passes the one
    validator `apply` uses (so a form or the API can never save what `apply` would refuse)."""
    candidate = export_agent(agent)
    change(candidate)
    errors = agent_errors(candidate)
    if errors:
        by_field: dict[str, list[str]] = {}
        for error in errors:
            by_field.setdefault(_field_of(error, fields), []).append(error.split(": ", 1)[-1] if _field_of(error, fields) != NON_FIELD_ERRORS else error)
        raise ValidationError(by_field)


def _same_text(a: Any, b: Any) -> bool:
    """Equal but for line endings (a browser posts CRLF whatever the text held)."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a.replace("\r\n", "\n").replace("\r", "\n") == b.replace("\r\n", "\n").replace("\r", "\n")


class SecondAdminRequired(ValidationError):
    """The change was not applied: one admin alone may not make it. It waits as a pending
    config_change decision (`decision`) for a second admin. A ValidationError, so that every form,
    the API and the CLI already say it where they say what is wrong."""

    def __init__(self, decision: Approval) -> None:
        summary = decision.request.get("summary", "this change") if isinstance(decision.request, dict) else "this change"
        super().__init__({NON_FIELD_ERRORS: [f"{summary} needs a second admin: it waits as decision #{decision.pk} in Decisions; nothing else changed"]})
        self.decision = decision


def second_admin_hold(*, agent: Agent, actor: Actor, change: Callable[[dict[str, Any]], None], reason: str = "") -> tuple[dict[str, Any], Approval | None]:
    """The one check of the two-admin rule for the dashboard's, the API's and the CLI's write paths
    (the spec's, `agent_apply`, uses the same `second_admin_changes`): the part of `change` that
    needs a second admin, and the pending decision asked for it ({} and None when nothing is held)."""
    before = export_agent(agent)
    after = copy.deepcopy(before)
    change(after)
    held = second_admin_changes(before=before, after=after)
    if not held:
        return {}, None
    return held, config_change_request(agent=agent, actor=actor, change=held, summary=held_summary(held, before=before), reason=reason)


def hold_for_second_admin(*, agent: Agent, actor: Actor, change: Callable[[dict[str, Any]], None]) -> None:
    """For a write path whose whole change is one grant: raise SecondAdminRequired (the decision is
    asked, nothing else happens) when it needs a second admin."""
    held, decision = second_admin_hold(agent=agent, actor=actor, change=change)
    if decision is not None:
        raise SecondAdminRequired(decision)


def agent_update(*, agent: Agent, actor: Actor, changes: dict[str, Any], reason: str = "") -> Agent:
    """Change an agent. Raising its trust phase lets it do more alone, so it needs a reason, which
    the audit entry keeps; raising it to phase 4 also needs a second admin: that part waits as a
    pending decision (`pending_change` of the returned agent) and the rest applies."""
    changes = {k: v for k, v in changes.items() if k in AGENT_FIELDS}
    check_agent_config(agent, lambda spec: spec.update(changes), fields=AGENT_FIELDS)
    reason = (reason or "").strip()
    with transaction.atomic():
        current = Agent.objects.select_for_update().get(pk=agent.pk)
        if "objective" in changes and _same_text(changes["objective"], current.objective):
            del changes["objective"]
        if "trust_phase" in changes and int(changes["trust_phase"]) > current.trust_phase and not reason:
            raise ValidationError({"trust_phase": ["raising the trust phase needs a reason"]})
        held, decision = second_admin_hold(agent=current, actor=actor, change=lambda spec: spec.update(changes), reason=reason)
        if "trust_phase" in held:
            changes.pop("trust_phase", None)
        before, after = _diff(current, changes, AGENT_FIELDS)
        if after:
            for name, value in changes.items():
                if name in after:
                    setattr(current, name, value)
            current.full_clean()
            current.save(update_fields=[*after, "updated_at"])
            audit_record(actor=actor, action="agent.update", target=current, before=before, after=after, detail=reason)
    current.pending_change = decision
    return current


def policy_update(*, agent: Agent, actor: Actor, changes: dict[str, Any]) -> Policy:
    def change(spec: dict[str, Any]) -> None:
        policy = spec.setdefault("policy", {})
        policy.update({k: plain_value(v) for k, v in changes.items() if k in POLICY_FIELDS})
        # The spec leaves unset caps out rather than null.
        for name in [k for k, v in policy.items() if v is None]:
            del policy[name]

    check_agent_config(agent, change, fields=POLICY_FIELDS)
    with transaction.atomic():
        policy, _ = Policy.objects.select_for_update().get_or_create(agent=agent)
        # Weakening separation of duties waits for a second admin; the rest applies.
        held, decision = second_admin_hold(agent=agent, actor=actor, change=change)
        changes = {k: v for k, v in changes.items() if k not in held.get("policy", {})}
        before, after = _diff(policy, changes, POLICY_FIELDS)
        if after:
            for name in after:
                setattr(policy, name, changes[name])
            fields = list(after)
            if mark_budget_set_by_person(policy, after):
                fields.append("budget_set_by_person")
                after["budget_set_by_person"] = True
            policy.full_clean()
            policy.save(update_fields=fields)
            audit_record(actor=actor, action="policy.update", target=agent, before=before, after=after)
    policy.pending_change = decision
    return policy


def grant_scope_errors(tool_name: str, scope: Any) -> list[str]:
    if is_mcp_tool(tool_name):
        # An MCP tool is in no registry until a run lists its server: check what needs no schema.
        return scope_shape_errors(scope)

    tool = get_tool(tool_name)
    if tool is None:
        return [f"unknown tool {tool_name!r}"]
    return tool.scope_errors(scope)


def _grant_entry(grant: ToolGrant) -> dict[str, Any]:
    return {"tool": grant.tool, "scope": grant.scope, "approval": grant.approval, "approver_group": grant.approver_group, "on_timeout": grant.on_timeout}


def grant_save(
    *,
    agent: Agent,
    actor: Actor,
    tool: str,
    scope: dict[str, Any],
    approval: str,
    approver_group: str = "",
    on_timeout: str = OnExpiry.HALT,
    grant: ToolGrant | None = None,
) -> ToolGrant:
    """Create or change a tool grant. The scope must satisfy the tool's scope schema, an
    irreversible tool can never be set to act without a person, and granting one needs a second
    admin (SecondAdminRequired: it waits as a decision, nothing else changes)."""
    entry: dict[str, Any] = {"tool": tool, "scope": scope, "approval": approval}
    if approver_group:
        entry["approver_group"] = approver_group
    if on_timeout != OnExpiry.HALT:
        entry["on_timeout"] = on_timeout

    def change(spec: dict[str, Any]) -> None:
        others = [g for g in spec["tools"] if g["tool"] != (grant.tool if grant else tool)]
        spec["tools"] = [*others, entry]

    check_agent_config(agent, change, fields=("tool", "scope", "approval", "approver_group", "on_timeout"))
    hold_for_second_admin(agent=agent, actor=actor, change=change)
    with transaction.atomic():
        if grant is None:
            grant = ToolGrant.objects.create(agent=agent, tool=tool, scope=scope, approval=approval, approver_group=approver_group, on_timeout=on_timeout)
            audit_record(actor=actor, action="grant.create", target=agent, after=_grant_entry(grant))
        else:
            current = ToolGrant.objects.select_for_update().get(pk=grant.pk, agent=agent)
            before = _grant_entry(current)
            current.tool, current.scope, current.approval, current.approver_group, current.on_timeout = tool, scope, approval, approver_group, on_timeout
            after = _grant_entry(current)
            if before != after:
                current.save()
                audit_record(actor=actor, action="grant.update", target=agent, before=before, after=after)
            grant = current
    return grant


def grant_delete(*, grant: ToolGrant, actor: Actor) -> None:
    with transaction.atomic():
        before = _grant_entry(grant)
        agent = grant.agent
        grant.delete()
        audit_record(actor=actor, action="grant.delete", target=agent, before=before)


def trigger_save(*, agent: Agent, actor: Actor, changes: dict[str, Any], trigger: Trigger | None = None) -> Trigger:
    fields = ("name", "kind", "rules", "enabled")

    def change(spec: dict[str, Any]) -> None:
        others = [t for t in spec["triggers"] if trigger is None or t["name"] != trigger.name]
        current: dict[str, Any] = next((t for t in spec["triggers"] if trigger is not None and t["name"] == trigger.name), {})
        spec["triggers"] = [*others, {**current, **{k: changes[k] for k in fields if k in changes}}]

    check_agent_config(agent, change, fields=fields)
    with transaction.atomic():
        if trigger is None:
            trigger = Trigger(agent=agent, **{k: changes[k] for k in fields if k in changes})
            trigger.full_clean()
            trigger.save()
            audit_record(actor=actor, action="trigger.create", target=agent, after={k: getattr(trigger, k) for k in fields})
            return trigger
        current = Trigger.objects.select_for_update().get(pk=trigger.pk, agent=agent)
        before, after = _diff(current, changes, fields)
        if after:
            for name in after:
                setattr(current, name, changes[name])
            current.full_clean()
            current.save()
            audit_record(actor=actor, action="trigger.update", target=agent, before={"trigger": current.pk, **before}, after=after)
    return current
