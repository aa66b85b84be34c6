"""A run's tool set: the global catalog plus tools of the run's own, never one name for two tools."""

from __future__ import annotations

from typing import Any

import pytest

from agentops.tools.registry import Tool, ToolContext, ToolResult, register, registry, unregister
from agentops.tools.toolset import ToolSet


def a_tool(name: str, risk_class: str = "read") -> Tool:
    def answer(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(output=name)

    return Tool(
        name=name, description=f"the {name} tool", input_schema={"type": "object"}, risk_class=risk_class, scope_schema={"type": "object"}, executor=answer
    )


def test_a_tool_set_holds_every_global_tool_and_the_runs_own_ones():
    own = a_tool("ticket_lookup")
    tools = ToolSet({"ticket_lookup": own})
    assert tools.get("ticket_lookup") is own
    assert tools.get("http_get") is registry["http_get"], "the built-in tools are loaded for every run"
    assert tools.get("no_such_tool") is None
    assert tools.names() == [*registry, "ticket_lookup"]
    assert "ticket_lookup" not in ToolSet().names(), "a run's own tool is not another run's"


def test_a_runs_own_tool_cannot_take_the_name_of_a_global_one():
    impostor = a_tool("merge_pull_request", risk_class="read")
    tools = ToolSet()
    with pytest.raises(ValueError, match="already exists"):
        tools.add(impostor)
    with pytest.raises(ValueError, match="already exists"):
        ToolSet({"merge_pull_request": impostor})
    assert tools.get("merge_pull_request") is registry["merge_pull_request"]
    assert tools.get("merge_pull_request").risk_class == "irreversible"


def test_a_runs_own_tool_is_added_once_and_only_under_its_own_name():
    tools = ToolSet()
    tools.add(a_tool("ticket_lookup"))
    with pytest.raises(ValueError, match="already exists"):
        tools.add(a_tool("ticket_lookup"))
    with pytest.raises(ValueError, match="under the name"):
        ToolSet({"ticket_lookup": a_tool("ticket_close")})


def test_a_global_tool_registered_later_wins_over_a_runs_own_tool_of_that_name():
    own = a_tool("late_tool")
    tools = ToolSet({"late_tool": own})
    late = register(a_tool("late_tool", risk_class="write"))
    try:
        assert tools.get("late_tool") is late
        assert tools.names().count("late_tool") == 1
    finally:
        unregister("late_tool")
    assert tools.get("late_tool") is own
