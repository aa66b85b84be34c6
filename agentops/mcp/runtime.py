"""MCP tools for one run: started with the run, checked against the grants, closed with the run.

At run start, each MCP server the agent declares and holds at least one grant for is started (a stdio
server with location "sandbox" inside the run's sandbox) and listed. A granted tool is usable only when
the server still offers it AND its digest equals the one pinned in the grant; every other case is
refused with a sentence for the trace (deny by default):
- a tool granted but gone, or changed since it was granted (description, schema or annotations);
- a tool the server offers that nobody granted (a new tool);
- a grant without a pinned digest, a grant whose scope no longer fits the tool's schema;
- a server that is not declared, disabled, cannot be configured or does not start.

A server that dies during the run (a call timed out, the person stopped it, it crashed) is started
again on the next call, and used only if every tool it serves in this run is still the same.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentops.mcp.constraints import constraint_errors
from agentops.mcp.toolinfo import McpError, McpToolInfo, ServerSpec, parse_tool_name
from agentops.mcp.tools import mcp_tool
from agentops.redaction import redact_text
from agentops.tools.registry import Tool, ToolContext

if TYPE_CHECKING:
    from agentops.mcp.client import McpSession

MAX_RESTARTS = 5  # per server and run: a server that keeps dying is not restarted forever


def _redacted(text: str) -> str:
    try:
        return redact_text(text)
    except Exception:  # noqa: BLE001 - fail closed
        return "[message withheld: it could not be redacted]"


@dataclass
class _ServerRun:
    """One server's session for the run, restarted on demand, and the digests its tools must keep."""

    spec: ServerSpec
    sandbox: Any
    should_stop: Callable[[], bool]
    session: McpSession | None = None
    digests: dict[str, str] = field(default_factory=dict)  # tool name (server's) -> digest in use this run
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: str = ""  # why no session may be started any more ("" while one may)

    def open(self) -> list[McpToolInfo]:
        from agentops.mcp.client import McpSession  # lazy: the MCP SDK costs ~0.5 s to import, and only runs of agents with MCP grants get here

        session = McpSession(self.spec, sandbox=self.sandbox, should_stop=self.should_stop)
        try:
            session.start()
            tools = session.list_tools()
        except BaseException:
            session.close()
            raise
        self.session = session
        return tools

    def session_for(self, ctx: ToolContext) -> McpSession:
        with self.lock:
            if self.closed:
                raise McpError(self.closed)
            if self.session is not None and self.session.alive:
                return self.session
            if self.restarts >= MAX_RESTARTS:
                raise McpError(f"server {self.spec.name} stopped {MAX_RESTARTS} times in this run; it is not started again")
            self.restarts += 1
            if self.session is not None:
                self.session.close()
                self.session = None
            tools = {info.name: info for info in self.open()}
            changed = sorted(name for name, digest in self.digests.items() if name not in tools or tools[name].digest != digest)
            if changed:
                self.close_locked(f"server {self.spec.name} was restarted and its tools {', '.join(changed)} changed since the run started; refused")
                raise McpError(self.closed)
            assert self.session is not None
            return self.session

    def close_locked(self, reason: str) -> None:
        self.closed = reason
        if self.session is not None:
            self.session.close()
            self.session = None

    def close(self) -> None:
        with self.lock:
            self.close_locked(self.closed or f"server {self.spec.name} was closed with the run")


def _declared_servers(agent: Any) -> dict[str, Any]:
    servers = getattr(agent, "mcp_servers", None)
    if servers is None:
        return {}
    items = servers.all() if hasattr(servers, "all") else servers
    return {server.name: server for server in items}


def tools_for_run(
    *, agent: Any, grants: Iterable[Any], sandbox_factory: Callable[[], Any], should_stop: Callable[[], bool]
) -> tuple[list[Tool], list[str], Callable[[], None]]:
    """The run's usable MCP tools, the refusals (sentences for the trace) and a function that closes every
    server started here (call it when the run ends, however it ends). Never raises for a server's failure."""
    by_server: dict[str, list[Any]] = {}
    for grant in grants:
        parsed = parse_tool_name(str(grant.tool))
        if parsed is not None:
            by_server.setdefault(parsed[0], []).append(grant)
    if not by_server:
        return [], [], lambda: None

    declared = _declared_servers(agent)
    tools: list[Tool] = []
    refusals: list[str] = []
    runs: list[_ServerRun] = []

    def close_all() -> None:
        for server_run in runs:
            server_run.close()

    try:
        for server_name, server_grants in sorted(by_server.items()):
            names = ", ".join(sorted(str(g.tool) for g in server_grants))
            server = declared.get(server_name)
            if server is None or not getattr(server, "enabled", True):
                why = "declares no MCP server" if server is None else "has disabled the MCP server"
                refusals.append(f"{names}: granted, but the agent {why} {server_name!r}; refused")
                continue
            try:
                spec = server.to_spec(os.environ)
                sandbox = sandbox_factory() if spec.location == "sandbox" else None
            except Exception as exc:  # noqa: BLE001 - a configuration or sandbox failure refuses this server's tools
                refusals.append(_redacted(f"MCP server {server_name} was not started ({exc}); its tools are refused in this run: {names}"))
                continue
            server_run = _ServerRun(spec=spec, sandbox=sandbox, should_stop=should_stop)
            try:
                offered = {info.qualified_name: info for info in server_run.open()}
            except McpError as exc:
                refusals.append(_redacted(f"MCP server {server_name}: {exc}; its tools are refused in this run: {names}"))
                continue
            runs.append(server_run)
            usable = _usable_tools(server_run, offered, server_grants, refusals)
            tools += usable
            granted = {str(g.tool) for g in server_grants}
            new = sorted(info.name for qualified, info in offered.items() if qualified not in granted)
            if new:
                refusals.append(f"MCP server {server_name} offers tools nobody granted (refused until an admin grants them): {', '.join(new)}")
            if not usable:
                server_run.close()
    except BaseException:
        close_all()
        raise
    return tools, refusals, close_all


def _usable_tools(server_run: _ServerRun, offered: dict[str, McpToolInfo], grants: list[Any], refusals: list[str]) -> list[Tool]:
    usable: list[Tool] = []
    for grant in sorted(grants, key=lambda g: str(g.tool)):
        name = str(grant.tool)
        info = offered.get(name)
        pinned = str(getattr(grant, "pinned_digest", "") or "")
        if info is None:
            refusals.append(f"{name}: granted, but the MCP server {server_run.spec.name} no longer offers it; refused")
            continue
        if not pinned:
            refusals.append(f"{name}: the grant pins no digest of the tool, so what was granted is unknown; refused until an admin grants it again")
            continue
        if info.digest != pinned:
            refusals.append(
                f"{name}: changed since it was granted (its description, input schema or annotations differ); refused until an admin grants it again"
            )
            continue
        errors = constraint_errors(grant.scope or {}, info.input_schema)
        if errors:
            refusals.append(f"{name}: the grant's scope does not fit the tool ({'; '.join(errors[:3])}); refused")
            continue
        try:
            tool = mcp_tool(
                info, session_for=server_run.session_for, risk_class=str(getattr(grant, "risk_override", "") or "") or None, workspace=server_run.sandbox
            )
        except Exception as exc:  # noqa: BLE001 - an input schema agentops cannot use (invalid JSON Schema)
            refusals.append(_redacted(f"{name}: the server's description of the tool is unusable ({str(exc)[:200]}); refused"))
            continue
        server_run.digests[info.name] = info.digest
        usable.append(tool)
    return usable
