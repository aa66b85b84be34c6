"""MCP runtime latency benchmark, per placement of the server (host, bubblewrap sandbox, Docker sandbox).

Uses the real `mcp-server-git` console script through agentops.mcp.client.McpSession:
(a) start -> tools listed: McpSession(spec).start() (spawn + MCP handshake) and list_tools(); median / p90
    over >= 10 sessions, in one live sandbox per sandboxed placement (sandbox creation not timed);
(b) call: one `git_status` call in a live session; median / p90 over >= 50;
(c) close -> process gone: close() until every process of the server has exited (the spawned process and its
    descendants; Docker: also the server inside the container, which `docker exec` does not kill); median
    over the sessions of (a);
(d) the controller's argument check of an MCP tool call (agentops.mcp.constraints.check_arguments, a grant
    with a values constraint); median / p90 over >= 10,000 calls, in microseconds.

Prints markdown tables and writes them under `## MCP tools` in BENCHMARKS.md, after `## Sandbox` (other
sections are kept). A placement that cannot run here is reported as not run, with the reason.
Rerun: .venv/bin/python benchmarks/bench_mcp.py [--starts N] [--calls N] [--checks N] [--placement P] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Production settings (DEBUG off), as bench_controller.py; no database is touched.
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
os.environ["DJANGO_SETTINGS_MODULE"] = "agentops.settings"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from bench_sandbox import engine_versions  # noqa: E402  (this folder is on sys.path when run as a script)

from agentops.mcp.client import McpError, McpSession  # noqa: E402
from agentops.mcp.constraints import check_arguments  # noqa: E402
from agentops.mcp.toolinfo import ServerSpec  # noqa: E402
from agentops.sandbox import available_backends, create_sandbox  # noqa: E402
from agentops.sandbox.base import SandboxError  # noqa: E402
from agentops.tools.registry import ScopeViolation  # noqa: E402

if TYPE_CHECKING:
    from agentops.sandbox.base import Sandbox

PLACEMENTS = ("host", "bubblewrap", "docker")
LABELS = {"host": "host", "bubblewrap": "bubblewrap sandbox", "docker": "Docker sandbox"}
HOST_SERVER = Path(sys.executable).parent / "mcp-server-git"
SANDBOX_COMMAND = ["mcp-server-git", "--repository", "/workspace"]
GONE_TIMEOUT_S = 5.0
# git_status's input schema as mcp-server-git lists it; replaced by the live one when the host placement runs.
GIT_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"repo_path": {"type": "string", "title": "Repo Path"}},
    "required": ["repo_path"],
    "title": "GitStatus",
}


@dataclass
class PlacementResult:
    starts: list[float]
    calls: list[float]
    closes: list[float]
    git_status_schema: dict[str, Any]


def make_repo(path: Path) -> str:
    (path / "app.py").write_text("def answer():\n    return 42\n")
    (path / "test_app.py").write_text("from app import answer\n\n\ndef test_answer():\n    assert answer() == 42\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x.invalid", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x.invalid")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env, capture_output=True)
    return str(path)


# -- which processes make up a server ------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, None when it no longer exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def server_pids(session: McpSession, sandbox: Sandbox | None) -> set[int]:
    """The spawned process, its descendants and (Docker) the server's processes inside the container: the
    in-container ones are children of the container's shim, not of the docker CLI we spawned."""
    assert session.pid is not None
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = set(), [session.pid]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    container_id = getattr(sandbox, "container_id", None) if sandbox is not None else None
    if container_id:
        for pid in _all_pids():
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    in_container = container_id in f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    is_server = b"mcp-server-git" in f.read()
            except OSError:
                continue
            if in_container and is_server:
                found.add(pid)
    return found


