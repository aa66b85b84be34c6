"""The tools one run can call: the global catalog plus tools of the run's own.

Built-in and ``AGENTOPS_TOOL_MODULES`` tools are global (``agentops.tools.registry``); a run may
also get tools that exist only for it (the tools of its MCP servers). The controller and the
dispatcher look tools up here, never in the registry directly. A run's own tool never takes the name
of a global one: a grant names exactly one tool, whatever was added later.
"""

from __future__ import annotations

from agentops.tools.catalog import load_tools
from agentops.tools.registry import Tool, registry


class ToolSet:
    def __init__(self, extra: dict[str, Tool] | None = None) -> None:
        load_tools()  # normally done at start (RunsConfig.ready); cheap once done
        self._extra: dict[str, Tool] = {}
        for name, tool in (extra or {}).items():
            if name != tool.name:
                raise ValueError(f"tool {tool.name!r} was given under the name {name!r}")
            self.add(tool)

    def get(self, name: str) -> Tool | None:
        # A global tool first: registered after a run's own one of the same name, it still wins.
        return registry.get(name) or self._extra.get(name)

    def add(self, tool: Tool) -> None:
        """Add a tool for this run only. Refused (ValueError) when the name is taken."""
        if tool.name in registry or tool.name in self._extra:
            raise ValueError(f"a tool named {tool.name!r} already exists")
        self._extra[tool.name] = tool

    def names(self) -> list[str]:
        """Every tool name, global ones in registration order, then the run's own."""
        return [*registry, *(name for name in self._extra if name not in registry)]
