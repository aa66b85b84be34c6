"""Agents as code: a YAML spec applied declaratively, and exported back.

`apply` validates the whole spec first and reports every error with its path; only a spec without
errors is written, in one transaction. Grants and triggers not named in an agent's spec are removed:
the file is the truth for the agents it names (agents it does not name are left alone).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml
from croniter import croniter
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.forms.models import model_to_dict

from agentops.agents.models import EXTENDABLE_CAPS, Agent, ApprovalOverride, LoopEscalation, OnExpiry, Policy, RiskClass, ToolGrant, Trigger, TriggerKind
from agentops.approvals.requests import config_change_request
from agentops.audit.services import audit_record
from agentops.guardrails.killswitch import agent_pause, agent_resume
from agentops.llm.prices import UnknownModelPrice, model_retirement, price_for
from agentops.mcp.spec import (
    MCP_GRANT_PROPERTIES,
    MCP_SERVERS_SCHEMA,
    apply_servers,
    builtin_grant_errors,
    effective_risk,
    export_servers,
    find_snapshot,
    grant_extra,
    grant_pin_fields,
    is_mcp_tool,
    mcp_grant_check,
    servers_errors,
)
from agentops.tools.registry import get_tool

if TYPE_CHECKING:
    from agentops.approvals.models import Approval

SPEC_VERSION = 1

_POLICY_INT_FIELDS = [
    "max_tokens",
    "max_tool_calls",
    "max_iterations",
    "max_wall_clock_s",
    "alarm_tokens",
    "alarm_tool_calls",
    "alarm_iterations",
    "alarm_wall_clock_s",
    "daily_max_runs",
    "rate_limit_per_minute",
    "approval_timeout_s",
    "low_risk_max_changed_lines",
    "max_diff_lines",
    "sandbox_memory_mb",
    "sandbox_pids",
    "command_timeout_s",
    "sandbox_disk_mb",
    "max_extensions_per_run",
    "grant_change_cooldown_h",
]
_POLICY_DECIMAL_FIELDS = ["max_cost_usd", "alarm_cost_usd", "daily_max_cost_usd", "sandbox_cpus"]
_POLICY_OTHER_FIELDS = [
    "budget_set_by_person",
    "daily_action_caps",
    "low_risk_paths",
    "protected_paths",
    "extendable_caps",
    "loop_escalation",
    "self_approval_allowed",
]
POLICY_FIELDS = _POLICY_INT_FIELDS + _POLICY_DECIMAL_FIELDS + _POLICY_OTHER_FIELDS
# (alarm, cap): an alarm must sit below its cap or it can never ring.
ALARM_PAIRS = [
    ("alarm_tokens", "max_tokens"),
    ("alarm_cost_usd", "max_cost_usd"),
    ("alarm_tool_calls", "max_tool_calls"),
    ("alarm_iterations", "max_iterations"),
    ("alarm_wall_clock_s", "max_wall_clock_s"),
]
# Changing these means a person chose the cost budget: history-based defaults stop applying.
PERSON_BUDGET_FIELDS = ("max_cost_usd", "alarm_cost_usd")

# Bounds are the database's: a value the columns cannot hold is an error here, not a 500 later.
_INT_MAX = 2_147_483_647  # PositiveIntegerField on PostgreSQL
_BIGINT_MAX = 9_223_372_036_854_775_807
_nullable_int = {"type": ["integer", "null"], "minimum": 0, "maximum": _INT_MAX}
# Money: DecimalField(max_digits=12, decimal_places=6); a cap or alarm of 0 would stop every run at once.
_MONEY = r"^(?!0+(\.0+)?$)\d{1,6}(\.\d{1,6})?$"
_nullable_number = {"type": ["number", "string", "null"], "pattern": _MONEY, "exclusiveMinimum": 0, "maximum": 999_999}
_number = {"type": ["number", "string"], "pattern": _MONEY, "exclusiveMinimum": 0, "maximum": 999_999}
_CPUS = {"type": ["number", "string"], "pattern": r"^\d{1,2}(\.\d{1,2})?$", "exclusiveMinimum": 0, "maximum": 64}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "agents"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": SPEC_VERSION},
        "agents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "slug", "objective", "model"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "slug": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,99}$"},
                    "objective": {"type": "string", "minLength": 1, "maxLength": 100_000},
                    "model": {"type": "string", "minLength": 1, "maxLength": 100},
                    "trust_phase": {"type": "integer", "minimum": 1, "maximum": 4},
                    "paused": {"type": "boolean"},
                    "config": {"type": "object"},
                    "policy": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            **{name: _nullable_int for name in _POLICY_INT_FIELDS},
                            "max_tokens": {"type": "integer", "minimum": 1, "maximum": _BIGINT_MAX},
                            "alarm_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": _BIGINT_MAX},
                            "max_tool_calls": {"type": "integer", "minimum": 0, "maximum": _INT_MAX},
                            "max_iterations": {"type": "integer", "minimum": 1, "maximum": _INT_MAX},
                            "max_wall_clock_s": {"type": "integer", "minimum": 1, "maximum": _INT_MAX},
                            "approval_timeout_s": {"type": "integer", "minimum": 10, "maximum": _INT_MAX},
                            "sandbox_memory_mb": {"type": "integer", "minimum": 64, "maximum": _INT_MAX},
                            "sandbox_pids": {"type": "integer", "minimum": 16, "maximum": _INT_MAX},
                            "sandbox_disk_mb": {"type": "integer", "minimum": 64, "maximum": 1_048_576},
                            "command_timeout_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                            "max_cost_usd": _number,
                            "alarm_cost_usd": _nullable_number,
                            "daily_max_cost_usd": _nullable_number,
                            "sandbox_cpus": _CPUS,
                            "budget_set_by_person": {"type": "boolean"},
                            "daily_action_caps": {
                                "type": "object",
                                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": _INT_MAX},
                            },
                            "low_risk_paths": {"type": "array", "items": {"type": "string"}},
                            "protected_paths": {"type": "array", "items": {"type": "string"}},
                            # Human decisions: caps a person may extend, loop escalation, separation of duties.
                            "extendable_caps": {"type": "array", "items": {"enum": list(EXTENDABLE_CAPS)}, "uniqueItems": True},
                            "max_extensions_per_run": {"type": "integer", "minimum": 0, "maximum": 100},
                            "loop_escalation": {"enum": list(LoopEscalation.values)},
                            "self_approval_allowed": {"type": "boolean"},
                            "grant_change_cooldown_h": {"type": "integer", "minimum": 0, "maximum": 24 * 365},
                        },
                    },
                    "mcp_servers": MCP_SERVERS_SCHEMA,
                    "tools": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["tool"],
                            "additionalProperties": False,
                            "properties": {
                                "tool": {"type": "string", "minLength": 1},
                                "scope": {"type": "object"},
                                "approval": {"enum": list(ApprovalOverride.values)},
                                # Who decides this tool's approvals (a Django group), and what expiry does.
                                "approver_group": {"type": "string", "maxLength": 150},
                                "on_timeout": {"enum": list(OnExpiry.values)},
                                # MCP tools only: the pinned digest and the admin's risk class.
                                **MCP_GRANT_PROPERTIES,
                            },
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "kind"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                                "kind": {"enum": list(TriggerKind.values)},
                                "rules": {"type": "object"},
                                "enabled": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}


class SpecError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # What waits for a second admin: "<slug>: <summary> (decision #N)".
    pending: list[str] = field(default_factory=list)


def _path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def load_spec(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"(file): not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(["(root): the spec must be a mapping with 'version' and 'agents'"])
    return data


AGENT_SCHEMA: dict[str, Any] = SPEC_SCHEMA["properties"]["agents"]["items"]
# Nesting deeper than this in config, scopes or rules is refused before anything walks it.
MAX_DEPTH = 32


def _hygiene_errors(value: Any, path: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(path, problem) for what no column can hold or no reader should meet: NUL characters,
    unpaired surrogates, non-finite numbers, absurd nesting."""
    if depth > MAX_DEPTH:
        return [(path, f"nested deeper than {MAX_DEPTH} levels")]
    if isinstance(value, str):
        if "\x00" in value:
            return [(path, "contains a NUL character")]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [(path, "contains an unpaired surrogate")]
        return []
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return [(path, "must be a finite number")]
    if isinstance(value, dict):
        problems = []
        for key, item in value.items():
            problems += _hygiene_errors(key, path, depth + 1) if isinstance(key, str) else [(path, "keys must be strings")]
            problems += _hygiene_errors(item, f"{path}.{key}" if path else str(key), depth + 1)
        return problems
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _hygiene_errors(item, f"{path}[{i}]", depth + 1)]
    return []


