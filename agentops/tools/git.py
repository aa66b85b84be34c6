"""The git tool: commit the sandbox workspace on a branch in the agent's prefix, after the commit-message gate."""

from __future__ import annotations

import shlex
from typing import Any

from agentops.forges.base import ForgeError, check_branch_name
from agentops.redaction import contains_secret
from agentops.runs.models import StepKind
from agentops.tools.common import (
    SCOPE_BRANCH,
    _diff_data,
    _protected,
    _sandbox,
    _schema,
)
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import require_branch_in_scope

# --------------------------------------------------------------------------------------------------
# git


def git_commit(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
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
