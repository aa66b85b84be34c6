"""Fixtures of the MCP configuration tests: the team (admin, approver, viewer, outsider), an agent,
and tools as discovery stores them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from agentops.agents.models import Agent, Policy
from agentops.llm.prices import DEFAULT_MODEL
from agentops.mcp.models import McpServer, McpToolSnapshot
from agentops.mcp.toolinfo import McpToolInfo
from tests.support.team import team  # noqa: F401  the fixture, imported from here by the MCP tests

ROOT = Path(__file__).resolve().parents[2]
TIME_SERVER = str(Path(sys.executable).with_name("mcp-server-time"))
DRIFT_SERVER = str(Path(__file__).with_name("discover_drift_server.py"))
ECHO_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}, "times": {"type": "integer"}}, "required": ["text"]}
READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False}


@pytest.fixture
def mcp_agent(db: Any) -> Agent:
    agent = Agent.objects.create(name="Debugger", slug="debugger", objective="Fix production errors.", model=DEFAULT_MODEL)
    Policy.objects.create(agent=agent)
    return agent


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def add_server(agent: Agent, name: str = "drift", **fields: Any) -> McpServer:
    values: dict[str, Any] = {"transport": "stdio", "command": ["python", "server.py"], "location": "host"} | fields
    return McpServer.objects.create(agent=agent, name=name, **values)


def store_tool(
    server: McpServer, name: str = "echo", *, description: str = "Repeats the text.", schema: dict | None = None, annotations: dict | None = None
) -> McpToolSnapshot:
    """A tool as discovery stores it (its digest computed the way discovery computes it)."""
    info = McpToolInfo(
        server=server.name,
        name=name,
        title="",
        description=description,
        input_schema=schema if schema is not None else ECHO_SCHEMA,
        annotations=annotations if annotations is not None else READ_ONLY,
    )
    now = timezone.now()
    snapshot, _ = McpToolSnapshot.objects.update_or_create(
        server=server,
        name=name,
        defaults={
            "qualified_name": info.qualified_name,
            "description": info.description,
            "input_schema": info.input_schema,
            "annotations": info.annotations,
            "digest": info.digest,
            "first_seen_at": now,
            "last_seen_at": now,
        },
    )
    return snapshot
