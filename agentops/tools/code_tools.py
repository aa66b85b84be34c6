"""Tools of the debugging agent: error tracker, repository, sandbox, git and forge.

The model asks; these executors decide. Scopes are enforced here (projects, paths, branch prefix),
the forge refuses the default and protected branches on its own, and nothing reaches a pull request
before the verification gates (agentops.verification) pass in a fresh sandbox. Every executor that
can change the workspace returns ``data["workspace_diff"]`` so a run resumed elsewhere gets its
workspace back; report, patch and pull request go to ``data["run_result"]``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import STRING_LIST, path_allowed, require_branch_in_scope, require_path_in_scope, require_repo_in_scope

MAX_READ_CHARS = 60_000
MAX_LIST = 500
MAX_OUTPUT_CHARS = 20_000

# --------------------------------------------------------------------------------------------------
# helpers


def _sandbox(ctx: ToolContext) -> Any:
    services = ctx.services
    factory = services.get("sandbox") if isinstance(services, dict) else getattr(services, "sandbox", None)
    if factory is None:
        raise ToolError("no sandbox is available to this run")
    try:
        return factory() if callable(factory) else factory
    except ToolError:
        raise
    except Exception as exc:  # SandboxError, missing repository: the model cannot fix these, but should know
        raise ToolError(f"the sandbox could not be started: {exc}") from None


def _forge(ctx: ToolContext) -> Any:
    services = ctx.services
    factory = services.get("forge") if isinstance(services, dict) else getattr(services, "forge", None)
    if factory is None:
        raise ToolError("no forge is available to this run")
    return factory() if callable(factory) else factory


def _repo(ctx: ToolContext) -> str:
    repo = (ctx.agent.config or {}).get("repository")
    if not repo:
        raise ToolError("this agent has no repository configured")
    if ctx.scope.get("repos"):
        require_repo_in_scope(repo, ctx.scope)
    return repo


def _base_branch(ctx: ToolContext) -> str:
    return (ctx.agent.config or {}).get("base_branch") or "main"


def _clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters omitted ...]\n{text[-half:]}"


def _diff_data(sandbox: Any) -> dict[str, Any]:
    return {"workspace_diff": sandbox.diff()}


def _file_path(path: str, ctx: ToolContext, sandbox: Any = None) -> str:
    """The lexical check and scope; with ``sandbox``, the path's symlinks are also resolved inside the sandbox
    and the real path must stay in the workspace and the grant (``tests/up/x`` with ``tests/up -> ..`` is ``x``)."""
    from agentops.sandbox import PathRejected
    from agentops.sandbox.base import check_relative_path

    try:
        norm = check_relative_path(path)
    except PathRejected as exc:
        raise ScopeViolation(str(exc)) from None
    require_path_in_scope(norm, ctx.scope)
    if sandbox is not None:
        _resolved(sandbox, norm, ctx)
    return norm


def _allowed_paths(ctx: ToolContext) -> list[str] | None:
    return list(ctx.scope.get("paths") or []) or None


def _resolved(sandbox: Any, path: str, ctx: ToolContext) -> str:
    from agentops.sandbox import PathRejected

    try:
        return sandbox.resolve_path(path, allowed=_allowed_paths(ctx))
    except PathRejected as exc:
        raise ScopeViolation(str(exc)) from None


def _exec(sandbox: Any, ctx: ToolContext, command: str | list[str], *, timeout: float | None = None) -> Any:
    # The sandbox clamps ``timeout`` to the policy's command_timeout_s: the model may only lower it.
    return sandbox.exec(command, timeout=timeout, on_output=ctx.emit, cancel_check=ctx.should_stop)


def _exec_summary(result: Any) -> str:
    if result.cancelled:
        state = "cancelled"
    elif getattr(result, "quota_exceeded", False):
        state = "killed: disk quota exceeded"
    elif result.timed_out:
        state = "timed out"
    else:
        state = f"exit code {result.exit_code}"
    return f"[{state}, {result.duration_s:.1f}s]\n{_clip(result.output)}"


def _fresh_run_result(ctx: ToolContext) -> dict[str, Any]:
    from agentops.runs.models import Run

    row = Run.objects.filter(pk=ctx.run.pk).values_list("result", flat=True).first()
    return dict(row or {})


def _approved_call(ctx: ToolContext) -> bool:
    from agentops.approvals.models import Approval, ApprovalStatus

    return Approval.objects.filter(run_id=ctx.run.pk, tool_call_id=ctx.tool_call_id, status=ApprovalStatus.APPROVED).exists()


SCOPE_PATHS = {"type": "object", "properties": {"paths": STRING_LIST}, "additionalProperties": False}
SCOPE_NONE = {"type": "object", "properties": {}, "additionalProperties": False}
SCOPE_BRANCH = {
    "type": "object",
    "properties": {"branch_prefix": {"type": "string", "minLength": 1, "maxLength": 100}, "repos": STRING_LIST},
    "required": ["branch_prefix"],
    "additionalProperties": False,
}


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


# --------------------------------------------------------------------------------------------------
# error tracker (read-only)


def _group_in_scope(group_id: int | None, ctx: ToolContext) -> Any:
    from agentops.triggers.models import ErrorGroup

    if group_id is None:
        # The error that started this run.
        group_id = (ctx.run.context or {}).get("error_group_id")
        if not group_id:
            raise ToolError("this run was not started by an error: pass group_id")

    group = ErrorGroup.objects.select_related("project").filter(pk=group_id).first()
    # Same answer for "missing" and "not yours": no probing of other projects.
    if group is None or group.project.slug not in ctx.scope.get("projects", []):
        raise ScopeViolation(f"error group {group_id} is not in this agent's projects")
    return group


def format_stacktrace(stacktrace: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for n, exc in enumerate(stacktrace):
        if n:
            lines.append("\nDuring handling of the above exception, another exception occurred:\n")
        lines.append("Traceback (most recent call last):")
        for frame in exc.get("frames", []):
            marker = "" if frame.get("in_app") else "  [library]"
            lines.append(f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("function")}{marker}')
            if frame.get("context_line"):
                lines.append(f"    {frame['context_line'].strip()}")
        lines.append(f"{exc.get('type')}: {exc.get('value')}")
    return "\n".join(lines)


def error_get_group(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.triggers.ingest import hourly_counts

    group = _group_in_scope(args.get("group_id"), ctx)
    event = group.events.order_by("-received_at", "-id").first()
    hours = [(h, c) for h, c in hourly_counts(group, hours=24) if c]
    frequency = ", ".join(f"{h:%m-%d %H}:00 {c}" for h, c in hours) or "none in the last 24 hours"
    text = [
        f"Error group {group.pk} in project {group.project.slug}: {group.title}",
        f"Culprit: {group.culprit or 'unknown'}",
        f"Level: {group.level}; events: {group.count}; first seen {group.first_seen:%Y-%m-%d %H:%M:%S} UTC; last seen {group.last_seen:%Y-%m-%d %H:%M:%S} UTC",
        f"Events per hour (UTC, last 24 hours): {frequency}",
        f"Tags: {group.tags}",
    ]
    if event is not None:
        text += [
            f"\nLatest event {event.event_id} (release {event.release or '-'}, environment {event.environment or '-'}):",
            format_stacktrace(event.stacktrace) if event.stacktrace else event.message,
        ]
    return ToolResult(output="\n".join(text), data={"group_id": group.pk, "count": group.count})


def error_list_events(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    group = _group_in_scope(args.get("group_id"), ctx)
    limit = args.get("limit", 20)
    events = list(group.events.order_by("-received_at", "-id")[:limit])
    lines = [f"{len(events)} most recent of {group.count} events in group {group.pk}:"]
    for event in events:
        lines.append(
            f"- {event.received_at:%Y-%m-%d %H:%M:%S} {event.event_id} {event.level} "
            f"{event.exception_type}: {event.exception_value[:200]} release={event.release or '-'} tags={event.tags}"
        )
    return ToolResult(output="\n".join(lines))


SCOPE_PROJECTS = {
    "type": "object",
    "properties": {"projects": STRING_LIST},
    "required": ["projects"],
    "additionalProperties": False,
}

register(
    Tool(
        name="error_get_group",
        description="Read an error group from the error tracker: title, culprit, frequency per hour, tags and the latest stack trace.",
        input_schema=_schema({"group_id": {"type": "integer", "minimum": 1, "description": "default: the error group that started this run"}}),
        risk_class="read",
        scope_schema=SCOPE_PROJECTS,
        executor=error_get_group,
        side_effecting=False,
    )
)
register(
    Tool(
        name="error_list_events",
        description="List the most recent events of an error group (time, message, release, tags).",
        input_schema=_schema(
            {
                "group_id": {"type": "integer", "minimum": 1, "description": "default: the error group that started this run"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50},
            }
        ),
        risk_class="read",
        scope_schema=SCOPE_PROJECTS,
        executor=error_list_events,
        side_effecting=False,
    )
)

# --------------------------------------------------------------------------------------------------
# repository (read)


def repo_list_files(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.sandbox import PathRejected
    from agentops.sandbox.base import check_relative_path

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
    from agentops.sandbox import PathRejected

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
    from agentops.sandbox import PathRejected

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
    import uuid

    from agentops.verification import diff_paths

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
        import codecs

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
    from agentops.verification import TEST_ENV

    sandbox = _sandbox(ctx)
    result = _exec(sandbox, ctx, f"export {TEST_ENV}; {command}", timeout=args.get("timeout_s"))
    output = _exec_summary(result)
    ceiling = getattr(getattr(sandbox, "limits", None), "command_timeout_s", None)
    if ceiling is not None and args.get("timeout_s") is not None and float(args["timeout_s"]) > ceiling:
        output = f"[timeout_s={args['timeout_s']} is above the policy's command timeout; {ceiling:g}s applied]\n{output}"
    return ToolResult(output=output, is_error=result.exit_code != 0, data=_diff_data(sandbox))


def run_tests(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.verification import TEST_ENV

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

# --------------------------------------------------------------------------------------------------
# git


def _protected(ctx: ToolContext) -> list[str]:
    try:
        forge = _forge(ctx)
        repo = _repo(ctx)
        return sorted({forge.default_branch(repo), *forge.protected_branches(repo), _base_branch(ctx)})
    except ScopeViolation:
        raise
    except Exception:
        return [_base_branch(ctx)]


def git_commit(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.forges.base import ForgeError, check_branch_name

    branch = args["branch"]
    try:
        check_branch_name(branch)
    except ForgeError as exc:
        raise ScopeViolation(str(exc)) from None
    require_branch_in_scope(branch, ctx.scope, protected=_protected(ctx))
    _commit_message_gate(ctx, args["message"])
    sandbox = _sandbox(ctx)
    quoted = shlex.quote(branch)
    script = (
        f"git switch -q {quoted} 2>/dev/null || git switch -q -c {quoted} || exit 3; "
        f"git add -A . && git -c commit.gpgsign=false commit -q --no-verify -m {shlex.quote(args['message'])} && git rev-parse HEAD"
    )
    result = sandbox.exec(["/bin/sh", "-c", script], timeout=120)
    if result.exit_code != 0:
        raise ToolError(f"commit failed (nothing to commit?): {result.output[-1000:]}")
    sha = result.output.strip().splitlines()[-1]
    return ToolResult(
        output=f"committed {sha[:12]} on {branch} (in the sandbox; open_pull_request publishes it)",
        data={**_diff_data(sandbox), "branch": branch, "commit": sha, "run_result": {"branch": branch, "commit_message": args["message"]}},
    )


def _commit_message_gate(ctx: ToolContext, message: str) -> None:
    """The secrets gate on a commit message: it travels with the branch wherever the commit goes."""
    from agentops.redaction import contains_secret
    from agentops.runs.models import StepKind

    secret = contains_secret(message)
    detail = "a secret (token, key or configured secret value) in the commit message" if secret else "no secret in the commit message"
    ctx.record_step(StepKind.GATE, {"gate": "commit_message", "passed": not secret, "detail": detail})
    if secret:
        raise ToolError("the commit message contains a secret; nothing was committed. Remove it and commit again.")


register(
    Tool(
        name="git_commit",
        description="Commit every change in the sandbox workspace on a branch (created if needed). The branch must start with the allowed prefix; the default and protected branches are refused.",
        input_schema=_schema(
            {"branch": {"type": "string", "minLength": 1, "maxLength": 200}, "message": {"type": "string", "minLength": 1, "maxLength": 5000}},
            ["branch", "message"],
        ),
        risk_class="write",
        scope_schema=SCOPE_BRANCH,
        executor=git_commit,
        min_trust_phase=2,
    )
)

# --------------------------------------------------------------------------------------------------
# forge


WRITE_TOOLS = ("write_file", "apply_patch")


def _write_paths(ctx: ToolContext) -> list[str] | None:
    """The paths the agent's file-writing grants allow (None: not narrowed). The final change is checked
    against them, whatever route (a test run, a link, a shell) put a file in the workspace."""
    grants = getattr(ctx.agent, "grants", None)
    if grants is None:
        return None
    scopes = [dict(g.scope or {}) for g in grants.filter(tool__in=WRITE_TOOLS)]
    if not scopes or any(not s.get("paths") for s in scopes):
        return None
    return sorted({p for s in scopes for p in s["paths"]})


def _verify(ctx: ToolContext, *, diff: str, text: str, message: str) -> Any:
    from agentops.verification import verify_change

    sandbox = _sandbox(ctx)
    forge = _forge(ctx)
    return verify_change(
        run=ctx.run,
        agent=ctx.agent,
        diff=diff,
        text=text,
        approved=_approved_call(ctx),
        repo_source=forge.clone_source(_repo(ctx)),
        ref=sandbox.base_commit,
        message=message,
        emit=ctx.emit,
        cancel_check=ctx.should_stop,
        allowed_paths=_write_paths(ctx),
        lease_owner=ctx.lease_owner,
    )


def _published_tree_matches(forge: Any, repo: str, head: str, tree: str) -> bool:
    """Whether the branch head the forge now holds has exactly the tree the gates judged."""
    if getattr(forge, "kind", "") != "local":
        return True  # a remote forge's tree is its own; push_branch sends only the judged ChangeSet
    from agentops.forges.local import git

    shown = git("rev-parse", "--verify", "--quiet", f"{head}^{{tree}}", cwd=forge.clone_source(repo), check=False)
    return shown.stdout.strip() == tree


def open_pull_request(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.forges.base import ForgeError, check_branch_name
    from agentops.verification import changed_lines, diff_paths

    phase = int(ctx.agent.trust_phase)
    if phase < 2:
        raise ToolError("trust phase 1 only proposes: use submit_report with the root cause and the patch")
    branch = args["branch"]
    try:
        check_branch_name(branch)
    except ForgeError as exc:
        raise ScopeViolation(str(exc)) from None
    require_branch_in_scope(branch, ctx.scope, protected=_protected(ctx))
    repo = _repo(ctx)
    base = _base_branch(ctx)
    sandbox = _sandbox(ctx)
    # Read once: the gates judge this text and publish what it makes on the base, nothing read later.
    try:
        diff = sandbox.diff()
    except Exception as exc:  # SandboxError: too large, or git failed in the workspace
        raise ToolError(f"the workspace's change could not be read: {exc}") from None
    title, body = args["title"], args.get("body", "")
    verification = _verify(ctx, diff=diff, text=f"{title}\n{body}", message=f"{title}\n\n{body[:2000]}\n\nagentops run {ctx.run.pk}")
    if not verification.passed:
        return ToolResult(
            output="The verification gates did not pass; no pull request was opened. Fix the change and try again.\n" + _clip(verification.summary(), 8000),
            is_error=True,
            data={"gates": [g.__dict__ for g in verification.gates]},
        )
    forge = _forge(ctx)
    draft = True if phase == 2 else bool(args.get("draft", False))
    flags = list(verification.flags)
    gates_text = "\n".join(f"- {g.name}: passed — {g.detail.splitlines()[0][:200]}" for g in verification.gates)
    flags_text = ""
    if flags:
        flags_text = "\n\nFlagged for a person (this change is never merged without one):\n" + "\n".join(f"- {f[:300]}" for f in flags[:30])
    full_body = f"{body}\n\n---\nOpened by agentops run {ctx.run.pk} (trust phase {phase}). Verification gates:\n{gates_text}{flags_text}\n"
    try:
        head = forge.push_branch(repo, branch, verification.changes, base=base)
        if not _published_tree_matches(forge, repo, head, verification.tree):
            raise ToolError("the branch the forge holds differs from the change the gates verified; no pull request was opened")
        info = forge.open_pull_request(repo, branch, base, title, full_body, draft, run=ctx.run)
    except ForgeError as exc:
        raise ToolError(str(exc)) from None
    pull = {
        **info.as_dict(),
        "repo": repo,
        "forge": forge.kind,
        "head_sha": head,
        "gates_passed": True,
        "changed_lines": changed_lines(diff),
        "paths": sorted(set(diff_paths(diff)) | set(verification.paths)),
        "tree": verification.tree,
        "flags": flags,
    }
    kind = "draft pull request" if info.draft else "pull request (ready for review)"
    from agentops.notify import notify

    notify(
        event="pull_request",
        subject=f"{ctx.agent.name} opened {kind} #{info.number}: {title}",
        text=f"All gates passed (tests in a fresh sandbox, no test weakened, diff limits, no secrets). Run {ctx.run.pk}."
        + (f" Flagged for a person ({len(flags)}): it will not merge without one." if flags else ""),
        path=f"/runs/{ctx.run.pk}/",
    )
    return ToolResult(
        output=f"Opened {kind} #{info.number}: {info.url}\nAll gates passed:\n{verification.summary()[:4000]}",
        data={"workspace_diff": diff, "pull_request": pull, "run_result": {"pull_request": pull, "patch": diff}},
    )


def _this_runs_pull_request(ctx: ToolContext, number: int) -> dict[str, Any]:
    pull = _fresh_run_result(ctx).get("pull_request") or {}
    if pull.get("number") != number:
        raise ScopeViolation(f"pull request #{number} was not opened by this run")
    return pull


def comment_pull_request(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.forges.base import ForgeError
    from agentops.redaction import contains_secret

    _this_runs_pull_request(ctx, args["number"])
    if contains_secret(args["body"]):
        raise ToolError("the comment contains a secret; it was not posted")
    try:
        where = _forge(ctx).comment(_repo(ctx), args["number"], args["body"])
    except ForgeError as exc:
        raise ToolError(str(exc)) from None
    return ToolResult(output=f"commented: {where}")


def merge_is_low_risk(args: dict[str, Any], ctx: ToolContext) -> tuple[bool, str]:
    """Phase 4: merge without a person only when every gate passed on this very head and the change
    is low-risk by the policy (changed lines, and every path inside low_risk_paths)."""
    from agentops.verification import matches_any

    policy = ctx.agent.policy
    pull = _fresh_run_result(ctx).get("pull_request") or {}
    if pull.get("number") != args.get("number"):
        return False, "not a pull request this run opened"
    if not pull.get("gates_passed"):
        return False, "the verification gates have not passed"
    flags = pull.get("flags")
    if not isinstance(flags, list):
        return False, "no record of the gates' flags for this pull request: a person decides"
    if flags:
        return False, f"flagged for a person by the gates (trust phase 4 falls back to 3): {'; '.join(str(f)[:200] for f in flags[:5])}"
    lines = int(pull.get("changed_lines") or 0)
    if lines > policy.low_risk_max_changed_lines:
        return False, f"{lines} changed lines exceed the low-risk limit of {policy.low_risk_max_changed_lines}"
    if not policy.low_risk_paths:
        return False, "the policy names no low-risk paths"
    outside = [p for p in pull.get("paths", []) if not matches_any(p, policy.low_risk_paths)]
    if outside:
        return False, f"paths outside the low-risk paths: {outside}"
    if any(matches_any(p, policy.protected_paths or []) for p in pull.get("paths", [])):
        return False, "touches a protected path"
    try:
        current = _forge(ctx).pull_request(_repo(ctx), args["number"])
    except Exception as exc:  # noqa: BLE001 - cannot confirm: not low-risk
        return False, f"could not read the pull request: {exc}"
    if current.head_sha != pull.get("head_sha"):
        return False, "the pull request changed since its gates ran"
    return True, f"all gates passed; {lines} changed lines within {policy.low_risk_max_changed_lines}; paths within {policy.low_risk_paths}"


def merge_pull_request(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.forges.base import ForgeError

    number = args["number"]
    pull = _this_runs_pull_request(ctx, number)
    if not pull.get("gates_passed"):
        raise ToolError("the verification gates have not passed for this pull request")
    forge = _forge(ctx)
    repo = _repo(ctx)
    try:
        current = forge.pull_request(repo, number)
        if current.head_sha != pull.get("head_sha"):
            raise ToolError("the pull request changed since its gates ran; it was not merged")
        sha = forge.merge(repo, number)
    except ForgeError as exc:
        raise ToolError(str(exc)) from None
    merged = {**pull, "status": "merged", "merge_sha": sha}
    return ToolResult(output=f"merged #{number} into {pull.get('base')}: {sha}", data={"run_result": {"pull_request": merged}})


def submit_report(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    from agentops.redaction import contains_secret
    from agentops.runs.models import StepKind

    patch = ""
    if (ctx.agent.config or {}).get("repository"):
        patch = _sandbox(ctx).diff()
    text = f"{args['root_cause']}\n{args.get('summary', '')}"
    secret = contains_secret(patch) or contains_secret(text)
    ctx.record_step(
        StepKind.GATE, {"gate": "secrets", "passed": not secret, "detail": "a secret in the report or patch" if secret else "no secret in the report or patch"}
    )
    if secret:
        raise ToolError("the report or the patch contains a secret; remove it and submit again")
    report = {"root_cause": args["root_cause"], "summary": args.get("summary", ""), "confidence": args.get("confidence", "")}
    lines = f"{len(patch.splitlines())} patch lines" if patch else "no patch"
    return ToolResult(
        output=f"report submitted ({lines}); the run's result now holds it for a person to read",
        data={"workspace_diff": patch, "run_result": {"report": report, "patch": patch}},
    )


register(
    Tool(
        name="open_pull_request",
        description=(
            "Publish the sandbox workspace's changes on a branch (under the allowed prefix) and open a pull request against the base branch. "
            "The controller first runs the verification gates itself (tests in a fresh sandbox, no test weakened, size and paths, no secrets); "
            "a failing gate is returned instead. Trust phase 2 opens drafts; 3 and 4 open ready-for-review pull requests."
        ),
        input_schema=_schema(
            {
                "branch": {"type": "string", "minLength": 1, "maxLength": 200},
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "body": {"type": "string", "maxLength": 20000},
                "draft": {"type": "boolean"},
            },
            ["branch", "title"],
        ),
        risk_class="write",
        scope_schema=SCOPE_BRANCH,
        executor=open_pull_request,
        min_trust_phase=2,
    )
)
register(
    Tool(
        name="comment_pull_request",
        description="Comment on the pull request this run opened.",
        input_schema=_schema({"number": {"type": "integer", "minimum": 1}, "body": {"type": "string", "minLength": 1, "maxLength": 20000}}, ["number", "body"]),
        risk_class="write",
        scope_schema=SCOPE_NONE,
        executor=comment_pull_request,
        min_trust_phase=2,
    )
)
register(
    Tool(
        name="merge_pull_request",
        description="Merge the pull request this run opened into its base branch. Irreversible: a person approves, except low-risk changes at trust phase 4.",
        input_schema=_schema({"number": {"type": "integer", "minimum": 1}}, ["number"]),
        risk_class="irreversible",
        scope_schema=SCOPE_NONE,
        executor=merge_pull_request,
        min_trust_phase=3,
        auto_approve=merge_is_low_risk,
    )
)
register(
    Tool(
        name="submit_report",
        description="Submit the investigation: the root cause, a summary of the fix, and (attached automatically) the sandbox diff as a patch. Changes nothing outside the sandbox.",
        input_schema=_schema(
            {
                "root_cause": {"type": "string", "minLength": 1, "maxLength": 20000},
                "summary": {"type": "string", "maxLength": 20000},
                "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
            },
            ["root_cause"],
        ),
        risk_class="write",
        scope_schema=SCOPE_NONE,
        executor=submit_report,
    )
)
