"""The GitHub forge through PyGithub (base_url configurable for GitHub Enterprise).

Branches are written through the Git Data API (tree, commit, ref): a branch ref is created or
fast-forwarded (`force=False`), never forced, and never the default or a protected branch.
The sandbox clones from a local mirror that clone_source keeps fresh with `git fetch`.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import github
from django.conf import settings
from github import GithubException, InputGitAuthor, InputGitTreeElement, UnknownObjectException

from agentops.forges.base import MAX_READ_BYTES, ChangeSet, Forge, ForgeError, MergeError, PullRequestInfo, check_path, check_ref


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    errors = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in data.get("errors", []) or [])
    text = data.get("message") or str(exc)
    return f"GitHub {exc.status}: {text}" + (f" ({errors})" if errors else "")


def default_clone_url(base_url: str) -> str:
    """https://api.github.com -> https://github.com/{repo}.git; https://ghe/api/v3 -> https://ghe/{repo}.git"""
    parts = urlsplit(base_url)
    host = parts.netloc
    if host == "api.github.com":
        host = "github.com"
    return f"{parts.scheme}://{host}/{{repo}}.git"


class GitHubForge(Forge):
    kind = "github"

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://api.github.com",
        mirror_root: str | Path | None = None,
        clone_url: str | None = None,
        fast: bool = False,
        timeout: int = 15,
    ) -> None:
        if not token:
            raise ForgeError("GITHUB_TOKEN is not set: the GitHub forge cannot act")
        self.token = token
        self.base_url = base_url.rstrip("/")
        extra: dict[str, Any] = {"seconds_between_requests": 0, "seconds_between_writes": 0, "retry": None} if fast else {}
        self.gh = github.Github(base_url=self.base_url, auth=github.Auth.Token(token), timeout=timeout, **extra)
        self.clone_url = clone_url or default_clone_url(self.base_url)
        self.mirror_root = Path(mirror_root) if mirror_root else None
        self._repos: dict[str, Any] = {}

    def _repo(self, repo: str) -> Any:
        if repo not in self._repos:
            try:
                self._repos[repo] = self.gh.get_repo(repo)
            except GithubException as exc:
                raise ForgeError(_message(exc)) from None
        return self._repos[repo]

    # --- reading -----------------------------------------------------------------------------

    def default_branch(self, repo: str) -> str:
        return self._repo(repo).default_branch

    def protected_branches(self, repo: str) -> list[str]:
        try:
            return sorted(b.name for b in self._repo(repo).get_branches() if b.protected)
        except GithubException as exc:
            raise ForgeError(_message(exc)) from None

    def clone_source(self, repo: str) -> str:
        """A local mirror of the repository (the sandbox has no network and no token)."""
        if self.mirror_root is None:
            self.mirror_root = Path(settings.AGENTOPS_FORGE_ROOT) / "github-mirrors"
        self.mirror_root.mkdir(parents=True, exist_ok=True)
        dest = self.mirror_root / (repo.replace("/", "__") + ".git")
        url = self.clone_url.format(repo=repo)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        if url.startswith("https://"):
            # The token travels in the environment, never on the command line or in the remote URL.
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        if (dest / "HEAD").exists():
            args = ["git", "-C", str(dest), "fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/heads/*"]
        else:
            args = ["git", "clone", "-q", "--mirror", url, str(dest)]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ForgeError(f"could not mirror {repo}: {proc.stderr.strip()[-500:]}")
        return str(dest)

    def pull_request(self, repo: str, number: int) -> PullRequestInfo:
        try:
            return self._info(self._repo(repo).get_pull(number))
        except GithubException as exc:
            raise ForgeError(_message(exc)) from None

    def read_file(self, repo: str, ref: str, path: str) -> str:
        check_ref(ref)
        check_path(path)
        try:
            content = self._repo(repo).get_contents(path, ref=ref)
        except GithubException as exc:
            raise ForgeError(_message(exc)) from None
        if isinstance(content, list) or getattr(content, "type", "file") != "file":
            raise ForgeError(f"{path!r} is not a file at {ref[:10]}")
        if (content.size or 0) > MAX_READ_BYTES:
            raise ForgeError(f"{path!r} is too large to show ({content.size} bytes)")
        # GitHub leaves `content` empty (encoding "none") for files over 1 MB: refuse, never show "".
        if content.encoding != "base64":
            raise ForgeError(f"{path!r} is too large for the contents API")
        data = content.decoded_content
        if b"\0" in data[:8000]:
            raise ForgeError(f"{path!r} is a binary file")
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _info(pr: Any) -> PullRequestInfo:
        state = "merged" if pr.merged else pr.state
        return PullRequestInfo(
            number=pr.number,
            url=pr.html_url,
            title=pr.title,
            branch=pr.head.ref,
            base=pr.base.ref,
            draft=bool(pr.draft),
            status=state,
            head_sha=pr.head.sha,
            extra={"forge": "github"},
        )

    # --- writing -----------------------------------------------------------------------------

    def _push(self, repo: str, branch: str, changes: ChangeSet, base: str) -> str:
        r = self._repo(repo)
        try:
            base_sha = r.get_git_ref(f"heads/{base}").object.sha
            base_commit = r.get_git_commit(base_sha)
            try:
                branch_ref = r.get_git_ref(f"heads/{branch}")
                parent_sha = branch_ref.object.sha
            except UnknownObjectException:
                branch_ref, parent_sha = None, base_sha
            parent = base_commit if parent_sha == base_sha else r.get_git_commit(parent_sha)
            elements = [
                InputGitTreeElement(path, "100644", "blob", sha=None) if content is None else InputGitTreeElement(path, "100644", "blob", content=content)
                for path, content in sorted(changes.files.items())
            ]
            tree = r.create_git_tree(elements, base_commit.tree)
            if tree.sha == parent.tree.sha:
                if branch_ref is None:
                    raise ForgeError(f"the changes make no difference to {base!r}: nothing to push")
                return parent_sha
            author = InputGitAuthor(changes.author_name, changes.author_email)
            commit = r.create_git_commit(changes.message, tree, [parent], author=author, committer=author)
            if branch_ref is None:
                r.create_git_ref(f"refs/heads/{branch}", commit.sha)
            else:
                branch_ref.edit(commit.sha, force=False)
            return commit.sha
        except GithubException as exc:
            raise ForgeError(_message(exc)) from None

    def open_pull_request(self, repo: str, branch: str, base: str, title: str, body: str, draft: bool, *, run: Any = None) -> PullRequestInfo:
        r = self._repo(repo)
        try:
            pr = r.create_pull(base=base, head=branch, title=title, body=body, draft=draft)
        except GithubException as exc:
            if exc.status == 422 and "already exists" in str(exc.data):
                for pr in r.get_pulls(state="open", head=f"{r.owner.login}:{branch}"):
                    pr.edit(title=title, body=body)
                    return self._info(pr)
            raise ForgeError(_message(exc)) from None
        return self._info(pr)

    def comment(self, repo: str, number: int, body: str) -> str:
        try:
            return self._repo(repo).get_pull(number).create_issue_comment(body).html_url
        except GithubException as exc:
            raise ForgeError(_message(exc)) from None

    def merge(self, repo: str, number: int) -> str:
        try:
            pr = self._repo(repo).get_pull(number)
            status = pr.merge(merge_method="merge")
        except GithubException as exc:
            raise MergeError(_message(exc)) from None
        if not status.merged:
            raise MergeError(f"GitHub did not merge #{number}: {status.message}")
        return status.sha
