"""MCP tools for a run (agentops.mcp.runtime) against the real hostile server, with plain grant objects."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentops.mcp.client import McpSession
from agentops.mcp.runtime import tools_for_run
from agentops.mcp.toolinfo import ServerSpec, tool_name
from agentops.tools.registry import ScopeViolation, ToolContext, ToolError
from tests.mcp.runtime_support import hostile_spec, pid_gone

pytestmark = pytest.mark.slow


@dataclass
class Server:
    """Stands in for agentops.mcp.models.McpServer (what the runtime reads of it)."""

    name: str
    spec: ServerSpec
    enabled: bool = True

    def to_spec(self, environ: Any) -> ServerSpec:
        return self.spec


@dataclass
class Agent:
    mcp_servers: list[Server] = field(default_factory=list)


@dataclass
class Grant:
    tool: str
    scope: dict = field(default_factory=dict)
    pinned_digest: str = ""
    risk_override: str = ""


def ctx(scope: dict | None = None, should_stop=lambda: False) -> ToolContext:
    return ToolContext(run=None, agent=None, scope=scope or {}, tool_call_id="t1", idempotency_key="k1", should_stop=should_stop, emit=lambda text: None)


@pytest.fixture(scope="module")
def digests() -> dict[str, str]:
    """What an admin saw (and pinned) when granting: the server's second listing (shifty's schema changes at
    every listing, so a run's first listing of it differs from this one)."""
    with McpSession(hostile_spec()) as session:
        session.list_tools()
        return {info.name: info.digest for info in session.list_tools()}


def name(tool: str) -> str:
    return tool_name("hostile", tool)


@pytest.fixture
def run_tools():
    closers = []

    def make(grants: list[Grant], *, servers: list[Server] | None = None, should_stop=lambda: False, **spec_fields):
        agent = Agent(mcp_servers=servers if servers is not None else [Server("hostile", hostile_spec(**spec_fields))])
        tools, refusals, close = tools_for_run(agent=agent, grants=grants, sandbox_factory=lambda: pytest.fail("no sandbox here"), should_stop=should_stop)
        closers.append(close)
        return {t.name: t for t in tools}, refusals, close

    yield make
    for close in closers:
        close()


def test_only_granted_tools_whose_digest_matches_the_grant_are_usable(run_tools, digests):
    grants = [
        Grant(name("echo"), pinned_digest=digests["echo"]),
        Grant(name("persuasive"), pinned_digest=digests["persuasive"], risk_override="irreversible"),
        Grant(name("shifty"), pinned_digest=digests["shifty"]),  # its schema changed since discovery
        Grant(name("crash"), pinned_digest="0" * 64),  # pinned to something else
        Grant(name("env")),  # granted without a pin
        Grant(name("vanished"), pinned_digest="1" * 64),  # no longer offered
        Grant("http_get"),  # not an MCP tool: none of the runtime's business
    ]
    tools, refusals, _ = run_tools(grants)
    assert set(tools) == {name("echo"), name("persuasive")}
    assert tools[name("persuasive")].risk_class == "irreversible"  # the admin's, not the annotations' "write"
    text = "\n".join(refusals)
    assert f"{name('shifty')}: changed since it was granted" in text
    assert f"{name('crash')}: changed since it was granted" in text
    assert f"{name('env')}: the grant pins no digest" in text
    assert f"{name('vanished')}: granted, but the MCP server hostile no longer offers it" in text
    new = next(r for r in refusals if "offers tools nobody granted" in r)
    assert "sleep_forever" in new and "flood" in new and "echo" not in new
    assert "http_get" not in text


def test_a_granted_tool_runs_through_its_executor_within_the_grants_scope(run_tools, digests):
    scope = {"arguments": {"text": {"pattern": "hello.*"}}}
    tools, _, _ = run_tools([Grant(name("echo"), scope=scope, pinned_digest=digests["echo"])])
    echo = tools[name("echo")]
    assert echo.scope_errors(scope) == []
    result = echo.executor({"text": "hello there"}, ctx(scope))
    assert (result.output, result.is_error) == ("hello there", False)
    assert result.data["mcp"] == {"server": "hostile", "tool": "echo", "digest": digests["echo"], "truncated": False}
    with pytest.raises(ScopeViolation, match="does not match the allowed pattern"):
        echo.executor({"text": "rm -rf /"}, ctx(scope))
    with pytest.raises(ToolError, match="input schema"):
        echo.executor({"text": "hello", "extra": True}, ctx(scope))


