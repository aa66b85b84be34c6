"""A real ASGI server (daphne) in a subprocess, for tests that need real websockets."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import ROOT, stop_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def daphne(env: dict[str, str], log_path: Path, *, timeout_s: float = 60) -> Iterator[str]:
    """Yields the server's base URL once /login/ answers; its log goes to a file."""
    port = free_port()
    daphne_bin = str(Path(sys.executable).with_name("daphne"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [daphne_bin, "-b", "127.0.0.1", "-p", str(port), "agentops.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(base + "/login/", timeout=2).close()
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"daphne did not start:\n{log_path.read_text()[-3000:]}") from None
                    time.sleep(0.3)
            yield base
        finally:
            stop_group(proc, grace_s=10)
