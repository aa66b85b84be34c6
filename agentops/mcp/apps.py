from django.apps import AppConfig


class McpConfig(AppConfig):
    name = "agentops.mcp"
    label = "mcp"
    verbose_name = "MCP servers"
