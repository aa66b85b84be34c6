"""Helpers for the MCP runtime tests (tests/mcp/test_runtime_*, test_real_servers*, test_hostile*)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentops.mcp.toolinfo import ServerSpec

HERE = Path(__file__).parent
HOSTILE = str(HERE / "hostile_server.py")
NODE_DIR = HERE / "node"
VENV_BIN = Path(sys.executable).parent


def spec(name: str, command: list[str], **fields: Any) -> ServerSpec:
    values: dict[str, Any] = {"transport": "stdio", "env": {}, "url": "", "headers": {}, "location": "host"}
    values.update(fields)
    return ServerSpec(name=name, command=command, **values)


def hostile_spec(*args: str, **fields: Any) -> ServerSpec:
    return spec("hostile", [sys.executable, HOSTILE, *args], **fields)


def requires_real(component: str, reason: str) -> None:
    """Locally a missing component skips, saying why; in CI (CI=true) it fails: nothing may skip there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{component} is required in CI: {reason}")
    print(f"{component} unavailable: {reason}")
    pytest.skip(f"{component} unavailable: {reason}")


def node_bin(name: str) -> str:
    """The path of an npm MCP server's executable, `npm ci` (exact versions from package-lock.json) on first use."""
    if not shutil.which("node") or not shutil.which("npm"):
        requires_real("node and npm", "not on PATH (install Node 20+ from apt)")
    target = NODE_DIR / "node_modules" / ".bin" / name
    if not target.exists():
        with open(NODE_DIR / ".install.lock", "w") as lock:  # xdist workers install once
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.exists():
                proc = subprocess.run(
                    ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300, check=False
                )
                if proc.returncode != 0:
                    requires_real("npm packages", f"npm ci failed: {proc.stderr.strip()[-500:]}")
    return str(target)


def pid_gone(pid: int | None, timeout: float = 3.0) -> bool:
    """True once the process no longer exists (a zombie not yet reaped counts as gone)."""
    assert pid is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def make_repo(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text("print('hello')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "initial"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return str(path)
