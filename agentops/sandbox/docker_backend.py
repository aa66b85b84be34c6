"""Docker backend: the production sandbox.

One container per run, labelled ``agentops.run=<run_id>``, ``agentops.sandbox=1`` and ``agentops.scope=<scope>``, kept alive by a tiny
python3 init that reaps orphans. Commands are spawned by a small in-container command server (one
``docker exec`` kept open per sandbox, speaking a framed protocol over its stdin/stdout): a command costs a
few ms instead of the ~40 ms of a runc ``docker exec``; when the server is gone (kill switch, the agent's own
``kill -9 -1``, pids exhausted) it is restarted, with plain streamed ``docker exec`` as the fallback.
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
- contain ``/bin/sh``, ``python3`` (3.8+; runs the init, the command server, the file tools and the kill
  helper), ``tar`` and
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
import queue
import re
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
from typing import Any, BinaryIO

from . import fileops, programs
from .base import (
    LABEL_RUN,
    LABEL_SANDBOX,
    LABEL_SCOPE,
    POLL_INTERVAL_S,
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
    safe_name,
)

BACKEND = "docker"
DEFAULT_IMAGE = "agentops-sandbox:1"
USER = "1000:1000"
STATE_DIR = "/tmp/.agentops"

# Every command: record the in-container pid (session leader: docker exec starts a new session), make the
# command the OOM killer's first choice rather than the init, then become the command.
WRAP = (
    "[ -d " + STATE_DIR + " ] || mkdir -p " + STATE_DIR + " 2>/dev/null; echo $$ > " + STATE_DIR + '/"$0".pid; '
    'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"'
)

# The in-container programs (agentops/sandbox/programs/*.py), shipped as `python3 -c` source.
INIT = programs.source("init")
KILL = programs.source("killer")
SERVER = programs.source("command_server")

# docker.DockerClient objects (the SDK ships no type information: Any).
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def get_client(timeout: int = 60) -> Any:
    """One docker client per process, DOCKER_HOST and timeout (honours DOCKER_HOST / DOCKER_TLS_VERIFY /
    DOCKER_CERT_PATH, like the docker CLI)."""
    import docker  # lazy: the docker SDK is needed only when Docker is the backend (not by a bubblewrap-only setup)

    key = f"{os.environ.get('DOCKER_HOST', '')}|{timeout}"
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = docker.from_env(timeout=timeout)
            _clients[key] = client
        return client


def unavailable_reason(image: str | None = None) -> str | None:
    try:
        import docker  # noqa: F401  # lazy: this import is the check that the optional docker SDK is installed
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


def _raw_socket(sock: Any) -> Any:
    return getattr(sock, "_sock", sock)


def _readable(raw: Any, wait: float) -> bool:
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


def _exec_wait_exit(api: Any, exec_id: str, timeout: float = 5.0) -> int | None:
    end = time.monotonic() + timeout
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            return info.get("ExitCode")
        if time.monotonic() > end:
            return None
        time.sleep(0.005)


def exec_capture(
    container_id: str, argv: list[str], *, stdin: bytes | BinaryIO | None = None, timeout: float = 60.0, max_bytes: int = 50_000_000
) -> tuple[int | None, bytes, bytes]:
    """Run argv in the container (as the sandbox user), optionally feeding stdin (bytes or a binary file, streamed);
    return (exit, stdout, stderr)."""
    api = get_client().api
    try:
        ex = api.exec_create(container_id, argv, stdout=True, stderr=True, stdin=stdin is not None, tty=False, user=USER, workdir=WORKDIR)
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
# the command server: one long-lived `docker exec` that spawns the commands

_OUT, _EXIT, _SPAWN_ERROR, _LOST = 1, 2, 3, 0

# The command server (programs/command_server.py) speaks in frames of these kinds.


class _CommandServer:
    def __init__(self, container_id: str) -> None:
        api = get_client().api
        try:
            ex = api.exec_create(
                container_id, ["python3", "-u", "-c", SERVER, WORKDIR], stdin=True, stdout=True, stderr=True, tty=False, user=USER, workdir=WORKDIR
            )
            self._sock = api.exec_start(ex["Id"], socket=True)
        except Exception as e:
            raise SandboxError(f"cannot start the command server: {e}") from e
        self._raw = _raw_socket(self._sock)
        # The hijacked socket inherits the client's timeout (60 s): a command silent that long made recv()
        # time out, the reader declared the server lost and the command "exit 137". Only the controller's
        # timeout may end a command, so the reader blocks for as long as the server lives.
        self._raw.settimeout(None)
        self.dead = False
        self._queues: dict[int, queue.Queue] = {}
        self._qlock = threading.Lock()
        self._wlock = threading.Lock()
        self._next = 0
        self._thread = threading.Thread(target=self._read, name="sandbox-command-server", daemon=True)
        self._thread.start()

    def submit(self, argv: list[str]) -> tuple[int, queue.Queue]:
        q: queue.Queue = queue.Queue(maxsize=64)  # bounded: a slow consumer slows the command, not our memory
        with self._qlock:
            self._next += 1
            cid = self._next
            self._queues[cid] = q
        self._send({"op": "run", "id": cid, "argv": argv}, cid)
        return cid, q

    def kill(self, cid: int) -> None:
        try:
            self._send({"op": "kill", "id": cid}, cid)
        except SandboxError:
            pass

    def forget(self, cid: int) -> None:
        with self._qlock:
            self._queues.pop(cid, None)

    def _send(self, msg: dict, cid: int) -> None:
        data = (json.dumps(msg) + "\n").encode()
        try:
            with self._wlock:
                self._raw.sendall(data)
        except OSError as e:
            self.dead = True
            self.forget(cid)
            raise SandboxError(f"command server gone: {e}") from e

    def _deliver(self, cid: int, item: tuple[int, bytes]) -> None:
        while True:
            with self._qlock:
                q = self._queues.get(cid)
            if q is None:
                return  # nobody waits for this command any more
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _read(self) -> None:
        frames, buf = _FrameReader(), bytearray()
        try:
            while True:
                data = self._raw.recv(65536)
                if not data:
                    break
                for stream, payload in frames.feed(data):
                    if stream != 1:
                        continue  # the server's own stderr: only a crash would write there
                    buf += payload
                    while len(buf) >= 9:
                        cid, kind, size = struct.unpack(">IBI", bytes(buf[:9]))
                        if len(buf) < 9 + size:
                            break
                        body = bytes(buf[9 : 9 + size])
                        del buf[: 9 + size]
                        self._deliver(cid, (kind, body))
        except (OSError, ValueError):
            pass
        finally:
            self.dead = True
            with self._qlock:
                pending = list(self._queues)
            for cid in pending:
                self._deliver(cid, (_LOST, b""))

    def close(self) -> None:
        self.dead = True
        try:
            self._sock.close()
        except Exception:
            pass


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
        scope: str = "default",
        workspace_size_mb: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.scope = scope
        self.workdir = WORKDIR
        self.limits = limits or SandboxLimits()
        workspace_mb = int(workspace_size_mb or self.limits.disk_mb)
        tmp_mb = self.limits.tmp_quota_mb
        self.image = image or DEFAULT_IMAGE
        self._destroyed = False
        self._lock = threading.Lock()
        self._server: _CommandServer | None = None
        self._server_failures = 0
        self._server_failed_at = 0.0
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
                    labels={LABEL_RUN: run_id, LABEL_SANDBOX: "1", LABEL_SCOPE: scope},
                    hostname="sandbox",
                    user=USER,
                    working_dir=WORKDIR,
                    environment={
                        "HOME": "/home/agent",
                        "USER": "agent",
                        "LANG": "C.UTF-8",
                        "TERM": "dumb",
                        "PYTHONUNBUFFERED": "1",
                        "PYTHONDONTWRITEBYTECODE": "1",
                        "GIT_TERMINAL_PROMPT": "0",
                    },
                    network_mode="none",
                    read_only=True,
                    # Sized from SandboxLimits (disk_mb, tmp_mb), like bubblewrap's quota mounts; nr_inodes
                    # bounds the RAM that empty files would take outside ``size``.
                    tmpfs={
                        "/tmp": f"rw,exec,nosuid,nodev,size={tmp_mb}m,nr_inodes={max(4096, tmp_mb * 128)},mode=1777",
                        "/home/agent": f"rw,exec,nosuid,nodev,size={tmp_mb}m,nr_inodes={max(4096, tmp_mb * 128)},uid=1000,gid=1000,mode=0755",
                        WORKDIR: f"rw,exec,nosuid,nodev,size={workspace_mb}m,nr_inodes={max(4096, workspace_mb * 128)},uid=1000,gid=1000,mode=0755",
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
            self._command_server()  # starts in the engine while the clone finishes and the tar streams in
            t.join()
            if "error" in clone_result:
                err = clone_result["error"]
                raise err if isinstance(err, SandboxError) else SandboxError(f"clone failed: {err}")
            self.base_commit = clone_result["sha"]
            with open(clone_result["tar"], "rb") as tar_file:
                rc, _, err = exec_capture(self.container_id, ["tar", "-x", "-f", "-", "-C", WORKDIR], stdin=tar_file, timeout=600)
            if rc != 0:
                raise SandboxError(f"copying the workspace into the container failed: {err.decode(errors='replace')}")
        except BaseException:
            t.join()
            self.destroy()
            raise
        finally:
            shutil.rmtree(host_tmp, ignore_errors=True)

    def _container(self) -> str:
        """The container's id: set in __init__ before any command can run, so never missing here."""
        if self.container_id is None:
            raise SandboxError("the sandbox has no container")
        return self.container_id

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
        timeout = self.limits.clamp_timeout(timeout)
        out = OutputBuffer(self.limits.max_output_bytes, on_output)
        server = self._command_server()
        if server is not None:
            return self._exec_server(server, argv, timeout, out, cancel_check)
        return self._exec_runc(argv, timeout, out, cancel_check)

    # The fast path: a command server started once per sandbox (one `docker exec` kept open) spawns every
    # command itself, saving the ~40 ms a `docker exec` costs in runc. When it cannot run (pids exhausted,
    # killed by a kill switch or by the agent's own `kill -9 -1`), it is restarted on the next command, and
    # the plain `docker exec` path below is the fallback.

    def _command_server(self) -> _CommandServer | None:
        with self._lock:
            if self._server is not None and not self._server.dead:
                return self._server
            if self._server_failures >= 3 and time.monotonic() - self._server_failed_at < 10.0:
                return None  # keep to plain `docker exec` for a while
            try:
                self._server = _CommandServer(self._container())
                self._server_failures = 0
            except SandboxError:
                self._server = None
                self._server_failures += 1
                self._server_failed_at = time.monotonic()
            return self._server

    def _exec_server(self, server: _CommandServer, argv: list[str], timeout: float, out: OutputBuffer, cancel_check: Callable[[], bool] | None) -> ExecResult:
        started = time.monotonic()
        started_wall = time.time()
        deadline = started + timeout
        timed_out = cancelled = lost = False
        exit_code: int | None = None
        killed_at: float | None = None
        escalated = False
        try:
            cid, q = server.submit(argv)
        except SandboxError:
            return self._exec_runc(argv, timeout, out, cancel_check)
        try:
            while True:
                now = time.monotonic()
                if killed_at is None:
                    if cancel_check is not None and _safe_call(cancel_check):
                        cancelled = True
                    elif now >= deadline:
                        timed_out = True
                    if cancelled or timed_out:
                        server.kill(cid)
                        killed_at = now
                elif not escalated and now - killed_at > 1.0:
                    escalated = True  # the server could not end it: kill everything but init
                    kill_container(self._container())
                elif now - killed_at > 3.0:
                    break
                wait = POLL_INTERVAL_S if killed_at is None else 0.1
                if killed_at is None:
                    wait = max(0.0, min(wait, deadline - now))
                try:
                    kind, payload = q.get(timeout=wait)
                except queue.Empty:
                    continue
                if kind == _OUT:
                    out.feed(payload)
                elif kind == _EXIT:
                    exit_code = int(payload)
                    break
                elif kind == _SPAWN_ERROR:
                    out.feed(b"cannot start the command: " + payload + b"\n")
                    exit_code = 126
                    break
                else:  # the server died under the command
                    lost = True
                    break
        finally:
            server.forget(cid)
        if timed_out or cancelled:
            exit_code = None
        elif self._destroyed:
            cancelled, exit_code = True, None
        elif lost or exit_code == 137:
            if self._cancelled_since(started_wall):
                cancelled, exit_code = True, None
            elif lost:
                exit_code = 137  # everything was killed from inside the sandbox (e.g. `kill -9 -1`)
        return out.result(exit_code=exit_code, timed_out=timed_out, cancelled=cancelled, started=started, backend=BACKEND)

    def _exec_runc(self, argv: list[str], timeout: float, out: OutputBuffer, cancel_check: Callable[[], bool] | None) -> ExecResult:
        token = uuid.uuid4().hex
        api = get_client().api
        started = time.monotonic()
        started_wall = time.time()
        try:
            ex = api.exec_create(self.container_id, ["/bin/sh", "-c", WRAP, token, *argv], stdout=True, stderr=True, tty=False, user=USER, workdir=WORKDIR)
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
                    kill_container(self._container())
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
        return out.result(exit_code=exit_code, timed_out=timed_out, cancelled=cancelled, started=started, backend=BACKEND)

    def _kill_token(self, token: str) -> None:
        try:
            exec_capture(self._container(), ["python3", "-c", KILL, token, STATE_DIR], timeout=10)
        except SandboxError:
            pass  # the caller escalates when the command does not end

    def _cancelled_since(self, wall: float) -> bool:
        for _ in range(10):  # the killer may still be sweeping and kill this very `cat`: retry
            try:
                rc, out, _ = exec_capture(self._container(), ["cat", f"{STATE_DIR}/cancelled"], timeout=10)
                if rc != 137:
                    return rc == 0 and float(out.strip() or 0) >= wall - 0.05
            except (SandboxError, ValueError):
                return False
            time.sleep(0.05)
        return False

    def interactive_argv(self, argv: list[str], *, env: dict[str, str] | None = None) -> list[str]:
        """See Sandbox.interactive_argv: ``docker exec -i`` as the sandbox user in the workspace, env passed by
        name (``-e NAME``: the docker CLI reads the value from its own environment). Inside, a supervisor holds
        the command: when its stdin closes (the client closed, or the docker CLI was killed, and docker does not
        forward that kill into the container) it kills the command's process group, so nothing lingers."""
        if self._destroyed or not self.container_id:
            raise SandboxError("sandbox destroyed")
        if not argv:
            raise ValueError("empty command")
        names = []
        for name, value in (env or {}).items():
            if not _ENV_NAME.match(name) or name.startswith("DOCKER_") or "\0" in value:
                raise SandboxError(f"invalid environment variable name {name[:40]!r} (or a NUL in its value)")
            names += ["-e", name]
        cli = shutil.which("docker")
        if not cli:
            raise SandboxError("the docker CLI is needed to start an interactive process in a Docker sandbox")
        # The CLI's own connection settings (DOCKER_HOST ...) are set after the server's env, so they win.
        host_env = [f"{k}={os.environ[k]}" for k in _CLI_ENV if k in os.environ]
        token = uuid.uuid4().hex
        inner = ["/bin/sh", "-c", WRAP, token, "python3", "-c", _SUPERVISOR, *argv]
        return ["/usr/bin/env", *host_env, cli, "exec", "-i", "-u", USER, "-w", WORKDIR, *names, self.container_id, *inner]

    def cancel(self) -> None:
        if self.container_id and not self._destroyed:
            kill_container(self.container_id)

    # -- files (inside the container, same rules as the host-side bubblewrap code) -------------------

    def _fileop(self, op: str, rel: str, stdin: bytes | None = None, allowed: list[str] | None = None) -> bytes:
        if self._destroyed or not self.container_id:
            raise SandboxError("sandbox destroyed")
        argv = ["python3", "-c", _FILEOPS_SOURCE, op, WORKDIR, rel, str(self.limits.max_file_bytes)]
        if allowed is not None:
            argv.append(json.dumps(list(allowed)))
        rc, out, err = exec_capture(
            self.container_id,
            argv,
            stdin=stdin,
            timeout=60,
            max_bytes=self.limits.max_file_bytes + 1024,
        )
        if rc == 0:
            return out
        try:
            info = json.loads(err.decode() or "{}")
        except ValueError:
            info = {}
        kind, msg = info.get("error"), info.get("message") or err.decode(errors="replace")[-500:]
        if kind == "out_of_scope":
            raise PathOutsideScope(msg)
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

    def read_file(self, path: str, *, allowed: list[str] | None = None) -> str:
        rel = check_relative_path(path)
        return self._fileop("read", rel, allowed=allowed).decode("utf-8", errors="replace")

    def write_file(self, path: str, content: str, *, allowed: list[str] | None = None) -> None:
        rel = check_relative_path(path)
        data = content.encode("utf-8")
        if len(data) > self.limits.max_file_bytes:
            raise FileTooLarge(f"content is {len(data)} bytes, more than {self.limits.max_file_bytes}")
        self._fileop("write", rel, stdin=data, allowed=allowed)

    def list_files(self, path: str = ".", *, allowed: list[str] | None = None) -> list[str]:
        rel = check_relative_path(path, allow_root=True)
        return json.loads(self._fileop("list", rel, allowed=allowed).decode() or "[]")

    def resolve_path(self, path: str, *, allowed: list[str] | None = None) -> str:
        rel = check_relative_path(path, allow_root=True)
        return json.loads(self._fileop("resolve", rel, allowed=allowed).decode())

    def links_out_of_scope(self, paths: list[str], allowed: list[str] | None = None) -> list[str]:
        return json.loads(self._fileop("links", json.dumps(list(paths)), allowed=allowed).decode() or "[]")

    # -- teardown ------------------------------------------------------------------------------------

    def destroy(self) -> None:
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        if self._server is not None:
            self._server.close()
        if self.container_id:
            remove_container(self.container_id)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What the docker CLI needs to reach the engine the way the SDK does (no credentials: they would sit on a command line).
