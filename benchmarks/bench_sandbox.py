"""Sandbox latency benchmark, per backend.

(a) create -> first output: create_sandbox() of a small repo, then exec `python3 -c print(1)`; the time from
    the create call to the first output chunk; median over >= 15 iterations (teardown not timed);
(b) exec overhead: one exec of `true` in a live sandbox; median over >= 50.

Prints a markdown table and writes it under `## Sandbox` in BENCHMARKS.md (other sections are kept).
Rerun: .venv/bin/python benchmarks/bench_sandbox.py [--iterations N] [--exec-iterations N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentops.sandbox import available_backends, create_sandbox  # noqa: E402

TARGETS = {"docker": (0.5, 0.060), "bubblewrap": (0.050, 0.010)}


def make_repo(path: Path) -> str:
    (path / "app.py").write_text("def answer():\n    return 42\n")
    (path / "test_app.py").write_text("from app import answer\n\n\ndef test_answer():\n    assert answer() == 42\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x.invalid", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x.invalid")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env, capture_output=True)
    return str(path)


def bench_backend(backend: str, repo: str, iterations: int, exec_iterations: int) -> dict:
    run_prefix = f"bench-{backend}-{uuid.uuid4().hex[:6]}"
    # one warm-up: first image use, first etc copy, imports
    create_sandbox(run_id=f"{run_prefix}-warm", repo=repo, backend=backend).destroy()
    firsts = []
    for i in range(iterations):
        first: list[float] = []
        t0 = time.perf_counter()
        sb = create_sandbox(run_id=f"{run_prefix}-{i}", repo=repo, backend=backend)
        try:
            res = sb.exec(["python3", "-c", "print(1)"], on_output=lambda _c: first.append(time.perf_counter()) if not first else None)
            assert res.exit_code == 0 and res.output == "1\n", res
            firsts.append(first[0] - t0)
        finally:
            sb.destroy()
    execs = []
    sb = create_sandbox(run_id=f"{run_prefix}-exec", repo=repo, backend=backend)
    try:
        for _ in range(5):
            sb.exec(["true"])
        for _ in range(exec_iterations):
            t0 = time.perf_counter()
            res = sb.exec(["true"])
            execs.append(time.perf_counter() - t0)
            assert res.exit_code == 0, res
    finally:
        sb.destroy()
    return {
        "create_median": statistics.median(firsts),
        "create_p90": sorted(firsts)[int(0.9 * (len(firsts) - 1))],
        "exec_median": statistics.median(execs),
        "exec_p90": sorted(execs)[int(0.9 * (len(execs) - 1))],
        "n_create": len(firsts),
        "n_exec": len(execs),
    }


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def table(results: dict[str, dict | str]) -> str:
    lines = [
        "| backend | create → first output (median / p90) | target | exec `true` (median / p90) | target | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for backend, r in results.items():
        t_create, t_exec = TARGETS[backend]
        if isinstance(r, str):
            lines.append(f"| {backend} | — | ≤ {fmt_ms(t_create)} | — | ≤ {fmt_ms(t_exec)} | not run: {r} |")
            continue
        ok = r["create_median"] <= t_create and r["exec_median"] <= t_exec
        lines.append(
            f"| {backend} | {fmt_ms(r['create_median'])} / {fmt_ms(r['create_p90'])} (n={r['n_create']}) "
            f"| ≤ {fmt_ms(t_create)} | {fmt_ms(r['exec_median'])} / {fmt_ms(r['exec_p90'])} (n={r['n_exec']}) "
            f"| ≤ {fmt_ms(t_exec)} | {'meets target' if ok else 'MISSES target'} |"
        )
    return "\n".join(lines)


def engine_versions() -> tuple[str, str]:
    """(Docker engine version, bubblewrap version), "n/a" for one that does not answer."""
    docker_version = "n/a"
    try:
        from agentops.sandbox.docker_backend import get_client  # lazy: the docker SDK, only when Docker answers

        docker_version = get_client().version().get("Version", "?")
    except Exception:
        pass
    try:
        bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        bwrap = "n/a"
    return docker_version, bwrap


def machine() -> str:
    docker_version, bwrap = engine_versions()
    return (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Docker engine {docker_version}, {bwrap}, "
        f"Python {platform.python_version()}, running as {'root' if os.geteuid() == 0 else 'non-root'}; "
        f"1-min load average at the end {os.getloadavg()[0]:.2f} (other test suites may share the cores)"
    )


def write_section(body: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## Sandbox\n\n{body.strip()}\n"
    pattern = re.compile(r"^## Sandbox\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--exec-iterations", type=int, default=50)
    ap.add_argument("--backend", action="append", choices=sorted(TARGETS))
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    reasons = available_backends()
    results: dict[str, dict | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp))
        for backend in args.backend or ["docker", "bubblewrap"]:
            if reasons.get(backend):
                results[backend] = reasons[backend] or ""
                print(f"{backend}: unavailable: {reasons[backend]}", file=sys.stderr)
                continue
            print(f"benchmarking {backend} ...", file=sys.stderr)
            results[backend] = bench_backend(backend, repo, args.iterations, args.exec_iterations)
    md = table(results)
    print(md)
    if not args.no_write:
        body = (
            f"Measured {datetime.date.today().isoformat()} on {machine()}.\n\n"
            f"{md}\n\n"
            "- *create → first output*: `create_sandbox()` (fresh clone of a 2-file repo; Docker: container create +"
            " start + workspace tar streamed in) until the first output chunk of `python3 -c print(1)` arrives;"
            " teardown not timed.\n"
            "- *exec*: wall time of one `Sandbox.exec(['true'])` in a live sandbox, output collection and exit"
            " status included.\n"
            "- Rerun: `.venv/bin/python benchmarks/bench_sandbox.py` (needs `bash scripts/start-dockerd`,"
            " `bash scripts/build-sandbox-image` and `bash scripts/ensure-bwrap` first; a backend that is"
            " unavailable is reported as not run).\n"
        )
        write_section(body, ROOT / "BENCHMARKS.md")
        print("wrote BENCHMARKS.md (## Sandbox)", file=sys.stderr)


if __name__ == "__main__":
    main()
