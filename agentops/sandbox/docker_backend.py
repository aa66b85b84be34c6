"""Docker backend: the production sandbox.

One container per run, labelled ``agentops.run=<run_id>`` and ``agentops.sandbox=1``, kept alive by a tiny
python3 init that reaps orphans; every command is a ``docker exec`` streamed over the engine's socket.
The container has no network (``network_mode=none``), a read-only root file system, tmpfs for /tmp,
/home/agent and /workspace, drops every capability, runs as 1000:1000 with ``no-new-privileges``, and is
capped by ``pids_limit``, ``mem_limit`` (= memswap) and ``nano_cpus``.

The workspace is cloned on the worker's host and streamed into the container as a tar over ``docker exec``
stdin, so a remote engine (``DOCKER_HOST=tcp://…`` or ``ssh://…``) works the same as a local one: only
the engine's API is used, never a bind mount.

Using your own image
--------------------
The default image is ``agentops-sandbox:1``, built by ``scripts/build-sandbox-image`` (Debian bookworm
with python3, pip, pytest, git). To point an agent at your own image (your language toolchain, your
dependencies pre-installed), set ``AGENTOPS_SANDBOX_IMAGE = "registry.example.com/team/agent-sandbox:2"``
in settings (or pass ``image=`` to ``create_sandbox``). The image must:

- already be present on the engine (``docker pull`` it once; agentops never pulls, since sandboxes have no
  network and a pull at run time would be a silent dependency);
- contain ``/bin/sh``, ``python3`` (3.8+; runs the init, the file tools and the kill helper), ``tar`` and
  ``git``;
- work as uid/gid 1000 (the container runs with ``user="1000:1000"``; a passwd entry is nice-to-have,
  HOME is /home/agent on a tmpfs);
- not rely on writing outside /workspace, /tmp and /home/agent (the root file system is read-only).

Example Dockerfile::

    FROM python:3.12-slim
    RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \\
        && useradd --uid 1000 --create-home agent && mkdir /workspace && chown agent /workspace
    RUN pip install --no-cache-dir pytest -r /tmp/requirements.txt   # your deps
    USER 1000:1000
    WORKDIR /workspace
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO

from . import fileops
from .base import (
    LABEL_RUN,
    LABEL_SANDBOX,
    POLL_INTERVAL_S,
    WORKDIR,
    ExecResult,
    FileTooLarge,
    OutputBuffer,
    PathRejected,
    Sandbox,
    SandboxError,
    SandboxLimits,
    check_relative_path,
    prepare_clone,
    safe_name,
)

BACKEND = "docker"
DEFAULT_IMAGE = "agentops-sandbox:1"
USER = "1000:1000"
STATE_DIR = "/tmp/.agentops"

# PID 1: reap orphans (os.wait) forever; a kill(-1) from uid 1000 spares PID 1 of the namespace.
INIT = (
    "import os,time,signal\n"
    "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.2)\n"
)

# Every command: record the in-container pid (session leader: docker exec starts a new session), make the
# command the OOM killer's first choice rather than the init, then become the command.
WRAP = (
    '[ -d ' + STATE_DIR + ' ] || mkdir -p ' + STATE_DIR + ' 2>/dev/null; echo $$ > ' + STATE_DIR + '/"$0".pid; '
    'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"'
)

# Kill helper: "all" -> everything but PID 1 (and mark the kill, for cancelled=True elsewhere);
# "<token>" -> the session of that command and all its descendants, repeated until none is left.
KILL = r"""
import os, sys, signal, time
me = os.getpid()
mode = sys.argv[1]
def procs():
    out = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        pid = int(p)
        if pid in (1, me):
            continue
        try:
            with open('/proc/%d/stat' % pid, 'rb') as f:
                st = f.read()
            rest = st[st.rindex(b')') + 2:].split()
            out[pid] = (int(rest[1]), int(rest[3]))
        except Exception:
            pass
    return out
