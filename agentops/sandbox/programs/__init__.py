"""The Docker backend's in-container programs, shipped as ``python3 -c`` source (the image needs only python3).

They run inside the sandbox, on the image's Python (3.8+), standard library only, and take their parameters
on the command line. ``proctree`` (the process table and the kill-a-session loop) is written once and
prepended to the programs that kill processes. Importing this package runs none of them.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

# Programs that use the shared process-table helpers; the others are shipped alone.
_WITH_PROCTREE = frozenset({"killer", "command_server"})


@cache
def source(name: str) -> str:
    """The ``python3 -c`` source of the program ``name`` (``init``, ``killer``, ``command_server``)."""
    text = files(__package__).joinpath(f"{name}.py").read_text(encoding="utf-8")
    if name in _WITH_PROCTREE:
        text = files(__package__).joinpath("proctree.py").read_text(encoding="utf-8") + "\n" + text
    return text
