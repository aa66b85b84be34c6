"""Tools only the test suite registers (through AGENTOPS_TOOL_MODULES), with observable effects."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from agentops.tools.registry import Tool, ToolContext, ToolError, ToolResult, register

_PATH_SCOPE = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": False}


def _append(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    # A real side effect outside the database: a line in a file, one per execution.
    with open(ctx.scope["path"], "a") as f:
        f.write(f"{ctx.idempotency_key} {args['text']} pid={os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    if args.get("then_sleep"):
        time.sleep(float(args["then_sleep"]))
    return ToolResult(output=f"appended {args['text']}")


def _fail(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    raise ToolError(f"cannot do {args.get('what', 'it')}")


def _echo(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return ToolResult(output=str(args.get("text", "")) * int(args.get("repeat", 1)))


register(
    Tool(
        name="test_append",
        description="Append a line to a file (a side effect the tests can count).",
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}, "then_sleep": {"type": "number"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        risk_class="write",
        scope_schema=_PATH_SCOPE,
        executor=_append,
    )
)
register(
    Tool(
        name="test_pay",
        description="Move money (irreversible): appends to a ledger file.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": False},
        risk_class="irreversible",
        scope_schema=_PATH_SCOPE,
        executor=_append,
    )
)
register(
    Tool(
        name="test_fail",
        description="Always fails.",
        input_schema={"type": "object", "properties": {"what": {"type": "string"}}, "additionalProperties": False},
        risk_class="read",
        scope_schema={"type": "object"},
        executor=_fail,
        side_effecting=False,
    )
)
register(
    Tool(
        name="test_echo",
        description="Echo text back.",
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}, "repeat": {"type": "integer", "minimum": 1}},
            "required": ["text"],
            "additionalProperties": False,
        },
        risk_class="read",
        scope_schema={"type": "object"},
        executor=_echo,
        side_effecting=False,
    )
)


def lines(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


def _stream(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    # Output arriving in pieces, as a running command's does, with pauses that end a progress chunk.
    for piece in args["pieces"]:
        ctx.emit(piece)
        time.sleep(float(args.get("pause_s", 0)))
    return ToolResult(output="streamed")


register(
    Tool(
        name="test_stream",
        description="Stream text in pieces.",
        input_schema={
            "type": "object",
            "properties": {"pieces": {"type": "array", "items": {"type": "string"}}, "pause_s": {"type": "number"}},
            "required": ["pieces"],
            "additionalProperties": False,
        },
        risk_class="read",
        scope_schema={"type": "object"},
        executor=_stream,
        side_effecting=False,
    )
)
