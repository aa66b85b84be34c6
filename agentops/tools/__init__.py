from agentops.tools.registry import Tool, ToolContext, ToolError, ToolResult, get_tool, register, registry

__all__ = ["Tool", "ToolContext", "ToolError", "ToolResult", "get_tool", "register", "registry"]
