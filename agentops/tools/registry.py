"""The tool registry: what a tool is, and how its arguments and scopes are validated.

This module holds the data types and the global registry only; it imports no tool module. The tool
modules import it and register on import, and ``agentops.tools.catalog`` imports them (once Django's
apps are ready). A run looks its tools up through its ``ToolSet`` (``agentops.tools.toolset``).

Tools are executed only by the controller. A tool's executor receives arguments that already passed
the argument schema and a ToolContext whose scope already passed the scope schema; the executor
still enforces the scope's *meaning* (allowed domains, paths, branch prefix) through the helpers
in agentops.tools.scopes, because only it knows which argument is a domain or a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from agentops.agents.models import RiskClass
from agentops.runs.steps import step_record


class ToolError(Exception):
    """The tool refused or failed; the message goes back to the model as an error observation."""


class ScopeViolation(ToolError):
    """The call is outside the grant's scope; recorded as a guardrail event."""


@dataclass
class ToolResult:
    output: str
    is_error: bool = False
    data: dict[str, Any] = field(default_factory=dict)  # structured extras (diff, pr url) for the trace


@dataclass
class ToolContext:
    run: Any  # agentops.runs.models.Run
    agent: Any
    scope: dict[str, Any]
    tool_call_id: str
    idempotency_key: str
    # Polled by long-running executors; True once the run must stop (kill switch, pause, cancel).
    should_stop: Callable[[], bool]
    # Streams partial output (e.g. a test run) into the trace while the tool runs.
    emit: Callable[[str], None]
    services: dict[str, Any] = field(default_factory=dict)  # sandbox, forge, ... created lazily by the controller
    # The worker holding the run's lease. Every step a tool writes carries it: a worker presumed dead
    # but still inside a tool (a gate's test run) cannot write after another worker took the run over.
    lease_owner: str | None = None

    def record_step(self, kind: str, payload: dict[str, Any]) -> Any:
        """Write a step of the run (a gate's verdict) under the lease; raises LeaseLost without it."""
        return step_record(run=self.run, kind=kind, payload=payload, lease_owner=self.lease_owner)


Executor = Callable[[dict[str, Any], ToolContext], ToolResult]


@dataclass
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    risk_class: str
    scope_schema: dict[str, Any]
    executor: Executor
    # Tools that act (write/irreversible) go through the idempotency ledger.
    side_effecting: bool = True
    # Lowest trust phase at which an agent may use it at all (e.g. merge needs 3).
    min_trust_phase: int = 1
    # Optional hook deciding that an irreversible call may proceed without a person (phase 4 auto-merge).
    auto_approve: Callable[[dict[str, Any], ToolContext], tuple[bool, str]] | None = None
    # Optional: the scope's meaning for these arguments (raises ScopeViolation), for a tool whose
    # check needs only its arguments and scope. The executor still checks before it acts; this lets
    # the controller judge a call nobody made yet (arguments a person edited before approving).
    scope_check: Callable[[dict[str, Any], dict[str, Any]], object] | None = None
    # Only waits (for time to pass): repeating it is not a loop.
    waits: bool = False

    def __post_init__(self) -> None:
        if self.risk_class not in RiskClass.values:
            raise ValueError(f"tool {self.name}: unknown risk class {self.risk_class!r}")
        jsonschema.Draft202012Validator.check_schema(self.input_schema)
        jsonschema.Draft202012Validator.check_schema(self.scope_schema)

    def definition(self) -> dict[str, Any]:
        """The tool as the model sees it (Anthropic tool definition)."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    def argument_errors(self, arguments: Any) -> list[str]:
        return _schema_errors(self.input_schema, arguments)

    def scope_errors(self, scope: Any) -> list[str]:
        return _schema_errors(self.scope_schema, scope)


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        errors.append(f"{where}: {error.message}")
    return errors


# Every tool a run may be granted, by name, in registration order (the order the model has always
# seen them). Filled by the tool modules as they are imported (agentops.tools.catalog).
registry: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    registry[tool.name] = tool
    return tool


def unregister(name: str) -> None:
    registry.pop(name, None)


def get_tool(name: str) -> Tool | None:
    """A registered tool. A run asks its ToolSet instead, which also knows the run's own tools."""
    return registry.get(name)


def all_tools() -> dict[str, Tool]:
    return dict(registry)
