"""Forms of the MCP servers page. They only parse what a person typed into the spec's shape; every
rule is checked by the services (the one validator of agent configuration)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from django import forms

from agentops.agents.models import ApprovalOverride, RiskClass
from agentops.mcp.models import MAX_CALL_TIMEOUT_S, MAX_OUTPUT_BYTES, MAX_STARTUP_TIMEOUT_S, MIN_OUTPUT_BYTES, Location, McpServer, Transport
from agentops.redaction import redact_text
from dashboard.forms import JSONTextField

_LINES = {"rows": 3, "class": "mono", "spellcheck": "false"}
_ENV_LINE = re.compile(r"^([^=\s]+)=(.*)$")
_HEADER_LINE = re.compile(r"^([^:\s]+):\s?(.*)$")


def _pairs(text: str, pattern: re.Pattern[str], example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        match = pattern.match(line.strip())
        if match is None:
            raise forms.ValidationError(f"line {number}: write {example}")
        if match.group(1) in out:
            raise forms.ValidationError(f"line {number}: {match.group(1)} is given twice")
        out[match.group(1)] = match.group(2)
    return out


class ServerForm(forms.Form):
    name = forms.CharField(max_length=31, help_text="lowercase letters, digits, - and _; the tools are named mcp__<name>__<tool>")
    transport = forms.ChoiceField(choices=Transport.choices)
    command = forms.CharField(
        required=False, max_length=20_000, help_text="stdio: the program and its arguments, as typed in a shell (quotes group; no shell runs it)"
    )
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs=_LINES),
        help_text="stdio: one NAME=value per line; a credential only as ${AGENTOPS_SECRET_NAME}, resolved when the server starts",
    )
    url = forms.CharField(required=False, max_length=2000, help_text="http: the server's streamable HTTP endpoint")
    headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs=_LINES), help_text="http: one 'Name: value' per line; a credential only as ${AGENTOPS_SECRET_NAME}"
    )
    location = forms.ChoiceField(choices=[("", "default (stdio: sandbox · http: host)"), *Location.choices], required=False)
    call_timeout_s = forms.FloatField(label="Call timeout (s)", initial=60.0, min_value=0.1, max_value=MAX_CALL_TIMEOUT_S)
    startup_timeout_s = forms.FloatField(label="Startup timeout (s)", initial=30.0, min_value=0.1, max_value=MAX_STARTUP_TIMEOUT_S)
    max_output_bytes = forms.IntegerField(label="Most output (bytes)", initial=1_000_000, min_value=MIN_OUTPUT_BYTES, max_value=MAX_OUTPUT_BYTES)
    enabled = forms.BooleanField(required=False, initial=True)

    @classmethod
    def initial_for(cls, server: McpServer) -> dict[str, Any]:
        return {
            "name": server.name,
            "transport": server.transport,
            "command": shlex.join(server.command or []),
            "env": "\n".join(f"{k}={v}" for k, v in (server.env or {}).items()),
            "url": server.url,
            "headers": "\n".join(f"{k}: {v}" for k, v in (server.headers or {}).items()),
            "location": server.location,
            "call_timeout_s": server.call_timeout_s,
            "startup_timeout_s": server.startup_timeout_s,
            "max_output_bytes": server.max_output_bytes,
            "enabled": server.enabled,
        }

    def clean_command(self) -> list[str]:
        try:
            return shlex.split(self.cleaned_data.get("command") or "")
        except ValueError as exc:
            raise forms.ValidationError(f"cannot split into arguments: {exc}") from None

    def clean_env(self) -> dict[str, str]:
        return _pairs(self.cleaned_data.get("env") or "", _ENV_LINE, "NAME=value")

    def clean_headers(self) -> dict[str, str]:
        return _pairs(self.cleaned_data.get("headers") or "", _HEADER_LINE, "Name: value")

    def without_secrets(self) -> ServerForm:
        """The bound form to show again after an error, with any secret typed into it redacted: a
        refused credential is not sent back to the page (nor kept in the browser's form history)."""
        data: dict[str, Any] = {key: self.data.get(key) for key in self.data}
        for name in ("command", "env", "url", "headers"):
            key = self.add_prefix(name)
            if isinstance(data.get(key), str):
                data[key] = redact_text(data[key])
        self.data = data
        return self

    def declaration(self) -> dict[str, Any]:
        """The server in the spec's shape (empty optional values left out, as in a spec file)."""
        data = dict(self.cleaned_data)
        if not data.get("location"):
            data.pop("location", None)
        return data


class McpGrantForm(forms.Form):
    approval = forms.ChoiceField(choices=ApprovalOverride.choices, initial=ApprovalOverride.DEFAULT)
    risk = forms.ChoiceField(label="Risk class", choices=[("", "from the tool's annotations"), *RiskClass.choices], required=False)
    scope = JSONTextField(
        label="Argument constraints",
        required=False,
        help_text='{"arguments": {"<argument>": {"values": [...], "prefixes": ["src/"], "pattern": "..."}}}; every constraint given must hold',
    )
