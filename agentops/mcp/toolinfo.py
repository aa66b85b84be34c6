"""What an MCP server and its tools are, as agentops sees them: pure data, no I/O.

A tool's digest pins what an admin granted: a tool whose name, description, input schema or
annotations change afterwards no longer matches the grant and is refused until re-granted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from agentops.agents.models import RiskClass

TOOL_PREFIX = "mcp__"
MAX_TOOL_NAME = 64  # the model APIs' limit on a tool name
# "__" separates server from tool in a qualified name, so a server name may not contain it (nor end with "_").
SERVER_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]|_(?!_)){0,30}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpError(Exception):
    """An MCP server failed: did not start, timed out, crashed, flooded, answered malformed. The message is
    short, says what happened, and holds no secret. (Here, not in client.py: code that only handles the
    error must not import the MCP SDK.)"""


@dataclass(frozen=True)
class ServerSpec:
    """One declared MCP server; env and header values are resolved secrets and never logged."""

    name: str
    transport: str  # "stdio" | "http"
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    location: str = "host"  # "sandbox" (stdio only) | "host"
    call_timeout_s: float = 60.0
    startup_timeout_s: float = 30.0
    max_output_bytes: int = 1_000_000

    def secret_values(self) -> list[str]:
        """Values that must never appear in a message: every env and header value."""
        return [v for v in (*self.env.values(), *self.headers.values()) if v]


def server_name_errors(name: str) -> list[str]:
    if not SERVER_NAME_RE.fullmatch(name or ""):
        return [f"server name {name!r} must match {SERVER_NAME_RE.pattern} (lowercase, no '__', at most 31 characters)"]
    if name.endswith("_"):
        return [f"server name {name!r} may not end with '_'"]
    return []


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class McpToolInfo:
    server: str
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any]  # raw MCP annotations (readOnlyHint, destructiveHint, idempotentHint, openWorldHint)

    @property
    def digest(self) -> str:
        material = {"name": self.name, "description": self.description, "input_schema": self.input_schema, "annotations": self.annotations}
        return hashlib.sha256(canonical_json(material).encode()).hexdigest()

    @property
    def qualified_name(self) -> str:
        return tool_name(self.server, self.name)

    @property
    def risk_class(self) -> str:
        return risk_from_annotations(self.annotations)


def _short_hash(server: str, tool: str) -> str:
    return hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]


def tool_name(server: str, tool: str) -> str:
    """The agentops name of a server's tool: "mcp__<server>__<tool>", stable and at most 64 characters.

    A lossy mapping (a character replaced, or the name cut to fit) gets an 8-hex hash of the real
    names as a suffix, so two different tools ("a.b" and "a_b") never share a name and so a grant."""
    name = f"{TOOL_PREFIX}{_UNSAFE.sub('_', server)}__{_UNSAFE.sub('_', tool)}"
    lossy = _UNSAFE.search(server) is not None or _UNSAFE.search(tool) is not None
    if lossy or len(name) > MAX_TOOL_NAME:
        suffix = "_" + _short_hash(server, tool)
        name = name[: MAX_TOOL_NAME - len(suffix)] + suffix
    return name


def parse_tool_name(name: str) -> tuple[str, str] | None:
    """(server, tool part) of a qualified name, or None when it is not an MCP tool name.

    The tool part is the tool's name as written in the qualified name (sanitized, maybe cut): match
    tools by comparing qualified names, not by feeding this back to a server."""
    if not name.startswith(TOOL_PREFIX):
        return None
    server, sep, tool = name[len(TOOL_PREFIX) :].partition("__")
    if not sep or not server or not tool:
        return None
    return server, tool


def risk_from_annotations(annotations: dict[str, Any] | None) -> str:
    """The risk class an MCP tool's annotations imply, failing closed on the spec's defaults.

    readOnlyHint defaults to false, destructiveHint and openWorldHint to true: a tool that says
    nothing is irreversible. Only a literal True counts as "read-only" (a string "true" does not)."""
    annotations = annotations if isinstance(annotations, dict) else {}
    if annotations.get("readOnlyHint") is True:
        return RiskClass.READ.value
    if annotations.get("destructiveHint", True) is not False or annotations.get("openWorldHint", True) is not False:
        return RiskClass.IRREVERSIBLE.value
    return RiskClass.WRITE.value