if mode == 'all':
    os.makedirs('STATE', exist_ok=True)
    with open('STATE/cancelled', 'w') as f:
        f.write(repr(time.time()))
    for _ in range(50):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        if not procs():
            break
        time.sleep(0.01)
    sys.exit(0)
try:
    with open('STATE/%s.pid' % mode) as f:
        sid = int(f.read().strip())
except Exception:
    sys.exit(0)
for _ in range(100):
    ps = procs()
    doomed = {p for p, (pp, s) in ps.items() if s == sid or p == sid}
    grew = True
    while grew:
        grew = False
        for p, (pp, s) in ps.items():
            if pp in doomed and p not in doomed:
                doomed.add(p)
                grew = True
    if not doomed:
        break
    for p in doomed:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.005)
""".replace("STATE", STATE_DIR)

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def get_client(timeout: int = 60):  # type: ignore[no-untyped-def]
    """One docker client per process, DOCKER_HOST and timeout (honours DOCKER_HOST / DOCKER_TLS_VERIFY /
    DOCKER_CERT_PATH, like the docker CLI)."""
    import docker  # imported lazily: the bubblewrap-only embedded setup need not load it

    key = f"{os.environ.get('DOCKER_HOST', '')}|{timeout}"
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = docker.from_env(timeout=timeout)
            _clients[key] = client
        return client


def unavailable_reason(image: str | None = None) -> str | None:
    try:
        import docker  # noqa: F401
    except ImportError:
        return "python package 'docker' is not installed"
    try:
        client = get_client(timeout=5)  # a dead remote engine must not stall the caller for long
        client.ping()
    except Exception as e:
        return f"docker engine not reachable ({os.environ.get('DOCKER_HOST') or 'default socket'}): {e}"
    if image is not None:
        try:
            client.images.get(image)
        except Exception as e:
            return f"image {image} not available on the engine (build it with scripts/build-sandbox-image): {e}"
    return None


# ---------------------------------------------------------------------------------------------------
# low-level exec over the engine's hijacked socket


def _raw_socket(sock):  # type: ignore[no-untyped-def]
    return getattr(sock, "_sock", sock)


def _readable(raw, wait: float) -> bool:  # type: ignore[no-untyped-def]
    # TLS sockets (DOCKER_HOST=tcp://… with TLS) may hold decrypted bytes that select() cannot see
    pending = getattr(raw, "pending", None)
    if pending is not None and pending() > 0:
        return True
    ready, _, _ = select.select([raw], [], [], wait)
    return bool(ready)


class _FrameReader:
    """Parses docker's multiplexed stream (8-byte header: stream id, 3 zero bytes, big-endian length)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        frames = []
        while len(self.buf) >= 8:
            stream, size = self.buf[0], struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < 8 + size:
                break
            frames.append((stream, bytes(self.buf[8 : 8 + size])))
            del self.buf[: 8 + size]
        return frames


def _exec_wait_exit(api, exec_id: str, timeout: float = 5.0) -> int | None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            return info.get("ExitCode")
        if time.monotonic() > end:
            return None
        time.sleep(0.005)


