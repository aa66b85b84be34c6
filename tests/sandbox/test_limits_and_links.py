"""Scopes on resolved paths, the policy's timeout as a ceiling, and disk quotas: on every backend.

Issue 9 items 4, 5 and 8: a symlink must not carry a read or write out of the grant, the model must not
raise its own command timeout (and no hidden timeout may kill a quiet command), and a sandbox must not be
able to fill the host's disk or RAM.
"""

from __future__ import annotations

import os
import time

import pytest

from agentops.sandbox import PathOutsideScope, PathRejected, SandboxLimits, bwrap_backend, create_sandbox, docker_backend

pytestmark = pytest.mark.slow

GRANT = ["tests/*"]
CALC = "def add(a, b):\n    return a + b\n"


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path.rstrip("/") + "/")]


# -- links -------------------------------------------------------------------------------------------


def test_a_link_made_by_a_command_cannot_carry_reads_or_writes_out_of_the_grant(make_sandbox):
    sb = make_sandbox()
    assert sb.exec("ln -s .. tests/up && ln -s ../calc.py tests/calc_link && ln -s /etc tests/etc").exit_code == 0
    for attempt in (
        lambda: sb.read_file("tests/up/calc.py", allowed=GRANT),
        lambda: sb.read_file("tests/calc_link", allowed=GRANT),
        lambda: sb.write_file("tests/up/calc.py", "pwned\n", allowed=GRANT),
        lambda: sb.write_file("tests/calc_link", "pwned\n", allowed=GRANT),
        lambda: sb.write_file("tests/up/new_outside.py", "pwned\n", allowed=GRANT),
        lambda: sb.list_files("tests/up", allowed=GRANT),
        lambda: sb.resolve_path("tests/up/calc.py", allowed=GRANT),
    ):
        with pytest.raises(PathOutsideScope):
            attempt()
    with pytest.raises(PathRejected):  # out of the workspace: refused with or without a grant
        sb.read_file("tests/etc/passwd")
    assert sb.read_file("calc.py") == CALC
    assert "new_outside.py" not in sb.list_files()
    # what stays inside the grant still works, through a link too
    assert sb.exec("mkdir -p tests/sub && ln -s sub tests/inner").exit_code == 0
    sb.write_file("tests/inner/ok.py", "x = 1\n", allowed=GRANT)
    assert sb.read_file("tests/sub/ok.py", allowed=GRANT) == "x = 1\n"
    assert sb.resolve_path("tests/inner/ok.py", allowed=GRANT) == "tests/sub/ok.py"
    assert "tests/sub/ok.py" in sb.list_files("tests", allowed=GRANT)
    assert "calc.py" not in sb.list_files(".", allowed=GRANT)


def test_links_out_of_scope_names_links_that_leave_the_grant_or_the_workspace(make_sandbox):
    sb = make_sandbox()
    sb.exec("ln -s .. tests/up; ln -s /etc/passwd tests/pw; ln -s ../.git/config tests/cfg; ln -s test_calc.py tests/same")
    bad = sb.links_out_of_scope(["tests/up", "tests/pw", "tests/cfg", "tests/same", "tests/test_calc.py", "nope"], GRANT)
    assert bad == ["tests/up", "tests/pw", "tests/cfg"]
    assert sb.links_out_of_scope(["tests/pw"], None) == ["tests/pw"]  # the workspace bounds even an unscoped call


# -- timeouts ----------------------------------------------------------------------------------------


def test_a_timeout_above_the_policy_is_clamped_to_the_policy(make_sandbox):
    sb = make_sandbox(limits=SandboxLimits(command_timeout_s=3))
    started = time.monotonic()
    res = sb.exec("sleep 90", timeout=3600)
    took = time.monotonic() - started
    assert res.timed_out and res.exit_code is None
    assert 2.5 < took < 8, took
    assert sb.exec("sleep 5", timeout=1).timed_out  # lowering stays possible


def test_a_quiet_command_survives_a_docker_client_timeout_shorter_than_it(make_sandbox, backend, monkeypatch):
    """The engine socket's own timeout used to end quiet commands as exit 137 after 60 s; here it is 2 s."""
    if backend == "docker":
        real = docker_backend.get_client
        monkeypatch.setattr(docker_backend, "get_client", lambda timeout=60: real(timeout=min(timeout, 2)))
    sb = make_sandbox(limits=SandboxLimits(command_timeout_s=30))
    res = sb.exec("sleep 5; echo done")
    assert (res.exit_code, res.output, res.timed_out) == (0, "done\n", False)