def test_a_scope_that_no_longer_fits_the_tool_is_refused_at_run_start(run_tools, digests):
    tools, refusals, _ = run_tools([Grant(name("echo"), scope={"arguments": {"path": {"prefixes": ["/"]}}}, pinned_digest=digests["echo"])])
    assert tools == {}
    assert any("the grant's scope does not fit the tool" in r and "no argument 'path'" in r for r in refusals)


def test_a_server_that_is_not_declared_or_does_not_start_refuses_its_tools(run_tools, digests):
    _, refusals, _ = run_tools([Grant(tool_name("ghost", "x"), pinned_digest="0" * 64)], servers=[])
    assert refusals == ["mcp__ghost__x: granted, but the agent declares no MCP server 'ghost'; refused"]
    broken = Server("hostile", hostile_spec("--garbage"))
    tools, refusals, _ = run_tools([Grant(name("echo"), pinned_digest=digests["echo"])], servers=[broken])
    assert tools == {}
    assert len(refusals) == 1 and "did not start: malformed output" in refusals[0] and name("echo") in refusals[0]


def test_a_server_that_timed_out_is_started_again_for_the_next_call(run_tools, digests):
    tools, _, close = run_tools(
        [Grant(name("sleep_forever"), pinned_digest=digests["sleep_forever"]), Grant(name("echo"), pinned_digest=digests["echo"])], call_timeout_s=0.5
    )
    with pytest.raises(ToolError, match="MCP server hostile, tool sleep_forever: timed out after 0.5 s"):
        tools[name("sleep_forever")].executor({}, ctx())
    assert tools[name("echo")].executor({"text": "again"}, ctx()).output == "again"
    close()
    with pytest.raises(ToolError, match="closed with the run"):
        tools[name("echo")].executor({"text": "after the run"}, ctx())


def test_a_server_restarted_with_changed_tools_is_refused(run_tools, tmp_path):
    description = tmp_path / "echo.txt"
    description.write_text("Echoes its text.")
    fields = {"call_timeout_s": 0.5}
    with McpSession(hostile_spec("--describe-echo", str(description))) as session:
        pinned = {info.name: info.digest for info in session.list_tools()}
    servers = [Server("hostile", hostile_spec("--describe-echo", str(description), **fields))]
    grants = [Grant(name("echo"), pinned_digest=pinned["echo"]), Grant(name("sleep_forever"), pinned_digest=pinned["sleep_forever"])]
    tools, _, _ = run_tools(grants, servers=servers)
    assert tools[name("echo")].executor({"text": "v1"}, ctx()).output == "v1"
    with pytest.raises(ToolError, match="timed out"):
        tools[name("sleep_forever")].executor({}, ctx())
    description.write_text("Echoes its text. Now also sends it to a pastebin.")
    with pytest.raises(ToolError, match="restarted and its tools echo changed since the run started"):
        tools[name("echo")].executor({"text": "v2"}, ctx())
    with pytest.raises(ToolError, match="changed since the run started"):
        tools[name("sleep_forever")].executor({}, ctx())


def test_a_stop_ends_a_running_call_and_closing_kills_the_server(run_tools, digests):
    tools, _, close = run_tools([Grant(name("sleep_forever"), pinned_digest=digests["sleep_forever"]), Grant(name("spawn"), pinned_digest=digests["spawn"])])
    child = int(tools[name("spawn")].executor({}, ctx()).output)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ToolError, match="stopped: the run is stopping"):
        tools[name("sleep_forever")].executor({}, ctx(should_stop=stop.is_set))
    assert time.monotonic() - started < 0.2 + 0.5
    assert pid_gone(child)
    close()
