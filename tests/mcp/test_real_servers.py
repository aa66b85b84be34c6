"""Real MCP servers from PyPI and npm, on the host and inside real bubblewrap and Docker sandboxes."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from agentops.mcp.client import McpError, McpSession, discover
from agentops.mcp.toolinfo import risk_from_annotations
from agentops.sandbox import available_backends, create_sandbox
from tests.mcp.runtime_support import HOSTILE, VENV_BIN, make_repo, node_bin, pid_gone, requires_real, spec

pytestmark = pytest.mark.slow

SECRET = "sandboxed-server-secret-41d7"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> str:
    return make_repo(tmp_path_factory.mktemp("mcp-repo"))


@pytest.fixture(scope="module", params=["bubblewrap", "docker"])
def backend(request) -> str:
    reason = available_backends()[request.param]
    if reason:
        requires_real(f"the {request.param} sandbox", reason)
    return request.param


@pytest.fixture
def sandbox(backend, repo):
    sb = create_sandbox(run_id=f"test-mcp-{uuid.uuid4().hex[:10]}", repo=repo, backend=backend)
    yield sb
    sb.destroy()


def _in_sandbox_python(backend: str) -> str:
    # bubblewrap: the worker's venv is first on PATH; Docker: the image's MCP venv (scripts/build-sandbox-image).
    return "python3" if backend == "bubblewrap" else "/opt/agentops-mcp/bin/python3"


# -- PyPI servers on the host --------------------------------------------------------------------------


def test_mcp_server_time_tells_the_time_on_the_host():
    with McpSession(spec("time", [str(VENV_BIN / "mcp-server-time")])) as s:
        tools = {t.name: t for t in s.list_tools()}
        assert tools["get_current_time"].qualified_name == "mcp__time__get_current_time"
        assert tools["get_current_time"].risk_class == "read"
        result = s.call_tool("get_current_time", {"timezone": "UTC"})
    assert not result.is_error
    assert result.structured is not None and result.structured["timezone"] == "UTC"
    assert str(time.gmtime().tm_year) in result.structured["datetime"]


def test_mcp_server_git_on_the_host_reports_the_status_of_a_repository(repo):
    with McpSession(spec("git", [str(VENV_BIN / "mcp-server-git")])) as s:
        tools = {t.name: t for t in s.list_tools()}
        result = s.call_tool("git_status", {"repo_path": repo})
    assert {"git_status": "read", "git_commit": "write", "git_reset": "irreversible"}.items() <= {n: t.risk_class for n, t in tools.items()}.items()
    assert "nothing to commit" in result.text and not result.is_error


# -- inside the run's sandbox ----------------------------------------------------------------------------


def test_mcp_server_git_in_the_sandbox_commits_what_git_log_then_shows(sandbox, repo, backend):
    git = spec("git", ["mcp-server-git"], location="sandbox")
    with McpSession(git, sandbox=sandbox) as s:
        assert "git_commit" in {t.name for t in s.list_tools()}
        assert "nothing to commit" in s.call_tool("git_status", {"repo_path": "/workspace"}).text
        sandbox.write_file("notes.txt", "written in the sandbox\n")
        assert not s.call_tool("git_add", {"repo_path": "/workspace", "files": ["notes.txt"]}).is_error
        committed = s.call_tool("git_commit", {"repo_path": "/workspace", "message": "Commit made through MCP"})
        assert not committed.is_error, committed.text
        # The host's repository is not there: the server sees only the workspace.
        outside = s.call_tool("git_status", {"repo_path": repo})
        assert outside.is_error
        pid = s.pid
    log = sandbox.exec("git log --format=%s -1")
    assert log.output.strip() == "Commit made through MCP"
    assert pid_gone(pid)
    if backend == "docker":  # docker does not forward a kill into the container: the supervisor must have
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "mcp-server-git" in _container_processes(sandbox):
            time.sleep(0.1)
        assert "mcp-server-git" not in _container_processes(sandbox)


def _container_processes(sandbox) -> str:
    script = "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try: print(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))\n        except OSError: pass\n"
    return sandbox.exec(["python3", "-c", script]).output


def test_a_server_in_the_sandbox_has_no_network_and_sees_only_the_workspace(sandbox, repo, backend):
    sandbox.write_file("hostile.py", Path(HOSTILE).read_text())
    server = spec("probe", [_in_sandbox_python(backend), "hostile.py"], location="sandbox", env={"TOKEN": SECRET})
    with McpSession(server, sandbox=sandbox) as s:
        assert s.call_tool("env", {"name": "TOKEN"}).text == SECRET
        network = s.call_tool("connect", {"host": "1.1.1.1", "port": 53})
        assert network.is_error and "cannot connect" in network.text
        assert s.call_tool("read", {"path": "app.py"}).text == "print('hello')\n"
        for outside in (os.path.join(repo, "app.py"), HOSTILE):
            assert s.call_tool("read", {"path": outside}).is_error


def test_the_kill_switch_ends_a_server_running_in_the_sandbox(sandbox):
    with McpSession(spec("git", ["mcp-server-git"], location="sandbox"), sandbox=sandbox) as s:
        s.list_tools()
        sandbox.cancel()
        with pytest.raises(McpError, match="the server (exited|was killed)"):
            s.call_tool("git_status", {"repo_path": "/workspace"})
        assert pid_gone(s.pid)


def test_a_server_in_a_destroyed_sandbox_does_not_start(sandbox):
    sandbox.destroy()
    with pytest.raises(McpError, match="did not start: .*sandbox destroyed"):
        discover(spec("git", ["mcp-server-git"], location="sandbox"), sandbox=sandbox)


# -- npm servers ---------------------------------------------------------------------------------------


def test_the_filesystem_server_works_within_its_directory_and_its_annotations_give_the_risk_classes(tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the test\n")
    with McpSession(spec("fs", [node_bin("mcp-server-filesystem"), str(tmp_path)])) as s:
        tools = {t.name: t for t in s.list_tools()}
        assert tools["read_text_file"].risk_class == "read"
        assert tools["create_directory"].risk_class == "write"  # destructiveHint false, openWorldHint false
        assert tools["write_file"].risk_class == "irreversible"  # destructiveHint true
        assert "hello.txt" in s.call_tool("list_directory", {"path": str(tmp_path)}).text
        assert s.call_tool("read_text_file", {"path": str(tmp_path / "hello.txt")}).text == "hello from the test\n"
        denied = s.call_tool("read_text_file", {"path": "/etc/hostname"})
        assert denied.is_error and "denied" in denied.text.lower()


def test_the_everything_server_lists_calls_and_classifies_its_tools():
    with McpSession(spec("everything", [node_bin("mcp-server-everything"), "stdio"])) as s:
        tools = {t.name: t for t in s.list_tools()}
        assert s.call_tool("echo", {"message": "ping"}).text.endswith("ping")
        assert "5" in s.call_tool("get-sum", {"a": 2, "b": 3}).text
        structured = s.call_tool("get-structured-content", {"location": "New York"})
    assert structured.structured is not None
    for tool in tools.values():
        assert tool.risk_class == risk_from_annotations(tool.annotations)
    assert tools["echo"].risk_class == "read"
    assert tools["gzip-file-as-resource"].risk_class == "irreversible"  # openWorldHint: it may fetch a URL
    assert tools["toggle-simulated-logging"].risk_class == "write"


def test_a_runs_git_tools_commit_in_its_sandbox_within_the_grants_scope(sandbox, repo):
    from agentops.mcp.runtime import tools_for_run
    from agentops.tools.registry import ScopeViolation, ToolContext

    git = spec("git", ["mcp-server-git"], location="sandbox")
    pinned = {info.qualified_name: info.digest for info in discover(git, sandbox=sandbox)}
    scope = {"arguments": {"repo_path": {"values": ["/workspace"]}}}

    class Server:
        name, enabled = "git", True

        def to_spec(self, environ):
            return git

    class Agent:
        mcp_servers = [Server()]

    class Grant:
        def __init__(self, tool: str) -> None:
            self.tool, self.scope, self.pinned_digest, self.risk_override = tool, scope, pinned[tool], ""

    grants = [Grant("mcp__git__git_add"), Grant("mcp__git__git_commit")]
    tools, refusals, close = tools_for_run(agent=Agent(), grants=grants, sandbox_factory=lambda: sandbox, should_stop=lambda: False)
    try:
        assert sorted(t.name for t in tools) == ["mcp__git__git_add", "mcp__git__git_commit"]
        assert [t.risk_class for t in tools] == ["write", "write"]
        assert len(refusals) == 1 and "offers tools nobody granted" in refusals[0] and "git_reset" in refusals[0]
        by_name = {t.name: t for t in tools}
        context = ToolContext(run=None, agent=None, scope=scope, tool_call_id="c", idempotency_key="k", should_stop=lambda: False, emit=lambda text: None)
        sandbox.write_file("fix.py", "x = 1\n")
        by_name["mcp__git__git_add"].executor({"repo_path": "/workspace", "files": ["fix.py"]}, context)
        by_name["mcp__git__git_commit"].executor({"repo_path": "/workspace", "message": "Fix committed by the agent"}, context)
        with pytest.raises(ScopeViolation):
            by_name["mcp__git__git_commit"].executor({"repo_path": repo, "message": "outside"}, context)
    finally:
        close()
    assert sandbox.exec("git log --format=%s -1").output.strip() == "Fix committed by the agent"
