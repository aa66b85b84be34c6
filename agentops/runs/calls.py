"""The checks a tool call gets before it may act, in one place.

The dispatcher asks them of every call the model makes (``call_refusal``), and a person's edited
arguments get exactly the same ones (``validate_call``: at decide time, from the approval, and again
by the dispatcher before the edited call runs). They are: a tool the run knows, a grant for it, a
valid scope (an unparsable scope is an unknown boundary: fail closed), the agent's trust phase,
arguments that are an object valid against the tool's schema, and, for a call nobody made yet, the
scope's meaning where a tool can tell it from the arguments alone (``Tool.scope_check``; an MCP
tool's argument constraints). The executor still checks the scope's meaning before it acts.

This module imports nothing that asks a person (``approvals``): the decision write path imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from agentops.agents.models import Agent, ToolGrant
from agentops.mcp.constraints import ARGUMENT_CONSTRAINTS_SCHEMA, check_arguments
from agentops.mcp.spec import effective_risk, find_snapshot, is_mcp_tool
from agentops.runs.models import Run
from agentops.tools.registry import Tool, ToolError, ToolResult
from agentops.tools.toolset import ToolSet


@dataclass(frozen=True)
class Refusal:
    """Why a call may not run: ``guard`` names the check (as the trace records it)."""

    guard: str  # unknown_tool, no_grant, bad_scope, trust_phase, invalid_arguments, scope
    reason: str

    @property
    def observation(self) -> str:
        """What the model reads."""
        if self.guard == "invalid_arguments":
            return f"Invalid arguments, the tool did not run:\n{self.reason}"
        return f"Refused by the controller: {self.reason}"


def call_refusal(*, name: str, tool: Tool | None, grant: ToolGrant | None, agent: Agent, arguments: Any) -> Refusal | None:
    """The checks of a call before it acts, in this order; None when it passes them all."""
    if tool is None:
        return Refusal("unknown_tool", f"there is no tool named {name!r}")
    if grant is None:
        return Refusal("no_grant", f"this agent has no grant for {name!r}")
    scope_errors = tool.scope_errors(grant.scope)
    if scope_errors:
        # An unparsable scope means we do not know the boundary: fail closed.
        return Refusal("bad_scope", "the grant's scope is invalid: " + "; ".join(scope_errors))
    if agent.trust_phase < tool.min_trust_phase:
        return Refusal("trust_phase", f"{name} needs trust phase {tool.min_trust_phase}; this agent is at phase {agent.trust_phase}")
    if not isinstance(arguments, dict):
        return Refusal("invalid_arguments", "expected a JSON object")
    arg_errors = tool.argument_errors(arguments)
    if arg_errors:
        return Refusal("invalid_arguments", "\n".join(arg_errors))
    return None


def scope_refusal(*, tool: Tool, scope: dict[str, Any], arguments: dict[str, Any]) -> Refusal | None:
    """The scope's meaning for these arguments, where the tool can tell it before acting."""
    try:
        if tool.scope_check is not None:
            tool.scope_check(arguments, scope)
        elif tool.scope_schema is ARGUMENT_CONSTRAINTS_SCHEMA:
            # An MCP tool: the grant's argument constraints (the executor checks them again).
            check_arguments(arguments, input_schema=tool.input_schema, scope=scope or {})
    except ToolError as exc:  # ScopeViolation, or a schema the constraints cannot be checked against
        return Refusal("scope", str(exc))
    return None


def validate_call(*, run: Run, tool_name: str, arguments: Any, tools: ToolSet | None = None, grants: Mapping[str, ToolGrant] | None = None) -> list[str]:
    """Every reason the call ``tool_name(arguments)`` may not run in ``run`` (empty: it may), checked
    exactly as a model's call is, plus the scope's meaning. ``tools``/``grants``: the running worker's
    (its ToolSet knows the run's MCP tools); otherwise read afresh, an MCP tool from the snapshot its
    grant pinned."""
    agent = run.agent
    grant = grants.get(tool_name) if grants is not None else ToolGrant.objects.filter(agent=agent, tool=tool_name).first()
    tool = (tools or ToolSet()).get(tool_name)
    if tool is None and tools is None and grant is not None and is_mcp_tool(tool_name):
        tool, why = _pinned_mcp_tool(agent, grant)
        if why:
            return [why]
    refusal = call_refusal(name=tool_name, tool=tool, grant=grant, agent=agent, arguments=arguments)
    if refusal is None:
        assert tool is not None and grant is not None  # call_refusal refuses a call without them
        refusal = scope_refusal(tool=tool, scope=grant.scope, arguments=arguments)
    return [refusal.reason] if refusal else []


def _pinned_mcp_tool(agent: Agent, grant: ToolGrant) -> tuple[Tool | None, str]:
    """An MCP tool as its grant pinned it (from the last listing), for checking a call outside a run's
    worker; or why it cannot be checked (fail closed)."""
    snapshot = find_snapshot(agent.slug, grant.tool)
    if snapshot is None:
        return None, f"the MCP tool {grant.tool!r} was never listed by its server, so no call to it can be checked"
    if not grant.pinned_digest or snapshot.digest != grant.pinned_digest:
        return None, f"the MCP tool {grant.tool!r} changed since it was granted (or its grant pins nothing); refused until an admin grants it again"

    def never(arguments: dict[str, Any], ctx: Any) -> ToolResult:
        raise ToolError("this copy of an MCP tool only checks calls")

    risk = effective_risk(risk_override=grant.risk_override, annotations=snapshot.annotations if isinstance(snapshot.annotations, dict) else {})
    try:
        tool = Tool(
            name=grant.tool,
            description="",
            input_schema=snapshot.input_schema if isinstance(snapshot.input_schema, dict) else {},
            risk_class=risk,
            scope_schema=ARGUMENT_CONSTRAINTS_SCHEMA,
            executor=never,
            side_effecting=risk != "read",
        )
    except (ValueError, jsonschema.SchemaError) as exc:
        return None, f"the MCP tool {grant.tool!r} has an input schema no call can be checked against: {str(exc)[:200]}"
    return tool, ""
