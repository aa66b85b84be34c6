"""Write paths of MCP configuration: servers, discovery of their tools, and grants pinned to what was
discovered. Keyword-only, one change per transaction, audited with before and after; each passes
through the one validator of agent configuration (agentops.agents.spec.agent_errors), so the
dashboard, the command line and `agentops apply` accept and refuse the same things.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.agents.services import check_agent_config, hold_for_second_admin
from agentops.audit.services import audit_record
from agentops.forges import get_forge
from agentops.forges.base import ForgeError
from agentops.mcp.client import McpError, discover
from agentops.mcp.models import Location, McpServer, McpToolSnapshot
from agentops.mcp.references import McpConfigError
from agentops.mcp.spec import SERVER_FIELDS, effective_risk, find_snapshot, is_mcp_tool, server_to_dict, server_values
from agentops.mcp.toolinfo import McpToolInfo, ServerSpec, parse_tool_name
from agentops.redaction import REDACTED, redact_text
from agentops.sandbox import SandboxError, SandboxLimits, create_sandbox
from agentops.sandbox.base import git

log = logging.getLogger(__name__)

Actor = AbstractBaseUser | str | None
GRANT_FIELDS = ("tool", "scope", "approval", "risk", "digest")
MAX_TOOLS_PER_SERVER = 500
# The prefix of a discovery sandbox's run id: no Run has it, so the sandbox reaper removes one that
# a crashed process left behind.
DISCOVERY_RUN_PREFIX = "mcpdiscover"


class DiscoveryFailed(Exception):
    """Discovery did not complete (the server did not start, timed out, answered nonsense); the
    message says why, with no secret in it. Nothing discovery stored before is changed."""


# --- servers ------------------------------------------------------------------------------------


def _declaration(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's shape of a server from a form's or a command's values: empty optional values are
    left out, as a spec file would leave them out."""
    out: dict[str, Any] = {}
    for key in SERVER_FIELDS:
        if key not in changes:
            continue
        value = changes[key]
        if value is None or (key in ("command", "env", "url", "headers") and not value):
            continue
        out[key] = value
    return out


def mcp_server_save(*, agent: Agent, actor: Actor, changes: Mapping[str, Any], server: McpServer | None = None) -> McpServer:
    """Create a server, or replace the declaration of `server` with `changes` (the spec's keys:
    name, transport, command, env, url, headers, location, call_timeout_s, startup_timeout_s,
    max_output_bytes, enabled). Raises ValidationError keyed by field."""
    declaration = _declaration(changes)
    old_name = server.name if server is not None else None

    def change(spec: dict[str, Any]) -> None:
        others = [s for s in spec.get("mcp_servers", []) if s["name"] != old_name]
        spec["mcp_servers"] = [*others, declaration]

    check_agent_config(agent, change, fields=SERVER_FIELDS)
    values = server_values(declaration)
    with transaction.atomic():
        if server is None:
            if McpServer.objects.filter(agent=agent, name=declaration["name"]).exists():
                raise ValidationError({"name": [f"this agent already has an MCP server named {declaration['name']!r}"]})
            created = McpServer(agent=agent, name=declaration["name"], **values)
            created.full_clean()
            created.save()
            audit_record(actor=actor, action="mcp_server.create", target=agent, after=server_to_dict(created))
            return created
        current = McpServer.objects.select_for_update().get(pk=server.pk, agent=agent)
        before = server_to_dict(current)
        if declaration["name"] != current.name:
            # Its tools' names carry the server's name: what was discovered under the old one is gone.
            current.tools.all().delete()
            current.discovered_at = None
        current.name = declaration["name"]
        for field, value in values.items():
            setattr(current, field, value)
        current.full_clean()
        after = server_to_dict(current)
        if before != after:
            current.save()
            audit_record(actor=actor, action="mcp_server.update", target=agent, before=before, after=after)
        return current


