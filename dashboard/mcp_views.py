"""An agent's MCP servers: declare them, discover their tools, grant tools one by one.

Thin like the other views: check the role, fetch, call one domain function (agentops.mcp.services),
redirect. Whatever a server says about its tools is shown as untrusted text."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agentops.agents import services as agent_services
from agentops.agents.models import Agent, ToolGrant
from agentops.mcp.models import McpServer
from agentops.mcp.services import DiscoveryFailed, mcp_discover, mcp_grant, mcp_server_delete, mcp_server_save, mcp_tool_rows
from agentops.mcp.spec import is_mcp_tool
from dashboard import access
from dashboard.access import allowed, member_required, require_perm
from dashboard.mcp_forms import McpGrantForm, ServerForm

# A description longer than this (or of more lines) is shown collapsed.
LONG_DESCRIPTION = 280
LONG_LINES = 4
STATUS_CSS = {"granted": "s-succeeded", "changed": "s-waiting_approval", "missing": "s-failed", "new": "s-running", "not granted": ""}
STATUS_TEXT = {
    "granted": "granted",
    "changed": "changed since granted",
    "missing": "granted, not listed",
    "new": "new",
    "not granted": "not granted",
}


def _user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # member_required sent anonymous visitors to sign in already
        raise PermissionDenied("sign in first")
    return user


def _agent(slug: str) -> Agent:
    return get_object_or_404(Agent, slug=slug)


def _page(agent: Agent) -> str:
    return reverse("dashboard:mcp_servers", args=[agent.slug])


def _arguments(schema: Any) -> list[dict[str, Any]]:
    """The tool's top-level arguments, for writing constraints (names and types from its schema)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    required = set(schema.get("required") or []) if isinstance(schema, dict) and isinstance(schema.get("required"), list) else set()
    if not isinstance(properties, dict):
        return []
    out = []
    for name, prop in sorted(properties.items()):
        kind = prop.get("type") if isinstance(prop, dict) else None
        out.append({"name": name, "type": "/".join(kind) if isinstance(kind, list) else (kind or "any"), "required": name in required})
    return out


def _render(request: HttpRequest, agent: Agent, *, status: int = 200, bound: dict[str, Any] | None = None) -> HttpResponse:
    bound = bound or {}
    rows = mcp_tool_rows(agent)
    servers = []
    for server in McpServer.objects.filter(agent=agent).order_by("name"):
        tools = []
        for row in rows.get(server.pk, []):
            description = row.snapshot.description if row.snapshot else ""
            grant = row.grant
            initial = {"approval": grant.approval if grant else "default", "risk": grant.risk_override if grant else "", "scope": grant.scope if grant else {}}
            form = bound.get(f"grant:{row.qualified_name}") or McpGrantForm(prefix=f"g-{row.qualified_name}", initial=initial)
            tools.append(
                {
                    "row": row,
                    "status_css": STATUS_CSS[row.status],
                    "status_text": STATUS_TEXT[row.status],
                    "long": len(description) > LONG_DESCRIPTION or description.count("\n") >= LONG_LINES,
                    "arguments": _arguments(row.snapshot.input_schema) if row.snapshot else [],
                    "constraints": json.dumps(grant.scope, sort_keys=True) if grant and grant.scope else "",
                    "form": form,
                    "open": f"grant:{row.qualified_name}" in bound,
                }
            )
        form = bound.get(f"server:{server.pk}") or ServerForm(prefix=f"s{server.pk}", initial=ServerForm.initial_for(server))
        servers.append({"server": server, "tools": tools, "form": form, "open": f"server:{server.pk}" in bound})
    context = {
        "agent": agent,
        "servers": servers,
        "new_server_form": bound.get("new_server") or ServerForm(prefix="new"),
        "new_open": "new_server" in bound,
        "can_configure": allowed(_user(request), access.CONFIGURE),
        "can_grant": allowed(_user(request), access.ADD_GRANT) and allowed(_user(request), access.CHANGE_GRANT),
        "can_revoke": allowed(_user(request), access.DELETE_GRANT),
    }
    return render(request, "mcp/servers.html", context, status=status)


