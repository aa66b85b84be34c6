"""The sandbox contract shared by every backend.

A Sandbox is an isolated, disposable workspace for one Run: a fresh git clone of the target repository
at `workdir` (``/workspace``), commands run with no network, as an unprivileged user, under memory /
process / time limits. Everything here is plain Python: no Django model imports.
"""

from __future__ import annotations

import codecs
import math
import os
import posixpath
import re
import select
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WORKDIR = "/workspace"
LABEL_RUN = "agentops.run"
LABEL_SANDBOX = "agentops.sandbox"
LABEL_SCOPE = "agentops.scope"
GIT_USER_NAME = "agentops agent"
GIT_USER_EMAIL = "agent@agentops.invalid"
POLL_INTERVAL_S = 0.05  # cancel_check and timeouts are polled at least this often (contract: <= 100 ms)


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 1024
    pids: int = 256
    cpus: float = 1.0
    # A ceiling, not a default: exec() clamps any timeout it is given to it (the model may lower it, never raise it).
    command_timeout_s: float = 300.0
    max_output_bytes: int = 1_000_000  # kept whole up to this, beyond it truncated with a marker
    max_file_bytes: int = 5_000_000
    # The most the workspace may hold (Docker: size of its tmpfs; bubblewrap: a size-capped tmpfs when the
    # worker is root, else a watchdog). /tmp and the home directory get ``tmp_mb`` each (default disk_mb // 2).
    disk_mb: int = 1024
    tmp_mb: int | None = None

    @property
    def tmp_quota_mb(self) -> int:
        return max(16, int(self.tmp_mb if self.tmp_mb is not None else self.disk_mb // 2))

    @classmethod
    def from_policy(cls, policy: Any) -> SandboxLimits:
        """The limits an agent's policy sets: the run's workspace and the gates' sandboxes alike."""
        return cls(
            memory_mb=policy.sandbox_memory_mb,
            pids=policy.sandbox_pids,
            cpus=float(policy.sandbox_cpus),
            command_timeout_s=float(policy.command_timeout_s),
            disk_mb=policy.sandbox_disk_mb,
        )

    def clamp_timeout(self, timeout: float | None) -> float:
        """The timeout a command really gets: the caller's when it is lower than the policy's, else the policy's."""
        ceiling = float(self.command_timeout_s)
        try:
            asked = float(timeout) if timeout is not None else ceiling
        except (TypeError, ValueError):
            asked = ceiling
        if not math.isfinite(asked) or asked <= 0:
            asked = ceiling
        return min(asked, ceiling)


@dataclass
class ExecResult:
    exit_code: int | None  # None when killed/cancelled/timed out
    output: str  # stdout+stderr interleaved, truncated at max_output_bytes with a "[truncated N bytes]" marker
    truncated: bool
    timed_out: bool
    cancelled: bool
    duration_s: float
    backend: str
    quota_exceeded: bool = False  # killed for writing past SandboxLimits.disk_mb / tmp_mb (exit_code None)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class SandboxError(Exception):
    """Infrastructure failure: the sandbox cannot be trusted to have done what was asked (fail closed)."""


class PathRejected(SandboxError):
    """A file-tool path that is absolute, escapes the workspace (``..``, symlink), or holds a NUL byte."""


class PathOutsideScope(PathRejected):
    """The path, once its symlinks are resolved, lands outside the paths the caller may touch."""


class FileTooLarge(SandboxError):
    """read_file/write_file beyond SandboxLimits.max_file_bytes."""


# --------------------------------------------------------------------------------------------------
# paths


def check_relative_path(path: str, *, allow_root: bool = False) -> str:
    """Validate a workspace-relative path lexically; return it normalised (``a/./b`` -> ``a/b``).

    Symlinks are checked later, by each backend, against the real file system.
    """
    if not isinstance(path, str):
        raise PathRejected(f"path must be a string, not {type(path).__name__}")
    if "\x00" in path:
        raise PathRejected("path contains a NUL byte")
    if path == "" or path.startswith("/") or path.startswith("\\"):
        raise PathRejected(f"path must be relative to the workspace: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathRejected(f"path may not contain '..': {path!r}")
    norm = "/".join(parts)
    if not norm:
        if allow_root:
            return "."
        raise PathRejected(f"path names the workspace itself: {path!r}")
    if parts[0] == ".git" and not allow_root:
        # The file tools edit the work tree; .git is git's business (hooks/config would be a foot-gun).
        raise PathRejected(f"path inside .git is not allowed: {path!r}")
    return norm


def join_inside(root: str, rel: str) -> str:
    return posixpath.join(root, rel) if rel != "." else root


# --------------------------------------------------------------------------------------------------
# output


class OutputBuffer:
    """Collects a command's output with bounded memory.

    Keeps the first half and the last half of ``max_bytes`` (the tail matters: a test run's summary
    is at the end) and puts ``[truncated N bytes]`` between them. ``on_output`` receives decoded chunks as
    they arrive until the head is full, then one notice; it is never handed more than ``max_bytes``.
    """

    def __init__(self, max_bytes: int, on_output: Callable[[str], None] | None = None) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.head_max = self.max_bytes - self.max_bytes // 2
        self.tail_max = self.max_bytes // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.on_output = on_output
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._notified = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            part = data[:room]
            self.head += part
            data = data[room:]
            self._emit(self._decoder.decode(part))
        if data:
            if self.tail_max:
                self.tail += data
                if len(self.tail) > 2 * self.tail_max:
                    del self.tail[: len(self.tail) - self.tail_max]
            if not self._notified:
                self._notified = True
                self._emit(self._decoder.decode(b"", final=True))
                self._emit(f"\n[output exceeds {self.max_bytes} bytes; streaming stopped, the end is kept]\n")

    def _emit(self, text: str) -> None:
        if text and self.on_output is not None:
            try:
                self.on_output(text)
            except Exception:  # a broken listener must not break the command
                pass

    @property
    def truncated(self) -> bool:
        return self.total > self.max_bytes

    def text(self) -> str:
        if not self.truncated:
            if not self._notified:
                self._emit(self._decoder.decode(b"", final=True))
            return bytes(self.head + self.tail).decode("utf-8", errors="replace")
        tail = bytes(self.tail[-self.tail_max :]) if self.tail_max else b""
        dropped = self.total - len(self.head) - len(tail)
        return bytes(self.head).decode("utf-8", errors="replace") + f"\n[truncated {dropped} bytes]\n" + tail.decode("utf-8", errors="replace")

    def result(self, *, exit_code: int | None, timed_out: bool, cancelled: bool, started: float, backend: str, quota_exceeded: bool = False) -> ExecResult:
        """The ExecResult of the command whose output this buffer collected (started: its time.monotonic())."""
        return ExecResult(
            exit_code=exit_code,
            output=self.text(),
            truncated=self.truncated,
            timed_out=timed_out,
            cancelled=cancelled,
            duration_s=time.monotonic() - started,
            backend=backend,
            quota_exceeded=quota_exceeded,
        )


# --------------------------------------------------------------------------------------------------
# the interface


class Sandbox(ABC):
    backend: str  # "docker" or "bubblewrap"
    run_id: str
    workdir: str = WORKDIR
    limits: SandboxLimits
    base_commit: str  # the commit the workspace was checked out at; diff() compares against it

    @abstractmethod
    def exec(
        self,
        command: str | list[str],
        *,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
        cancel_check: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run ``command`` (a string goes to ``/bin/sh -c``) in the workspace.

        Streams chunks to ``on_output`` as they arrive; polls ``cancel_check`` every <= 100 ms and, when it
        returns True, kills the command's whole process tree at once (``cancelled=True``). ``timeout`` (default
        ``limits.command_timeout_s``, and never more than it) kills it too (``timed_out=True``). Raises
        SandboxError only when the sandbox itself failed.
        """

    # The file tools resolve symlinks inside the sandbox's own file system and, when ``allowed`` (fnmatch
    # patterns, as in a tool grant's ``paths``) is given, check the RESOLVED path against it in the same
    # operation that opens the file: a link that leads out of the grant (or the workspace) raises
    # PathOutsideScope (PathRejected), and no link swapped in meanwhile can redirect the open.

    @abstractmethod
    def read_file(self, path: str, *, allowed: list[str] | None = None) -> str: ...

    @abstractmethod
    def write_file(self, path: str, content: str, *, allowed: list[str] | None = None) -> None: ...

    @abstractmethod
    def list_files(self, path: str = ".", *, allowed: list[str] | None = None) -> list[str]:
        """Files under ``path``, recursive, as paths relative to the workspace root, sorted, without .git."""

    @abstractmethod
    def resolve_path(self, path: str, *, allowed: list[str] | None = None) -> str:
        """``path`` with its symlinks resolved, relative to the workspace; PathRejected when it leaves the
        workspace, PathOutsideScope when it leaves ``allowed``."""

    @abstractmethod
    def links_out_of_scope(self, paths: list[str], allowed: list[str] | None = None) -> list[str]:
        """Those of ``paths`` that are symlinks whose target resolves outside the workspace or ``allowed``."""

    @abstractmethod
    def cancel(self) -> None:
        """Kill whatever runs in this sandbox now (its commands report cancelled=True)."""

    @abstractmethod
    def destroy(self) -> None:
        """Kill everything and remove the sandbox. Idempotent."""

    def interactive_argv(self, argv: list[str], *, env: dict[str, str] | None = None) -> list[str]:
        """The host argv that runs ``argv`` inside this sandbox with its stdin and stdout as pipes (an MCP
        server speaking over stdio): the same isolation and limits as ``exec``, no network, the workspace as cwd.

        Spawn it with ``start_new_session=True`` and with exactly ``env`` as its environment (nothing of the
        worker's): the values of ``env`` reach the sandbox from the spawned process's environment, never from
        a command line, which every user of the host can read. The process dies with ``cancel()`` and
        ``destroy()``; killing the spawned process's group ends it too.
        """
        raise SandboxError(f"the {self.backend} sandbox cannot run interactive processes")

    def diff(self) -> str:
        """``git diff`` of the workspace against the base commit, new (untracked, not ignored) files included.

        Runs inside the sandbox (the repo's git config is agent-controlled) with a throw-away index, so the
        agent's own index is left as it was.
        """
        script = (
            "set -e; idx=$(mktemp /tmp/agentops-index.XXXXXX); trap 'rm -f \"$idx\"' EXIT; "
            'export GIT_INDEX_FILE="$idx"; '
            f"git read-tree {self.base_commit}; git add -A .; "
            f"git -c core.quotepath=off diff --cached --no-color --no-ext-diff --binary {self.base_commit}"
        )
        res = self.exec(["/bin/sh", "-c", script], timeout=min(120.0, self.limits.command_timeout_s))
        if res.exit_code != 0:
            raise SandboxError(f"git diff failed (exit {res.exit_code}): {res.output[-2000:]}")
        if res.truncated:
            raise SandboxError(f"diff larger than max_output_bytes={self.limits.max_output_bytes}")
        return res.output

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} run_id={self.run_id!r}>"


# --------------------------------------------------------------------------------------------------
# helpers shared by the backends


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(run_id: str, limit: int = 40) -> str:
    return (_SAFE.sub("-", run_id).strip("-.") or "run")[:limit]


def git(*args: str, cwd: str | None = None, timeout: float = 120.0) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def prepare_clone(repo: str, ref: str, dest: str) -> str:
    """Fresh clone of ``repo`` (a work tree or a bare repository on this host) at ``dest``, checked out at
    ``ref`` (detached) with a commit identity configured. Returns the commit sha.

    ``--no-hardlinks``: objects are copied, so nothing the sandbox does can touch the source repository.
    """
    if not os.path.exists(repo):
        raise SandboxError(f"repository not found: {repo}")
    sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo).strip()
    if not sha:
        raise SandboxError(f"ref {ref!r} not found in {repo}")
    git(
        "clone",
        "--quiet",
        "--no-hardlinks",
        "--no-checkout",
        "-c",
        f"user.name={GIT_USER_NAME}",
        "-c",
        f"user.email={GIT_USER_EMAIL}",
        os.path.abspath(repo),
        dest,
    )
    git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha, cwd=dest)
    return sha


def pump_process(
    proc: subprocess.Popen,
    out: OutputBuffer,
    *,
    deadline: float,
    cancel_check: Callable[[], bool] | None,
    kill: Callable[[], None],
    cancelled_elsewhere: Callable[[], bool],
) -> tuple[bool, bool]:
    """Read a local process's merged output until EOF; kill on timeout / cancel. Returns (timed_out, cancelled)."""
    if proc.stdout is None:
        raise ValueError("pump_process reads a process started with stdout=PIPE")
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    timed_out = cancelled = False
    killed_at: float | None = None
    while True:
        now = time.monotonic()
        if killed_at is None:
            if cancel_check is not None and _safe_call(cancel_check):
                cancelled = True
            elif now >= deadline:
                timed_out = True
            if cancelled or timed_out:
                kill()
                killed_at = now
        elif now - killed_at > 2.0:
            # Descendants outside the kill's reach hold the pipe: stop reading, the result is settled.
            break
        wait = POLL_INTERVAL_S if killed_at is None else 0.05
        if killed_at is None:
            wait = max(0.0, min(wait, deadline - now))
        try:
            ready, _, _ = select.select([fd], [], [], wait)
        except InterruptedError:
            continue
        if ready:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            out.feed(data)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        kill()
        proc.wait(timeout=5)
    if not (timed_out or cancelled) and proc.returncode == -signal.SIGKILL and cancelled_elsewhere():
        cancelled = True
    return timed_out, cancelled


def _safe_call(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:
        return True  # fail closed: a cancel check that cannot answer means stop
