"""What the tool modules share: the run's sandbox, forge and repository, path checks, output clipping,
the scope and input schemas. The executors live by domain (errors, repo, git, pull_requests)."""

from __future__ import annotations

from typing import Any

from agentops.approvals.models import Approval, ApprovalStatus
from agentops.runs.models import Run
from agentops.sandbox import PathRejected
from agentops.sandbox.base import check_relative_path
from agentops.tools.registry import ScopeViolation, ToolContext, ToolError
from agentops.tools.scopes import STRING_LIST, require_path_in_scope, require_repo_in_scope

MAX_READ_CHARS = 60_000
MAX_LIST = 500
MAX_OUTPUT_CHARS = 20_000


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
    row = Run.objects.filter(pk=ctx.run.pk).values_list("result", flat=True).first()
    return dict(row or {})


def _approved_call(ctx: ToolContext) -> bool:
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


def _protected(ctx: ToolContext) -> list[str]:
    try:
        forge = _forge(ctx)
        repo = _repo(ctx)
        return sorted({forge.default_branch(repo), *forge.protected_branches(repo), _base_branch(ctx)})
    except ScopeViolation:
        raise
    except Exception:
        return [_base_branch(ctx)]
