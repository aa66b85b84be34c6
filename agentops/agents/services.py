"""Write paths of agent configuration: the agent, its policy, its tool grants and its triggers.
Each is keyword-only, does one change in one transaction and audits it with before and after, so the
dashboard, the API and commands that change a configuration all go through the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def _same_text(a: Any, b: Any) -> bool:
    """Equal but for line endings (a browser posts CRLF whatever the text held)."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a.replace("\r\n", "\n").replace("\r", "\n") == b.replace("\r\n", "\n").replace("\r", "\n")


def agent_update(*, agent: Agent, actor: Actor, changes: dict[str, Any], reason: str = "") -> Agent:
    """Change an agent. Raising its trust phase lets it do more alone, so it needs a reason, which
    the audit entry keeps."""
    changes = {k: v for k, v in changes.items() if k in AGENT_FIELDS}
    check_agent_config(agent, lambda spec: spec.update(changes), fields=AGENT_FIELDS)
    reason = (reason or "").strip()
    with transaction.atomic():
        current = Agent.objects.select_for_update().get(pk=agent.pk)
        if "objective" in changes and _same_text(changes["objective"], current.objective):
            del changes["objective"]
        if "trust_phase" in changes and int(changes["trust_phase"]) > current.trust_phase and not reason:
            raise ValidationError({"trust_phase": ["raising the trust phase needs a reason"]})
        before, after = _diff(current, changes, AGENT_FIELDS)
        if after:
            for name, value in changes.items():
                if name in after:
                    setattr(current, name, value)
            current.full_clean()
            current.save(update_fields=[*after, "updated_at"])
            audit_record(actor=actor, action="agent.update", target=current, before=before, after=after, detail=reason)
    return current


def _mark_budget_set_by_person(policy: Policy, changed: Iterable[str]) -> bool:
    """A person changed a cost cap (on any path: a form, the API, a spec file): history-based
    defaults stop applying to it. True when the mark was set now."""
    if any(name in PERSON_BUDGET_FIELDS for name in changed) and not policy.budget_set_by_person:
        policy.budget_set_by_person = True
        return True
    return False


def agent_apply(spec: dict[str, Any], *, actor: Actor) -> tuple[Agent, str, bool | None]:
    """Make one agent exactly what a validated spec says (`agentops apply`): its fields, trust
    phase, policy, grants and triggers. Returns the agent, "created", "updated" or "unchanged", and
    the pause state to apply after the commit (None: unchanged), since pausing halts runs."""
    from agentops.agents.spec import POLICY_FIELDS as SPEC_POLICY_FIELDS
    from agentops.agents.spec import policy_values

    agent = Agent.objects.filter(slug=spec["slug"]).first()
    before = export_agent(agent) if agent else None
    if agent is None:
        agent = Agent(slug=spec["slug"])
    agent.name = spec["name"]
    agent.objective = spec["objective"]
    agent.model = spec["model"]
    agent.trust_phase = spec.get("trust_phase", 1)
    if agent.pk is None:
        agent.paused = False
    pause = spec.get("paused", False) if spec.get("paused", False) != agent.paused else None
    agent.config = spec.get("config", {})
    agent.full_clean()
    agent.save()
    policy, created = Policy.objects.get_or_create(agent=agent)
    budget_before = {name: getattr(policy, name) for name in PERSON_BUDGET_FIELDS}
    # Once a person chose the cost budget it stays theirs (a file written before that choice, applied
    # again, does not hand it back to history); a new agent's caps are its starting point, not a change.
    set_by_person = policy.budget_set_by_person and not created
    # Fields the spec leaves out go back to their defaults: the file is the whole truth.
    defaults = {f.name: f.get_default() for f in Policy._meta.fields if f.name in SPEC_POLICY_FIELDS}
    for name, value in {**defaults, **policy_values(spec.get("policy", {}))}.items():
        setattr(policy, name, value)
    if set_by_person:
        policy.budget_set_by_person = True
    elif not created:
        _mark_budget_set_by_person(policy, [name for name, value in budget_before.items() if getattr(policy, name) != value])
    policy.full_clean()
    policy.save()
    wanted = {g["tool"]: g for g in spec.get("tools", [])}
    agent.grants.exclude(tool__in=wanted).delete()
    for name, grant in wanted.items():
        ToolGrant.objects.update_or_create(agent=agent, tool=name, defaults={"scope": grant.get("scope", {}), "approval": grant.get("approval", "default")})
    triggers = {t["name"]: t for t in spec.get("triggers", [])}
    agent.triggers.exclude(name__in=triggers).delete()
    for name, trigger in triggers.items():
        Trigger.objects.update_or_create(
            agent=agent,
            name=name,
            defaults={"kind": trigger["kind"], "rules": trigger.get("rules", {}), "enabled": trigger.get("enabled", True)},
        )
    after = export_agent(agent)
    if before is None:
        audit_record(actor=actor, action="agent.create", target=agent, after=after, detail="agentops apply")
        return agent, "created", pause
    if before != after:
        audit_record(actor=actor, action="agent.update", target=agent, before=before, after=after, detail="agentops apply")
        return agent, "updated", pause
    return agent, "unchanged", pause


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
            if _mark_budget_set_by_person(policy, after):
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