@member_required
@require_GET
def servers(request: HttpRequest, slug: str) -> HttpResponse:
    return _render(request, _agent(slug))


def _add_errors(form: Any, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@member_required
@require_POST
def server_save(request: HttpRequest, slug: str, server_id: int | None = None) -> HttpResponse:
    agent = _agent(slug)
    require_perm(_user(request), access.CONFIGURE)
    server = get_object_or_404(McpServer, pk=server_id, agent=agent) if server_id is not None else None
    key = f"server:{server.pk}" if server is not None else "new_server"
    form = ServerForm(request.POST, prefix=f"s{server.pk}" if server is not None else "new")
    if form.is_valid():
        try:
            saved = mcp_server_save(agent=agent, actor=_user(request), changes=form.declaration(), server=server)
        except ValidationError as exc:
            _add_errors(form, exc)
        except IntegrityError:  # two admins adding the same name at once
            form.add_error("name", "this agent already has an MCP server with that name")
        else:
            messages.success(request, f"Saved the MCP server {saved.name}. Discover its tools to grant them.")
            return redirect(_page(agent) + f"#server-{saved.name}")
    return _render(request, agent, status=400, bound={key: form.without_secrets()})


@member_required
@require_POST
def server_delete(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    agent = _agent(slug)
    require_perm(_user(request), access.CONFIGURE)
    require_perm(_user(request), access.DELETE_GRANT)
    server = get_object_or_404(McpServer, pk=server_id, agent=agent)
    revoked = mcp_server_delete(server=server, actor=_user(request))
    extra = f" and the grants of {len(revoked)} of its tools" if revoked else ""
    messages.success(request, f"Removed the MCP server {server.name}{extra}.")
    return redirect(_page(agent))


@member_required
@require_POST
def server_discover(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    agent = _agent(slug)
    require_perm(_user(request), access.CONFIGURE)
    server = get_object_or_404(McpServer, pk=server_id, agent=agent)
    try:
        found = mcp_discover(server=server, actor=_user(request))
    except DiscoveryFailed as exc:
        messages.error(request, f"Discovery of {server.name} failed: {exc}")
    else:
        messages.success(request, f"{server.name} lists {len(found)} tool{'s' if len(found) != 1 else ''}.")
    return redirect(_page(agent) + f"#server-{server.name}")


@member_required
@require_POST
def grant(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    require_perm(_user(request), access.ADD_GRANT)
    require_perm(_user(request), access.CHANGE_GRANT)
    tool = request.POST.get("tool", "")
    form = McpGrantForm(request.POST, prefix=f"g-{tool}")
    if form.is_valid():
        try:
            saved = mcp_grant(
                agent=agent,
                tool=tool,
                scope=form.cleaned_data["scope"],
                approval=form.cleaned_data["approval"],
                risk_override=form.cleaned_data["risk"],
                actor=_user(request),
            )
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, f"Granted {saved.tool} as discovered (digest {saved.pinned_digest[:12]}).")
            return redirect(_page(agent) + f"#tool-{saved.tool}")
    if not any(r.qualified_name == tool for rows in mcp_tool_rows(agent).values() for r in rows):
        # Not a tool of this page (nothing to show the form under): say why at the top.
        for error in form.non_field_errors():
            messages.error(request, str(error))
    return _render(request, agent, status=400, bound={f"grant:{tool}": form})


@member_required
@require_POST
def grant_revoke(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    require_perm(_user(request), access.DELETE_GRANT)
    tool = request.POST.get("tool", "")
    grant = get_object_or_404(ToolGrant, agent=agent, tool=tool) if is_mcp_tool(tool) else None
    if grant is None:
        return HttpResponse("not an MCP tool", status=400, content_type="text/plain")
    agent_services.grant_delete(grant=grant, actor=_user(request))
    messages.success(request, f"Revoked {tool}.")
    return redirect(_page(agent) + f"#tool-{tool}")
