"""Tools from MCP servers, run under the controller's grants and scopes (issue 14)."""
