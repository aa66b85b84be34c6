"""In the container, the kill helper: ``killer.py MODE STATE_DIR``.

MODE "all": everything but PID 1 (and mark the kill in STATE_DIR/cancelled, for cancelled=True elsewhere);
MODE "<token>": the session of that command (its pid is in STATE_DIR/<token>.pid) and all its descendants.
"""

import os
import signal
import sys
import time

if "kill_tree" not in globals():  # run on its own (not as shipped, with proctree's source before it)
    from agentops.sandbox.programs.proctree import kill_tree, table


def kill_all(state):
    os.makedirs(state, exist_ok=True)
    with open(f"{state}/cancelled", "w") as f:
        f.write(repr(time.time()))
    for _ in range(50):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        if not table():
            break
        time.sleep(0.01)


def kill_command(state, token):
    try:
        with open(f"{state}/{token}.pid") as f:
            sid = int(f.read().strip())
    except Exception:
        return
    kill_tree(sid)


if __name__ == "__main__":
    mode, state_dir = sys.argv[1], sys.argv[2]
    if mode == "all":
        kill_all(state_dir)
    else:
        kill_command(state_dir, mode)
    sys.exit(0)
