"""Write paths of agent configuration: the agent, its policy, its tool grants and its triggers.
Each is keyword-only, does one change in one transaction and audits it with before and after, so the
dashboard, the API and commands that change a configuration all go through the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from agentops.agents.models import Agent, Policy, ToolGrant, Trigger
from agentops.agents.spec import agent_errors, export_agent, plain_value
from agentops.audit.services import audit_record

Actor = AbstractBaseUser | str | None

AGENT_FIELDS = ("name", "objective", "model", "trust_phase")
POLICY_FIELDS = (
    "max_tokens", "max_cost_usd", "max_tool_calls", "max_iterations", "max_wall_clock_s",
    "alarm_tokens", "alarm_cost_usd", "alarm_tool_calls", "alarm_iterations", "alarm_wall_clock_s",
    "daily_max_runs", "daily_max_cost_usd", "daily_action_caps", "rate_limit_per_minute", "approval_timeout_s",
)
# Changing these means a person chose the cost budget: history-based defaults stop applying.
PERSON_BUDGET_FIELDS = ("max_cost_usd", "alarm_cost_usd")


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


def agent_update(*, agent: Agent, actor: Actor, changes: dict[str, Any]) -> Agent:
    check_agent_config(agent, lambda spec: spec.update({k: v for k, v in changes.items() if k in AGENT_FIELDS}), fields=AGENT_FIELDS)
    with transaction.atomic():
        current = Agent.objects.select_for_update().get(pk=agent.pk)
        before, after = _diff(current, changes, AGENT_FIELDS)
        if after:
            for name, value in changes.items():
                if name in after:
                    setattr(current, name, value)
            current.full_clean()
            current.save(update_fields=[*after, "updated_at"])
            audit_record(actor=actor, action="agent.update", target=current, before=before, after=after)
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
        before, after = _diff(policy, changes, POLICY_FIELDS)
        if after:
            for name in after:
                setattr(policy, name, changes[name])
            fields = list(after)
            if any(name in after for name in PERSON_BUDGET_FIELDS) and not policy.budget_set_by_person:
                policy.budget_set_by_person = True
                fields.append("budget_set_by_person")
                after["budget_set_by_person"] = True
            policy.full_clean()
            policy.save(update_fields=fields)
            audit_record(actor=actor, action="policy.update", target=agent, before=before, after=after)
    return policy


def grant_scope_errors(tool_name: str, scope: Any) -> list[str]:
    from agentops.tools.registry import get_tool

    tool = get_tool(tool_name)
    if tool is None:
        return [f"unknown tool {tool_name!r}"]
    return tool.scope_errors(scope)


def grant_save(*, agent: Agent, actor: Actor, tool: str, scope: dict[str, Any], approval: str, grant: ToolGrant | None = None) -> ToolGrant:
    """Create or change a tool grant. The scope must satisfy the tool's scope schema, and an
    irreversible tool can never be set to act without a person."""
    def change(spec: dict[str, Any]) -> None:
        others = [g for g in spec["tools"] if g["tool"] != (grant.tool if grant else tool)]
        spec["tools"] = [*others, {"tool": tool, "scope": scope, "approval": approval}]

    check_agent_config(agent, change, fields=("tool", "scope", "approval"))
    with transaction.atomic():
        if grant is None:
            grant = ToolGrant.objects.create(agent=agent, tool=tool, scope=scope, approval=approval)
            audit_record(actor=actor, action="grant.create", target=agent, after={"tool": tool, "scope": scope, "approval": approval})
        else:
            current = ToolGrant.objects.select_for_update().get(pk=grant.pk, agent=agent)
            before = {"tool": current.tool, "scope": current.scope, "approval": current.approval}
            after = {"tool": tool, "scope": scope, "approval": approval}
            if before != after:
                current.tool, current.scope, current.approval = tool, scope, approval
                current.save()
                audit_record(actor=actor, action="grant.update", target=agent, before=before, after=after)
            grant = current
    return grant


def grant_delete(*, grant: ToolGrant, actor: Actor) -> None:
    with transaction.atomic():
        before = {"tool": grant.tool, "scope": grant.scope, "approval": grant.approval}
        agent = grant.agent
        grant.delete()
        audit_record(actor=actor, action="grant.delete", target=agent, before=before)


def trigger_save(*, agent: Agent, actor: Actor, changes: dict[str, Any], trigger: Trigger | None = None) -> Trigger:
    fields = ("name", "kind", "rules", "enabled")

    def change(spec: dict[str, Any]) -> None:
        others = [t for t in spec["triggers"] if trigger is None or t["name"] != trigger.name]
        current = next((t for t in spec["triggers"] if trigger is not None and t["name"] == trigger.name), {})
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
