"""Configuration as a person reads it: scopes as labelled chips, trigger rules as sentences, and
audit entries as the fields that changed. Pure functions over stored values; templates only lay
them out."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from cron_descriptor import Options, get_description

from agentops.tools.registry import get_tool
from dashboard.templatetags.dashboard_tags import duration

# What each scope key of the tools' scope schemas means, in the words of the page. A key not listed
# here is still shown (by its name), so a new tool never hides part of its scope.
SCOPE_KEYS: dict[str, dict[str, str]] = {
    "domains": {"label": "Domains", "placeholder": "example.com", "help": "a domain and its subdomains", "empty": "no domain"},
    "recipient_domains": {"label": "Recipient domains", "placeholder": "example.com", "help": "who it may write to", "empty": "nobody"},
    "paths": {"label": "Paths", "placeholder": "checkout/*", "help": "globs; none means every path", "empty": "every path"},
    "branch_prefix": {"label": "Branch prefix", "placeholder": "agent/", "help": "the branches it may write start with this", "empty": "no branch"},
    "repos": {"label": "Repositories", "placeholder": "checkout-service", "help": "none means the agent's own repository only", "empty": "its own repository"},
    "projects": {"label": "Error projects", "placeholder": "checkout", "help": "whose errors it may read", "empty": "no project"},
    "allow": {
        "label": "Command prefixes",
        "placeholder": "pytest",
        "help": "commands it may run start with one of these; none means any command",
        "empty": "any command",
    },
    "timeout_s": {"label": "Timeout", "placeholder": "10", "help": "seconds", "empty": "default"},
}


def scope_key_meta(key: str) -> dict[str, str]:
    return SCOPE_KEYS.get(key, {"label": key.replace("_", " ").capitalize(), "placeholder": "", "help": "", "empty": "—"})


def scope_properties(tool_name: str) -> tuple[dict[str, Any], set[str]]:
    """(properties, required keys) of a tool's scope schema; empty for an unknown tool."""
    tool = get_tool(tool_name)
    schema = tool.scope_schema if tool else {}
    return dict(schema.get("properties") or {}), set(schema.get("required") or [])


def property_kind(prop: dict[str, Any]) -> str:
    """How a scope property is edited: 'list' (chips), 'text', 'number', or 'json'."""
    kind = prop.get("type")
    if kind == "array" and (prop.get("items") or {}).get("type") == "string":
        return "list"
    if kind == "string":
        return "text"
    if kind in ("number", "integer"):
        return "number"
    return "json"


@dataclass
class ScopeRow:
    key: str
    label: str
    kind: str
    values: list[str] = field(default_factory=list)
    empty: str = ""
    unit: str = ""


def scope_rows(tool_name: str, scope: Any) -> list[ScopeRow]:
    """A grant's scope as labelled rows: every key of the tool's schema (an absent key says what
    its absence means: "every path", "no domain"), then any key the schema does not know."""
    properties, _ = scope_properties(tool_name)
    scope = scope if isinstance(scope, dict) else {}
    rows = []
    for key in [*properties, *[k for k in scope if k not in properties]]:
        meta = scope_key_meta(key)
        kind = property_kind(properties[key]) if key in properties else "json"
        value = scope.get(key)
        if value is None:
            values: list[str] = []
        elif isinstance(value, list):
            values = [v if isinstance(v, str) else json.dumps(v) for v in value]
        elif isinstance(value, (dict,)):
            values = [json.dumps(value, sort_keys=True)]
        else:
            values = [str(value)]
        unit = "s" if key.endswith("_s") and kind == "number" else ""
        rows.append(ScopeRow(key=key, label=meta["label"], kind=kind, values=values, empty=meta["empty"], unit=unit))
    return rows


# --- trigger rules ----------------------------------------------------------------------------

LEVEL_WORDS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error", "fatal": "fatal"}


def _duration(seconds: Any) -> str:
    return duration(seconds)


def cron_sentence(cron: Any) -> str:
    """'0 3 * * 1' -> 'At 03:00, only on Monday' (cron-descriptor); the expression itself when
    it cannot be read."""
    if not isinstance(cron, str) or not cron.strip():
        return "no schedule"
    try:
        options = Options()
        options.use_24hour_time_format = True
        options.verbose = False
        return get_description(cron, options)
    except Exception:  # noqa: BLE001 - any unreadable expression is shown as written
        return cron


