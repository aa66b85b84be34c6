"""In the container, as the sandbox user, the command server: ``command_server.py WORKDIR``.

Reads JSON lines on stdin ({"op": "run", "id", "argv"} / {"op": "kill", "id"}), writes frames on stdout:
>IBI (id, kind, length) + payload. Each command runs in its own session (kill = that session + all
descendants, repeated until none is left); when the command's main process has exited, output still held
open by a background process is read for 0.2 s more, not waited for. stdin closing (the worker went away)
kills every command and ends the server.
"""

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time

if "kill_tree" not in globals():  # run on its own (not as shipped, with proctree's source before it)
    from agentops.sandbox.programs.proctree import kill_tree

out = sys.stdout.buffer
lock = threading.Lock()
procs: dict = {}  # id -> Popen (plain `dict`: the image may run Python 3.8)


def send(i, kind, payload=b""):
    with lock:
        out.write(struct.pack(">IBI", i, kind, len(payload)) + payload)
        out.flush()


def oom():
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def run(i, argv, workdir):
    try:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True, preexec_fn=oom
        )
    except Exception as e:
        send(i, 3, str(e).encode())
        return
    procs[i] = p
    fd = p.stdout.fileno()
    exited = None
    while True:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            b = os.read(fd, 65536)
            if not b:
                break
            send(i, 1, b)
        elif p.poll() is not None:
            if exited is None:
                exited = time.monotonic()
            elif time.monotonic() - exited > 0.2:
                break
    rc = p.wait()
    p.stdout.close()
    procs.pop(i, None)
    send(i, 2, str(128 - rc if rc < 0 else rc).encode())


def serve(workdir):
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("op") == "run":
            try:
                threading.Thread(target=run, args=(msg["id"], msg["argv"], workdir), daemon=True).start()
            except Exception as e:
                send(msg["id"], 3, str(e).encode())
        elif msg.get("op") == "kill":
            p = procs.get(msg["id"])
            if p is not None:
                threading.Thread(target=kill_tree, args=(p.pid,), daemon=True).start()
    for p in list(procs.values()):
        kill_tree(p.pid)


if __name__ == "__main__":
    serve(sys.argv[1])