def exec_capture(container_id: str, argv: list[str], *, stdin: bytes | BinaryIO | None = None,
                 timeout: float = 60.0, max_bytes: int = 50_000_000) -> tuple[int | None, bytes, bytes]:
    """Run argv in the container (as the sandbox user), optionally feeding stdin (bytes or a binary file, streamed);
    return (exit, stdout, stderr)."""
    api = get_client().api
    try:
        ex = api.exec_create(container_id, argv, stdout=True, stderr=True, stdin=stdin is not None,
                             tty=False, user=USER, workdir=WORKDIR)
        sock = api.exec_start(ex["Id"], socket=True)
    except Exception as e:
        raise SandboxError(f"docker exec failed: {e}") from e
    raw = _raw_socket(sock)
    out, err = bytearray(), bytearray()
    reader = _FrameReader()
    try:
        if isinstance(stdin, (bytes, bytearray)):
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
        elif stdin is not None:
            while chunk := stdin.read(1 << 20):
                raw.sendall(chunk)
            raw.shutdown(socket.SHUT_WR)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise SandboxError(f"docker exec {argv[0]} did not finish in {timeout}s")
            ready = _readable(raw, min(left, 1.0))
            if not ready:
                continue
            data = raw.recv(65536)
            if not data:
                break
            for stream, payload in reader.feed(data):
                (err if stream == 2 else out).extend(payload)
            if len(out) > max_bytes or len(err) > max_bytes:
                raise SandboxError("docker exec output too large")
    finally:
        try:
            sock.close()
        except Exception:
            pass
    return _exec_wait_exit(api, ex["Id"]), bytes(out), bytes(err)


# ---------------------------------------------------------------------------------------------------


