"""bubblewrap backend: for machines without Docker (the embedded default).

Each ``exec`` starts a fresh ``bwrap --unshare-all`` (new user, pid, net, ipc, uts, cgroup namespaces) that
sees the host's /usr read-only, a small read-only subset of /etc, private /proc, /dev and /tmp, and the
workspace (a fresh git clone in a host temp dir) read-write at /workspace. The host's python3 and git are
what run inside.

Limits:
- when the worker runs as root, every sandbox gets its own unprivileged host uid (from
  ``UID_BASE``..), so RLIMIT_NPROC (per uid) caps that sandbox alone: a fork bomb hits ``pids`` and stops there;
  without root, the worker's own uid is used and NPROC is set to (its current process count + pids);
- RLIMIT_AS = memory_mb per process (an allocation past it raises MemoryError / fails);
- cpus is not enforced (no cgroup delegation); the command runs at nice 10;
- disk: see "Disk quota" below.

Disk quota (SandboxLimits.disk_mb for the workspace, tmp_mb for /tmp and for the home directory each).
Chosen because it truly bounds both the host's disk and its RAM, at Docker's cost (Docker also uses sized
tmpfs mounts):
- "tmpfs" (the worker runs as root, the normal server case): the sandbox's workspace, home and /tmp are three
  host tmpfs mounts with ``size=`` and ``nr_inodes=``; the kernel answers ENOSPC past the quota, nothing ever
  reaches the host's disk, and RAM use is bounded by the sizes (inodes included). Mounting costs ~0.1 ms; a
  loop-mounted filesystem image would also bound the disk but costs a mkfs per sandbox.
- "watchdog" (no root, or mounting is not permitted, e.g. a laptop): workspace and home are plain host
  directories; /tmp is bwrap's own tmpfs with ``--size`` (bwrap >= 0.8; else a host directory). Every command
  runs with RLIMIT_FSIZE = the quota (no single file can outgrow it between two measurements) and a watchdog
  measures the sandbox every 0.1 s (longer for big trees) while it runs and kills it past the quota (``quota_exceeded=True``),
  so the overshoot is bounded by what can be written in one interval.

Killing: bwrap runs in its own session/process group; killing that group kills bwrap and the pid
namespace's init, and the kernel then kills every process in the namespace, so nothing escapes. The pid of
every running bwrap is recorded as ``<root>/run/exec-<pid>`` so ``kill_run_sandboxes`` works from any process.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from . import fileops
from .base import (
    WORKDIR,
    ExecResult,
    FileTooLarge,
    OutputBuffer,
    PathOutsideScope,
    PathRejected,
    Sandbox,
    SandboxError,
    SandboxLimits,
    check_relative_path,
    prepare_clone,
    pump_process,
    safe_name,
)

_T = TypeVar("_T")

BACKEND = "bubblewrap"
UID_BASE = 620_000
UID_SPAN = 60_000
INNER_UID = 1000
ETC_SUBSET = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gitconfig",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "python3",
    "python3.11",
    "ssl",
)
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/agent",
    "USER": "agent",
    "LOGNAME": "agent",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


QUOTA_POLL_S = 0.1
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
AREAS = ("workspace", "home", "tmp")
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: str, size_mb: int, uid: int, gid: int, mode: str) -> None:
    inodes = max(4096, size_mb * 128)  # tmpfs inodes live in RAM outside ``size``: bound them too
    data = f"size={size_mb}m,nr_inodes={inodes},mode={mode},uid={uid},gid={gid}".encode()
    if _libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount tmpfs on {target}: {os.strerror(e)}")


def _umount(target: str) -> None:
    if os.path.ismount(target):
        if _libc.umount2(target.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            raise OSError(ctypes.get_errno(), f"umount {target}")


def _disk_usage(path: str) -> int:
    """Bytes allocated under ``path`` (symlinks not followed, hard links counted once)."""
    total, seen = 0, set()
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


_bwrap_size_flag: list[bool] = []


def _bwrap_has_size() -> bool:
    if not _bwrap_size_flag:
        try:
            out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _bwrap_size_flag.append("--size" in out)
    return _bwrap_size_flag[0]


def default_root() -> str:
    return os.path.join(tempfile.gettempdir(), "agentops-sandboxes")


def _ensure_base(base: str) -> None:
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o711)  # sandbox uids must traverse it to bind their workspace; nobody may list it


def _uid_dir() -> str:
    """Machine-wide registry of the sandbox uids in use: shared by every sandbox root on this host, so two
    roots (two deployments, two test sessions) never hand out the same uid."""
    for parent in ("/run", tempfile.gettempdir()):
        path = os.path.join(parent, "agentops-sandbox-uids")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            return path
        except OSError:
            continue
    raise SandboxError("no writable directory for the sandbox uid registry")


_probe_lock = threading.Lock()
_probe_result: dict[str, str | None] = {}


def unavailable_reason() -> str | None:
    """None when bubblewrap works here, else why not (cached per process once it worked)."""
    with _probe_lock:
        if _probe_result.get("ok", "x") is None:
            return None
        bwrap = shutil.which("bwrap")
        if not bwrap:
            return "bwrap not found on PATH (install with scripts/ensure-bwrap or apt-get install bubblewrap)"
        args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
        args += _root_links() + ["--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
        kwargs: dict = {}
        if os.geteuid() == 0:
            kwargs = {"user": UID_BASE + UID_SPAN - 1, "group": UID_BASE + UID_SPAN - 1, "extra_groups": []}
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=20, **kwargs)
        except (OSError, subprocess.SubprocessError) as e:
            return f"bwrap failed to start: {e}"
        if proc.returncode != 0:
            return f"bwrap cannot create namespaces here (exit {proc.returncode}): {proc.stderr.strip()}"
        _probe_result["ok"] = None
        return None


_ETC_FILES = {
    "passwd": f"root:x:0:0:root:/root:/bin/sh\nagent:x:{INNER_UID}:{INNER_UID}:agent:/home/agent:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nagent:x:{INNER_UID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
}


def _shared_etc(base: str) -> str:
    """The sandbox's /etc: copies of a small subset of the host's, shared read-only by all sandboxes.

    One bind instead of a dozen keeps bwrap start-up short. Keyed by the sources' mtimes, so an apt upgrade
    of the host (new ld.so.cache, certificates) yields a fresh copy.
    """
    key = zlib.crc32(repr([(n, _mtime(f"/etc/{n}")) for n in ETC_SUBSET]).encode() + repr(_ETC_FILES).encode())
    path = os.path.join(base, f"etc-{key:08x}")
    if os.path.isdir(path):
        return path
    tmp = tempfile.mkdtemp(prefix="etc-tmp-", dir=base)
    for name in ETC_SUBSET:
        src = f"/etc/{name}"
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, os.path.join(tmp, name), symlinks=True, ignore_dangling_symlinks=True, ignore=shutil.ignore_patterns("private"))
        elif os.path.lexists(src):
            shutil.copy2(src, os.path.join(tmp, name), follow_symlinks=False)
    for name, text in _ETC_FILES.items():
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, path)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _root_links() -> list[str]:
    args: list[str] = []
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def _alloc_uid(run_id: str) -> int:
    start = zlib.crc32(run_id.encode()) % (UID_SPAN - 1)
    for i in range(UID_SPAN - 1):
        uid = UID_BASE + (start + i) % (UID_SPAN - 1)
        try:
            fd = os.open(os.path.join(_uid_dir(), str(uid)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return uid
    raise SandboxError("no free sandbox uid")


def _release_uid(uid: int) -> None:
    try:
        os.unlink(os.path.join(_uid_dir(), str(uid)))
    except FileNotFoundError:
        pass


def _count_procs_of(uid: int) -> int:
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _chown_tree(path: str, uid: int) -> None:
    os.lchown(path, uid, uid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


class BwrapSandbox(Sandbox):
    backend = BACKEND

    def __init__(
        self,
        *,
        run_id: str,
        repo: str,
        ref: str = "HEAD",
        limits: SandboxLimits | None = None,
        root_dir: str | None = None,
        scope: str = "default",
        ro_binds: tuple[str, ...] = (),
        quota_mode: str | None = None,  # "tmpfs" | "watchdog" | None (tmpfs when root and mounts work)
    ) -> None:
        if quota_mode not in (None, "tmpfs", "watchdog"):
            raise SandboxError(f"unknown quota mode {quota_mode!r}")
        reason = unavailable_reason()
        if reason:
            raise SandboxError(reason)
        self.run_id = run_id
        self.scope = scope
        self.workdir = WORKDIR
        self.limits = limits or SandboxLimits()
        self.ro_binds = tuple(ro_binds)
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._destroyed = False
        self.base = root_dir or default_root()
        _ensure_base(self.base)
        self.privileged = os.geteuid() == 0
        self.root = tempfile.mkdtemp(prefix=safe_name(run_id) + "-", dir=self.base)
        try:
            os.chmod(self.root, 0o711)
            self.uid = _alloc_uid(run_id) if self.privileged else os.getuid()
            self.gid = self.uid if self.privileged else os.getgid()
            self.workspace = os.path.join(self.root, "workspace")
            self.home = os.path.join(self.root, "home")
            self.rundir = os.path.join(self.root, "run")
            self.tmp = os.path.join(self.root, "tmp")
            os.mkdir(self.rundir, 0o700)
            os.mkdir(self.home, 0o755)
            os.mkdir(self.workspace, 0o755)
            os.mkdir(self.tmp, 0o1777)
            os.chmod(self.tmp, 0o1777)
            self.quota_mode = self._mount_quota() if self.privileged and quota_mode != "watchdog" else "watchdog"
            if quota_mode == "tmpfs" and self.quota_mode != "tmpfs":
                raise SandboxError("a tmpfs disk quota was asked for but this host does not allow mounting one")
            self._write_meta()
            self.etc = _shared_etc(self.base)
            try:
                self.base_commit = prepare_clone(repo, ref, self.workspace)
            except SandboxError as e:
                if "No space left" in str(e):
                    raise SandboxError(f"the repository does not fit in the sandbox's disk quota of {self.limits.disk_mb} MiB: {e}") from None
                raise
            if self.privileged:
                _chown_tree(self.workspace, self.uid)
                os.chown(self.home, self.uid, self.gid)
        except BaseException:
            self.destroy()
            raise

    def _mount_quota(self) -> str:
        """Sized tmpfs mounts for workspace, home and /tmp; "watchdog" when this host does not allow mounts."""
        tmp_mb = self.limits.tmp_quota_mb
        try:
            # owned by root until the clone is done (git refuses a repository another uid owns), then chowned
            _mount_tmpfs(self.workspace, int(self.limits.disk_mb), 0, 0, "0755")
            _mount_tmpfs(self.home, tmp_mb, self.uid, self.gid, "0755")
            _mount_tmpfs(self.tmp, tmp_mb, 0, 0, "1777")
        except OSError:
            for area in AREAS:
                try:
                    _umount(os.path.join(self.root, area))
                except OSError:
                    pass
            return "watchdog"
        return "tmpfs"

    # -- setup ---------------------------------------------------------------------------------------

    def _write_meta(self) -> None:
        meta = {
            "run_id": self.run_id,
            "scope": self.scope,
            "uid": self.uid,
            "privileged": self.privileged,
            "quota_mode": self.quota_mode,
            "created": time.time(),
            "owner_pid": os.getpid(),
        }
        with open(os.path.join(self.root, "meta.json"), "w") as f:
            json.dump(meta, f)

    def _bwrap_args(self, argv: list[str]) -> list[str]:
        args = [
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            "--uid",
            str(INNER_UID),
            "--gid",
            str(INNER_UID),
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        args += _root_links()
        args += ["--ro-bind", self.etc, "/etc"]
        for path in self.ro_binds:
            args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        if self.quota_mode == "watchdog" and _bwrap_has_size():
            args += ["--size", str(self.limits.tmp_quota_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        else:  # tmpfs mode: the sized host mount; watchdog without --size: a measured host directory
            args += ["--bind", self.tmp, "/tmp"]
        args += ["--bind", self.workspace, WORKDIR, "--bind", self.home, "/home/agent", "--chdir", WORKDIR, "--clearenv"]
        for k, v in SANDBOX_ENV.items():
            args += ["--setenv", k, v]
        return args + ["--", *argv]

    def _preexec(self) -> Callable[[], None]:
        mem = self.limits.memory_mb * 1024 * 1024
        if self.privileged:
            nproc = self.limits.pids
        else:
            nproc = _count_procs_of(os.getuid()) + self.limits.pids

        fsize = self.limits.disk_mb * 1024 * 1024 if self.quota_mode == "watchdog" else resource.RLIM_INFINITY

        def setup() -> None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if fsize != resource.RLIM_INFINITY:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            os.nice(10)

        return setup

    # -- exec ----------------------------------------------------------------------------------------

    def exec(
        self,
        command: str | list[str],
        *,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
        cancel_check: Callable[[], bool] | None = None,
    ) -> ExecResult:
        if self._destroyed:
            raise SandboxError("sandbox destroyed")
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("empty command")
        timeout = self.limits.clamp_timeout(timeout)
        out = OutputBuffer(self.limits.max_output_bytes, on_output)
        started = time.monotonic()
        started_wall = time.time()
        kwargs: dict = {}
        if self.privileged:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        try:
            proc = subprocess.Popen(
                self._bwrap_args(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={"PATH": "/usr/bin:/bin"},
                preexec_fn=self._preexec(),
                **kwargs,
            )
        except OSError as e:
            raise SandboxError(f"bwrap failed to start: {e}") from e
        pidfile = os.path.join(self.rundir, f"exec-{proc.pid}")
        with self._lock:
            self._procs.add(proc)
        try:
            try:
                with open(pidfile, "w") as f:
                    f.write(str(proc.pid))
            except OSError as e:  # destroyed meanwhile: an unrecorded command must not run on
                _killpg(proc.pid)
                proc.wait()
                raise SandboxError(f"sandbox {self.run_id} is gone: {e}") from e

            def kill() -> None:
                _killpg(proc.pid)

            def cancelled_elsewhere(slack: float = 0.005) -> bool:
                try:
                    return os.stat(os.path.join(self.rundir, "cancelled")).st_mtime >= started_wall - slack
                except OSError:
                    return False

            if cancelled_elsewhere(slack=-0.001):  # a kill_run_sandboxes() landed between spawn and pidfile
                kill()
            watchdog = self._start_watchdog(kill) if self.quota_mode == "watchdog" else None
            try:
                timed_out, cancelled = pump_process(
                    proc,
                    out,
                    deadline=started + timeout,
                    cancel_check=cancel_check,
                    kill=kill,
                    cancelled_elsewhere=cancelled_elsewhere,
                )
            finally:
                if watchdog is not None:
                    watchdog[0].set()
                    watchdog[1].join()
            over = watchdog[2][0] if watchdog is not None and watchdog[2] else None
        finally:
            with self._lock:
                self._procs.discard(proc)
            try:
                os.unlink(pidfile)
            except OSError:
                pass
            if proc.stdout:
                proc.stdout.close()
        rc = proc.returncode
        if timed_out or cancelled:
            exit_code = None
        elif rc is not None and rc < 0:
            exit_code = 128 - rc  # killed by a signal (e.g. SIGKILL -> 137), as a shell reports it
        else:
            exit_code = rc
        if self._destroyed and rc == -signal.SIGKILL:
            cancelled, exit_code = True, None
        quota_exceeded = bool(over) and not (timed_out or cancelled)
        if quota_exceeded:
            exit_code = None
            out.feed(f"\n[sandbox: {over} exceeded its disk quota; the command was killed]\n".encode())
        return out.result(exit_code=exit_code, timed_out=timed_out, cancelled=cancelled, started=started, backend=BACKEND, quota_exceeded=quota_exceeded)

    def _quotas(self) -> list[tuple[str, str, int]]:
        tmp = self.limits.tmp_quota_mb * 1024 * 1024
        areas = [("the workspace", self.workspace, self.limits.disk_mb * 1024 * 1024), ("the home directory", self.home, tmp)]
        if not _bwrap_has_size():
            areas.append(("/tmp", self.tmp, tmp))
        return areas

    def _start_watchdog(self, kill: Callable[[], None]) -> tuple[threading.Event, threading.Thread, list[str]]:
        """Measure the sandbox while a command runs; kill it when an area grows past its quota. An area already
        over quota when the command starts (left by an earlier kill) may shrink (``rm``), never grow."""
        stop, over = threading.Event(), []
        areas = self._quotas()

        def watch() -> None:
            start = {path: _disk_usage(path) for _, path, _ in areas}
            interval = QUOTA_POLL_S
            while not stop.wait(interval):
                t0 = time.monotonic()
                for name, path, quota in areas:
                    used = _disk_usage(path)
                    if used > quota and used > start[path]:
                        over.append(f"{name} ({used // 1048576} MiB of {quota // 1048576} MiB)")
                        kill()
                        return
                # a big tree costs more to measure: keep the watchdog under ~20% of a core
                interval = max(QUOTA_POLL_S, 4 * (time.monotonic() - t0))

        thread = threading.Thread(target=watch, name=f"sandbox-quota-{self.run_id}", daemon=True)
        thread.start()
        return stop, thread, over

    def interactive_argv(self, argv: list[str], *, env: dict[str, str] | None = None) -> list[str]:
        """See Sandbox.interactive_argv. A launcher records the pid (as ``exec`` does, so cancel/destroy/kill_run
        find it), then sets the same limits as ``exec`` and becomes bwrap with exec's isolation. The worker's Python
        (its venv, and the interpreter the venv points at) is visible read-only, its ``bin`` first on PATH, so a
        server installed with agentops (``mcp-server-git``) resolves; env comes from the spawn's environment."""
        if self._destroyed:
            raise SandboxError("sandbox destroyed")
        if not argv:
            raise ValueError("empty command")
        _check_env_names(env or {})
        args = self._bwrap_args(list(argv))
        split = args.index("--")
        head, tail = args[:split], args[split:]
        head.remove("--clearenv")  # the spawn passes exactly env; --setenv below (exec's own) wins over it
        for source, dest in _python_binds(self.base):
            head += ["--ro-bind", source, dest]
        head += ["--setenv", "PATH", os.path.join(sys.prefix, "bin") + ":" + SANDBOX_ENV["PATH"]]
        limits = [f"--nproc={self._nproc()}", f"--as={self.limits.memory_mb * 1024 * 1024}", "--core=0"]
        if self.quota_mode == "watchdog":
            limits.append(f"--fsize={self.limits.disk_mb * 1024 * 1024}")
        launcher = ["/bin/sh", "-c", 'echo $$ > "$0/exec-$$" || exit 126; exec "$@"', self.rundir, _tool("prlimit"), *limits, "--"]
        if self.privileged:
            launcher += [_tool("setpriv"), f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        launcher += [_tool("nice"), "-n", "10", shutil.which("bwrap") or "bwrap"]
        return launcher + head[1:] + tail

    def _nproc(self) -> int:
        return self.limits.pids if self.privileged else _count_procs_of(os.getuid()) + self.limits.pids

    def cancel(self) -> None:
        kill_sandbox_root(self.root, mark=True)

    # -- files (host side, symlink-safe) ------------------------------------------------------------

    def read_file(self, path: str, *, allowed: list[str] | None = None) -> str:
        rel = check_relative_path(path)
        data = self._fileop(fileops.read_bytes, self.workspace, rel, self.limits.max_file_bytes, allowed)
        return data.decode("utf-8", errors="replace")

    def write_file(self, path: str, content: str, *, allowed: list[str] | None = None) -> None:
        rel = check_relative_path(path)
        data = content.encode("utf-8")
        owner = (self.uid, self.gid) if self.privileged else None
        self._fileop(fileops.write_bytes, self.workspace, rel, data, self.limits.max_file_bytes, owner, allowed)

    def list_files(self, path: str = ".", *, allowed: list[str] | None = None) -> list[str]:
        rel = check_relative_path(path, allow_root=True)
        return self._fileop(fileops.list_files, self.workspace, rel, 100000, allowed)

    def resolve_path(self, path: str, *, allowed: list[str] | None = None) -> str:
        rel = check_relative_path(path, allow_root=True)
        return self._fileop(fileops.resolve, self.workspace, rel, allowed)

    def links_out_of_scope(self, paths: list[str], allowed: list[str] | None = None) -> list[str]:
        return self._fileop(fileops.links_out_of_scope, self.workspace, list(paths), allowed)

    def _fileop(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._destroyed:
            raise SandboxError("sandbox destroyed")
        try:
            return fn(*args)
        except fileops.OutOfScope as e:
            raise PathOutsideScope(str(e)) from None
        except fileops.Rejected as e:
            raise PathRejected(str(e)) from None
        except fileops.TooLarge as e:
            raise FileTooLarge(str(e)) from None

    # -- teardown ------------------------------------------------------------------------------------

    def destroy(self) -> None:
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        if os.path.isdir(getattr(self, "root", "")):
            destroy_sandbox_root(self.root)


# -- interactive processes (MCP servers over stdio) ------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_names(env: dict[str, str]) -> None:
    for name, value in env.items():
        if not _ENV_NAME.match(name) or "\0" in value:
            raise SandboxError(f"invalid environment variable name {name[:40]!r} (or a NUL in its value)")


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin")
    if not path:
        raise SandboxError(f"{name} (util-linux) is needed to start an interactive process in a bubblewrap sandbox")
    return path


def _reachable_by_others(path: str) -> bool:
    """Whether an unrelated uid may walk to ``path`` (o+x on every directory on the way)."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        try:
            if not os.stat(current).st_mode & 0o001:
                return False
        except OSError:
            return False
        current = os.path.join(current, part)
    return True


def _python_binds(base: str) -> list[tuple[str, str]]:
    """(host source, sandbox path) pairs that make the worker's Python usable in a sandbox: the venv and the
    interpreter it points at, at their own paths. A path the sandbox uid cannot reach (a pyenv under a 0700
    /root) is served from a hard-linked mirror under the sandbox base, made once, like the shared /etc."""
    binds = []
    for path in dict.fromkeys(os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)):
        if path == "/usr" or path.startswith("/usr/") or not os.path.isdir(path):
            continue  # /usr is bound already
        if os.geteuid() != 0 or _reachable_by_others(path):
            binds.append((path, path))
        else:
            binds.append((_python_mirror(base, path), path))
    return binds


def _python_mirror(base: str, source: str) -> str:
    key = zlib.crc32(f"{source}|{_mtime(source)}|{_mtime(os.path.join(source, 'bin'))}".encode())
    path = os.path.join(base, f"python-{key:08x}")
    if os.path.isdir(path):
        return path
    tmp = tempfile.mkdtemp(prefix="python-tmp-", dir=base)
    try:
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            # A venv never imports the interpreter's own site-packages; the stdlib's test suite is dead weight.
            dirnames[:] = [d for d in dirnames if d != "site-packages" and not (d == "test" and rel.startswith("lib/python"))]
            target = os.path.normpath(os.path.join(tmp, rel))
            os.makedirs(target, exist_ok=True)
            os.chmod(target, os.stat(dirpath).st_mode & 0o755)
            for name in filenames + [d for d in os.listdir(dirpath) if d not in filenames and os.path.islink(os.path.join(dirpath, d))]:
                src, dst = os.path.join(dirpath, name), os.path.join(target, name)
                if os.path.lexists(dst):
                    continue
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                else:
                    try:
                        os.link(src, dst)
                    except OSError:  # another file system: copy
                        shutil.copy2(src, dst)
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(path):  # not a lost race: a real failure
            raise
    return path


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pid_belongs_to(pid: int, root: str) -> bool:
    """Guard against pid reuse: the process must be a bwrap whose command line names this sandbox root."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == b"bwrap" and any(a.startswith(root.encode() + b"/") for a in cmdline)


def kill_sandbox_root(root: str, *, mark: bool = True) -> int:
    """Kill every command running in the sandbox whose host directory is ``root``. Returns how many."""
    rundir = os.path.join(root, "run")
    if mark:
        try:
            with open(os.path.join(rundir, "cancelled"), "w") as f:
                f.write(str(time.time()))
        except OSError:
            pass
    n = 0
    try:
        names = os.listdir(rundir)
    except OSError:
        return 0
    for name in names:
        if not name.startswith("exec-"):
            continue
        try:
            pid = int(name[5:])
        except ValueError:
            continue
        if _pid_belongs_to(pid, root):
            _killpg(pid)
            n += 1
    meta = read_meta(root)
    if meta and meta.get("privileged") and os.geteuid() == 0:
        _kill_all_of_uid(int(meta["uid"]))
    return n


def _kill_all_of_uid(uid: int) -> None:
    """kill(-1) as the sandbox's own uid: every process of that uid (the uid is the sandbox's alone)."""
    if uid < UID_BASE or uid >= UID_BASE + UID_SPAN:
        return
    try:
        subprocess.run(
            ["/bin/kill", "-KILL", "-1"], user=uid, group=uid, extra_groups=[], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        pass


def read_meta(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def destroy_sandbox_root(root: str) -> None:
    meta = read_meta(root)
    kill_sandbox_root(root, mark=True)
    for area in AREAS:  # the quota mounts first: rmtree must never walk into a mount it cannot remove
        try:
            _umount(os.path.join(root, area))
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)
    if os.path.isdir(root):  # something still writing: kill again and retry once
        time.sleep(0.1)
        kill_sandbox_root(root, mark=False)
        shutil.rmtree(root, ignore_errors=True)
    if meta and meta.get("privileged") and "uid" in meta:
        _release_uid(int(meta["uid"]))


def iter_roots(base: str | None = None, scope: str | None = None) -> list[tuple[str, dict]]:
    """(root, meta) of the sandboxes under ``base``; only those of ``scope`` when given."""
    base = base or default_root()
    out: list[tuple[str, dict]] = []
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        root = os.path.join(base, name)
        if name == "uids" or name.startswith("etc-") or not os.path.isdir(root):
            continue
        meta = read_meta(root)
        if meta is not None and (scope is None or meta.get("scope", "default") == scope):
            out.append((root, meta))
    return out


def kill_run(run_id: str, base: str | None = None, scope: str | None = None) -> int:
    return sum(kill_sandbox_root(root) for root, meta in iter_roots(base, scope) if meta.get("run_id") == run_id)