def mcp_server_delete(*, server: McpServer, actor: Actor) -> list[str]:
    """Remove a server, its snapshots and the grants of its tools (which would otherwise name a
    server that is gone). Returns the tools whose grants were removed."""
    with transaction.atomic():
        current = McpServer.objects.select_for_update().select_related("agent").get(pk=server.pk)
        agent = current.agent
        grants = [g for g in ToolGrant.objects.filter(agent=agent) if (parse_tool_name(g.tool) or ("", ""))[0] == current.name]
        revoked = sorted(g.tool for g in grants)
        before = {**server_to_dict(current), "grants": [{"tool": g.tool, "scope": g.scope, "approval": g.approval, "digest": g.pinned_digest} for g in grants]}
        ToolGrant.objects.filter(pk__in=[g.pk for g in grants]).delete()
        current.delete()
        audit_record(actor=actor, action="mcp_server.delete", target=agent, before=before)
    return revoked


# --- discovery ----------------------------------------------------------------------------------


def _clean_message(message: str, spec: ServerSpec | None) -> str:
    # The resolved credentials are in no settings list the redaction reads: remove them by value first.
    for value in spec.secret_values() if spec is not None else []:
        if len(value) >= 4:
            message = message.replace(value, REDACTED)
    return redact_text(message)[:2000]


@contextmanager
def _discovery_sandbox(agent: Agent) -> Iterator[Any]:
    """A throwaway sandbox like a run's (the agent's repository, limits and image), destroyed after."""
    limits = SandboxLimits.from_policy(Policy.objects.filter(agent=agent).first() or Policy(agent=agent))
    config = agent.config or {}
    empty_repo = None
    repo_name = config.get("repository")
    if repo_name:
        repo = get_forge(agent).clone_source(repo_name)
        ref = config.get("base_branch", "main")
    else:
        # No repository: the server starts in an empty workspace.
        empty_repo = tempfile.mkdtemp(prefix="agentops-mcp-empty-")
        git("init", "--quiet", empty_repo)
        git("-c", "user.name=agentops", "-c", "user.email=agentops@localhost", "commit", "--quiet", "--allow-empty", "-m", "empty", cwd=empty_repo)
        repo, ref = empty_repo, "HEAD"
    try:
        sandbox = create_sandbox(
            run_id=f"{DISCOVERY_RUN_PREFIX}-{agent.pk}-{uuid.uuid4().hex[:8]}", repo=repo, ref=ref, limits=limits, image=config.get("sandbox_image")
        )
    finally:
        if empty_repo:
            shutil.rmtree(empty_repo, ignore_errors=True)
    try:
        yield sandbox
    finally:
        try:
            sandbox.destroy()
        except Exception:
            log.warning("destroying the discovery sandbox of agent %s failed (the reaper removes it)", agent.pk, exc_info=True)


def _listed_tools(server: McpServer, environ: Mapping[str, str]) -> list[McpToolInfo]:
    spec: ServerSpec | None = None
    try:
        spec = server.to_spec(environ)
        if server.location == Location.SANDBOX:
            with _discovery_sandbox(server.agent) as sandbox:
                return discover(spec, sandbox=sandbox)
        return discover(spec)
    except (McpError, McpConfigError, SandboxError, ForgeError, OSError, RuntimeError, ValueError) as exc:
        raise DiscoveryFailed(_clean_message(str(exc) or type(exc).__name__, spec)) from exc
    except Exception as exc:  # a bug of ours or of a library: still a message, never a 500
        log.exception("discovery of MCP server %s failed unexpectedly", server.pk)
        raise DiscoveryFailed(f"discovery failed unexpectedly ({type(exc).__name__}); the server log has the details") from exc


def _checked(tools: list[McpToolInfo]) -> list[McpToolInfo]:
    if len(tools) > MAX_TOOLS_PER_SERVER:
        raise DiscoveryFailed(f"the server lists {len(tools)} tools; at most {MAX_TOOLS_PER_SERVER} are taken from one server")
    seen: dict[str, str] = {}
    for info in tools:
        if not info.name or len(info.name) > 255:
            raise DiscoveryFailed(f"the server lists a tool whose name is empty or longer than 255 characters ({info.name[:60]!r})")
        if info.qualified_name in seen:
            raise DiscoveryFailed(f"the server lists {info.name!r} twice (or two tools that both become {info.qualified_name})")
        seen[info.qualified_name] = info.name
    return tools