class DockerSandbox(Sandbox):
    backend = BACKEND

    def __init__(
        self,
        *,
        run_id: str,
        repo: str,
        ref: str = "HEAD",
        limits: SandboxLimits | None = None,
        image: str | None = None,
        workspace_size_mb: int = 2048,
    ) -> None:
        self.run_id = run_id
        self.workdir = WORKDIR
        self.limits = limits or SandboxLimits()
        self.image = image or DEFAULT_IMAGE
        self._destroyed = False
        self._lock = threading.Lock()
        self.container_id: str | None = None
        client = get_client()
        host_tmp = tempfile.mkdtemp(prefix="agentops-clone-")
        clone_result: dict = {}

        def clone() -> None:  # runs while the engine creates and starts the container
            try:
                dest = os.path.join(host_tmp, "ws")
                clone_result["sha"] = prepare_clone(repo, ref, dest)
                # a tar file on disk, not in memory: repositories can be large
                tar_path = os.path.join(host_tmp, "ws.tar")
                with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.add(dest, arcname=".", filter=_tar_owner)
                clone_result["tar"] = tar_path
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                clone_result["error"] = e

        t = threading.Thread(target=clone, name=f"sandbox-clone-{run_id}", daemon=True)
        t.start()
        try:
            try:
                container = client.containers.create(
                    self.image,
                    command=["python3", "-c", INIT],
                    name=f"agentops-{safe_name(run_id)}-{uuid.uuid4().hex[:8]}",
                    labels={LABEL_RUN: run_id, LABEL_SANDBOX: "1"},
                    hostname="sandbox",
                    user=USER,
                    working_dir=WORKDIR,
                    environment={
                        "HOME": "/home/agent", "USER": "agent", "LANG": "C.UTF-8", "TERM": "dumb",
                        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "GIT_TERMINAL_PROMPT": "0",
                    },
                    network_mode="none",
                    read_only=True,
                    tmpfs={
                        "/tmp": "rw,exec,nosuid,nodev,size=512m,mode=1777",
                        "/home/agent": "rw,exec,nosuid,nodev,size=512m,uid=1000,gid=1000,mode=0755",
                        WORKDIR: f"rw,exec,nosuid,nodev,size={workspace_size_mb}m,uid=1000,gid=1000,mode=0755",
                    },
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    pids_limit=self.limits.pids,
                    mem_limit=f"{self.limits.memory_mb}m",
                    memswap_limit=f"{self.limits.memory_mb}m",
                    nano_cpus=int(self.limits.cpus * 1e9),
                    ipc_mode="private",
                    detach=True,
                )
                self.container_id = container.id
                container.start()
            except Exception as e:
                raise SandboxError(f"cannot start sandbox container from {self.image}: {e}") from e
            t.join()
            if "error" in clone_result:
                err = clone_result["error"]
                raise err if isinstance(err, SandboxError) else SandboxError(f"clone failed: {err}")
            self.base_commit = clone_result["sha"]
            with open(clone_result["tar"], "rb") as tar_file:
                rc, _, err = exec_capture(self.container_id, ["tar", "-x", "-f", "-", "-C", WORKDIR],
                                          stdin=tar_file, timeout=600)
            if rc != 0:
                raise SandboxError(f"copying the workspace into the container failed: {err.decode(errors='replace')}")
        except BaseException:
            t.join()
            self.destroy()
            raise
        finally:
            shutil.rmtree(host_tmp, ignore_errors=True)

    # -- exec ----------------------------------------------------------------------------------------

    def exec(
        self,
        command: str | list[str],
        *,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
        cancel_check: Callable[[], bool] | None = None,
    ) -> ExecResult:
        if self._destroyed or not self.container_id:
            raise SandboxError("sandbox destroyed")
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("empty command")
        timeout = self.limits.command_timeout_s if timeout is None else timeout
        token = uuid.uuid4().hex
        out = OutputBuffer(self.limits.max_output_bytes, on_output)
        api = get_client().api
        started = time.monotonic()
        started_wall = time.time()
        try:
            ex = api.exec_create(self.container_id, ["/bin/sh", "-c", WRAP, token, *argv], stdout=True,
                                 stderr=True, tty=False, user=USER, workdir=WORKDIR)
            sock = api.exec_start(ex["Id"], socket=True)
        except Exception as e:
            raise SandboxError(f"docker exec failed: {e}") from e
        raw = _raw_socket(sock)
        reader = _FrameReader()
        deadline = started + timeout
        timed_out = cancelled = False
        killed_at: float | None = None
        escalated = False
        try:
            while True:
                now = time.monotonic()
                if killed_at is None:
                    if cancel_check is not None and _safe_call(cancel_check):
                        cancelled = True
                    elif now >= deadline:
                        timed_out = True
                    if cancelled or timed_out:
                        self._kill_token(token)
                        killed_at = now
                elif not escalated and now - killed_at > 1.0:
                    escalated = True  # the per-command kill did not end it (pids exhausted?): kill it all
                    kill_container(self.container_id)
                elif now - killed_at > 3.0:
                    break  # the kill went through; stop waiting for the stream to close
                wait = POLL_INTERVAL_S if killed_at is None else 0.1
                if killed_at is None:
                    wait = max(0.0, min(wait, deadline - now))
                ready = _readable(raw, wait)
                if not ready:
                    continue
                data = raw.recv(65536)
                if not data:
                    break
                for _stream, payload in reader.feed(data):
                    out.feed(payload)
        except (OSError, ValueError) as e:
            if not self._destroyed:
                raise SandboxError(f"lost the docker exec stream: {e}") from e
        finally:
            try:
                sock.close()
            except Exception:
                pass
        exit_code: int | None
        try:
            exit_code = _exec_wait_exit(api, ex["Id"], timeout=5.0)
        except Exception:
            if not self._destroyed:
                raise SandboxError("docker exec vanished (container gone?)") from None
            exit_code = None
        if timed_out or cancelled:
            exit_code = None
        elif self._destroyed:
            cancelled, exit_code = True, None
        elif exit_code == 137 and self._cancelled_since(started_wall):
            cancelled, exit_code = True, None
        return ExecResult(exit_code=exit_code, output=out.text(), truncated=out.truncated,
                          timed_out=timed_out, cancelled=cancelled,
                          duration_s=time.monotonic() - started, backend=BACKEND)

    def _kill_token(self, token: str) -> None:
        try:
            exec_capture(self.container_id, ["python3", "-c", KILL, token], timeout=10)  # type: ignore[arg-type]
        except SandboxError:
            pass  # the caller escalates when the command does not end

    def _cancelled_since(self, wall: float) -> bool:
        for _ in range(10):  # the killer may still be sweeping and kill this very `cat`: retry
            try:
                rc, out, _ = exec_capture(self.container_id, ["cat", f"{STATE_DIR}/cancelled"], timeout=10)  # type: ignore[arg-type]
                if rc != 137:
                    return rc == 0 and float(out.strip() or 0) >= wall - 0.05
            except (SandboxError, ValueError):
                return False
            time.sleep(0.05)
        return False

    def cancel(self) -> None:
        if self.container_id and not self._destroyed:
            kill_container(self.container_id)

    # -- files (inside the container, same rules as the host-side bubblewrap code) -------------------

    def _fileop(self, op: str, rel: str, stdin: bytes | None = None) -> bytes:
        if self._destroyed or not self.container_id:
            raise SandboxError("sandbox destroyed")
        rc, out, err = exec_capture(
            self.container_id,
            ["python3", "-c", _FILEOPS_SOURCE, op, WORKDIR, rel, str(self.limits.max_file_bytes)],
            stdin=stdin, timeout=60, max_bytes=self.limits.max_file_bytes + 1024,
        )
        if rc == 0:
            return out
        try:
            info = json.loads(err.decode() or "{}")
        except ValueError:
            info = {}
        kind, msg = info.get("error"), info.get("message") or err.decode(errors="replace")[-500:]
        if kind == "rejected":
            raise PathRejected(msg)
        if kind == "too_large":
            raise FileTooLarge(msg)
        if kind == "not_found":
            raise FileNotFoundError(rel)
        if kind == "is_a_directory":
            raise IsADirectoryError(rel)
        if kind == "os_error":
            raise OSError(msg)
        raise SandboxError(f"file tool {op} failed (exit {rc}): {msg}")

    def read_file(self, path: str) -> str:
        rel = check_relative_path(path)
        return self._fileop("read", rel).decode("utf-8", errors="replace")

    def write_file(self, path: str, content: str) -> None:
        rel = check_relative_path(path)
        data = content.encode("utf-8")
        if len(data) > self.limits.max_file_bytes:
            raise FileTooLarge(f"content is {len(data)} bytes, more than {self.limits.max_file_bytes}")
        self._fileop("write", rel, stdin=data)

    def list_files(self, path: str = ".") -> list[str]:
        rel = check_relative_path(path, allow_root=True)
        return json.loads(self._fileop("list", rel).decode() or "[]")

    # -- teardown ------------------------------------------------------------------------------------

    def destroy(self) -> None:
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        if self.container_id:
            remove_container(self.container_id)


