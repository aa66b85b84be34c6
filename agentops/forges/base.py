"""The forge contract: where branches and pull requests live (GitHub or the local forge).

Whatever a caller asks, a forge never writes the default branch or a protected branch, and never
force-pushes: `push_branch` only creates a branch or fast-forwards it. Merging is the one way code
reaches the default branch, and the tool that merges is irreversible (a person approves it).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agentops.redaction import contains_secret


class ForgeError(Exception):
    """The forge refused or failed; the message is safe to show to the model."""


class ProtectedBranchError(ForgeError):
    pass


class MergeError(ForgeError):
    pass


@dataclass
class ChangeSet:
    """A commit to make on a branch: the full content of every changed file relative to the base
    (None deletes the file). Text files only; built from the sandbox workspace."""

    message: str
    files: dict[str, str | None]
    author_name: str = "agentops agent"
    author_email: str = "agent@agentops.invalid"


@dataclass
class PullRequestInfo:
    number: int
    url: str
    title: str = ""
    branch: str = ""
    base: str = ""
    draft: bool = False
    status: str = "open"
    head_sha: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "url": self.url,
            "title": self.title,
            "branch": self.branch,
            "base": self.base,
            "draft": self.draft,
            "status": self.status,
            "head_sha": self.head_sha,
            **self.extra,
        }


_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def check_branch_name(branch: str) -> str:
    """A plain branch name: no refspec syntax (`+`, `:`), no `..`, no `refs/` prefix, no lock files."""
    if isinstance(branch, str) and contains_secret(branch):
        # A branch name is published with the change: it goes through the same detector as its text.
        raise ForgeError("the branch name contains a secret")
    if not isinstance(branch, str) or not _BRANCH.match(branch):
        raise ForgeError(f"invalid branch name {branch!r}")
    if ".." in branch or "//" in branch or branch.endswith(("/", ".lock", ".")) or branch.startswith("refs/"):
        raise ForgeError(f"invalid branch name {branch!r}")
    return branch


_SHA = re.compile(r"^[0-9a-f]{7,64}$")
MAX_READ_BYTES = 2_000_000  # a file read for display; larger ones are refused, not truncated


def is_sha(ref: str) -> bool:
    return isinstance(ref, str) and _SHA.match(ref) is not None


def check_ref(ref: str) -> str:
    """A commit sha (7 to 64 hex digits) or a plain branch name; nothing git could read as an option
    or a revision expression (`HEAD~1`, `@{u}`, `a..b`)."""
    if isinstance(ref, str) and _SHA.match(ref):
        return ref
    return check_branch_name(ref)


def check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git" or "\x00" in path:
        raise ForgeError(f"invalid file path {path!r}")
    return path


class Forge(ABC):
    kind: str

    @abstractmethod
    def clone_source(self, repo: str) -> str:
        """A local path the sandbox can `git clone` (a bare repository or a mirror on this host)."""

    @abstractmethod
    def default_branch(self, repo: str) -> str: ...

    @abstractmethod
    def protected_branches(self, repo: str) -> list[str]: ...

    @abstractmethod
    def _push(self, repo: str, branch: str, changes: ChangeSet, base: str) -> str: ...

    def push_branch(self, repo: str, branch: str, changes: ChangeSet, *, base: str | None = None) -> str:
        """Create `branch` from `base` (or fast-forward it) with one commit whose tree is base + changes.
        Returns the new head sha."""
        check_branch_name(branch)
        self.require_writable_branch(repo, branch)
        for path in changes.files:
            check_path(path)
        if not changes.files:
            raise ForgeError("nothing to push: the change set is empty")
        return self._push(repo, branch, changes, base or self.default_branch(repo))

    def require_writable_branch(self, repo: str, branch: str) -> None:
        if branch == self.default_branch(repo):
            raise ProtectedBranchError(f"refusing to push to the default branch {branch!r}: open a pull request instead")
        if branch in self.protected_branches(repo):
            raise ProtectedBranchError(f"refusing to push to the protected branch {branch!r}")

    @abstractmethod
    def open_pull_request(self, repo: str, branch: str, base: str, title: str, body: str, draft: bool, *, run: Any = None) -> PullRequestInfo: ...

    @abstractmethod
    def comment(self, repo: str, number: int, body: str) -> str:
        """Add a comment; returns its URL or id."""

    @abstractmethod
    def merge(self, repo: str, number: int) -> str:
        """Merge the pull request into its base; returns the merge commit sha."""

    @abstractmethod
    def pull_request(self, repo: str, number: int) -> PullRequestInfo: ...

    @abstractmethod
    def read_file(self, repo: str, ref: str, path: str) -> str:
        """The text of `path` at commit or branch `ref` (UTF-8, undecodable bytes replaced).
        Raises ForgeError when the ref or file does not exist, is not a file, is binary or is
        larger than MAX_READ_BYTES."""
