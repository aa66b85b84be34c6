"""What a scope means, checked by executors before they act (the schema only checks its shape)."""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

from agentops.tools.registry import ScopeViolation

STRING_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}}


def host_allowed(host: str, domains: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for domain in domains:
        domain = domain.lower().lstrip("*.").rstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def require_url_in_scope(url: str, scope: dict[str, Any]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScopeViolation(f"only http(s) URLs with a host are allowed, got {url!r}")
    if not host_allowed(parts.hostname, scope.get("domains", [])):
        raise ScopeViolation(f"domain {parts.hostname!r} is not in this agent's allowed domains")
    return parts.hostname


def require_recipients_in_scope(recipients: list[str], scope: dict[str, Any]) -> None:
    allowed = scope.get("recipient_domains", [])
    for address in recipients:
        _, _, domain = address.rpartition("@")
        if not domain or not host_allowed(domain, allowed):
            raise ScopeViolation(f"recipient {address!r} is outside the allowed recipient domains")


def path_allowed(path: str, patterns: list[str] | None) -> bool:
    if not patterns:
        return True
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def require_path_in_scope(path: str, scope: dict[str, Any]) -> None:
    if not path_allowed(path, scope.get("paths")):
        raise ScopeViolation(f"path {path!r} is outside this agent's allowed paths")


def require_branch_in_scope(branch: str, scope: dict[str, Any], *, protected: list[str] | None = None) -> None:
    prefix = scope.get("branch_prefix")
    if not prefix:
        raise ScopeViolation("this grant names no branch prefix, so no branch may be written")
    if not branch.startswith(prefix) or branch == prefix or ".." in branch:
        raise ScopeViolation(f"branch {branch!r} is outside the allowed prefix {prefix!r}")
    if protected and branch in protected:
        raise ScopeViolation(f"branch {branch!r} is protected")


def require_repo_in_scope(repo: str, scope: dict[str, Any]) -> None:
    repos = scope.get("repos")
    if not repos or repo not in repos:
        raise ScopeViolation(f"repository {repo!r} is not in this agent's allowed repositories")
