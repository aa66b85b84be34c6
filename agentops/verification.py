"""The verification gates now live in agentops.gates; this module keeps the old import path."""

from __future__ import annotations

import shlex

from agentops.gates import *  # noqa: F403
from agentops.gates import __all__ as _gates_all

__all__ = [*_gates_all, "shell_join"]


def shell_join(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