def test_a_quiet_command_of_70_seconds_completes_under_a_120_second_policy(make_sandbox):
    sb = make_sandbox(limits=SandboxLimits(command_timeout_s=120))
    res = sb.exec("sleep 70; echo done")
    assert (res.exit_code, res.output, res.timed_out, res.cancelled) == (0, "done\n", False, False)
    assert res.duration_s >= 70


# -- disk quota ----------------------------------------------------------------------------------------


def test_writing_past_the_disk_quota_fails_cleanly_and_spares_the_host(make_sandbox, backend):
    sb = make_sandbox(limits=SandboxLimits(disk_mb=32, tmp_mb=16))
    ws = sb.exec("dd if=/dev/zero of=big bs=1M count=200 2>&1; echo rc=$?")
    assert "rc=0" not in ws.output and ("No space left" in ws.output or ws.quota_exceeded), ws.output
    tmp = sb.exec("dd if=/dev/zero of=/tmp/big bs=1M count=200 2>&1; echo rc=$?")
    assert "rc=0" not in tmp.output and "No space left" in tmp.output, tmp.output
    home = sb.exec("dd if=/dev/zero of=$HOME/big bs=1M count=200 2>&1; echo rc=$?")
    assert "rc=0" not in home.output and "No space left" in home.output, home.output
    sizes = sb.exec("du -sm --apparent-size big /tmp/big $HOME/big | cut -f1").output.split()
    assert [int(s) for s in sizes][0] <= 32 and all(int(s) <= 16 for s in sizes[1:]), sizes
    with pytest.raises(OSError):  # the file tools meet the same quota
        for i in range(20):
            sb.write_file(f"more{i}.txt", "x" * 4_000_000)
    assert sb.exec("rm -f big more*.txt /tmp/big $HOME/big && echo ok").output == "ok\n"  # usable again
    if backend == "bubblewrap":
        # the data lived in size-capped tmpfs mounts, never in the host's disk, and they go with the sandbox
        assert sb.quota_mode == "tmpfs"
        assert sorted(_mounts_under(sb.root)) == sorted(os.path.join(sb.root, a) for a in bwrap_backend.AREAS)
        root = sb.root
        sb.destroy()
        assert _mounts_under(root) == [] and not os.path.exists(root)


def test_the_bubblewrap_watchdog_quota_kills_a_command_writing_past_it(backend_reasons, repo, new_run_id):
    """Without root (no mounts), a watchdog and RLIMIT_FSIZE bound the disk instead."""
    if backend_reasons["bubblewrap"]:
        msg = f"sandbox backend 'bubblewrap' unavailable: {backend_reasons['bubblewrap']}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    sb = bwrap_backend.BwrapSandbox(
        run_id=new_run_id("wd"), repo=repo, quota_mode="watchdog", limits=SandboxLimits(disk_mb=32, tmp_mb=16, command_timeout_s=60)
    )
    try:
        assert _mounts_under(sb.root) == []
        one = sb.exec("dd if=/dev/zero of=big bs=1M count=200 2>&1; echo rc=$?")  # one file: RLIMIT_FSIZE
        assert "rc=0" not in one.output
        many = sb.exec("i=0; while true; do i=$((i+1)); head -c 4000000 /dev/zero > f$i; sleep 0.01; done")
        assert many.quota_exceeded and many.exit_code is None and not many.timed_out
        assert "disk quota" in many.output
        assert bwrap_backend._disk_usage(sb.workspace) < 80 * 1024 * 1024  # bounded overshoot
        tmp = sb.exec("dd if=/dev/zero of=/tmp/big bs=1M count=200 2>&1; echo rc=$?")
        assert "rc=0" not in tmp.output
        assert sb.exec("rm -f big f* && echo ok").output == "ok\n"
        assert sb.exec("echo fine").exit_code == 0
    finally:
        sb.destroy()


def test_the_tmpfs_sizes_come_from_the_limits(make_sandbox, backend):
    sb = make_sandbox(limits=SandboxLimits(disk_mb=48, tmp_mb=24))
    out = sb.exec("df -m /workspace /tmp /home/agent | tail -n 3").output.split("\n")
    totals = [int(line.split()[1]) for line in out if line.strip()]
    assert totals == [48, 24, 24], out


def test_a_repository_larger_than_the_quota_fails_to_create_with_a_clear_error(backend, tmp_path, new_run_id):
    import subprocess

    big = tmp_path / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(40 * 1024 * 1024))
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "big"]):
        subprocess.run(["git", *args], cwd=big, check=True, capture_output=True)
    with pytest.raises(Exception, match="(?i)space|quota|copying"):
        create_sandbox(run_id=new_run_id("big"), repo=str(big), backend=backend, limits=SandboxLimits(disk_mb=32)).destroy()
