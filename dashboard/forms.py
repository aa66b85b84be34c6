from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from croniter import croniter
from django import forms
from django.contrib.auth.models import Group, User
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from agentops.agents.models import EXTENDABLE_CAPS, Agent, ApprovalOverride, OnExpiry, Policy, Trigger, TriggerKind
from agentops.agents.services import AGENT_FIELDS, POLICY_FIELDS, grant_scope_errors
from agentops.agents.spec import grant_approval_error, hygiene_errors
from agentops.runs.models import RunStatus
from agentops.tools.registry import all_tools, get_tool
from dashboard.models import TokenScope
from dashboard.readable import property_kind, scope_key_meta, scope_properties
from dashboard.services import token_scopes_for


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class JSONTextField(forms.CharField):
    """A JSON object typed into a textarea; errors say where the JSON broke."""

    widget = forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=1, sort_keys=True)
        return value

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in ("", None):
            return {}
        try:
            parsed = json.loads(value, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            # NaN/Infinity (no column stores them) and nesting deep enough to exhaust the parser.
            raise forms.ValidationError(f"not valid JSON: {exc if isinstance(exc, ValueError) else 'nested too deeply'}") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError('must be a JSON object, like {"key": "value"}')
        problems = hygiene_errors(parsed)
        if problems:
            raise forms.ValidationError(problems)
        return parsed


def normalise_newlines(text: str) -> str:
    """Browsers post a textarea with CRLF line endings whatever it held; the stored text uses LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


PHASE_CONSEQUENCES = {
    1: "investigate and attach a patch, changing nothing",
    2: "open draft pull requests",
    3: "open pull requests ready for review (a person still merges)",
    4: "merge low-risk changes that pass every gate without asking anyone",
}


class AgentForm(forms.ModelForm):
    # Raising the trust phase lets the agent do more alone: a person says why and confirms it.
    trust_reason = forms.CharField(
        label="Why raise the trust phase?",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "e.g. 20 runs at phase 2, every pull request merged unchanged"}),
        help_text="recorded in the audit log with the change",
    )
    trust_confirm = forms.BooleanField(label="I confirm this agent may do more on its own from now on", required=False)

    class Meta:
        model = Agent
        fields = list(AGENT_FIELDS)
        widgets = {"objective": forms.Textarea(attrs={"rows": 8})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.trust_phase if self.instance and self.instance.pk else None
        self.fields["trust_phase"].widget.attrs["data-current-phase"] = current or ""
        # Kept as typed: stripping would drop the final new line of every objective on each save.
        cast(forms.CharField, self.fields["objective"]).strip = False  # a TextField's form field

    def clean_objective(self) -> str:
        posted = normalise_newlines(self.cleaned_data.get("objective") or "")
        if not posted.strip():
            raise forms.ValidationError("say what this agent is for")
        stored = self.instance.objective if self.instance and self.instance.pk else None
        # The same text with other line endings is no change: keep it as stored.
        if stored is not None and normalise_newlines(stored) == posted:
            return stored
        return posted

    def raises_trust(self) -> bool:
        phase = self.cleaned_data.get("trust_phase")
        current = self.instance.trust_phase if self.instance and self.instance.pk else None
        return phase is not None and current is not None and int(phase) > int(current)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        data["trust_reason"] = (data.get("trust_reason") or "").strip()
        if self.raises_trust():
            if not data["trust_reason"]:
                self.add_error("trust_reason", "say why this agent may now do more on its own")
            if not data.get("trust_confirm"):
                self.add_error("trust_confirm", f"confirm that it may {PHASE_CONSEQUENCES.get(int(data['trust_phase']), 'act at this phase')}")
        return data


def _money_text(value: Any) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    text = f"{amount:f}"
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    else:
        text = f"{text}.00"
    return text


class PolicyForm(forms.ModelForm):
    daily_action_caps = JSONTextField(required=False, help_text='e.g. {"irreversible": 5, "tool:open_pull_request": 3}')
    extendable_caps = forms.MultipleChoiceField(
        choices=[(cap, cap.replace("_", " ")) for cap in EXTENDABLE_CAPS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="a run that reaches one of these per-run caps waits for a person to extend it instead of ending (daily caps never)",
    )

    class Meta:
        model = Policy
        fields = list(POLICY_FIELDS)

    # (label, unit for app.js's live hint: "= 600,000 tokens", "= 30m", "= $5.00")
    _LABELS = {
        "max_tokens": ("Tokens", "tokens"),
        "alarm_tokens": ("Tokens alarm", "tokens"),
        "max_cost_usd": ("Cost (USD)", "usd"),
        "alarm_cost_usd": ("Cost alarm (USD)", "usd"),
        "max_tool_calls": ("Tool calls", "count"),
        "alarm_tool_calls": ("Tool calls alarm", "count"),
        "max_iterations": ("Iterations", "count"),
        "alarm_iterations": ("Iterations alarm", "count"),
        "max_wall_clock_s": ("Wall clock (seconds)", "seconds"),
        "alarm_wall_clock_s": ("Wall clock alarm (seconds)", "seconds"),
        "daily_max_runs": ("Runs a day", "count"),
        "daily_max_cost_usd": ("Cost a day (USD)", "usd"),
        "rate_limit_per_minute": ("Tool calls a minute", "count"),
        "approval_timeout_s": ("Approval expires after (seconds)", "seconds"),
        "daily_action_caps": ("Actions a day", ""),
        "extendable_caps": ("Caps a person may extend", ""),
        "max_extensions_per_run": ("Extensions per run", "count"),
        "loop_escalation": ("When a loop is detected", ""),
        "self_approval_allowed": ("Whoever started a run may decide its decisions", ""),
        "grant_change_cooldown_h": ("After changing this agent, may not decide its runs for (hours)", "count"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            # Money as a person writes it ("5.00", "0.0117"), not the column's six decimals.
            for name in ("max_cost_usd", "alarm_cost_usd", "daily_max_cost_usd"):
                value = self.initial.get(name)
                if value is not None:
                    self.initial[name] = _money_text(value)
        for name, (label, unit) in self._LABELS.items():
            if name in self.fields:
                self.fields[name].label = label
                if unit:
                    self.fields[name].widget.attrs["data-unit"] = unit

    _PAIRS = (
        ("alarm_tokens", "max_tokens"),
        ("alarm_cost_usd", "max_cost_usd"),
        ("alarm_tool_calls", "max_tool_calls"),
        ("alarm_iterations", "max_iterations"),
        ("alarm_wall_clock_s", "max_wall_clock_s"),
    )

    def pair_fields(self) -> list[Any]:
        """Each cap followed by its alarm (the page lays them out as pairs)."""
        return [self[name] for alarm, cap in self._PAIRS for name in (cap, alarm) if name in self.fields]

    def other_fields(self) -> list[Any]:
        paired = {name for pair in self._PAIRS for name in pair}
        return [field for field in self if field.name not in paired]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        for alarm, cap in self._PAIRS:
            if data.get(alarm) is not None and data.get(cap) is not None and data[alarm] >= data[cap]:
                self.add_error(alarm, "an alarm must sit below its cap")
        for key, value in (data.get("daily_action_caps") or {}).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.add_error("daily_action_caps", f"{key}: must be a whole number >= 0")
        return data


class _BadScope(str):
    """What ScopeWidget hands ScopeField when a part of the posted scope cannot be read."""


def _split_values(values: list[str]) -> list[str]:
    """Chip values as posted: one per checkbox, and whatever was typed into the "add" box (several
    separated by commas or new lines). Blank ones dropped, duplicates kept once, order kept."""
    out: list[str] = []
    for value in values:
        for part in value.replace("\r", "\n").replace(",", "\n").split("\n"):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


class ScopeWidget(forms.Widget):
    """A tool grant's scope as structured fields: chips for lists (domains, paths, repositories,
    projects), a text box for a branch prefix, a number box for a number. Each key posts under
    `<name>.<key>` and announces itself in `<name>.present`, so a chip list emptied by a person is
    told apart from a key the form never showed. Works without JavaScript (chips are checkboxes; the
    "add" box takes comma-separated values); app.js turns them into removable chips and, on the new
    grant form, shows only the keys of the selected tool. A raw JSON object posted as `<name>`
    (scripts, older clients) is still read. Whatever is posted ends in GrantForm.clean and
    `grant_save`, whose validator is the only judge of a scope."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.tool: str | None = None  # None: the new-grant form, every tool's keys

    def id_for_label(self, id_: str) -> str:
        return ""

    def _keys(self) -> list[tuple[str, dict[str, Any], list[str]]]:
        """(key, property schema, tools using it) for the keys this form shows."""
        names = [self.tool] if self.tool else sorted(all_tools())
        keys: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for name in names:
            properties, _ = scope_properties(name)
            for key, prop in properties.items():
                keys.setdefault(key, (prop, []))[1].append(name)
        return [(key, prop, tools) for key, (prop, tools) in keys.items()]

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        present = data.getlist(f"{name}.present") if hasattr(data, "getlist") else []
        if not present:
            return data.get(name)  # a raw JSON object, or nothing
        # The tool posted beside the scope decides which keys are required (an emptied required
        # list is kept as [], so the tool refuses everything rather than the key going missing).
        posted_tool = data.get(name[: -len("scope")] + "tool") if name.endswith("scope") else None
        tool = posted_tool if isinstance(posted_tool, str) and posted_tool else self.tool
        known, required = scope_properties(tool) if tool else ({}, set())
        scope: dict[str, Any] = {}
        for key in dict.fromkeys(present):
            prop = known.get(key)
            raw = data.getlist(f"{name}.{key}")
            kind = property_kind(prop) if prop is not None else "list"
            if kind == "list":
                values = _split_values(raw)
                if values or key in required:
                    scope[key] = values
            elif kind == "number":
                text = (raw[-1] if raw else "").strip()
                if text:
                    try:
                        number = float(text)
                    except ValueError:
                        return _BadScope(f"{key}: {text!r} is not a number")
                    scope[key] = int(number) if number.is_integer() else number
            else:
                text = (raw[-1] if raw else "").strip()
                if text:
                    scope[key] = text
        other = (data.get(f"{name}._other") or "").strip()
        if other:
            try:
                extra = json.loads(other, parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                return _BadScope("the other keys are not a JSON object")
            if not isinstance(extra, dict):
                return _BadScope("the other keys are not a JSON object")
            for key, value in extra.items():
                scope.setdefault(key, value)
        return scope

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> Any:
        scope = value if isinstance(value, dict) else {}
        if isinstance(value, str) and value.strip():
            try:
                parsed = json.loads(value)
                scope = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                scope = {}
        parts = []
        keys = self._keys()
        for key, prop, tools in keys:
            meta = scope_key_meta(key)
            kind = property_kind(prop)
            field_name = f"{name}.{key}"
            current = scope.get(key)
            head = format_html(
                '<div class="scope-key" data-tools="{}"><input type="hidden" name="{}.present" value="{}"><span class="scope-label">{}</span>',
                " ".join(tools),
                name,
                key,
                meta["label"],
            )
            if kind == "list":
                values = [v for v in current if isinstance(v, str)] if isinstance(current, list) else []
                chips = format_html_join(
                    "",
                    '<label class="chip"><input type="checkbox" name="{}" value="{}" checked><span>{}</span></label>',
                    ((field_name, v, v) for v in values),
                )
                body = format_html(
                    '<div class="chips" data-chips>{}<input type="text" class="chip-new" name="{}" placeholder="add {}" aria-label="add to {}" autocomplete="off"></div>',
                    chips,
                    field_name,
                    meta["placeholder"] or "a value",
                    meta["label"].lower(),
                )
            elif kind == "number":
                body = format_html(
                    '<input type="number" step="any" name="{}" value="{}" placeholder="{}" aria-label="{}" class="scope-number">',
                    field_name,
                    "" if current is None else current,
                    meta["placeholder"],
                    meta["label"],
                )
            else:
                body = format_html(
                    '<input type="text" name="{}" value="{}" placeholder="{}" aria-label="{}" class="scope-text">',
                    field_name,
                    "" if current is None else (current if isinstance(current, str) else json.dumps(current)),
                    meta["placeholder"],
                    meta["label"],
                )
            help_text = format_html('<span class="help">{}</span>', meta["help"]) if meta["help"] else ""
            parts.append(format_html("{}{}{}</div>", head, body, help_text))
        known = {key for key, _, _ in keys}
        extra = {k: v for k, v in scope.items() if k not in known}
        if extra:
            parts.append(
                format_html(
                    '<div class="scope-key"><span class="scope-label">Other keys</span><textarea name="{}._other" rows="2" class="mono" spellcheck="false">{}</textarea>'
                    '<span class="help">not in this tool\'s scope schema: saving refuses them until removed</span></div>',
                    name,
                    json.dumps(extra, indent=1, sort_keys=True),
                )
            )
        none = format_html('<p class="scope-none muted"{}>This tool takes no scope.</p>', mark_safe(" hidden") if keys else "")
        return format_html('<div class="scope-editor" data-scope-editor>{}{}</div>', mark_safe("".join(parts)), none)


class ScopeField(forms.Field):
    widget = ScopeWidget

    def to_python(self, value: Any) -> Any:
        if isinstance(value, _BadScope):
            raise forms.ValidationError(str(value))
        if isinstance(value, dict):
            problems = hygiene_errors(value)
            if problems:
                raise forms.ValidationError(problems)
            return value
        return JSONTextField().to_python(value)

    def validate(self, value: Any) -> None:
        pass


def _tool_choices() -> list[tuple[str, str]]:
    return [(name, f"{name} ({tool.risk_class})") for name, tool in sorted(all_tools().items())]


class GrantForm(forms.Form):
    tool = forms.ChoiceField(choices=())
    scope = ScopeField(required=False)
    approval = forms.ChoiceField(choices=ApprovalOverride.choices, initial=ApprovalOverride.DEFAULT)
    approver_group = forms.ChoiceField(choices=(), required=False, label="Who decides", help_text="the group whose members decide this tool's approvals")
    on_timeout = forms.ChoiceField(choices=OnExpiry.choices, required=False, initial=OnExpiry.HALT, label="If nobody decides in time")

    def __init__(self, *args: Any, tool: str | None = None, **kwargs: Any) -> None:
        """`tool`: the tool of an existing grant, whose scope keys the form shows (a new grant's
        form shows every tool's keys and lets app.js narrow them to the selected tool)."""
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["tool"]).choices = _tool_choices()  # declared above
        groups = [(name, f"members of {name}") for name in Group.objects.order_by("name").values_list("name", flat=True)]
        cast(forms.ChoiceField, self.fields["approver_group"]).choices = [("", "anyone with the approver role"), *groups]
        self.fields["scope"].widget.tool = tool
        self.fields["scope"].widget.attrs["data-grant-tool"] = tool or ""

    def clean_on_timeout(self) -> str:
        # Not posted (an older page): the fail-closed default.
        return self.cleaned_data.get("on_timeout") or OnExpiry.HALT

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        data.setdefault("approver_group", "")
        tool = data.get("tool")
        scope = data.get("scope")
        before = self.initial.get("scope")
        if isinstance(scope, dict) and isinstance(before, dict):
            # An emptied optional list and an absent key mean the same to the tools; keep the stored
            # spelling so saving an unchanged grant records no change nobody made.
            for key, value in before.items():
                if value == [] and key not in scope:
                    scope[key] = []
        if tool and "scope" in data:
            for error in grant_scope_errors(tool, data["scope"]):
                self.add_error("scope", error)
        approval_error = grant_approval_error(get_tool(tool), data.get("approval", "")) if tool and get_tool(tool) else None
        if approval_error:
            self.add_error("approval", approval_error)
        return data


