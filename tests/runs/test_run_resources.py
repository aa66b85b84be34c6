"""A run's own tools (its ToolSet) and what they open for it (close hooks on the run's services):
a tool that exists for one run only is offered and called under its grant like any other, and
whatever it opened is closed when the worker lets go of the run, however the run ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentops.runs.controller import RunLoop, claim_run
from agentops.runs.models import Run, RunStatus, StepKind
from agentops.runs.services import run_create
from agentops.runs.transitions import request_cancel
from agentops.tools.registry import Tool, ToolContext, ToolResult
from tests.runs.test_controller import call, observations, turn


def session_tool(closed: list[str], *, name: str = "open_session", after: Callable[[ToolContext], None] | None = None, fail_close: bool = False) -> Tool:
    """A tool of the run's own that opens something living as long as the run (as an MCP server's
    session would), and registers how to close it."""

    def open_session(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        label = args["label"]

        def close() -> None:
            if fail_close:
                raise ConnectionError(f"{label} did not close")
            closed.append(label)

        ctx.services.add_close_hook(close)
        if after is not None:
            after(ctx)
        return ToolResult(output=f"opened {label}")

    return Tool(
        name=name,
        description="Open a session for this run.",
        input_schema={"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"], "additionalProperties": False},
        risk_class="read",
        scope_schema={"type": "object"},
        executor=open_session,
        side_effecting=False,
    )


def run_with(agent: Any, *tools: Tool) -> tuple[str, Run, RunLoop]:
    """Drive a run in this process, with tools of its own added to its tool set."""
    run = run_create(agent=agent, input="go", actor="test", enqueue=False)
    assert claim_run(run.pk, "w1")
    loop = RunLoop(Run.objects.select_related("agent", "agent__policy").get(pk=run.pk), "w1")
    for tool in tools:
        loop.tools.add(tool)
    result = loop.execute()
    run.refresh_from_db()
    return result, run, loop


def test_a_tool_of_the_run_alone_is_offered_and_called_under_its_grant(make_agent):
    closed: list[str] = []
    script = [turn(call("open_session", label="tickets")), {"text": "done"}]
    agent = make_agent(script=script, grants={"open_session": {}, "test_echo": {}})
    result, run, loop = run_with(agent, session_tool(closed))
    assert result == "finished"
    assert [t["name"] for t in loop.turns.tool_definitions()] == ["open_session", "test_echo"]
    assert observations(run)[0]["output"] == "opened tickets" and not observations(run)[0]["is_error"]

    # Another run of the same agent does not have it: the same call is an unknown tool there.
    _, other, _ = run_with(agent)
    assert [s.payload["guard"] for s in other.steps.filter(kind=StepKind.GUARDRAIL)] == ["unknown_tool"]


def test_what_a_run_opened_is_closed_newest_first_when_it_finishes(make_agent):
    closed: list[str] = []
    script = [turn(call("open_session", label="first")), turn(call("open_session", label="second")), {"text": "done"}]
    agent = make_agent(script=script, grants={"open_session": {}})
    result, run, _ = run_with(agent, session_tool(closed))
    assert result == "finished" and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert closed == ["second", "first"]


def test_what_a_run_opened_is_closed_when_a_person_stops_it(make_agent):
    closed: list[str] = []
    script = [turn(call("open_session", label="s")), turn(call("open_session", label="never")), {"text": "done"}]
    agent = make_agent(script=script, grants={"open_session": {}})
    stop_after_open = session_tool(closed, after=lambda ctx: request_cancel(ctx.run.pk))
    result, run, _ = run_with(agent, stop_after_open)
    assert result == RunStatus.KILLED and run.outcome == "stopped_by_person"
    assert closed == ["s"]


def test_what_a_run_opened_is_closed_when_it_waits_for_a_person(make_agent):
    closed: list[str] = []
    script = [turn(call("open_session", label="s"), call("needs_a_person", label="x")), {"text": "done"}]
    agent = make_agent(script=script, grants={"open_session": {}, "needs_a_person": {"_approval": "always"}})
    result, run, _ = run_with(agent, session_tool(closed), session_tool([], name="needs_a_person"))
    assert result == "waiting" and run.status == RunStatus.WAITING_APPROVAL
    assert closed == ["s"], "a person may take days: nothing stays open meanwhile"


def test_a_resource_that_fails_to_close_does_not_keep_the_others_open(make_agent):
    closed: list[str] = []
    script = [turn(call("open_session", label="kept"), call("open_broken", label="broken")), {"text": "done"}]
    agent = make_agent(script=script, grants={"open_session": {}, "open_broken": {}})
    result, _, _ = run_with(agent, session_tool(closed), session_tool(closed, name="open_broken", fail_close=True))
    assert result == "finished"
    assert closed == ["kept"]
