"""Isolated, disposable workspaces for runs: Docker (production) or bubblewrap (machines without Docker).

No Django model imports here: the sandbox is plain Python, usable from workers, commands and tests alike.
"""

from .base import (
    ExecResult,
    FileTooLarge,
    PathOutsideScope,
    PathRejected,
    Sandbox,
    SandboxError,
    SandboxLimits,
)
from .factory import available_backends, create_sandbox, kill_run_sandboxes
from .reaper import reap_sandboxes

__all__ = [
    "ExecResult",
    "FileTooLarge",
    "PathOutsideScope",
    "PathRejected",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "available_backends",
    "create_sandbox",
    "kill_run_sandboxes",
    "reap_sandboxes",
]
