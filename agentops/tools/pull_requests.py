"""Forge tools: open, comment on and merge the run's pull request, and submit the run's report. Nothing reaches
a pull request before the verification gates (agentops.gates) pass in a fresh sandbox."""

from __future__ import annotations

from typing import Any

from agentops.forges.base import ForgeError, check_branch_name
from agentops.forges.local import git
from agentops.gates import changed_lines, diff_paths, matches_any, verify_change
from agentops.notify import notify
from agentops.redaction import contains_secret
from agentops.runs.models import StepKind
from agentops.tools.common import (
    SCOPE_BRANCH,
    SCOPE_NONE,
    _approved_call,
    _base_branch,
    _clip,
    _forge,
    _fresh_run_result,
    _protected,
    _repo,
    _sandbox,
    _schema,
)
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import require_branch_in_scope

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
    shown = git("rev-parse", "--verify", "--quiet", f"{head}^{{tree}}", cwd=forge.clone_source(repo), check=False)
    return shown.stdout.strip() == tree


def open_pull_request(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
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
