"""MCP servers and MCP grants in the agent spec: their schema, their checks, export and apply.

agentops.agents.spec calls these from its one validator (`agent_errors`), from `export_agent` and
(through agents.services) from `agent_apply`, so a server or an MCP grant is checked the same way
whether it comes from a YAML file, the dashboard or the command line.

An MCP grant is pinned to the digest of the tool as granted. In a spec it is written `digest:`; left
out, `apply` pins what discovery last saw for a new grant and keeps the pin of an existing one (so
applying the same file again never accepts a tool that changed in between). A grant of a tool that
discovery has never seen needs an explicit digest: nothing is granted blind.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from agentops.agents.models import Agent, RiskClass, ToolGrant
from agentops.mcp.constraints import constraint_errors
from agentops.mcp.models import (
    MAX_CALL_TIMEOUT_S,
    MAX_OUTPUT_BYTES,
    MAX_STARTUP_TIMEOUT_S,
    MIN_OUTPUT_BYTES,
    Location,
    McpServer,
    McpToolSnapshot,
    Transport,
)
from agentops.mcp.references import literal_errors, value_errors
from agentops.mcp.toolinfo import TOOL_PREFIX, parse_tool_name, risk_from_annotations, server_name_errors

MAX_SERVERS = 20
# Set by the MCP client itself: a declaration that overrides them breaks the protocol or the routing.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type", "accept", "mcp-session-id", "mcp-protocol-version"})
_TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"  # an HTTP header name (RFC 9110 token)

SERVER_FIELDS = ("name", "transport", "command", "env", "url", "headers", "location", "call_timeout_s", "startup_timeout_s", "max_output_bytes", "enabled")

MCP_SERVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "transport"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 31},
        "transport": {"enum": list(Transport.values)},
        "command": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 4096}, "minItems": 1, "maxItems": 100},
        "env": {
            "type": "object",
            "maxProperties": 100,
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"},
            "additionalProperties": {"type": "string", "maxLength": 4096},
        },
        "url": {"type": "string", "minLength": 1, "maxLength": 2000},
        "headers": {
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"pattern": _TOKEN},
            "additionalProperties": {"type": "string", "maxLength": 8192},
        },
        "location": {"enum": list(Location.values)},
        "call_timeout_s": {"type": "number", "minimum": 0.1, "maximum": MAX_CALL_TIMEOUT_S},
        "startup_timeout_s": {"type": "number", "minimum": 0.1, "maximum": MAX_STARTUP_TIMEOUT_S},
        "max_output_bytes": {"type": "integer", "minimum": MIN_OUTPUT_BYTES, "maximum": MAX_OUTPUT_BYTES},
        "enabled": {"type": "boolean"},
    },
}
MCP_SERVERS_SCHEMA: dict[str, Any] = {"type": "array", "maxItems": MAX_SERVERS, "items": MCP_SERVER_SCHEMA}
# The keys an MCP grant adds to a grant of the spec ("tools:" items).
MCP_GRANT_PROPERTIES: dict[str, Any] = {
    "digest": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
    "risk": {"enum": list(RiskClass.values)},
}


def is_mcp_tool(name: str) -> bool:
    return name.startswith(TOOL_PREFIX)


# --- servers ------------------------------------------------------------------------------------


def url_errors(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError when it is not a number)
    except ValueError as exc:
        return [f"{url[:200]!r} is not a valid URL: {exc}"]
    errors = []
    if parts.scheme not in ("http", "https"):
        errors.append(f"{url[:200]!r} must be an http:// or https:// URL")
    if not parts.hostname:
        errors.append(f"{url[:200]!r} has no host")
    if parts.username is not None or parts.password is not None:
        errors.append("a URL may not carry credentials (they would be stored in plain text): put them in a header as a reference ${AGENTOPS_SECRET_…}")
    if parts.fragment:
        errors.append("a server URL has no #fragment")
    errors += [e.split(": ", 1)[1] for e in literal_errors(url, where="url")]
    return errors


def server_errors(server: dict[str, Any], where: str) -> list[str]:
    """Every error of one schema-valid server declaration, each prefixed with `where`."""
    errors = [f"{where}.name: {e}" for e in server_name_errors(server["name"])]
    transport = server["transport"]
    if transport == Transport.STDIO:
        if "command" not in server:
            errors.append(f"{where}.command: a stdio server needs a command (the program and its arguments, as a list)")
        for key in ("url", "headers"):
            if key in server:
                errors.append(f"{where}.{key}: only an http server has a {key}")
        for i, arg in enumerate(server.get("command", [])):
            errors += literal_errors(arg, where=f"{where}.command[{i}]")
    else:
        if "url" not in server:
            errors.append(f"{where}.url: an http server needs a url")
        for key in ("command", "env"):
            if key in server:
                errors.append(f"{where}.{key}: only a stdio server has a {key} (an http server runs elsewhere)")
        if server.get("location", Location.HOST) != Location.HOST:
            errors.append(f"{where}.location: an http server is reached over the network, which a sandbox does not have: its location is 'host'")
        if "url" in server:
            errors += [f"{where}.url: {e}" for e in url_errors(server["url"])]
    for name, value in server.get("env", {}).items():
        errors += [f"{where}.env.{name}: {e}" for e in value_errors(name, value, what="env")]
    for name, value in server.get("headers", {}).items():
        if name.lower() in RESERVED_HEADERS:
            errors.append(f"{where}.headers.{name}: set by the MCP client itself; it cannot be declared")
        errors += [f"{where}.headers.{name}: {e}" for e in value_errors(name, value, what="header")]
    return errors


def servers_errors(servers: list[dict[str, Any]], where: str) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for i, server in enumerate(servers):
        swhere = f"{where}[{i}]"
        if server["name"] in seen:
            errors.append(f"{swhere}.name: {server['name']!r} is declared twice")
        seen.add(server["name"])
        errors += server_errors(server, swhere)
    return errors


def server_values(server: dict[str, Any]) -> dict[str, Any]:
    """The model fields of a validated declaration; what it leaves out takes the default."""
    stdio = server["transport"] == Transport.STDIO
    defaults = {f.name: f.get_default() for f in McpServer._meta.fields}
    return {
        "transport": server["transport"],
        "command": list(server.get("command", [])) if stdio else [],
        "env": dict(server.get("env", {})) if stdio else {},
        "url": "" if stdio else server["url"],
        "headers": {} if stdio else dict(server.get("headers", {})),
        "location": server.get("location", Location.SANDBOX if stdio else Location.HOST),
        "call_timeout_s": float(server.get("call_timeout_s", defaults["call_timeout_s"])),
        "startup_timeout_s": float(server.get("startup_timeout_s", defaults["startup_timeout_s"])),
        "max_output_bytes": int(server.get("max_output_bytes", defaults["max_output_bytes"])),
        "enabled": bool(server.get("enabled", True)),
    }


def _number(value: float) -> float | int:
    # 60 rather than 60.0 in the YAML; 2.5 stays 2.5.
    return int(value) if float(value).is_integer() else float(value)


def server_to_dict(server: McpServer) -> dict[str, Any]:
    out: dict[str, Any] = {"name": server.name, "transport": server.transport}
    if server.transport == Transport.STDIO:
        out["command"] = list(server.command or [])
        if server.env:
            out["env"] = dict(server.env)
    else:
        out["url"] = server.url
        if server.headers:
            out["headers"] = dict(server.headers)
    out["location"] = server.location
    out["call_timeout_s"] = _number(server.call_timeout_s)
    out["startup_timeout_s"] = _number(server.startup_timeout_s)
    out["max_output_bytes"] = server.max_output_bytes
    out["enabled"] = server.enabled
    return out


def export_servers(agent: Agent) -> dict[str, Any]:
    """{"mcp_servers": [...]} for export_agent, or {} for an agent without any (its export stays
    what it was before MCP existed)."""
    servers = [server_to_dict(s) for s in McpServer.objects.filter(agent=agent).order_by("name")]
    return {"mcp_servers": servers} if servers else {}


def apply_servers(agent: Agent, servers: list[dict[str, Any]]) -> None:
    """Make the agent's servers exactly the validated declarations (inside agent_apply's transaction).
    A server keeps its row, and so its snapshots, across changes of its declaration."""
    wanted = {s["name"]: s for s in servers}
    McpServer.objects.filter(agent=agent).exclude(name__in=wanted).delete()
    for name, declaration in wanted.items():
        server = McpServer.objects.filter(agent=agent, name=name).first() or McpServer(agent=agent, name=name)
        for field, value in server_values(declaration).items():
            setattr(server, field, value)
        server.full_clean()
        server.save()


# --- grants -------------------------------------------------------------------------------------


def find_snapshot(agent_slug: str, tool: str) -> McpToolSnapshot | None:
    parsed = parse_tool_name(tool)
    if parsed is None:
        return None
    return McpToolSnapshot.objects.select_related("server").filter(server__agent__slug=agent_slug, server__name=parsed[0], qualified_name=tool).first()


def _existing_pin(agent_slug: str, tool: str) -> str:
    return ToolGrant.objects.filter(agent__slug=agent_slug, tool=tool).values_list("pinned_digest", flat=True).first() or ""


def effective_risk(*, risk_override: str, annotations: dict[str, Any] | None) -> str:
    """The admin's risk class when set, else the annotations' (irreversible when unknown)."""
    return risk_override or risk_from_annotations(annotations)


def mcp_grant_check(agent: dict[str, Any], grant: dict[str, Any], gwhere: str) -> tuple[list[str], str]:
    """(errors, effective risk class) of one schema-valid MCP grant of the agent spec `agent`."""
    tool = grant["tool"]
    parsed = parse_tool_name(tool)
    if parsed is None:
        return [f"{gwhere}.tool: {tool!r} is not an MCP tool name (mcp__<server>__<tool>)"], RiskClass.IRREVERSIBLE.value
    errors = []
    declared = {s["name"] for s in agent.get("mcp_servers", [])}
    if parsed[0] not in declared:
        errors.append(f"{gwhere}.tool: this agent declares no MCP server {parsed[0]!r} (in mcp_servers)")
    snapshot = find_snapshot(agent["slug"], tool) if parsed[0] in declared else None
    scope = grant.get("scope", {})
    if snapshot is not None:
        input_schema = snapshot.input_schema if isinstance(snapshot.input_schema, dict) else {}
    else:
        input_schema = _any_arguments(scope)
        if not grant.get("digest") and not _existing_pin(agent["slug"], tool):
            errors.append(
                f"{gwhere}.digest: discovery has not seen {tool} yet, so nothing says what is being granted: "
                "discover the server's tools first (agentops mcp discover), or pin the tool's digest explicitly"
            )
    for err in constraint_errors(scope, input_schema):
        errors.append(f"{gwhere}.scope.{err}" if not err.startswith("(root)") else f"{gwhere}.scope{err[6:]}")
    annotations = snapshot.annotations if snapshot is not None and isinstance(snapshot.annotations, dict) else None
    return errors, effective_risk(risk_override=grant.get("risk", ""), annotations=annotations)


def _any_arguments(scope: Any) -> dict[str, Any]:
    # Without a snapshot the arguments are unknown: an input schema that has exactly the scope's
    # arguments, of any type, checks the scope's own shape, patterns and prefixes.
    arguments = scope.get("arguments") if isinstance(scope, dict) else None
    return {"type": "object", "properties": {name: {} for name in arguments} if isinstance(arguments, dict) else {}}


def scope_shape_errors(scope: Any) -> list[str]:
    """A grant scope's errors that need no tool's input schema (its shape, patterns, prefixes)."""
    return constraint_errors(scope, _any_arguments(scope))


def builtin_grant_errors(grant: dict[str, Any], gwhere: str) -> list[str]:
    return [f"{gwhere}.{key}: only an MCP tool's grant has a {key}" for key in MCP_GRANT_PROPERTIES if key in grant]


def grant_extra(grant: ToolGrant) -> dict[str, Any]:
    """The MCP keys of a grant in an export ({} for a built-in tool)."""
    out: dict[str, Any] = {}
    if grant.pinned_digest:
        out["digest"] = grant.pinned_digest
    if grant.risk_override:
        out["risk"] = grant.risk_override
    return out


def grant_pin_fields(agent: Agent, grant: dict[str, Any]) -> dict[str, str]:
    """pinned_digest and risk_override of a validated grant, for agent_apply."""
    if not is_mcp_tool(grant["tool"]):
        return {"pinned_digest": "", "risk_override": ""}
    digest = grant.get("digest") or _existing_pin(agent.slug, grant["tool"])
    if not digest:
        snapshot = find_snapshot(agent.slug, grant["tool"])
        digest = snapshot.digest if snapshot is not None else ""
    return {"pinned_digest": digest, "risk_override": grant.get("risk", "")}