def hygiene_errors(value: Any) -> list[str]:
    """The same checks for any JSON-ish input a person or a client sends (forms, API bodies)."""
    return [f"{path or '(root)'}: {problem}" for path, problem in _hygiene_errors(value)]


def grant_approval_error(tool: Any, approval: str) -> str | None:
    """The rule in its one place: an irreversible tool can never be set to act without a person."""
    if tool.risk_class == "irreversible" and approval == ApprovalOverride.NEVER:
        return f"{tool.name} is irreversible; it always needs a person ('never' is not allowed)"
    return None


def mcp_grant_errors(agent: dict[str, Any], grant: dict[str, Any], gwhere: str, *, seen: set[str]) -> list[str]:
    """A grant of a tool from one of the agent's MCP servers (agentops.mcp.spec checks the server,
    the scope against the tool's input schema and the pinned digest); the approval rule is the one
    above, with the tool's effective risk (the admin's override, else its annotations)."""
    errors = [f"{gwhere}.tool: {grant['tool']!r} is granted twice"] if grant["tool"] in seen else []
    seen.add(grant["tool"])
    found, risk = mcp_grant_check(agent, grant, gwhere)
    errors += found
    approval_error = grant_approval_error(SimpleNamespace(name=grant["tool"], risk_class=risk), grant.get("approval", ApprovalOverride.DEFAULT))
    if approval_error:
        errors.append(f"{gwhere}.approval: {approval_error}")
    return errors