class TriggerForm(forms.ModelForm):
    rules = JSONTextField(required=False, help_text='error: {"project": "checkout", "min_level": "error"} · schedule: {"cron": "0 3 * * *"}')

    class Meta:
        model = Trigger
        fields = ["name", "kind", "rules", "enabled"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("kind") == TriggerKind.SCHEDULE:
            cron = (data.get("rules") or {}).get("cron")
            valid = bool(cron) and croniter.is_valid(cron)
            if not valid:
                self.add_error("rules", 'a schedule needs a valid "cron" expression')
        return data

    def validate_unique(self) -> None:
        # The agent is set by the service; uniqueness of the name per agent is checked there.
        pass


class RunFilterForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.all(), required=False, to_field_name="slug", empty_label="all agents")
    status = forms.ChoiceField(choices=[("", "any status"), *RunStatus.choices], required=False)
    trigger = forms.ChoiceField(choices=[("", "any trigger"), *TriggerKind.choices], required=False)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class DecisionForm(forms.Form):
    """Any kind of decision: approve/reject, with edited arguments (an approval) or an answer (a
    question, a budget extension's amount, continue/stop). What each kind needs is judged by
    `approval_decide`, the one rule (a rejection's comment, a valid edit, an answer)."""

    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])
    comment = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
    edited_arguments = forms.CharField(required=False, max_length=100_000, strip=False)
    answer = forms.CharField(required=False, max_length=4000)

    def clean_edited_arguments(self) -> dict[str, Any] | None:
        text = (self.cleaned_data.get("edited_arguments") or "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"the edited arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("the edited arguments must be a JSON object, like the original")
        problems = hygiene_errors(value)
        if problems:
            raise forms.ValidationError("; ".join(problems[:3]))
        return value


TOKEN_EXPIRY_CHOICES = [(7, "7 days"), (30, "30 days"), (90, "90 days"), (180, "180 days"), (365, "1 year")]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    scope = forms.ChoiceField(choices=[], help_text="read: GET only · operate: start/stop runs, approve/reject · admin: also configuration and the kill switch")
    expires_in_days = forms.TypedChoiceField(label="Expires after", choices=TOKEN_EXPIRY_CHOICES, coerce=int, initial=90)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only the scopes this person's role can use are offered (and the service checks again).
        allowed = set(token_scopes_for(user))
        cast(forms.ChoiceField, self.fields["scope"]).choices = [(value, value) for value in TokenScope.values if value in allowed]
        self.fields["scope"].initial = TokenScope.READ
