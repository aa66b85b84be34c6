"""A (simulated) database connection pool."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

POOL_SIZE = 10  # connections
QUERY_TIME_S = 0.2  # how long the simulated database takes to answer


class ConnectionPoolExhaustedError(RuntimeError):
    """Every connection of the pool is in use."""


class Connection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.queries = 0

    def execute(self, sql: str, *params: object) -> int:
        time.sleep(QUERY_TIME_S)
        self.queries += 1
        return 1


class ConnectionPool:
    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self._free: queue.LifoQueue[Connection] = queue.LifoQueue()
        for number in range(size):
            self._free.put(Connection(number))

    def acquire(self) -> Connection:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            raise ConnectionPoolExhaustedError(f"all {self.size} database connections are in use") from None

    def release(self, connection: Connection) -> None:
        self._free.put(connection)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)


_pool: ConnectionPool | None = None
_lock = threading.Lock()


def get_pool() -> ConnectionPool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ConnectionPool()
        return _pool


def reset_pool() -> None:
    global _pool
    with _lock:
        _pool = None
