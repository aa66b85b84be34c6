"""A small stdio MCP server for the discovery tests, written with the SDK: what it lists comes from a
JSON file named on its command line, so a test can change a tool between two discoveries.

{"echo_description": "...", "extra": true, "echo_destructive": false}
"""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

state = json.loads(open(sys.argv[1]).read())
server = MCPServer("drift")


@server.tool(
    name="echo",
    description=state.get("echo_description", "Repeats the text it is given."),
    annotations=ToolAnnotations(
        read_only_hint=not state.get("echo_destructive", False), destructive_hint=state.get("echo_destructive", False), open_world_hint=False
    ),
)
def echo(text: str, times: int = 1) -> str:
    return text * times


if state.get("extra"):

    @server.tool(name="extra", description="A tool that appeared later.")
    def extra(path: str) -> str:
        return path


if __name__ == "__main__":
    server.run()
