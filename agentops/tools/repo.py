"""Workspace tools: list, read and search the repository, write and patch files, run commands and tests in
the sandbox. Every executor that can change the workspace returns ``data["workspace_diff"]``."""

from __future__ import annotations

import codecs
import re
import shlex
import uuid
from typing import Any

from agentops.gates import TEST_ENV, diff_paths
from agentops.sandbox import PathRejected
from agentops.sandbox.base import check_relative_path
from agentops.tools.common import (
    MAX_LIST,
    MAX_READ_CHARS,
    SCOPE_PATHS,
    _allowed_paths,
    _diff_data,
    _exec,
    _exec_summary,
    _file_path,
    _resolved,
    _sandbox,
    _schema,
)
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import STRING_LIST, path_allowed

# --------------------------------------------------------------------------------------------------
# repository (read)


def repo_list_files(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    sandbox = _sandbox(ctx)
    path = args.get("path") or "."
    try:
        if path != ".":
            path = check_relative_path(path)
        # listed on real paths: a link to a directory outside the grant is refused, not enumerated
        listed = sandbox.list_files(path, allowed=_allowed_paths(ctx))
    except PathRejected as exc:
        raise ScopeViolation(str(exc)) from None
    except FileNotFoundError:
        raise ToolError(f"{path}: no such directory") from None
    files = [f for f in listed if path_allowed(f, ctx.scope.get("paths"))]
    shown = files[:MAX_LIST]
    more = f"\n[{len(files) - MAX_LIST} more not shown]" if len(files) > MAX_LIST else ""
    return ToolResult(output="\n".join(shown) + more if shown else "(no files)")


def repo_read_file(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    path = _file_path(args["path"], ctx)
    sandbox = _sandbox(ctx)
    try:
        content = sandbox.read_file(path, allowed=_allowed_paths(ctx))
    except PathRejected as exc:
        raise ScopeViolation(str(exc)) from None
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except Exception as exc:
        raise ToolError(f"{path}: {exc}") from None
    lines = content.splitlines()
    start = max(1, args.get("start_line", 1))
    end = min(len(lines), args.get("end_line", len(lines)))
    numbered = "\n".join(f"{n:>5}  {lines[n - 1]}" for n in range(start, end + 1))
    if len(numbered) > MAX_READ_CHARS:
        numbered = numbered[:MAX_READ_CHARS] + "\n[truncated: read a line range]"
    return ToolResult(output=f"{path} ({len(lines)} lines)\n{numbered}")


def repo_search(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    sandbox = _sandbox(ctx)
    command = ["git", "grep", "-n", "-I", "--untracked", "--full-name"]
    if not args.get("regex"):
        command.append("-F")
    if args.get("ignore_case"):
        command.append("-i")
    command += ["-e", args["query"], "--"]
    if args.get("path"):
        command.append(_file_path(args["path"], ctx, sandbox) if args["path"] != "." else ".")
    result = sandbox.exec(command, timeout=60, cancel_check=ctx.should_stop)
    if result.exit_code not in (0, 1):
        raise ToolError(f"search failed: {result.output[-500:]}")
    hits = [line for line in result.output.splitlines() if path_allowed(line.split(":", 1)[0], ctx.scope.get("paths"))]
    if not hits:
        return ToolResult(output="no matches")
    more = f"\n[{len(hits) - 200} more matches]" if len(hits) > 200 else ""
    return ToolResult(output="\n".join(h[:300] for h in hits[:200]) + more)


register(
    Tool(
        name="repo_list_files",
        description="List the files of the repository (recursive) under a directory of the run's checkout.",
        input_schema=_schema({"path": {"type": "string", "maxLength": 500}}),
        risk_class="read",
        scope_schema=SCOPE_PATHS,
        executor=repo_list_files,
        side_effecting=False,
    )
)
register(
    Tool(
        name="repo_read_file",
        description="Read a file of the repository with line numbers (optionally a line range).",
        input_schema=_schema(
            {
                "path": {"type": "string", "minLength": 1, "maxLength": 500},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            ["path"],
        ),
        risk_class="read",
        scope_schema=SCOPE_PATHS,
        executor=repo_read_file,
        side_effecting=False,
    )
)
register(
    Tool(
        name="repo_search",
        description="Search the repository's files for a string (or a regular expression with regex=true); returns file:line:text.",
        input_schema=_schema(
            {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "path": {"type": "string", "maxLength": 500},
                "regex": {"type": "boolean"},
                "ignore_case": {"type": "boolean"},
            },
            ["query"],
        ),
        risk_class="read",
        scope_schema=SCOPE_PATHS,
        executor=repo_search,
        side_effecting=False,
    )
)

# --------------------------------------------------------------------------------------------------
# sandbox (write)


def write_file(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    path = _file_path(args["path"], ctx)
    sandbox = _sandbox(ctx)
    try:
        # resolved and checked against the grant inside the sandbox, in the same call that opens the file
        sandbox.write_file(path, args["content"], allowed=_allowed_paths(ctx))
    except PathRejected as exc:
        raise ScopeViolation(str(exc)) from None
    except Exception as exc:
        raise ToolError(f"{path}: {exc}") from None
    return ToolResult(output=f"wrote {path} ({len(args['content'])} characters)", data=_diff_data(sandbox))


def apply_patch(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    patch = args["patch"]
    if not patch.endswith("\n"):
        patch += "\n"
    paths = _plain_patch_paths(patch)
    try:
        paths += [p for p in diff_paths(patch) if p not in paths]
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    if not paths:
        raise ToolError("the patch names no file (expected a unified diff with ---/+++ or diff --git headers)")
    for path in paths:
        _file_path(path, ctx)
    sandbox = _sandbox(ctx)
    # An unpredictable name: a link the agent planted at a fixed name would turn this write into a write
    # through it. Written without a scope: it is the controller's own file, removed right after.
    name = f".agentops-tool-{uuid.uuid4().hex}.patch"
    sandbox.write_file(name, patch)
    quoted = shlex.quote(name)
    try:
        # git's own reading of the patch says which paths it writes (quoted names, -p levels, renames).
        listed = sandbox.exec(["git", "apply", "--recount", "--numstat", "-z", name], timeout=60)
        if listed.exit_code != 0:
            return ToolResult(output=f"the patch does not apply, nothing changed:\n{listed.output[-2000:]}", is_error=True, data=_diff_data(sandbox))
        for path in _numstat_paths(listed.output):
            if path not in paths:
                paths.append(path)
                _file_path(path, ctx)
        for path in paths:
            _resolved(sandbox, path, ctx)  # no write through a link out of the grant or the workspace
        result = sandbox.exec(["/bin/sh", "-c", f"git apply --recount --whitespace=nowarn -- {quoted}"], timeout=60)
        if result.exit_code != 0:
            return ToolResult(output=f"the patch does not apply, nothing changed:\n{result.output[-2000:]}", is_error=True, data=_diff_data(sandbox))
        bad = _links_out_of_scope(sandbox, paths, ctx)
        if bad:
            # A link leaving the workspace or the grant is refused at creation: undo the whole patch.
            sandbox.exec(["git", "apply", "--recount", "-R", name], timeout=60)
            left = _links_out_of_scope(sandbox, bad, ctx)
            if left:
                sandbox.exec(["rm", "-f", "--", *left], timeout=60)
            raise ScopeViolation(f"the patch creates symbolic links leading outside the workspace or the allowed paths: {bad}; nothing changed")
    finally:
        sandbox.exec(["rm", "-f", "--", name], timeout=60)
    return ToolResult(output=f"patched {', '.join(paths)}", data=_diff_data(sandbox))


def _links_out_of_scope(sandbox: Any, paths: list[str], ctx: ToolContext) -> list[str]:
    try:
        return sandbox.links_out_of_scope(paths, _allowed_paths(ctx))
    except Exception as exc:  # cannot tell: fail closed
        raise ScopeViolation(f"cannot check the patch's links: {exc}") from None


def _numstat_paths(output: str) -> list[str]:
    """Paths of ``git apply --numstat -z``: ``added\tdeleted\tpath\0``, or for a rename ``a\td\t\0old\0new\0``."""
    paths: list[str] = []
    fields = output.split("\0")
    i = 0
    while i < len(fields):
        parts = fields[i].split("\t", 2)
        if len(parts) == 3:
            names = [parts[2]] if parts[2] else fields[i + 1 : i + 3]
            i += 1 if parts[2] else 3
            paths += [n for n in names if n and n not in paths]
        else:
            i += 1
    return paths


def _unquote_git(name: str) -> str:
    # git C-quotes unusual names ("tests/\143x" is tests/cx): check the name git will really write
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        raw = codecs.escape_decode(name[1:-1].encode("latin-1", "backslashreplace"))[0]
        return raw.decode("utf-8", "surrogateescape")
    return name


def _plain_patch_paths(patch: str) -> list[str]:
    paths = []
    for line in patch.splitlines():
        if line.startswith(("--- ", "+++ ")):
            name = line[4:].split("\t")[0].strip()
            if name == "/dev/null":
                continue
            name = re.sub(r"^[ab]/", "", _unquote_git(name))
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            name = _unquote_git(line.split(" ", 2)[2].strip())
        else:
            continue
        if name not in paths:
            paths.append(name)
    return paths


_PUSH = re.compile(r"\bgit\b[^\n;&|]*\b(push|remote|send-pack|config\s+[^\n]*url)\b")


def run_command(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    command = args["command"]
    # The sandbox has no network and no credentials; this only says plainly what would fail anyway.
    if _PUSH.search(command):
        raise ScopeViolation("pushing and remotes are not available in the sandbox: open_pull_request delivers the change")
    allowed = ctx.scope.get("allow")
    if allowed and not any(command.strip().startswith(prefix) for prefix in allowed):
        raise ScopeViolation(f"command not allowed by this grant (allowed prefixes: {allowed})")
    sandbox = _sandbox(ctx)
    result = _exec(sandbox, ctx, f"export {TEST_ENV}; {command}", timeout=args.get("timeout_s"))
    output = _exec_summary(result)
    ceiling = getattr(getattr(sandbox, "limits", None), "command_timeout_s", None)
    if ceiling is not None and args.get("timeout_s") is not None and float(args["timeout_s"]) > ceiling:
        output = f"[timeout_s={args['timeout_s']} is above the policy's command timeout; {ceiling:g}s applied]\n{output}"
    return ToolResult(output=output, is_error=result.exit_code != 0, data=_diff_data(sandbox))


def run_tests(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    command = (ctx.agent.config or {}).get("test_command")
    if not command:
        raise ToolError("this agent has no test_command configured")
    selected = args.get("paths") or []
    sandbox = _sandbox(ctx)
    for path in selected:
        _file_path(path.split("::", 1)[0], ctx, sandbox)
    full = f"export {TEST_ENV}; {command}" + ("".join(f" {shlex.quote(p)}" for p in selected))
    result = _exec(sandbox, ctx, full)
    verdict = "PASSED" if result.exit_code == 0 else "FAILED"
    return ToolResult(output=f"{verdict}: {command}\n{_exec_summary(result)}", is_error=result.exit_code != 0, data=_diff_data(sandbox))


register(
    Tool(
        name="write_file",
        description="Create or overwrite a file in the sandbox workspace with the given content.",
        input_schema=_schema(
            {"path": {"type": "string", "minLength": 1, "maxLength": 500}, "content": {"type": "string", "maxLength": 1_000_000}}, ["path", "content"]
        ),
        risk_class="write",
        scope_schema=SCOPE_PATHS,
        executor=write_file,
    )
)
register(
    Tool(
        name="apply_patch",
        description="Apply a unified diff (as produced by `git diff` or `diff -u`) to the sandbox workspace. All or nothing.",
        input_schema=_schema({"patch": {"type": "string", "minLength": 1, "maxLength": 1_000_000}}, ["patch"]),
        risk_class="write",
        scope_schema=SCOPE_PATHS,
        executor=apply_patch,
    )
)
register(
    Tool(
        name="run_command",
        description="Run a shell command in the sandbox workspace (no network). Returns exit code and output.",
        input_schema=_schema(
            {
                "command": {"type": "string", "minLength": 1, "maxLength": 5000},
                "timeout_s": {
                    "type": "number",
                    "minimum": 1,
                    "maximum": 3600,
                    "description": "stop sooner than the policy's command timeout; it can only be lowered, never raised",
                },
            },
            ["command"],
        ),
        risk_class="write",
        scope_schema={"type": "object", "properties": {"allow": STRING_LIST}, "additionalProperties": False},
        executor=run_command,
    )
)
register(
    Tool(
        name="run_tests",
        description="Run the repository's test suite (the agent's configured test command) in the sandbox, optionally only some test paths.",
        input_schema=_schema({"paths": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 500}, "maxItems": 50}}),
        risk_class="write",
        scope_schema=SCOPE_PATHS,
        executor=run_tests,
    )
)
