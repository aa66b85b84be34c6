"""Agents as code: a YAML spec applied declaratively, and exported back.

`apply` validates the whole spec first and reports every error with its path; only a spec without
errors is written, in one transaction. Grants and triggers not named in an agent's spec are removed:
the file is the truth for the agents it names (agents it does not name are left alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema
import yaml
from django.db import transaction
from django.forms.models import model_to_dict

from agentops.agents.models import Agent, ApprovalOverride, Policy, TriggerKind

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
]
_POLICY_DECIMAL_FIELDS = ["max_cost_usd", "alarm_cost_usd", "daily_max_cost_usd", "sandbox_cpus"]
_POLICY_OTHER_FIELDS = ["budget_set_by_person", "daily_action_caps", "low_risk_paths", "protected_paths"]
POLICY_FIELDS = _POLICY_INT_FIELDS + _POLICY_DECIMAL_FIELDS + _POLICY_OTHER_FIELDS
# (alarm, cap): an alarm must sit below its cap or it can never ring.
ALARM_PAIRS = [
    ("alarm_tokens", "max_tokens"),
    ("alarm_cost_usd", "max_cost_usd"),
    ("alarm_tool_calls", "max_tool_calls"),
    ("alarm_iterations", "max_iterations"),
    ("alarm_wall_clock_s", "max_wall_clock_s"),
]

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
                        },
                    },
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


def agent_errors(agent: Any, where: str = "") -> list[str]:
    """Every error in ONE agent's configuration (the spec's shape, as `export_agent` returns it),
    each with its path under `where`. The single validator of agent configuration: `apply`, the
    dashboard's forms and the API all end here, so none can save what another would refuse."""
    from agentops.llm.prices import UnknownModelPrice, price_for
    from agentops.tools.registry import get_tool

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
    tools_seen: set[str] = set()
    for j, grant in enumerate(agent.get("tools", [])):
        gwhere = at(f"tools[{j}]")
        tool = get_tool(grant["tool"])
        if tool is None:
            errors.append(f"{gwhere}.tool: no tool named {grant['tool']!r}")
            continue
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
    from agentops.llm.prices import model_retirement

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
        from croniter import croniter

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


def apply_spec(data: dict[str, Any], *, actor: Any = "cli") -> ApplyResult:
    errors = validate_spec(data)
    if errors:
        raise SpecError(errors)
    result = ApplyResult()
    pause_changes: list[tuple[Agent, bool]] = []
    # The one writer of agent configuration (and of trust phase) is agents.services; it imports this
    # module for the validator, so it is imported here, where it is used.
    from agentops.agents.services import agent_apply

    with transaction.atomic():
        for spec in data["agents"]:
            agent, change, pause = agent_apply(spec, actor=actor)
            getattr(result, change).append(agent.slug)
            if pause is not None:
                pause_changes.append((agent, pause))
    from agentops.guardrails.killswitch import agent_pause, agent_resume

    for agent, paused in pause_changes:
        if paused:
            agent_pause(agent=agent, actor=actor, reason="paused by agentops apply")
        else:
            agent_resume(agent=agent, actor=actor)
        if agent.slug not in result.created + result.updated:
            result.unchanged.remove(agent.slug)
            result.updated.append(agent.slug)
    return result


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
        "tools": [{"tool": g.tool, "scope": g.scope, "approval": g.approval} for g in agent.grants.order_by("tool")],
        "triggers": [{"name": t.name, "kind": t.kind, "rules": t.rules, "enabled": t.enabled} for t in agent.triggers.order_by("name")],
    }


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