def agent_errors(agent: Any, where: str = "") -> list[str]:
    """Every error in ONE agent's configuration (the spec's shape, as `export_agent` returns it),
    each with its path under `where`. The single validator of agent configuration: `apply`, the
    dashboard's forms and the API all end here, so none can save what another would refuse."""

    def at(path: str) -> str:
        return f"{where}.{path}" if where and path else (where or path or "(root)")

    errors = [f"{at(path)}: {problem}" for path, problem in _hygiene_errors(agent)]
    if errors:
        return errors
    validator = jsonschema.Draft202012Validator(AGENT_SCHEMA)
    errors = [
        f"{at(_path(list(e.absolute_path)) if e.absolute_path else '')}: {e.message}"
        for e in sorted(validator.iter_errors(agent), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if errors:
        return errors
    try:
        price_for(agent["model"])
    except UnknownModelPrice:
        errors.append(f"{at('model')}: no price is known for {agent['model']!r}; a model without a price cannot be budgeted")
    policy = agent.get("policy", {})
    defaults = {f.name: f.get_default() for f in Policy._meta.fields}
    for alarm, cap in ALARM_PAIRS:
        alarm_value = policy.get(alarm)
        cap_value = policy.get(cap, defaults[cap])
        if alarm_value is not None and Decimal(str(alarm_value)) >= Decimal(str(cap_value)):
            errors.append(f"{at('policy.' + alarm)}: the alarm ({alarm_value}) must be below the cap {cap} ({cap_value})")
    errors += servers_errors(agent.get("mcp_servers", []), at("mcp_servers"))
    tools_seen: set[str] = set()
    for j, grant in enumerate(agent.get("tools", [])):
        gwhere = at(f"tools[{j}]")
        group = grant.get("approver_group", "")
        if group and not Group.objects.filter(name=group).exists():
            # Routed to nobody, its approvals could only expire: refuse it now.
            errors.append(f"{gwhere}.approver_group: there is no group named {group!r}")
        if is_mcp_tool(grant["tool"]):
            errors += mcp_grant_errors(agent, grant, gwhere, seen=tools_seen)
            continue
        tool = get_tool(grant["tool"])
        if tool is None:
            errors.append(f"{gwhere}.tool: no tool named {grant['tool']!r}")
            continue
        errors += builtin_grant_errors(grant, gwhere)
        if grant["tool"] in tools_seen:
            errors.append(f"{gwhere}.tool: {grant['tool']!r} is granted twice")
        tools_seen.add(grant["tool"])
        for err in tool.scope_errors(grant.get("scope", {})):
            errors.append(f"{gwhere}.scope.{err}" if not err.startswith("(root)") else f"{gwhere}.scope{err[6:]}")
        approval_error = grant_approval_error(tool, grant.get("approval", ApprovalOverride.DEFAULT))
        if approval_error:
            errors.append(f"{gwhere}.approval: {approval_error}")
        if tool.min_trust_phase > agent.get("trust_phase", 1):
            errors.append(f"{gwhere}.tool: {grant['tool']} needs trust phase {tool.min_trust_phase} or higher")
    trigger_names: set[str] = set()
    for j, trigger in enumerate(agent.get("triggers", [])):
        twhere = at(f"triggers[{j}]")
        if trigger["name"] in trigger_names:
            errors.append(f"{twhere}.name: {trigger['name']!r} is used twice")
        trigger_names.add(trigger["name"])
        errors.extend(f"{twhere}.rules{e}" for e in trigger_rule_errors(trigger["kind"], trigger.get("rules", {})))
    return errors


def validate_spec(data: dict[str, Any]) -> list[str]:
    """Every error in the spec, each with its path; [] when the spec can be applied."""
    errors = hygiene_errors(data)
    if errors:
        return errors
    top = dict(SPEC_SCHEMA, properties={**SPEC_SCHEMA["properties"], "agents": {"type": "array", "items": {"type": "object"}}})
    validator = jsonschema.Draft202012Validator(top)
    errors = [f"{_path(list(e.absolute_path))}: {e.message}" for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]
    if errors:
        return errors
    seen_slugs: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, agent in enumerate(data["agents"]):
        where = f"agents[{i}]"
        agent_problems = agent_errors(agent, where)
        errors += agent_problems
        if agent_problems:
            continue
        for key, seen in (("slug", seen_slugs), ("name", seen_names)):
            if agent[key] in seen:
                errors.append(f"{where}.{key}: {agent[key]!r} is also used by agents[{seen[agent[key]]}]")
            seen[agent[key]] = i
    return errors


def spec_warnings(data: dict[str, Any]) -> list[str]:
    """What `apply` should tell a person without refusing: deprecated models, with their retirement date."""
    warnings = []
    for i, agent in enumerate(data.get("agents") or []):
        model = agent.get("model") if isinstance(agent, dict) else None
        retires = model_retirement(model) if isinstance(model, str) else None
        if retires:
            warnings.append(f"agents[{i}].model: {model!r} is deprecated by Anthropic and retires on {retires}; move this agent to a current model")
    return warnings


def trigger_rule_errors(kind: str, rules: dict[str, Any]) -> list[str]:
    errors = []
    if kind == TriggerKind.SCHEDULE:
        cron = rules.get("cron")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            errors.append(f".cron: {cron!r} is not a valid cron expression")
    elif kind == TriggerKind.ERROR:
        if not isinstance(rules.get("project"), str):
            errors.append(".project: an error trigger names the error project it watches")
        level = rules.get("min_level", "error")
        if level not in ("debug", "info", "warning", "error", "fatal"):
            errors.append(f".min_level: {level!r} is not one of debug, info, warning, error, fatal")
        for key in ("min_count", "window_s"):
            if key in rules and (not isinstance(rules[key], int) or rules[key] < 1):
                errors.append(f".{key}: must be a whole number >= 1")
        cooldown = rules.get("cooldown_s")
        if "cooldown_s" in rules and (not isinstance(cooldown, int) or isinstance(cooldown, bool) or not 0 <= cooldown <= 10**9):
            errors.append(".cooldown_s: seconds after a run ends during which the error's events are counted, not rerun: a whole number >= 0")
    return errors


def policy_values(spec: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        if name not in spec:
            continue
        value = spec[name]
        if name in _POLICY_DECIMAL_FIELDS and value is not None:
            value = Decimal(str(value))
        values[name] = value
    return values


def mark_budget_set_by_person(policy: Policy, changed: Iterable[str]) -> bool:
    """A person changed a cost cap (on any path: a form, the API, a spec file): history-based
    defaults stop applying to it. True when the mark was set now."""
    if any(name in PERSON_BUDGET_FIELDS for name in changed) and not policy.budget_set_by_person:
        policy.budget_set_by_person = True
        return True
    return False


def agent_apply(spec: dict[str, Any], *, actor: AbstractBaseUser | str | None, second_admin: Approval | None = None) -> tuple[Agent, str, bool | None]:
    """Make one agent exactly what a validated spec says (`agentops apply`): its fields, trust
    phase, policy, grants and triggers. Returns the agent, "created", "updated" or "unchanged", and
    the pause state to apply after the commit (None: unchanged), since pausing halts runs.

    What one admin alone may not do (`second_admin_changes`) is not applied: it becomes a pending
    config_change decision (set on the returned agent as `pending_change`) and the rest applies.
    `second_admin`: the approved decision whose change this applies (the second admin is `actor`).

    The spec's write path (agents.services holds the dashboard's and the API's, one change each):
    it lives here, beside the validator and the export it needs, so that services can use them
    without this module importing services back."""
    agent = Agent.objects.filter(slug=spec["slug"]).first()
    before = export_agent(agent) if agent else None
    held = second_admin_changes(before=before, after=spec) if second_admin is None else {}
    if held:
        spec = without_second_admin_changes(spec, before=before, held=held)
        errors = agent_errors(spec)
        if errors:
            raise SpecError(
                [f"{spec['slug']}: without what needs a second admin ({held_summary(held, before=before)}), the rest is not valid: {e}" for e in errors]
            )
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
    defaults = {f.name: f.get_default() for f in Policy._meta.fields if f.name in POLICY_FIELDS}
    for name, value in {**defaults, **policy_values(spec.get("policy", {}))}.items():
        setattr(policy, name, value)
    if set_by_person:
        policy.budget_set_by_person = True
    elif not created:
        mark_budget_set_by_person(policy, [name for name, value in budget_before.items() if getattr(policy, name) != value])
    policy.full_clean()
    policy.save()
    # MCP servers before the grants: a grant of one of their tools pins what discovery saw on it.
    apply_servers(agent, spec.get("mcp_servers", []))
    wanted = {g["tool"]: g for g in spec.get("tools", [])}
    agent.grants.exclude(tool__in=wanted).delete()
    for name, grant in wanted.items():
        ToolGrant.objects.update_or_create(
            agent=agent,
            tool=name,
            defaults={
                "scope": grant.get("scope", {}),
                "approval": grant.get("approval", "default"),
                "approver_group": grant.get("approver_group", ""),
                "on_timeout": grant.get("on_timeout", OnExpiry.HALT),
                **grant_pin_fields(agent, grant),
            },
        )
    triggers = {t["name"]: t for t in spec.get("triggers", [])}
    agent.triggers.exclude(name__in=triggers).delete()
    for name, trigger in triggers.items():
        Trigger.objects.update_or_create(
            agent=agent,
            name=name,
            defaults={"kind": trigger["kind"], "rules": trigger.get("rules", {}), "enabled": trigger.get("enabled", True)},
        )
    after = export_agent(agent)
    detail = "agentops apply"
    if second_admin is not None:
        detail = f"second admin approved decision #{second_admin.pk} (asked by {second_admin.requested_by_label or '?'})"
    agent.pending_change = None
    if held:
        agent.pending_change = config_change_request(agent=agent, actor=actor, change=held, summary=held_summary(held, before=before))
    if before is None:
        audit_record(actor=actor, action="agent.create", target=agent, after=after, detail=detail)
        return agent, "created", pause
    if before != after:
        audit_record(actor=actor, action="agent.update", target=agent, before=before, after=after, detail=detail)
        return agent, "updated", pause
    return agent, "unchanged", pause


def apply_spec(data: dict[str, Any], *, actor: Any = "cli") -> ApplyResult:
    errors = validate_spec(data)
    if errors:
        raise SpecError(errors)
    result = ApplyResult()
    pause_changes: list[tuple[Agent, bool]] = []
    with transaction.atomic():
        for spec in data["agents"]:
            agent, change, pause = agent_apply(spec, actor=actor)
            getattr(result, change).append(agent.slug)
            pending = getattr(agent, "pending_change", None)
            if pending is not None:
                result.pending.append(f"{agent.slug}: {pending.request.get('summary', 'a change')} needs a second admin (decision #{pending.pk})")
            if pause is not None:
                pause_changes.append((agent, pause))
    for agent, paused in pause_changes:
        if paused:
            agent_pause(agent=agent, actor=actor, reason="paused by agentops apply")
        else:
            agent_resume(agent=agent, actor=actor)
        if agent.slug not in result.created + result.updated:
            result.unchanged.remove(agent.slug)
            result.updated.append(agent.slug)
    return result


# --- changes that need a second admin ----------------------------------------------------------

# Raising an agent to this trust phase (auto-merge, nobody looks) needs a second admin.
TWO_ADMIN_PHASE = 4
DEFAULT_COOLDOWN_H = 24


def natural_risk(agent_slug: str, tool: str) -> str:
    """A tool's risk by its own nature, whatever an admin's override says: a built-in tool's class;
    an MCP tool's annotations as discovery last saw them (irreversible when unknown)."""
    if is_mcp_tool(tool):
        snapshot = find_snapshot(agent_slug, tool)
        annotations = snapshot.annotations if snapshot is not None and isinstance(snapshot.annotations, dict) else None
        return effective_risk(risk_override="", annotations=annotations)
    found = get_tool(tool)
    return found.risk_class if found is not None else RiskClass.IRREVERSIBLE.value


def _same_grant_power(previous: dict[str, Any], grant: dict[str, Any]) -> bool:
    # The same tool as already granted (an MCP grant pins a digest; a spec may leave it out) at the same risk.
    return (grant.get("digest") or previous.get("digest", "")) == previous.get("digest", "") and grant.get("risk", "") == previous.get("risk", "")


def second_admin_changes(*, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The part of an agent spec `after` that one admin alone may not apply over `before` (None: a new
    agent): {"trust_phase": 4} when raised to 4; {"tools": [grant, ...]} for each tool granted
    (anew, or at another digest or risk override) whose effective risk is irreversible, or whose own
    risk is and the override lowers it; {"policy": {...}} when separation of duties is weakened
    (self_approval_allowed turned on, a shorter grant_change_cooldown_h). {} when nothing is held.

    The tools of a new agent are not held (the demo's and every fixture's specs create agents with
    their tools): every irreversible call still waits for a person, who may not be the admin who
    created the agent (the cooldown). Its trust phase and policy are."""
    held: dict[str, Any] = {}
    phase_before = int(before.get("trust_phase", 1)) if before is not None else 0
    if int(after.get("trust_phase", 1)) >= TWO_ADMIN_PHASE > phase_before:
        held["trust_phase"] = int(after["trust_phase"])
    granted = {g["tool"]: g for g in (before or {}).get("tools", [])}
    tools = []
    for grant in after.get("tools", []) if before is not None else []:
        previous = granted.get(grant["tool"])
        if previous is not None and _same_grant_power(previous, grant):
            continue
        natural = natural_risk(after["slug"], grant["tool"])
        # Irreversible as granted (its effective risk), or by nature with an override that lowers it.
        if RiskClass.IRREVERSIBLE in (grant.get("risk") or natural, natural):
            tools.append(copy.deepcopy(grant))
    if tools:
        held["tools"] = tools
    policy_before = (before or {}).get("policy", {})
    policy_after = after.get("policy", {})
    policy: dict[str, Any] = {}
    if policy_after.get("self_approval_allowed") and not policy_before.get("self_approval_allowed"):
        policy["self_approval_allowed"] = True
    cooldown_before = policy_before.get("grant_change_cooldown_h", DEFAULT_COOLDOWN_H)
    if "grant_change_cooldown_h" in policy_after and int(policy_after["grant_change_cooldown_h"]) < int(cooldown_before):
        policy["grant_change_cooldown_h"] = int(policy_after["grant_change_cooldown_h"])
    if policy:
        held["policy"] = policy
    return held


def without_second_admin_changes(after: dict[str, Any], *, before: dict[str, Any] | None, held: dict[str, Any]) -> dict[str, Any]:
    """`after` without what is `held`: held values go back to what they were (a new agent: the most
    one admin may set)."""
    rest = copy.deepcopy(after)
    if "trust_phase" in held:
        rest["trust_phase"] = int(before.get("trust_phase", 1)) if before is not None else TWO_ADMIN_PHASE - 1
    held_tools = {g["tool"] for g in held.get("tools", [])}
    if held_tools:
        granted = {g["tool"]: g for g in (before or {}).get("tools", [])}
        rest["tools"] = [
            copy.deepcopy(granted[g["tool"]]) if g["tool"] in held_tools else g
            for g in rest.get("tools", [])
            if g["tool"] not in held_tools or g["tool"] in granted
        ]
    if held.get("policy"):
        policy = rest.setdefault("policy", {})
        policy_before = (before or {}).get("policy", {})
        for name in held["policy"]:
            if name in policy_before:
                policy[name] = policy_before[name]
            else:
                policy.pop(name, None)
    return rest


def with_config_change(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """An agent spec with a held change applied over it (the second admin's approval)."""
    merged = copy.deepcopy(current)
    if "trust_phase" in change:
        merged["trust_phase"] = change["trust_phase"]
    if change.get("tools"):
        names = {g["tool"] for g in change["tools"]}
        merged["tools"] = [g for g in merged.get("tools", []) if g["tool"] not in names] + copy.deepcopy(change["tools"])
    if change.get("policy"):
        merged.setdefault("policy", {}).update(change["policy"])
    return merged


def held_summary(held: dict[str, Any], *, before: dict[str, Any] | None) -> str:
    parts = []
    if "trust_phase" in held:
        parts.append(f"trust phase {before.get('trust_phase', 1) if before else 'new'} -> {held['trust_phase']}")
    for grant in held.get("tools", []):
        risk = f", risk overridden to {grant['risk']}" if grant.get("risk") else ""
        parts.append(f"grant {grant['tool']} (irreversible{risk})")
    for name, value in held.get("policy", {}).items():
        parts.append(f"policy {name} = {value}")
    return "; ".join(parts)


def apply_config_change(*, agent: Agent, change: dict[str, Any], actor: AbstractBaseUser | str | None, approval: Approval) -> Agent:
    """Apply a change a second admin approved, through the spec's one writer, over the agent as it
    is now. Raises SpecError when it no longer applies (the agent changed since it was asked)."""
    merged = with_config_change(export_agent(agent), change)
    errors = agent_errors(merged)
    if errors:
        raise SpecError(errors)
    applied, _, _ = agent_apply(merged, actor=actor, second_admin=approval)
    return applied


def plain_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Keep YAML readable: 5 rather than '5.000000'; exact values stay exact as strings.
        normal = value.normalize()
        return int(normal) if normal == normal.to_integral_value() else str(normal)
    return value


def export_agent(agent: Agent) -> dict[str, Any]:
    policy = Policy.objects.filter(agent=agent).first()
    policy_dict = {k: plain_value(v) for k, v in model_to_dict(policy, fields=POLICY_FIELDS).items()} if policy else {}
    return {
        "name": agent.name,
        "slug": agent.slug,
        "objective": agent.objective,
        "model": agent.model,
        "trust_phase": agent.trust_phase,
        "paused": agent.paused,
        "config": agent.config,
        "policy": policy_dict,
        **export_servers(agent),
        "tools": [{"tool": g.tool, "scope": g.scope, "approval": g.approval, **grant_routing(g), **grant_extra(g)} for g in agent.grants.order_by("tool")],
        "triggers": [{"name": t.name, "kind": t.kind, "rules": t.rules, "enabled": t.enabled} for t in agent.triggers.order_by("name")],
    }


def grant_routing(grant: ToolGrant) -> dict[str, Any]:
    """Who decides a grant's approvals and what their expiry does, in an export (only when not the default)."""
    out: dict[str, Any] = {}
    if grant.approver_group:
        out["approver_group"] = grant.approver_group
    if grant.on_timeout != OnExpiry.HALT:
        out["on_timeout"] = grant.on_timeout
    return out


def export_spec(agents: Any = None) -> dict[str, Any]:
    agents = agents if agents is not None else Agent.objects.order_by("slug")
    return {"version": SPEC_VERSION, "agents": [export_agent(a) for a in agents]}


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_spec(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