_CLI_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_API_VERSION", "HOME", "PATH")

# In the container, the supervisor of an interactive process (see DockerSandbox.interactive_argv).
_SUPERVISOR = """
import os, signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)
def pump():
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            child.stdin.write(data)
            child.stdin.flush()
    except OSError:
        pass
    try:
        child.stdin.close()
    except OSError:
        pass
    try:
        child.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=pump, daemon=True).start()
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


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
        rc, _, _ = exec_capture(container_id, ["python3", "-c", KILL, "all", STATE_DIR], timeout=10)
        if rc == 0:
            return True
    except SandboxError:
        pass
    import docker  # lazy: the docker SDK is needed only when Docker is the backend

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
    import docker  # lazy: the docker SDK is needed only when Docker is the backend

    try:
        get_client().api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if "already in progress" not in str(e):
            raise SandboxError(f"cannot remove sandbox container {container_id[:12]}: {e}") from e


def list_sandbox_containers(run_id: str | None = None, scope: str | None = None) -> list[dict]:
    labels = [f"{LABEL_SANDBOX}=1"]
    if run_id is not None:
        labels.append(f"{LABEL_RUN}={run_id}")
    if scope is not None:
        labels.append(f"{LABEL_SCOPE}={scope}")
    return get_client().api.containers(all=True, filters={"label": labels})


def kill_run(run_id: str, scope: str | None = None) -> int:
    n = 0
    for c in list_sandbox_containers(run_id, scope):
        if c.get("State") == "running" and kill_container(c["Id"]):
            n += 1
    return n