def mcp_discover(*, server: McpServer, actor: Actor, environ: Mapping[str, str] = os.environ) -> list[McpToolSnapshot]:
    """List the server's tools (starting it in a throwaway sandbox when it runs in one) and store
    what it lists: new tools are added, changed ones keep their previous digest and when they
    changed, tools it no longer lists are removed. DiscoveryFailed says why when it cannot."""
    try:
        tools = _checked(_listed_tools(server, environ))
    except DiscoveryFailed as exc:
        McpServer.objects.filter(pk=server.pk).update(discovery_error=str(exc))
        audit_record(actor=actor, action="mcp_server.discover", target=server.agent, detail=f"{server.name}: failed: {exc}")
        raise
    now = timezone.now()
    added, changed = [], []
    with transaction.atomic():
        current = McpServer.objects.select_for_update().get(pk=server.pk)
        existing = {s.name: s for s in McpToolSnapshot.objects.filter(server=current)}
        for info in tools:
            values = {
                "qualified_name": info.qualified_name,
                "title": (info.title or "")[:255],
                "description": info.description or "",
                "input_schema": info.input_schema if isinstance(info.input_schema, dict) else {},
                "annotations": info.annotations if isinstance(info.annotations, dict) else {},
                "digest": info.digest,
                "last_seen_at": now,
            }
            snapshot = existing.pop(info.name, None)
            if snapshot is None:
                McpToolSnapshot.objects.create(server=current, name=info.name, first_seen_at=now, **values)
                added.append(info.qualified_name)
                continue
            if snapshot.digest != info.digest:
                snapshot.previous_digest, snapshot.changed_at = snapshot.digest, now
                changed.append(info.qualified_name)
            for field, value in values.items():
                setattr(snapshot, field, value)
            snapshot.save()
        removed = sorted(s.qualified_name for s in existing.values())
        McpToolSnapshot.objects.filter(pk__in=[s.pk for s in existing.values()]).delete()
        current.discovered_at, current.discovery_error = now, ""
        current.save(update_fields=["discovered_at", "discovery_error", "updated_at"])
        audit_record(
            actor=actor,
            action="mcp_server.discover",
            target=current.agent,
            after={"server": current.name, "tools": len(tools), "added": sorted(added), "changed": sorted(changed), "removed": removed},
        )
    return list(McpToolSnapshot.objects.filter(server=server).order_by("name"))


# --- grants -------------------------------------------------------------------------------------


def _grant_entry(grant: ToolGrant) -> dict[str, Any]:
    return {"tool": grant.tool, "scope": grant.scope, "approval": grant.approval, "digest": grant.pinned_digest, "risk": grant.risk_override}


def mcp_grant(*, agent: Agent, tool: str, scope: dict[str, Any], approval: str, risk_override: str, actor: Actor) -> ToolGrant:
    """Grant (or grant again) one MCP tool as discovery last saw it: the grant pins that tool's
    digest. Granting again after the tool changed is how an admin accepts the change; the audit
    entry keeps the old and the new digest."""
    if not is_mcp_tool(tool):
        raise ValidationError({"tool": [f"{tool!r} is not an MCP tool (mcp__<server>__<tool>)"]})
    snapshot = find_snapshot(agent.slug, tool)
    if snapshot is None:
        raise ValidationError({"tool": [f"discovery has not seen {tool}: discover the server's tools first, then grant what it lists"]})
    entry: dict[str, Any] = {"tool": tool, "scope": scope, "approval": approval, "digest": snapshot.digest}
    if risk_override:
        entry["risk"] = risk_override

    def change(spec: dict[str, Any]) -> None:
        spec["tools"] = [*(g for g in spec["tools"] if g["tool"] != tool), entry]

    check_agent_config(agent, change, fields=GRANT_FIELDS)
    # An irreversible tool (or a lowered risk) needs a second admin: it waits as a decision.
    hold_for_second_admin(agent=agent, actor=actor, change=change)
    with transaction.atomic():
        current = ToolGrant.objects.select_for_update().filter(agent=agent, tool=tool).first()
        fields = {"scope": scope, "approval": approval, "pinned_digest": snapshot.digest, "risk_override": risk_override or ""}
        if current is None:
            grant = ToolGrant.objects.create(agent=agent, tool=tool, **fields)
            audit_record(actor=actor, action="grant.create", target=agent, after=_grant_entry(grant), detail=f"MCP tool pinned at digest {snapshot.digest}")
            return grant
        before = _grant_entry(current)
        for name, value in fields.items():
            setattr(current, name, value)
        after = _grant_entry(current)
        if before != after:
            current.save()
            detail = f"re-granted: digest {before['digest'] or '(none)'} -> {after['digest']}" if before["digest"] != after["digest"] else ""
            audit_record(actor=actor, action="grant.update", target=agent, before=before, after=after, detail=detail)
        return current


