"""Fire-and-forget notifications to the channel layer.

Never raises and never blocks the caller for long: the database is the truth and live views catch
up from it by seq, so a dropped message costs latency, not correctness. With Redis the messages go
through one background thread that keeps its own event loop (and so its Redis connections) alive,
instead of paying an event loop per message on the controller's hot path. The in-memory layer is
bound to the loop of the consumers in this process, so it is called synchronously.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.01
_queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_owner_pid = 0
_lock = threading.Lock()


def broadcast(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            log.warning("channel layer broadcast to %s failed", group, exc_info=True)
        return
    _ensure_sender()
    _queue.put((group, message))


def _ensure_sender() -> None:
    global _thread, _owner_pid
    # After a fork the child has the parent's thread object but not the thread.
    if _thread is not None and _owner_pid == os.getpid() and _thread.is_alive():
        return
    with _lock:
        if _thread is not None and _owner_pid == os.getpid() and _thread.is_alive():
            return
        _owner_pid = os.getpid()
        _thread = threading.Thread(target=_send_forever, name="agentops-broadcast", daemon=True)
        _thread.start()


def _send_forever() -> None:
    loop = asyncio.new_event_loop()
    layer = get_channel_layer()
    while True:
        batch = [_queue.get()]
        # A few milliseconds of patience turns a burst of steps into one message per group.
        time.sleep(BATCH_WINDOW_S)
        # Coalesce what piled up meanwhile: receivers read from the database by seq, so the latest
        # message of each kind per group says everything the earlier ones did.
        while True:
            try:
                batch.append(_queue.get_nowait())
            except queue.Empty:
                break
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        stop = False
        for item in batch:
            if item is None:
                stop = True
                continue
            group, message = item
            latest.pop((group, message.get("type", "")), None)
            latest[(group, message.get("type", ""))] = message
        for (group, _), message in latest.items():
            try:
                loop.run_until_complete(layer.group_send(group, message))
            except Exception:
                log.warning("channel layer broadcast to %s failed", group, exc_info=True)
        if stop:
            break
    loop.close()


def flush(timeout: float = 1.0) -> None:
    """Give queued messages a moment to leave before the process exits."""
    deadline = time.monotonic() + timeout
    while not _queue.empty() and time.monotonic() < deadline:
        time.sleep(0.01)


atexit.register(flush)