def _gone(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"  # a zombie has exited; only its parent's wait is left


def close_and_wait(session: McpSession, pids: set[int]) -> float:
    """Seconds from close() until every process in pids has exited."""
    t0 = time.perf_counter()
    session.close()
    left = set(pids)
    while left:
        left = {pid for pid in left if not _gone(pid)}
        if not left:
            break
        if time.perf_counter() - t0 > GONE_TIMEOUT_S:
            raise RuntimeError(f"server processes {sorted(left)} still alive {GONE_TIMEOUT_S:g} s after close()")
        time.sleep(0.0005)
    return time.perf_counter() - t0


# -- the measurements --------------------------------------------------------------------------------


def bench_placement(placement: str, repo: str, starts: int, calls: int) -> PlacementResult:
    sandbox: Sandbox | None = None
    if placement == "host":
        spec = ServerSpec(name="git", transport="stdio", command=[str(HOST_SERVER), "--repository", repo], location="host")
        repo_path = repo
    else:
        sandbox = create_sandbox(run_id=f"bench-mcp-{placement}-{uuid.uuid4().hex[:6]}", repo=repo, backend=placement)
        spec = ServerSpec(name="git", transport="stdio", command=list(SANDBOX_COMMAND), location="sandbox")
        repo_path = "/workspace"
    try:
        # one warm-up: first start of the server's Python in this placement (page cache, bytecode)
        with McpSession(spec, sandbox=sandbox) as warm:
            warm.list_tools()
            warm.call_tool("git_status", {"repo_path": repo_path})
        start_times, close_times = [], []
        schema = GIT_STATUS_SCHEMA
        for _ in range(starts):
            t0 = time.perf_counter()
            session = McpSession(spec, sandbox=sandbox)
            try:
                session.start()
                tools = session.list_tools()
                start_times.append(time.perf_counter() - t0)
                by_name = {tool.name: tool for tool in tools}
                assert "git_status" in by_name, sorted(by_name)
                schema = by_name["git_status"].input_schema
                pids = server_pids(session, sandbox)
            except BaseException:
                session.close()
                raise
            close_times.append(close_and_wait(session, pids))
        call_times = []
        with McpSession(spec, sandbox=sandbox) as session:
            session.list_tools()
            for _ in range(5):
                session.call_tool("git_status", {"repo_path": repo_path})
            for _ in range(calls):
                t0 = time.perf_counter()
                result = session.call_tool("git_status", {"repo_path": repo_path})
                call_times.append(time.perf_counter() - t0)
                assert not result.is_error and "nothing to commit" in result.text, result.text[:300]
    finally:
        if sandbox is not None:
            sandbox.destroy()
    return PlacementResult(starts=start_times, calls=call_times, closes=close_times, git_status_schema=schema)


def bench_check(schema: dict[str, Any], iterations: int) -> list[float]:
    """Seconds per check_arguments call that passes: schema validation plus a values constraint."""
    scope = {"arguments": {"repo_path": {"values": ["/workspace"]}}}
    arguments = {"repo_path": "/workspace"}
    try:  # the check must be able to refuse, or we would be timing a no-op
        check_arguments({"repo_path": "/elsewhere"}, input_schema=schema, scope=scope)
    except ScopeViolation:
        pass
    else:
        raise AssertionError("check_arguments allowed a value outside the grant's values")
    for _ in range(200):
        check_arguments(arguments, input_schema=schema, scope=scope)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        check_arguments(arguments, input_schema=schema, scope=scope)
        times.append((time.perf_counter_ns() - t0) / 1e9)
    return times


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def table(results: dict[str, PlacementResult | str]) -> str:
    lines = [
        "| server placement | start → tools listed (median / p90) | `git_status` call (median / p90) | close → process gone (median) |",
        "| --- | --- | --- | --- |",
    ]
    for placement, r in results.items():
        if isinstance(r, str):
            lines.append(f"| {LABELS[placement]} | — | — | — (not run: {r}) |")
            continue
        lines.append(
            f"| {LABELS[placement]} | {fmt_ms(statistics.median(r.starts))} / {fmt_ms(p90(r.starts))} (n={len(r.starts)}) "
            f"| {fmt_ms(statistics.median(r.calls))} / {fmt_ms(p90(r.calls))} (n={len(r.calls)}) "
            f"| {fmt_ms(statistics.median(r.closes))} (n={len(r.closes)}) |"
        )
    return "\n".join(lines)


def check_table(times: list[float]) -> str:
    return (
        "| controller-side check | median / p90 |\n| --- | --- |\n"
        f"| `check_arguments` of a `git_status` call, grant scope `repo_path` ∈ values | "
        f"{fmt_us(statistics.median(times))} / {fmt_us(p90(times))} (n={len(times)}) |"
    )


def machine(load_start: float) -> str:
    docker_version, bwrap = engine_versions()
    versions = []
    for package in ("mcp", "mcp-server-git"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Docker engine {docker_version}, {bwrap}, "
        f"Python {platform.python_version()}, {', '.join(versions)} (host venv), running as "
        f"{'root' if os.geteuid() == 0 else 'non-root'}; 1-min load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end (other test suites may share the cores)"
    )


def write_section(body: str, path: Path) -> None:
    """Replace `## MCP tools`, or insert it right after `## Sandbox` (at the end when there is none)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## MCP tools\n\n{body.strip()}\n"
    own = re.compile(r"^## MCP tools\n.*?(?=^## |\Z)", re.S | re.M)
    sandbox = re.compile(r"^## Sandbox\n.*?(?=^## |\Z)", re.S | re.M)
    if own.search(text):
        text = own.sub(lambda _m: section + "\n", text, count=1)
    elif match := sandbox.search(text):
        text = text[: match.end()].rstrip("\n") + "\n\n" + section + "\n" + text[match.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def unavailable(placement: str, reasons: dict[str, str | None]) -> str | None:
    if placement == "host":
        return None if HOST_SERVER.exists() else f"{HOST_SERVER} is missing (pip install -r requirements.lock)"
    return reasons.get(placement)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--checks", type=int, default=10_000)
    ap.add_argument("--placement", action="append", choices=PLACEMENTS)
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    reasons = available_backends()
    results: dict[str, PlacementResult | str] = {}
    schema = GIT_STATUS_SCHEMA
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp))
        for placement in args.placement or PLACEMENTS:
            reason = unavailable(placement, reasons)
            if reason:
                results[placement] = reason
                print(f"{placement}: unavailable: {reason}", file=sys.stderr)
                continue
            print(f"benchmarking {placement} ...", file=sys.stderr)
            try:
                result = bench_placement(placement, repo, args.starts, args.calls)
            except (McpError, SandboxError) as exc:
                # The placement exists but the server does not run in it (an image without mcp-server-git ...).
                results[placement] = f"failed: {str(exc)[:200]}"
                print(f"{placement}: failed: {exc}", file=sys.stderr)
                continue
            results[placement] = result
            if placement == "host":
                schema = result.git_status_schema
    print("benchmarking check_arguments ...", file=sys.stderr)
    checks = bench_check(schema, args.checks)
    md = table(results)
    md_check = check_table(checks)
    print(md)
    print()
    print(md_check)
    if not args.no_write:
        body = (
            f"Measured {datetime.date.today().isoformat()} on {machine(load_start)}.\n\n"
            f"{md}\n\n{md_check}\n\n"
            "- The server is the real `mcp-server-git` console script, spoken to over stdio by `McpSession`"
            " (`agentops/mcp/client.py`). Host: the worker's venv, `--repository <repo>`; sandboxes:"
            " `mcp-server-git --repository /workspace` inside a live sandbox of a 2-file repo (bubblewrap: the"
            " worker's venv mounted read-only; Docker: the image's `/usr/local/bin/mcp-server-git`, started by"
            " `docker exec -i` under the agentops supervisor). Sandbox creation is not timed (see Sandbox).\n"
            "- *start → tools listed*: `McpSession(spec, sandbox=...)`, `start()` (spawn and MCP initialize"
            " handshake) and `list_tools()` until the 12 tools are returned; one warm-up session first.\n"
            "- *`git_status` call*: wall time of one `call_tool('git_status', {'repo_path': ...})` in a live"
            " session (the server runs `git status` in the repository), result checked; 5 warm-up calls first.\n"
            "- *close → process gone*: `close()` until every process of the server has exited (the spawned"
            " process and its descendants; Docker: also the server inside the container, which the supervisor"
            " kills when its stdin closes), polled every 0.5 ms in /proc; one per session of the first column.\n"
            "- *check_arguments*: the controller's check of an MCP tool call before it is sent"
            " (`agentops.mcp.constraints.check_arguments`: the tool's JSON input schema, then the grant's scope"
            " `{'arguments': {'repo_path': {'values': ['/workspace']}}}`), in-process, for an allowed call.\n"
            "- Rerun: `.venv/bin/python benchmarks/bench_mcp.py` (needs `bash scripts/start-dockerd`,"
            " `bash scripts/build-sandbox-image` and `bash scripts/ensure-bwrap` first; a placement that is"
            " unavailable is reported as not run).\n"
        )
        write_section(body, ROOT / "BENCHMARKS.md")
        print("wrote BENCHMARKS.md (## MCP tools)", file=sys.stderr)


if __name__ == "__main__":
    main()
