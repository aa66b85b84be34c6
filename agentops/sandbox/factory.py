"""Choosing and creating sandboxes; run-wide kill.

Settings (all optional; read lazily so this works without configured Django settings):
- ``AGENTOPS_SANDBOX_BACKEND``: "docker" | "bubblewrap" | "auto" (default "auto": Docker when the engine answers
  ``docker.from_env().ping()``, which honours DOCKER_HOST, else bubblewrap)
- ``AGENTOPS_SANDBOX_IMAGE``: Docker image (default ``agentops-sandbox:1``; see docker_backend's docstring)
- ``AGENTOPS_SANDBOX_ROOT``: host directory for bubblewrap workspaces (default ``$TMPDIR/agentops-sandboxes``)
- ``AGENTOPS_SANDBOX_BWRAP_BINDS``: extra host paths bound read-only into bubblewrap sandboxes (e.g. a venv)
- ``AGENTOPS_SANDBOX_SCOPE``: which deployment the sandboxes belong to (default "default"). Sandboxes carry it
  (Docker label ``agentops.scope``, bubblewrap meta.json); ``kill_run_sandboxes`` and the reaper touch only their
  own scope, so two deployments (or two test sessions) sharing a Docker engine or a host never kill or reap
  each other's sandboxes even when their run ids collide.
Each is read from Django settings when defined there, else from the environment variable of the same name.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings

from . import bwrap_backend, docker_backend
from .base import Sandbox, SandboxError, SandboxLimits

log = logging.getLogger(__name__)

BACKENDS = ("docker", "bubblewrap")


_MISSING = object()


def _setting(name: str, default: Any) -> Any:
    value: Any = _MISSING
    try:
        if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
            value = getattr(settings, name, _MISSING)
    except Exception:  # settings not loadable: sandbox defaults still work
        pass
    if value is _MISSING:
        value = os.environ.get(name) or default
    return value


def sandbox_scope() -> str:
    return str(_setting("AGENTOPS_SANDBOX_SCOPE", None) or "default")


def default_image() -> str:
    return _setting("AGENTOPS_SANDBOX_IMAGE", None) or docker_backend.DEFAULT_IMAGE


def bwrap_root() -> str:
    return _setting("AGENTOPS_SANDBOX_ROOT", None) or bwrap_backend.default_root()


def configured_backend() -> str:
    value = (_setting("AGENTOPS_SANDBOX_BACKEND", None) or "auto").lower()
    if value not in (*BACKENDS, "auto"):
        raise SandboxError(f"AGENTOPS_SANDBOX_BACKEND must be docker, bubblewrap or auto, not {value!r}")
    return value


def available_backends() -> dict[str, str | None]:
    """backend -> None when usable here, else the reason it is not."""
    return {
        "docker": docker_backend.unavailable_reason(default_image()),
        "bubblewrap": bwrap_backend.unavailable_reason(),
    }


def resolve_backend(backend: str | None = None) -> str:
    choice = (backend or configured_backend()).lower()
    if choice == "auto":
        return "docker" if docker_backend.unavailable_reason() is None else "bubblewrap"
    if choice not in BACKENDS:
        raise SandboxError(f"unknown sandbox backend {choice!r}")
    return choice


def create_sandbox(
    *,
    run_id: str,
    repo: str,
    ref: str = "HEAD",
    limits: SandboxLimits | None = None,
    backend: str | None = None,
    image: str | None = None,
) -> Sandbox:
    """A fresh sandbox for ``run_id`` whose workspace is a clone of the local repository ``repo`` at ``ref``."""
    chosen = resolve_backend(backend)
    if chosen == "docker":
        return docker_backend.DockerSandbox(run_id=run_id, repo=repo, ref=ref, limits=limits, image=image or default_image(), scope=sandbox_scope())
    binds = _setting("AGENTOPS_SANDBOX_BWRAP_BINDS", ()) or ()
    if isinstance(binds, str):
        binds = [b for b in binds.split(os.pathsep) if b]
    return bwrap_backend.BwrapSandbox(
        run_id=run_id,
        repo=repo,
        ref=ref,
        limits=limits,
        root_dir=bwrap_root(),
        scope=sandbox_scope(),
        ro_binds=tuple(binds),
    )


def kill_run_sandboxes(run_id: str) -> int:
    """Kill the running commands of every sandbox of ``run_id``, from any process. Returns how many sandboxes
    (bubblewrap: commands) were hit. Raises SandboxError when Docker is the configured backend and its engine
    cannot be reached (fail closed: the kill switch must know)."""
    scope = sandbox_scope()
    count = bwrap_backend.kill_run(run_id, bwrap_root(), scope)
    try:
        count += docker_backend.kill_run(run_id, scope)
    except Exception as e:
        if configured_backend() == "docker":
            raise SandboxError(f"cannot reach the docker engine to kill run {run_id}: {e}") from e
        log.debug("docker not reachable while killing run %s: %s", run_id, e)
    return count
