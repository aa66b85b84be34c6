"""The MCP server's tools without its HTTP layer: whatever reaches them without a token the HTTP
layer authenticated (an in-process client, a transport mounted some other way) is refused."""

from __future__ import annotations

import anyio
from mcp import Client

from agentops.mcp.server import REQUIREMENTS, build_server

# Valid arguments for each tool, so what refuses is the missing token and not the input.
ARGS: dict[str, dict[str, object]] = {
    "get_run": {"run_id": 1},
    "read_trace": {"run_id": 1},
    "decide": {"approval_id": 1, "decision": "approve"},
    "engage_kill_switch": {"reason": "test"},
}


def test_a_tool_reached_without_the_http_layers_token_refuses_to_act() -> None:
    async def go() -> dict[str, tuple[bool, str]]:
        async with Client(build_server(), mode="legacy") as client:
            out = {}
            for name in REQUIREMENTS:
                result = await client.call_tool(name, ARGS.get(name, {}))
                out[name] = (result.is_error, " ".join(getattr(b, "text", "") for b in result.content))
            return out

    for name, (is_error, message) in anyio.run(go).items():
        assert is_error, name
        assert "not authenticated: send Authorization: Bearer" in message, (name, message)
