"""Error ingest served straight from ASGI, ahead of Django's request stack.

Why: under daphne a Django sync view costs a thread per request, a trip through every middleware
(sessions, CSRF, auth, CSP, lock-outs: none of which an SDK's POST needs) and a fresh database
connection per request (CONN_MAX_AGE=0, as Django advises under ASGI). That capped ingest at
~90-140 events/s on two cores while daphne alone answers thousands. Here the three ingest
endpoints run the very same handlers (agentops.triggers.views.*_response through `handle`) on a
small, fixed pool of threads that keep their database connections: at most INGEST_THREADS
connections, checked after every request and dropped when an error left them unusable. On
PostgreSQL their writes go through one BatchWriter thread: the events of concurrent requests share
one transaction (one WAL flush), and each request is answered once its events are committed.

Everything else (and every other method than POST on these paths) goes to Django unchanged. The
Host header is checked against ALLOWED_HOSTS as Django would; the body is read up to the ingest
limit and refused past it before it is buffered whole.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections, transaction
from django.http import JsonResponse
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, resolve

from agentops.triggers import views
from agentops.triggers.ingest import MAX_BODY_BYTES, IngestError, NormalizedEvent, Stored, _store_one_pg, fingerprint_of, store_events
from agentops.triggers.models import ErrorProject

log = logging.getLogger(__name__)

INGEST_THREADS = 8
_HANDLERS: dict[Callable[..., Any], Callable[..., JsonResponse]] = {
    views.sentry_store: views.store_response,
    views.sentry_envelope: views.envelope_response,
    views.error_webhook: views.webhook_response,
}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _route(path: str) -> tuple[Callable[..., JsonResponse], dict[str, Any]] | None:
    """The ingest handler Django's URL resolver would reach for this path (None for any other)."""
    try:
        match = resolve(path)
    except Resolver404:
        return None
    handler = _HANDLERS.get(match.func)
    return (handler, match.kwargs) if handler else None


def _host_allowed(scope: Scope) -> bool:
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
    if not host and scope.get("server"):
        host = str(scope["server"][0])
    domain, _port = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _reset_connections() -> None:
    """Keep this thread's connection only while it is healthy and idle (autocommit, no error)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.errors_occurred or not conn.get_autocommit() or conn.in_atomic_block:
            conn.close()


Job = tuple[ErrorProject, list[NormalizedEvent], str, "Future[list[Stored]]"]


class BatchWriter:
    """Writes the events of concurrent requests in one transaction (PostgreSQL).

    Every request still gets its answer only after its events are committed; what is shared is the
    commit (one WAL flush for up to MAX_BATCH events instead of one each) and the hot group rows,
    locked once per batch in fingerprint order (two writers never deadlock). A batch that fails is
    written again request by request, so one unstorable event fails only its own request.
    """

    MAX_BATCH = 64

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def store(self, *, project: ErrorProject, events: list[NormalizedEvent], source: str) -> list[Stored]:
        if connection.vendor != "postgresql":
            return store_events(project=project, events=events, source=source)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
                self._thread.start()
        future: Future[list[Stored]] = Future()
        self._queue.put((project, events, source, future))
        try:
            return future.result(timeout=60)
        except FutureTimeout:
            # The events may still be written: the client's resend is deduplicated by event_id.
            raise IngestError(503, "the error store is busy; retry later") from None

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                jobs = [job]
                stop = False
                while len(jobs) < self.MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    jobs.append(more)
                try:
                    self._write(jobs)
                except BaseException as exc:  # noqa: BLE001 - no waiting request may hang on a dead writer
                    for job in jobs:
                        if not job[3].done():
                            job[3].set_exception(exc)
                if stop:
                    return
        finally:
            connections.close_all()

    def _write(self, jobs: list[Job]) -> None:
        _reset_connections()
        results: list[list[Stored | None]] = [[None] * len(job[1]) for job in jobs]
        order = sorted(((fingerprint_of(event), j, i) for j, job in enumerate(jobs) for i, event in enumerate(job[1])), key=lambda x: x[0])
        try:
            with transaction.atomic():
                for _fingerprint, j, i in order:
                    project, events, source, _future = jobs[j]
                    results[j][i] = _store_one_pg(project=project, event=events[i], source=source)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            _reset_connections()
            if len(jobs) == 1:
                jobs[0][3].set_exception(exc)
                return
            for job in jobs:
                self._write([job])
            return
        for job, stored in zip(jobs, results):
            job[3].set_result([s for s in stored if s is not None])


def _serve(handler: Callable[..., JsonResponse], kwargs: dict[str, Any], scope: Scope, body: bytes, writer: BatchWriter) -> JsonResponse:
    request = ASGIRequest(scope, io.BytesIO(body))
    token = views.STORE.set(writer.store)
    try:
        response = views.handle(lambda: handler(request, **kwargs))
        if getattr(response, "retryable", False):
            # A connection this thread kept may have died with the server (a restart): once more on
            # a fresh one. Nothing was written by the failed attempt (one statement or one transaction).
            _reset_connections()
            response = views.handle(lambda: handler(ASGIRequest(scope, io.BytesIO(body)), **kwargs))
        return response
    finally:
        views.STORE.reset(token)
        _reset_connections()


_instances: list[IngestFastPath] = []


def close_all() -> None:
    for instance in _instances:
        instance.close()


class IngestFastPath:
    """ASGI middleware: POSTs to the ingest endpoints are served here, the rest by `app`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, threads: int = INGEST_THREADS) -> None:
        self.app = app
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.writer = BatchWriter()
        _instances.append(self)

    def close(self) -> None:
        """Close every thread's database connection and stop the threads (tests, shutdown)."""
        self.writer.stop()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # One task per thread: each waits for the others, so no thread takes two.
        barrier = threading.Barrier(self.threads)

        def close_here() -> None:
            connections.close_all()
            try:
                barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass

        for future in [executor.submit(close_here) for _ in range(self.threads)]:
            future.result()
        executor.shutdown(wait=True)

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="ingest")
            return self._executor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        route = _route(scope.get("path", ""))
        if route is None:
            return await self.app(scope, receive, send)
        if not _host_allowed(scope):
            return await _reply(send, 400, {"error": "invalid Host header"})
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return await _reply(send, 413, {"error": f"body exceeds {MAX_BODY_BYTES} bytes"})
            if not message.get("more_body"):
                break
        handler, kwargs = route
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self.executor(), _serve, handler, kwargs, scope, bytes(body), self.writer)
        await _reply_response(send, response)


async def _reply(send: Send, status: int, payload: dict[str, Any]) -> None:
    await _reply_response(send, JsonResponse(payload, status=status))


async def _reply_response(send: Send, response: JsonResponse) -> None:
    content = response.content
    headers = [(b"content-type", response["Content-Type"].encode()), (b"content-length", str(len(content)).encode())]
    if response.has_header("Retry-After"):
        headers.append((b"retry-after", response["Retry-After"].encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content})
