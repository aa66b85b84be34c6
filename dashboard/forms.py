from __future__ import annotations

import json
from typing import Any

from django import forms

from agentops.agents.models import Agent, ApprovalOverride, Policy, Trigger, TriggerKind
from agentops.agents.services import AGENT_FIELDS, POLICY_FIELDS, grant_scope_errors
from agentops.agents.spec import hygiene_errors
from agentops.runs.models import RunStatus


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
            raise forms.ValidationError("must be a JSON object, like {\"key\": \"value\"}")
        problems = hygiene_errors(parsed)
        if problems:
            raise forms.ValidationError(problems)
        return parsed


class AgentForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = list(AGENT_FIELDS)
        widgets = {"objective": forms.Textarea(attrs={"rows": 5})}


class PolicyForm(forms.ModelForm):
    daily_action_caps = JSONTextField(required=False, help_text='e.g. {"irreversible": 5, "tool:open_pull_request": 3}')

    class Meta:
        model = Policy
        fields = list(POLICY_FIELDS)

    _PAIRS = (
        ("alarm_tokens", "max_tokens"),
        ("alarm_cost_usd", "max_cost_usd"),
        ("alarm_tool_calls", "max_tool_calls"),
        ("alarm_iterations", "max_iterations"),
        ("alarm_wall_clock_s", "max_wall_clock_s"),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for alarm, cap in self._PAIRS:
            if data.get(alarm) is not None and data.get(cap) is not None and data[alarm] >= data[cap]:
                self.add_error(alarm, "an alarm must sit below its cap")
        for key, value in (data.get("daily_action_caps") or {}).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.add_error("daily_action_caps", f"{key}: must be a whole number >= 0")
        return data


def _tool_choices() -> list[tuple[str, str]]:
    from agentops.tools.registry import all_tools

    return [(name, f"{name} ({tool.risk_class})") for name, tool in sorted(all_tools().items())]


class GrantForm(forms.Form):
    tool = forms.ChoiceField(choices=())
    scope = JSONTextField(required=False)
    approval = forms.ChoiceField(choices=ApprovalOverride.choices, initial=ApprovalOverride.DEFAULT)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tool"].choices = _tool_choices()

    def clean(self) -> dict[str, Any]:
        from agentops.tools.registry import get_tool

        data = super().clean()
        tool = data.get("tool")
        if tool and "scope" in data:
            for error in grant_scope_errors(tool, data["scope"]):
                self.add_error("scope", error)
        if tool and data.get("approval") == ApprovalOverride.NEVER and get_tool(tool).risk_class == "irreversible":
            self.add_error("approval", "an irreversible tool always needs a person")
        return data


class TriggerForm(forms.ModelForm):
    rules = JSONTextField(required=False, help_text='error: {"project": "checkout", "min_level": "error"} · schedule: {"cron": "0 3 * * *"}')

    class Meta:
        model = Trigger
        fields = ["name", "kind", "rules", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("kind") == TriggerKind.SCHEDULE:
            cron = (data.get("rules") or {}).get("cron")
            try:
                from croniter import croniter

                valid = bool(cron) and croniter.is_valid(cron)
            except ImportError:  # pragma: no cover - croniter is a dependency
                valid = bool(cron)
            if not valid:
                self.add_error("rules", "a schedule needs a valid \"cron\" expression")
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
    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])
    comment = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("decision") == "reject" and not (data.get("comment") or "").strip():
            self.add_error("comment", "a comment is required to reject")
        return data


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
