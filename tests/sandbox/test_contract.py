"""The sandbox contract, run against every backend (docker, bubblewrap).

Each escape attempt must be contained and leave the host unchanged.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentops.sandbox import (
    PathRejected,
    SandboxError,
    create_sandbox,
    docker_backend,
    kill_run_sandboxes,
    reap_sandboxes,
)

pytestmark = pytest.mark.slow


def sandbox_exists(sb) -> bool:
    if sb.backend == "docker":
        return bool(docker_backend.get_client().api.containers(all=True, filters={"id": sb.container_id}))
    return os.path.exists(sb.root)


# -- basics ------------------------------------------------------------------------------------------


def test_it_runs_a_command_in_a_fresh_clone(sandbox, backend):
    res = sandbox.exec(["python3", "-c", "print(1)"])
    assert (res.exit_code, res.output, res.backend) == (0, "1\n", backend)
    assert not (res.timed_out or res.cancelled or res.truncated)
    res = sandbox.exec("pwd; id -u; git status --porcelain; git log --format=%s; git config user.email")
    lines = res.output.splitlines()
    assert lines[0] == sandbox.workdir == "/workspace"
    assert lines[1] == "1000"
    assert "initial" in lines
    assert lines[-1].endswith("@agentops.invalid")


def test_it_streams_output_before_the_command_ends(sandbox):
    seen: list[tuple[float, str]] = []
    cmd = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
    res = sandbox.exec(["python3", "-c", cmd], on_output=lambda chunk: seen.append((time.monotonic(), chunk)))
    ended = time.monotonic()
    assert res.exit_code == 0
    assert len(seen) >= 2
    assert seen[0][0] < ended - 0.6, "first chunk must arrive well before the command ends"
    assert "".join(c for _, c in seen) == res.output == "tick 0\ntick 1\ntick 2\n"


def test_it_reads_writes_and_lists_files(sandbox):
    assert sandbox.read_file("calc.py").startswith("def add")
    sandbox.write_file("pkg/util.py", "X = 'é'\n")
    assert sandbox.read_file("pkg/util.py") == "X = 'é'\n"
    assert sandbox.exec("cat pkg/util.py").output == "X = 'é'\n"  # visible to commands, owned by the agent
    assert sandbox.exec("echo more >> pkg/util.py").exit_code == 0
    files = sandbox.list_files()
    assert {"calc.py", "tests/test_calc.py", "pkg/util.py", ".gitignore"} <= set(files)
    assert not any(f.startswith(".git/") for f in files)
    assert sandbox.list_files("tests") == ["tests/test_calc.py"]
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("missing.py")


def test_diff_shows_a_change_and_a_new_file(sandbox):
    sandbox.write_file("calc.py", "def add(a, b):\n    return b + a\n")
    assert sandbox.exec("echo 'print(42)' > brand_new.py").exit_code == 0
    diff = sandbox.diff()
    assert "diff --git a/calc.py b/calc.py" in diff and "+    return b + a" in diff
    assert "diff --git a/brand_new.py b/brand_new.py" in diff and "new file mode" in diff
    assert "+print(42)" in diff
    # the agent's own index is untouched: brand_new.py is still untracked
    assert "?? brand_new.py" in sandbox.exec("git status --porcelain").output


def test_destroy_removes_the_sandbox_and_is_idempotent(make_sandbox):
    sb = make_sandbox()
    assert sandbox_exists(sb)
    sb.destroy()
    assert not sandbox_exists(sb)
    sb.destroy()
    with pytest.raises(SandboxError):
        sb.exec("true")


# -- containment -------------------------------------------------------------------------------------


def _host_ips() -> list[str]:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return []
    return [ip for ip in out.split() if ":" not in ip][:2]


def test_it_has_no_network(sandbox):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    # Only this machine's own addresses are targets: loopback and the host's interface addresses.
    targets = ["127.0.0.1", *_host_ips()]
    probe = (
        "import socket, sys\n"
        "for host in sys.argv[1:]:\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n"
        f"        s.connect((host, {port})); print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('failed', host, type(e).__name__)\n"
        "print(open('/proc/net/dev').read())\n"
    )
    try:
        res = sandbox.exec(["python3", "-c", probe, *targets], timeout=30)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert "CONNECTED" not in res.output
    assert res.output.count("failed") == len(targets)
    interfaces = [ln.split(":")[0].strip() for ln in res.output.splitlines() if ":" in ln and "|" not in ln]
    assert interfaces == ["lo"], res.output


@pytest.mark.parametrize("path", ["/", "/etc/x", "../x", "a/../../x", "/workspace/calc.py", "sub/../../../etc/passwd", "", "a\x00b"])
def test_file_tools_reject_bad_paths(sandbox, path):
    with pytest.raises(PathRejected):
        sandbox.write_file(path, "pwned")
    with pytest.raises(PathRejected):
        sandbox.read_file(path)


def test_nul_bytes_in_paths_are_rejected(sandbox):
    for call in (lambda: sandbox.read_file("calc.py\x00.txt"), lambda: sandbox.write_file("x\x00", "a"), lambda: sandbox.list_files("tests\x00")):
        with pytest.raises(PathRejected):
            call()


def test_symlinks_out_of_the_workspace_are_rejected(sandbox, tmp_path):
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text("original\n")
    os.chmod(tmp_path, 0o755)
    res = sandbox.exec(f"ln -s /etc etc_link && ln -s {host_file} host_link && ln -s /etc/passwd passwd_link && ln -s calc.py inside_link")
    assert res.exit_code == 0, res.output
    for path in ("etc_link/x", "etc_link/passwd", "host_link", "passwd_link"):
        with pytest.raises(PathRejected):
            sandbox.write_file(path, "pwned\n")
        with pytest.raises(PathRejected):
            sandbox.read_file(path)
    with pytest.raises(PathRejected):
        sandbox.list_files("etc_link")
    # a link that stays inside is fine
    assert sandbox.read_file("inside_link").startswith("def add")
    # and the same attempts through commands do not reach the host
    res = sandbox.exec("echo pwned > host_link; echo pwned > /etc/x; echo pwned > ../x; echo pwned > /x; true")
    assert res.exit_code == 0
    assert host_file.read_text() == "original\n"
    assert not os.path.exists("/etc/x") and not os.path.exists("/x")
    if backend_root := getattr(sandbox, "root", None):
        assert not os.path.exists(os.path.join(backend_root, "x"))
    sandbox.exec("rm -f etc_link host_link passwd_link inside_link")


def test_a_fork_bomb_is_contained(sandbox):
    bomb = (
        "import os, sys, time\n"
        "n = 0\n"
        "for i in range(5000):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        print('fork refused after', n, type(e).__name__, flush=True)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.close(1); os.close(2); time.sleep(0.5); os._exit(0)\n"
        "    n += 1\n"
        "else:\n"
        "    print('forked', n)\n"
    )
    res = sandbox.exec(["python3", "-c", bomb], timeout=30)
    assert "fork refused after" in res.output or res.exit_code is None or res.exit_code != 0, res.output
    if "fork refused after" in res.output:
        assert int(res.output.split("fork refused after")[1].split()[0]) <= sandbox.limits.pids
    # the host can still start processes
    assert subprocess.run(["true"]).returncode == 0
    # and the sandbox recovers once the bomb's children are gone (Docker: orphans live out their sleep;
    # bubblewrap: the pid namespace died with the command)
    count = "import os; print(sum(p.isdigit() for p in os.listdir('/proc')))"
    deadline = time.monotonic() + 15
    while True:
        try:
            res = sandbox.exec(["python3", "-c", count], timeout=10)
            if res.exit_code == 0 and int(res.output) <= 5:
                break
        except (SandboxError, ValueError):
            pass
        assert time.monotonic() < deadline, "sandbox did not recover after the fork bomb"
        time.sleep(0.3)
    assert sandbox.exec("echo alive").output == "alive\n"


def test_memory_past_the_limit_is_killed_and_reported(sandbox):
    over = (sandbox.limits.memory_mb + 512) * 1024 * 1024
    res = sandbox.exec(["python3", "-c", f"b = b'x' * {over}; print('allocated')"], timeout=60)
    assert "allocated" not in res.output
    assert not res.timed_out
    assert res.exit_code not in (0, None)
    assert "MemoryError" in res.output or res.exit_code == 137, res
    assert sandbox.exec("echo alive").output == "alive\n"


def test_a_command_that_never_ends_times_out(sandbox):
    t0 = time.monotonic()
    res = sandbox.exec("sleep 60", timeout=1.5)
    assert res.timed_out and res.exit_code is None and not res.cancelled
    assert time.monotonic() - t0 <= 1.5 + 1.0
    # the command was killed, not merely abandoned
    ps = "import os\nfor p in filter(str.isdigit, os.listdir('/proc')):\n    try:\n        print(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))\n    except OSError:\n        pass\n"
    listing = sandbox.exec(["python3", "-c", ps]).output
    assert "python3 -c" in listing  # the listing works ...
    assert "sleep 60" not in listing  # ... and the command is gone


def test_huge_output_is_truncated_with_bounded_memory(sandbox):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nline = 'y' * 999 + '\\n'\nfor _ in range(50_000):\n    sys.stdout.write(line)\n"
    chunks: list[str] = []
    res = sandbox.exec(["python3", "-c", code], on_output=chunks.append, timeout=120)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert res.exit_code == 0 and res.truncated
    limit = sandbox.limits.max_output_bytes
    assert len(res.output.encode()) <= limit + 200
    dropped = 50_000_000 - limit
    assert f"[truncated {dropped} bytes]" in res.output
    assert res.output.startswith("y" * 999) and res.output.endswith("y" * 999 + "\n")
    assert sum(len(c) for c in chunks) <= limit + 200
    assert grew_mb < 40, f"worker memory grew by {grew_mb:.0f} MB"


# -- stopping ----------------------------------------------------------------------------------------


def test_cancel_check_stops_a_command_within_half_a_second(sandbox):
    t0 = time.monotonic()
    res = sandbox.exec("sleep 60", cancel_check=lambda: time.monotonic() - t0 > 0.5)
    assert res.cancelled and res.exit_code is None and not res.timed_out
    assert time.monotonic() - t0 - 0.5 <= 0.5


def test_kill_run_sandboxes_from_another_thread_stops_a_running_command(sandbox):
    results = []
    thread = threading.Thread(target=lambda: results.append(sandbox.exec("sleep 60; echo done")))
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    killed = kill_run_sandboxes(sandbox.run_id)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - t0 <= 1.0
    assert killed >= 1
    (res,) = results
    assert res.cancelled and res.exit_code is None and "done" not in res.output
    assert sandbox.exec("echo alive").output == "alive\n"


def test_kill_run_sandboxes_from_another_process(sandbox):
    results = []
    thread = threading.Thread(target=lambda: results.append(sandbox.exec("sleep 60")))
    thread.start()
    time.sleep(0.5)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    code = f"from agentops.sandbox import kill_run_sandboxes; print(kill_run_sandboxes({sandbox.run_id!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    thread.join(timeout=5)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 1
    assert results and results[0].cancelled


def test_reaper_removes_sandboxes_of_inactive_runs(make_sandbox, new_run_id):
    alive = make_sandbox(new_run_id("alive"))
    gone = make_sandbox(new_run_id("gone"))
    # Only `gone` is declared inactive: the reaper must not touch anyone else's sandboxes on this machine.
    removed = reap_sandboxes(lambda run_id: run_id != gone.run_id)
    assert removed >= 1
    assert not sandbox_exists(gone)
    assert sandbox_exists(alive)
    assert alive.exec("echo alive").output == "alive\n"


def test_reaper_and_kill_switch_leave_other_scopes_alone(make_sandbox):
    sb = make_sandbox()
    assert reap_sandboxes(lambda run_id: False, scope="some-other-deployment") == 0
    assert sandbox_exists(sb)
    assert sb.scope != "some-other-deployment"


def test_reaper_keeps_sandboxes_when_is_active_fails(make_sandbox):
    sb = make_sandbox()

    def broken(run_id):
        raise RuntimeError("db down")

    reap_sandboxes(broken)
    assert sandbox_exists(sb)


def test_create_fails_closed_on_a_bad_ref(backend, repo, new_run_id):
    with pytest.raises(SandboxError):
        create_sandbox(run_id=new_run_id(), repo=repo, ref="no-such-ref", backend=backend)


@pytest.mark.parametrize("backend", ["docker"], indirect=True)  # the command server is Docker's
def test_docker_plain_exec_fallback_streams_times_out_and_cancels(sandbox, backend, monkeypatch):
    """Without its command server (it could not start), the Docker sandbox still honours the contract."""
    monkeypatch.setattr(sandbox, "_command_server", lambda: None)
    chunks: list[str] = []
    res = sandbox.exec(["python3", "-c", "print(1)"], on_output=chunks.append)
    assert (res.exit_code, res.output, "".join(chunks)) == (0, "1\n", "1\n")
    t0 = time.monotonic()
    res = sandbox.exec("sleep 60", timeout=1)
    assert res.timed_out and res.exit_code is None and time.monotonic() - t0 <= 2.0
    t0 = time.monotonic()
    res = sandbox.exec("sleep 60", cancel_check=lambda: time.monotonic() - t0 > 0.3)
    assert res.cancelled and time.monotonic() - t0 <= 0.8
