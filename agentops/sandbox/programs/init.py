"""In the container, PID 1: reap orphans (os.wait) forever; a kill(-1) from uid 1000 spares PID 1 of the namespace."""

import os
import signal
import time

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.2)
