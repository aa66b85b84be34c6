"""MCP servers as agent configuration, and what discovery last saw on each.

A server's env and header values are stored as written: references like `${AGENTOPS_SECRET_X}`
and plain non-secret values (agentops.mcp.references refuses anything else before it is saved).
`to_spec` resolves the references from the environment when the server is about to start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agentops.agents.models import Agent
from agentops.fields import RedactedCharField, RedactedJSONField, RedactedTextField
from agentops.mcp.references import resolve
from agentops.mcp.toolinfo import ServerSpec, risk_from_annotations, server_name_errors

MAX_CALL_TIMEOUT_S = 3600.0
MAX_STARTUP_TIMEOUT_S = 600.0
MIN_OUTPUT_BYTES = 1024
MAX_OUTPUT_BYTES = 20_000_000


class Transport(models.TextChoices):
    STDIO = "stdio", "stdio (a command)"
    HTTP = "http", "streamable HTTP (a URL)"


class Location(models.TextChoices):
    SANDBOX = "sandbox", "inside the run's sandbox (no network, sees only the workspace)"
    HOST = "host", "on the agentops host"


def _validate_server_name(value: str) -> None:
    errors = server_name_errors(value)
    if errors:
        raise ValidationError(errors)


class McpServer(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="mcp_servers")
    # The namespace of its tools ("mcp__<name>__<tool>"), so it cannot hold "__".
    name = models.CharField(max_length=31, validators=[_validate_server_name])
    transport = models.CharField(max_length=5, choices=Transport.choices)
    # stdio: the program and its arguments, no shell.
    command = RedactedJSONField(default=list, blank=True)
    # stdio: {NAME: plain value or "${AGENTOPS_SECRET_...}"}.
    env = RedactedJSONField(default=dict, blank=True)
    # http: the endpoint; credentials go in headers, as references.
    url = RedactedCharField(max_length=2000, blank=True)
    headers = RedactedJSONField(default=dict, blank=True)
    location = models.CharField(max_length=7, choices=Location.choices, default=Location.SANDBOX)
    call_timeout_s = models.FloatField(default=60.0, validators=[MinValueValidator(0.1), MaxValueValidator(MAX_CALL_TIMEOUT_S)])
    startup_timeout_s = models.FloatField(default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(MAX_STARTUP_TIMEOUT_S)])
    max_output_bytes = models.PositiveIntegerField(default=1_000_000, validators=[MinValueValidator(MIN_OUTPUT_BYTES), MaxValueValidator(MAX_OUTPUT_BYTES)])
    enabled = models.BooleanField(default=True)
    # The last discovery: when it succeeded, and why the last attempt failed (cleared on success).
    discovered_at = models.DateTimeField(null=True, blank=True)
    discovery_error = RedactedTextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "name"], name="mcp_server_name_unique_per_agent"),
            models.CheckConstraint(condition=models.Q(transport__in=["stdio", "http"]), name="mcp_server_transport_known"),
            # An HTTP server is reached over the network, which a sandbox does not have.
            models.CheckConstraint(condition=~models.Q(transport="http", location="sandbox"), name="mcp_http_server_runs_on_host"),
        ]

    def __str__(self) -> str:
        return f"{self.agent}: MCP server {self.name}"

    def to_spec(self, environ: Mapping[str, str] = os.environ) -> ServerSpec:
        """The server ready to start, its references resolved from `environ`; McpConfigError when
        one cannot be (a variable unset), so a server never starts with a credential missing."""
        return ServerSpec(
            name=self.name,
            transport=self.transport,
            command=[str(arg) for arg in self.command or []],
            env={name: resolve(str(value), environ) for name, value in (self.env or {}).items()},
            url=self.url,
            headers={name: resolve(str(value), environ) for name, value in (self.headers or {}).items()},
            location=self.location,
            call_timeout_s=float(self.call_timeout_s),
            startup_timeout_s=float(self.startup_timeout_s),
            max_output_bytes=int(self.max_output_bytes),
        )


class McpToolSnapshot(models.Model):
    """One tool as the server last listed it. Its text comes from the server: untrusted, shown to
    the admin who grants it, never read as an instruction."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=255)
    qualified_name = models.CharField(max_length=64, db_index=True)
    title = RedactedCharField(max_length=255, blank=True)
    description = RedactedTextField(blank=True)
    input_schema = RedactedJSONField(default=dict, blank=True)
    annotations = RedactedJSONField(default=dict, blank=True)
    # sha256 of name, description, input schema and annotations as listed (McpToolInfo.digest).
    digest = models.CharField(max_length=64)
    # The digest before the last change, and when discovery saw it change.
    previous_digest = models.CharField(max_length=64, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["server", "name"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="mcp_tool_snapshot_unique_per_server")]

    def __str__(self) -> str:
        return self.qualified_name

    @property
    def risk_class(self) -> str:
        return risk_from_annotations(self.annotations if isinstance(self.annotations, dict) else {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server.name,
            "name": self.name,
            "qualified_name": self.qualified_name,
            "title": self.title,
            "description": self.description,
            "input_schema": self.input_schema,
            "annotations": self.annotations,
            "risk": self.risk_class,
            "digest": self.digest,
        }
