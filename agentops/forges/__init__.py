"""Where branches and pull requests live: the local forge (bare repos + rows) or GitHub."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from agentops.forges.base import (
    ChangeSet,
    Forge,
    ForgeError,
    MergeError,
    ProtectedBranchError,
    PullRequestInfo,
    check_branch_name,
)

__all__ = [
    "ChangeSet",
    "Forge",
    "ForgeError",
    "MergeError",
    "ProtectedBranchError",
    "PullRequestInfo",
    "check_branch_name",
    "get_forge",
]


def get_forge(agent: Any) -> Forge:
    """The forge of an agent: `agent.config["forge"]` is "local" (default) or "github"."""
    kind = (getattr(agent, "config", None) or {}).get("forge") or "local"
    actor = f"agent:{agent.slug}" if getattr(agent, "slug", None) else "agent"
    if kind == "local":
        from agentops.forges.local import LocalForge  # app registry: it imports forges.models, and Django imports this package before models load

        return LocalForge(actor=actor)
    if kind == "github":
        from agentops.forges.github_forge import GitHubForge  # lazy: PyGithub takes ~0.2 s to import and only GitHub-forge agents need it

        return GitHubForge(token=settings.GITHUB_TOKEN or "", base_url=settings.GITHUB_BASE_URL)
    raise ForgeError(f"unknown forge {kind!r} (local or github)")