def rule_lines(kind: str, rules: Any) -> list[tuple[str, str]]:
    """A trigger's rules as (label, readable value) pairs."""
    rules = rules if isinstance(rules, dict) else {}
    lines: list[tuple[str, str]] = []
    if kind == "schedule":
        lines.append(("When", cron_sentence(rules.get("cron"))))
        if rules.get("cron"):
            lines.append(("Cron", str(rules["cron"])))
        if rules.get("input"):
            lines.append(("Asks", str(rules["input"])))
        known = {"cron", "input"}
    elif kind == "error":
        lines.append(("Project", str(rules.get("project") or "—")))
        level = str(rules.get("min_level", "error"))
        lines.append(("Level", f"{LEVEL_WORDS.get(level, level)} or worse"))
        count = rules.get("min_count", 1)
        window = rules.get("window_s")
        frequency = f"{count} event{'s' if count != 1 else ''}"
        lines.append(("Frequency", f"at least {frequency}" + (f" within {_duration(window)}" if window else "")))
        envs = rules.get("environments")
        if envs:
            lines.append(("Environments", ", ".join(map(str, envs if isinstance(envs, list) else [envs]))))
        tags = rules.get("tags")
        if isinstance(tags, dict) and tags:
            parts = []
            for key, accepted in tags.items():
                options = " or ".join(map(str, accepted)) if isinstance(accepted, list) else str(accepted)
                parts.append(f"{key} = {options}")
            lines.append(("Tags", "; ".join(parts)))
        if "cooldown_s" in rules:
            lines.append(("Cooldown", f"{_duration(rules['cooldown_s'])} after a run ends"))
        known = {"project", "min_level", "min_count", "window_s", "environments", "tags", "cooldown_s"}
    else:
        known = set()
        if not rules:
            lines.append(("Starts", "by a person, from this page or the API"))
    for key in sorted(k for k in rules if k not in known):
        value = rules[key]
        lines.append((key.replace("_", " "), value if isinstance(value, str) else json.dumps(value, sort_keys=True)))
    return lines


# --- audit entries as field-level diffs -------------------------------------------------------

_MISSING = object()


@dataclass
class FieldChange:
    path: str
    before: str | None
    after: str | None
    change: str  # "added" | "removed" | "changed"
    multiline: bool = False
    lines: list[tuple[str, str]] = field(default_factory=list)
    # For a list of plain values (domains, paths): the items it lost and gained.
    removed_items: list[str] = field(default_factory=list)
    added_items: list[str] = field(default_factory=list)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _walk(before: Any, after: Any, path: str, out: list[FieldChange], depth: int = 0) -> None:
    if before == after:
        return
    if depth < 8 and isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *[k for k in after if k not in before]]:
            _walk(before.get(key, _MISSING), after.get(key, _MISSING), f"{path}.{key}" if path else str(key), out, depth + 1)
        return
    if before is _MISSING:
        out.append(FieldChange(path or "(value)", None, _show(after), "added"))
    elif after is _MISSING:
        out.append(FieldChange(path or "(value)", _show(before), None, "removed"))
    else:
        b, a = _show(before), _show(after)
        multiline = "\n" in b or "\n" in a
        change = FieldChange(path or "(value)", b, a, "changed", multiline=multiline, lines=line_diff(b, a) if multiline else [])
        plain = (str, int, float)
        if isinstance(before, list) and isinstance(after, list) and all(isinstance(v, plain) for v in [*before, *after]):
            change.removed_items = [_show(v) for v in before if v not in after]
            change.added_items = [_show(v) for v in after if v not in before]
        out.append(change)


def field_changes(before: Any, after: Any) -> list[FieldChange]:
    """The fields an audit entry changed, with their value before and after. Nested objects (a
    grant's scope, a trigger's rules) are compared key by key; lists are compared whole. An entry
    with only `after` (a creation) lists what was set; only `before` (a deletion), what was there."""
    out: list[FieldChange] = []
    if isinstance(before, dict) and isinstance(after, dict):
        # An update records the changed fields on both sides; a key on one side only is context
        # (the trigger's id beside its changed fields), not a removal.
        for key in [k for k in before if k in after]:
            _walk(before[key], after[key], str(key), out, 1)
        return out
    _walk(_MISSING if before is None else before, _MISSING if after is None else after, "", out)
    # Whole-object creations and deletions read better one field per row.
    if len(out) == 1 and out[0].path == "(value)":
        value = after if before is None else before
        if isinstance(value, dict):
            out = []
            for key, item in value.items():
                text = _show(item)
                out.append(
                    FieldChange(
                        str(key),
                        None if before is None else text,
                        text if before is None else None,
                        "added" if before is None else "removed",
                        multiline="\n" in text,
                    )
                )
    return out


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """A long text's change as (css, line) pairs, css in add/del/ctx/hunk (one line of context)."""
    names = {"+": "add", "-": "del", " ": "ctx"}
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1))[2:]
    out = []
    for line in lines[:400]:
        if line.startswith("@@"):
            out.append(("hunk", "…"))
        else:
            out.append((names.get(line[:1], "ctx"), line[1:]))
    if len(lines) > 400:
        out.append(("hunk", f"… {len(lines) - 400} more lines"))
    if not out and before != after:
        out.append(("hunk", "only the line endings differ" if before.splitlines() == after.splitlines() else "only the final new line differs"))
    return out


def action_caps(caps: Any) -> list[tuple[str, str]]:
    """Daily action caps as (what, how many a day): {"irreversible": 5, "tool:open_pull_request": 3}
    -> [("irreversible actions", "5"), ("open_pull_request", "3")]."""
    if not isinstance(caps, dict):
        return []
    rows = []
    for key, value in caps.items():
        key = str(key)
        what = key.split(":", 1)[1] if key.startswith("tool:") else f"{key} actions"
        rows.append((what, f"{value:,}" if isinstance(value, int) else str(value)))
    return rows