def mcp_grant_status(grant: ToolGrant, *, snapshot: McpToolSnapshot | None | bool = False) -> str:
    """How an MCP grant stands against what discovery last saw:
    "ok" (the tool is as granted), "changed" (its digest differs from the pinned one), "missing"
    (discovery did not see it, or never ran), "new" (the grant pins no digest yet, so it allows
    nothing until an admin grants the tool as discovered). `snapshot` may be passed when already
    loaded (None: known to be missing)."""
    if not is_mcp_tool(grant.tool):
        raise ValueError(f"{grant.tool} is not an MCP tool")
    if not grant.pinned_digest:
        return "new"
    found = find_snapshot(grant.agent.slug, grant.tool) if snapshot is False else snapshot
    if not isinstance(found, McpToolSnapshot):
        return "missing"
    return "ok" if found.digest == grant.pinned_digest else "changed"


# --- reads --------------------------------------------------------------------------------------


@dataclass
class ToolRow:
    """One discovered tool (or a granted one discovery no longer lists) as the admin sees it."""

    qualified_name: str
    server: McpServer
    snapshot: McpToolSnapshot | None
    grant: ToolGrant | None
    # "granted" | "changed" (since granted) | "missing" (granted, not listed) | "new" (first seen in
    # the last discovery, not granted) | "not granted"
    status: str
    annotation_risk: str
    risk: str  # effective: the grant's override, else the annotations'


def mcp_tool_rows(agent: Agent) -> dict[int, list[ToolRow]]:
    """Per server id, its tools with their grant status, in name order."""
    servers = list(McpServer.objects.filter(agent=agent).order_by("name"))
    grants = {g.tool: g for g in ToolGrant.objects.filter(agent=agent) if is_mcp_tool(g.tool)}
    rows: dict[int, list[ToolRow]] = {}
    for server in servers:
        out = []
        snapshots = list(McpToolSnapshot.objects.filter(server=server).order_by("name"))
        # "new": appeared after the server's first discovery (what it listed then is not new).
        first_seen = min((s.first_seen_at for s in snapshots), default=None)
        for snapshot in snapshots:
            grant = grants.pop(snapshot.qualified_name, None)
            if grant is None:
                status = "new" if first_seen is not None and snapshot.first_seen_at > first_seen else "not granted"
            else:
                status = {"ok": "granted", "changed": "changed", "new": "changed", "missing": "missing"}[mcp_grant_status(grant, snapshot=snapshot)]
            risk = snapshot.risk_class
            out.append(
                ToolRow(
                    snapshot.qualified_name,
                    server,
                    snapshot,
                    grant,
                    status,
                    risk,
                    effective_risk(risk_override=grant.risk_override if grant else "", annotations=snapshot.annotations),
                )
            )
        for tool, grant in sorted(grants.items()):
            if (parse_tool_name(tool) or ("", ""))[0] == server.name:
                grants.pop(tool)
                out.append(
                    ToolRow(
                        tool,
                        server,
                        None,
                        grant,
                        "missing",
                        effective_risk(risk_override="", annotations=None),
                        effective_risk(risk_override=grant.risk_override, annotations=None),
                    )
                )
        rows[server.pk] = sorted(out, key=lambda r: r.qualified_name)
    return rows