def _safe_call(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:
        return True  # fail closed


def _tar_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 1000
    info.uname = info.gname = "agent"
    return info


with open(fileops.__file__, encoding="utf-8") as _f:
    _FILEOPS_SOURCE = _f.read()


def kill_container(container_id: str) -> bool:
    """Kill every process in the container but its init (the commands report cancelled=True).

    When even the kill helper cannot start (pids limit exhausted by a fork bomb, engine trouble), the
    container itself is killed: the sandbox is lost, but nothing keeps running (fail closed)."""
    try:
        rc, _, _ = exec_capture(container_id, ["python3", "-c", KILL, "all"], timeout=10)
        if rc == 0:
            return True
    except SandboxError:
        pass
    import docker

    try:
        get_client().api.kill(container_id)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as e:
        if "is not running" in str(e):
            return False
        raise SandboxError(f"cannot kill sandbox container {container_id[:12]}: {e}") from e


def remove_container(container_id: str) -> None:
    import docker

    try:
        get_client().api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if "already in progress" not in str(e):
            raise SandboxError(f"cannot remove sandbox container {container_id[:12]}: {e}") from e


def list_sandbox_containers(run_id: str | None = None) -> list[dict]:
    label = f"{LABEL_RUN}={run_id}" if run_id is not None else f"{LABEL_SANDBOX}=1"
    return get_client().api.containers(all=True, filters={"label": label})


def kill_run(run_id: str) -> int:
    n = 0
    for c in list_sandbox_containers(run_id):
        if c.get("State") == "running" and kill_container(c["Id"]):
            n += 1
    return n
