"""The local forge: bare git repositories under AGENTOPS_FORGE_ROOT, pull requests as rows.

Every write to a bare repository goes through a temporary clone and a plain (never forced) push, so
git itself refuses a non-fast-forward update, and a failed operation leaves the repository as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from agentops.audit.services import actor_label_of, audit_record
from agentops.forges.base import (
    MAX_READ_BYTES,
    ChangeSet,
    Forge,
    ForgeError,
    MergeError,
    PullRequestInfo,
    check_branch_name,
    check_path,
    check_ref,
    is_sha,
)
from agentops.forges.models import PullRequest, PullRequestComment, PullRequestStatus

Actor = AbstractBaseUser | str | None
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MERGER_NAME = "agentops"
MERGER_EMAIL = "forge@agentops.invalid"


def forge_root() -> Path:
    return Path(settings.AGENTOPS_FORGE_ROOT)


def repo_path(repo: str) -> Path:
    name = repo.removesuffix(".git")
    if not _REPO.match(name) or ".." in name:
        raise ForgeError(f"invalid repository name {repo!r}")
    return forge_root() / f"{name}.git"


def git(*args: str, cwd: str | Path | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ForgeError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-1000:]}")
    return proc


def _identity(name: str, email: str) -> list[str]:
    return ["-c", f"user.name={name}", "-c", f"user.email={email}", "-c", "commit.gpgsign=false"]


def local_repo_create(
    name: str, source: str | Path, *, default_branch: str = "main", protected: list[str] | None = None, message: str = "Initial commit"
) -> Path:
    """Create the bare repository `name` from the files of directory `source` (once: an existing
    repository is left untouched). Returns its path."""
    path = repo_path(name)
    if (path / "HEAD").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentops-forge-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.pyc"))
        git("init", "-q", "-b", default_branch, cwd=work)
        git("add", "-A", cwd=work)
        git(*_identity(MERGER_NAME, MERGER_EMAIL), "commit", "-q", "-m", message, cwd=work)
        staging = Path(tmp) / "bare.git"
        git("clone", "-q", "--bare", str(work), str(staging))
        git("symbolic-ref", "HEAD", f"refs/heads/{default_branch}", cwd=staging)
        git("config", "receive.denyNonFastForwards", "true", cwd=staging)
        git("config", "receive.denyDeletes", "true", cwd=staging)
        for branch in protected or []:
            git("config", "--add", "agentops.protected", check_branch_name(branch), cwd=staging)
            if branch != default_branch:
                git("branch", branch, default_branch, cwd=staging)
        git("remote", "remove", "origin", cwd=staging, check=False)
        try:
            os.rename(staging, path)  # atomic: a concurrent creator loses cleanly
        except OSError:
            if not (path / "HEAD").exists():
                raise
    return path


def _rev(repo: Path, ref: str) -> str | None:
    proc = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo, check=False)
    return proc.stdout.strip() or None


def _diff(repo: Path, base: str, branch: str) -> str:
    return git("-c", "core.quotepath=off", "diff", "--no-color", "--no-ext-diff", f"refs/heads/{base}...refs/heads/{branch}", cwd=repo).stdout


def changed_lines_of(diff: str) -> int:
    return sum(
        1 for line in diff.splitlines() if (line.startswith("+") and not line.startswith("+++")) or (line.startswith("-") and not line.startswith("---"))
    )


def pull_request_url(pr: PullRequest) -> str:
    try:
        try:
            path = reverse("dashboard:pull_request", args=[pr.pk])
        except NoReverseMatch:
            path = f"/pulls/{pr.pk}/"
    except Exception:  # noqa: BLE001 - URL configuration not loaded
        path = f"/pulls/{pr.pk}/"
    return f"{settings.SITE_URL}{path}"


def _info(pr: PullRequest) -> PullRequestInfo:
    return PullRequestInfo(
        number=pr.number,
        url=pull_request_url(pr),
        title=pr.title,
        branch=pr.branch,
        base=pr.base,
        draft=pr.draft,
        status=pr.status,
        head_sha=pr.head_sha,
        extra={"id": pr.pk, "forge": "local", "repo": pr.repo, "changed_lines": pr.changed_lines},
    )


class LocalForge(Forge):
    kind = "local"

    def __init__(self, *, actor: str = "agent") -> None:
        self.actor = actor

    def _existing(self, repo: str) -> Path:
        path = repo_path(repo)
        if not (path / "HEAD").exists():
            raise ForgeError(f"repository {repo!r} does not exist on the local forge")
        return path

    def clone_source(self, repo: str) -> str:
        return str(self._existing(repo))

    def default_branch(self, repo: str) -> str:
        ref = git("symbolic-ref", "HEAD", cwd=self._existing(repo)).stdout.strip()
        return ref.removeprefix("refs/heads/")

    def protected_branches(self, repo: str) -> list[str]:
        path = self._existing(repo)
        configured = git("config", "--get-all", "agentops.protected", cwd=path, check=False).stdout.split()
        return sorted({self.default_branch(repo), *configured})

    def branch_sha(self, repo: str, branch: str) -> str | None:
        return _rev(self._existing(repo), f"refs/heads/{check_branch_name(branch)}")

    def _push(self, repo: str, branch: str, changes: ChangeSet, base: str) -> str:
        path = self._existing(repo)
        base_sha = _rev(path, f"refs/heads/{check_branch_name(base)}")
        if base_sha is None:
            raise ForgeError(f"base branch {base!r} does not exist")
        existing = _rev(path, f"refs/heads/{branch}")
        parent = existing or base_sha
        with tempfile.TemporaryDirectory(prefix="agentops-push-") as tmp:
            work = Path(tmp)
            git("clone", "-q", "--no-checkout", str(path), str(work))
            git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", parent, cwd=work)
            # The branch's tree is exactly base + changes, whatever earlier pushes left.
            git("read-tree", "-u", "--reset", base_sha, cwd=work)
            for rel, content in changes.files.items():
                target = work / rel
                if content is None:
                    if target.exists() or target.is_symlink():
                        target.unlink()
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                target.write_text(content, encoding="utf-8")
            git("add", "-A", cwd=work)
            if not git("diff", "--cached", "--quiet", parent, cwd=work, check=False).returncode:
                if existing is None:
                    raise ForgeError(f"the changes make no difference to {base!r}: nothing to push")
                return parent  # nothing new relative to the branch
            git(*_identity(changes.author_name, changes.author_email), "commit", "-q", "--no-verify", "-m", changes.message, cwd=work)
            # No "+": git refuses a non-fast-forward update, and the bare repo denies it too.
            git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work).stdout.strip()

    def open_pull_request(self, repo: str, branch: str, base: str, title: str, body: str, draft: bool, *, run: Any = None) -> PullRequestInfo:
        path = self._existing(repo)
        check_branch_name(branch)
        head = _rev(path, f"refs/heads/{branch}")
        if head is None:
            raise ForgeError(f"branch {branch!r} does not exist: push it first")
        base_sha = _rev(path, f"refs/heads/{check_branch_name(base)}")
        if base_sha is None:
            raise ForgeError(f"base branch {base!r} does not exist")
        if branch == base:
            raise ForgeError("a pull request needs a branch other than its base")
        diff = _diff(path, base, branch)
        if not diff.strip():
            raise ForgeError(f"branch {branch!r} has no changes relative to {base!r}")
        fields = {
            "title": title[:300],
            "body": body,
            "head_sha": head,
            "base_sha": base_sha,
            "diff": diff,
            "changed_lines": changed_lines_of(diff),
            "draft": draft,
        }
        existing = PullRequest.objects.filter(repo=repo, branch=branch, status=PullRequestStatus.OPEN).first()
        if existing is not None:
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.save()
            return _info(existing)
        for _ in range(5):
            number = (PullRequest.objects.filter(repo=repo).aggregate(n=Max("number"))["n"] or 0) + 1
            try:
                with transaction.atomic():
                    pr = PullRequest.objects.create(repo=repo, number=number, branch=branch, base=base, run=run, author_label=self.actor, **fields)
                break
            except IntegrityError:
                existing = PullRequest.objects.filter(repo=repo, branch=branch, status=PullRequestStatus.OPEN).first()
                if existing is not None:
                    return _info(existing)
        else:
            raise ForgeError("could not allocate a pull request number")
        audit_record(actor=self.actor, action="pull_request.open", target=pr, after={"branch": branch, "base": base, "draft": draft})
        return _info(pr)

    def _get(self, repo: str, number: int) -> PullRequest:
        pr = PullRequest.objects.filter(repo=repo, number=number).first()
        if pr is None:
            raise ForgeError(f"pull request #{number} does not exist in {repo!r}")
        return pr

    def pull_request(self, repo: str, number: int) -> PullRequestInfo:
        return _info(self._get(repo, number))

    def comment(self, repo: str, number: int, body: str) -> str:
        pr = self._get(repo, number)
        # The same write path as a person's comment, so an agent's comments are audited too.
        comment = pull_request_comment(pr=pr, actor=self.actor, body=body)
        return f"{pull_request_url(pr)}#comment-{comment.pk}"

    def merge(self, repo: str, number: int) -> str:
        return pull_request_merge(pr=self._get(repo, number), actor=self.actor)

    def read_file(self, repo: str, ref: str, path: str) -> str:
        bare = self._existing(repo)
        check_ref(ref)
        check_path(path)
        commit = _rev(bare, ref if is_sha(ref) else f"refs/heads/{ref}")
        if commit is None:
            raise ForgeError(f"no commit {ref!r} in {repo!r}")
        spec = f"{commit}:{path}"
        kind = git("cat-file", "-t", spec, cwd=bare, check=False).stdout.strip()
        if kind != "blob":
            raise ForgeError(f"{path!r} is not a file at {commit[:10]}")
        size = int(git("cat-file", "-s", spec, cwd=bare).stdout.strip() or 0)
        if size > MAX_READ_BYTES:
            raise ForgeError(f"{path!r} is too large to show ({size} bytes)")
        # Bytes, not text: a file need not be UTF-8, and a decoding error must not escape as a crash.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
        proc = subprocess.run(["git", "cat-file", "blob", spec], cwd=bare, env=env, capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise ForgeError(f"could not read {path!r} at {commit[:10]}")
        if b"\0" in proc.stdout[:8000]:
            raise ForgeError(f"{path!r} is a binary file")
        return proc.stdout.decode("utf-8", errors="replace")


def pull_request_merge(*, pr: PullRequest, actor: Actor) -> str:
    """Merge an open, ready pull request into its base with a real `git merge --no-ff`; returns the
    merge commit sha. Raises MergeError (draft, not open, conflict, base moved concurrently)."""
    path = repo_path(pr.repo)
    with transaction.atomic():
        locked = PullRequest.objects.select_for_update().get(pk=pr.pk)
        if locked.status != PullRequestStatus.OPEN:
            raise MergeError(f"pull request #{locked.number} is {locked.status}, not open")
        if locked.draft:
            raise MergeError(f"pull request #{locked.number} is a draft: mark it ready for review first")
        with tempfile.TemporaryDirectory(prefix="agentops-merge-") as tmp:
            work = Path(tmp)
            git("clone", "-q", "--no-checkout", str(path), str(work))
            if _rev(work, f"refs/remotes/origin/{locked.branch}") is None:
                raise MergeError(f"branch {locked.branch!r} no longer exists")
            git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", f"refs/remotes/origin/{locked.base}", cwd=work)
            message = f"Merge pull request #{locked.number} from {locked.branch}\n\n{locked.title}"
            merged = git(
                *_identity(MERGER_NAME, MERGER_EMAIL),
                "merge",
                "-q",
                "--no-ff",
                "--no-edit",
                "-m",
                message,
                f"refs/remotes/origin/{locked.branch}",
                cwd=work,
                check=False,
            )
            if merged.returncode != 0:
                raise MergeError(f"pull request #{locked.number} does not merge cleanly into {locked.base}: {(merged.stdout + merged.stderr).strip()[-500:]}")
            sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
            pushed = git("push", "-q", "origin", f"HEAD:refs/heads/{locked.base}", cwd=work, check=False)
            if pushed.returncode != 0:
                raise MergeError(f"could not update {locked.base}: {pushed.stderr.strip()[-500:]}")
        now = timezone.now()
        locked.status = PullRequestStatus.MERGED
        locked.merged_at = now
        locked.merged_by = actor if isinstance(actor, get_user_model()) else None
        locked.merged_by_label = actor_label_of(actor)
        locked.merge_sha = sha
        locked.save(update_fields=["status", "merged_at", "merged_by", "merged_by_label", "merge_sha", "updated_at"])
        audit_record(actor=actor, action="pull_request.merge", target=locked, after={"merge_sha": sha, "base": locked.base})
    pr.refresh_from_db()
    return sha


def pull_request_mark_ready(*, pr: PullRequest, actor: Actor) -> PullRequest:
    """A person promotes a draft pull request to ready for review."""
    with transaction.atomic():
        rows = PullRequest.objects.filter(pk=pr.pk, status=PullRequestStatus.OPEN, draft=True).update(draft=False, updated_at=timezone.now())
        if rows:
            audit_record(actor=actor, action="pull_request.ready", target=pr)
    pr.refresh_from_db()
    return pr


def pull_request_close(*, pr: PullRequest, actor: Actor, reason: str = "") -> PullRequest:
    with transaction.atomic():
        rows = PullRequest.objects.filter(pk=pr.pk, status=PullRequestStatus.OPEN).update(
            status=PullRequestStatus.CLOSED, closed_at=timezone.now(), updated_at=timezone.now()
        )
        if rows:
            audit_record(actor=actor, action="pull_request.close", target=pr, detail=reason)
    pr.refresh_from_db()
    return pr


def pull_request_comment(*, pr: PullRequest, actor: Actor, body: str) -> PullRequestComment:
    body = (body or "").strip()
    if not body:
        raise ForgeError("a comment needs a body")
    with transaction.atomic():
        comment = PullRequestComment.objects.create(pull_request=pr, author_label=actor_label_of(actor), body=body)
        audit_record(actor=actor, action="pull_request.comment", target=pr, detail=body[:500])
    return comment
