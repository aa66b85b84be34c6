"""A synchronous, bounded MCP client: the controller's worker threads talk to MCP servers through it.

The `mcp` SDK is async; each McpSession runs it on a private event loop thread and waits for it from the
caller's thread, polling `should_stop` every 0.1 s, so a person's Stop or the kill switch ends a call (and
the server process) within about half a second.

We do not trust the SDK's stdio transport to bound what a server sends: the process is spawned here and
its stdout is read in chunks, each JSON-RPC message capped (a line longer than the wire limit ends the
session before it is held in memory), the bytes a request receives counted, anything that is not JSON-RPC
refused. A server that floods, prints garbage, crashes or hangs fails the call with a short, clear,
redacted McpError and is killed (its whole process group) at once; it does not get a second chance within
that session.

Streamable HTTP servers go through the SDK's client over an httpx2 client of ours that contacts only the
declared URL's origin (a redirect or request anywhere else is refused), ignores the worker's proxy and
netrc settings, and caps every response body.

Resolved env values and headers (secrets) never appear in a message: every message is stripped of them
and then passed through agentops.redaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from subprocess import PIPE
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from agentops.mcp.toolinfo import McpError, McpToolInfo, ServerSpec
from agentops.redaction import redact_text

if TYPE_CHECKING:
    from anyio.abc import Process
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from agentops.sandbox.base import Sandbox

_T = TypeVar("_T")

POLL_S = 0.1
MESSAGE_LIMIT_BYTES = 8 * 1024 * 1024  # one JSON-RPC message, and what one request may receive in all
STDERR_KEEP_BYTES = 8192
MAX_PAGES = 100
MAX_TOOLS = 2000
CLOSE_WAIT_S = 2.0
HTTP_CONNECT_TIMEOUT_S = 10.0
# What a host server inherits from the worker: enough to run, none of its secrets (database URL, API keys).
HOST_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM")
CLIENT_INFO = types.Implementation(name="agentops", version="1")


@dataclass
class McpCallResult:
    text: str  # the content blocks as text, at most max_output_bytes (UTF-8) plus a truncation note
    is_error: bool  # the tool reported an error (MCP isError): a result for the model, not a failure of the server
    structured: dict[str, Any] | None
    truncated: bool


def wire_limit(spec: ServerSpec) -> int:
    """The most bytes one request may receive: a result somewhat over max_output_bytes is truncated, a flood is
    refused before it is held in memory."""
    return max(MESSAGE_LIMIT_BYTES, 2 * int(spec.max_output_bytes))


def _redactor(spec: ServerSpec) -> Callable[[str], str]:
    secrets = sorted({v for v in spec.secret_values() if len(v) >= 4}, key=len, reverse=True)

    def redact(text: str) -> str:
        for value in secrets:
            text = text.replace(value, "[redacted]")
        try:
            return redact_text(text)
        except Exception:  # noqa: BLE001 - fail closed: a message that cannot be redacted is not shown
            return "[message withheld: it could not be redacted]"

    return redact


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class McpSession:
    """One running MCP server (a process or an HTTP connection) and the SDK session over it.

    Sync facade, safe to use from any thread; every wait is bounded. A session that failed (timeout, stop,
    crash, flood) is dead: every later call raises McpError; start a new session to try again.
    """

    def __init__(self, spec: ServerSpec, *, sandbox: Sandbox | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        if spec.transport not in ("stdio", "http"):
            raise McpError(f"server {spec.name}: unknown transport {spec.transport!r}")
        if spec.location not in ("sandbox", "host"):
            raise McpError(f"server {spec.name}: unknown location {spec.location!r}")
        if spec.transport == "stdio" and not spec.command:
            raise McpError(f"server {spec.name}: a stdio server needs a command")
        if spec.transport == "http" and spec.location != "host":
            raise McpError(f"server {spec.name}: an HTTP server is reached from the host, not run in the sandbox")
        if spec.location == "sandbox" and sandbox is None:
            raise McpError(f"server {spec.name} runs in the run's sandbox, and there is none")
        self.spec = spec
        self.sandbox = sandbox if spec.location == "sandbox" else None
        self._should_stop = should_stop
        self._redact = _redactor(spec)
        self._limit = wire_limit(spec)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: concurrent.futures.Future[None] | None = None
        self._closing: asyncio.Event | None = None
        self._client: Client | None = None
        self._pid: int | None = None
        self._reaped = False  # the process group was killed and the process reaped: its pid may be reused, never kill it again
        self._exit_code: int | None = None
        self._stderr = bytearray()
        self._received = 0  # bytes received since the current request started
        self._fatal: McpError | None = None  # why the session died (set once)
        self._started = False
        self._closed = False

    # -- state ----------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The host pid of the spawned process (stdio), for tests and diagnostics."""
        return self._pid

    @property
    def alive(self) -> bool:
        return self._started and not self._closed and self._fatal is None and self._client is not None

    def _stopping(self, extra: Callable[[], bool] | None) -> bool:
        for check in (self._should_stop, extra):
            if check is None:
                continue
            try:
                if check():
                    return True
            except Exception:  # noqa: BLE001 - fail closed: a stop check that cannot answer means stop
                return True
        return False

    def _die(self, error: McpError) -> McpError:
        """Record why the session ended (the first reason wins) and kill the server now."""
        if self._fatal is None:
            self._fatal = McpError(self._redact(str(error)))
        self._kill()
        return self._fatal

    def _kill(self) -> None:
        pid = self._pid
        if pid is not None and not self._reaped:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        loop, closing = self._loop, self._closing
        if loop is not None and closing is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(closing.set)
            except RuntimeError:  # the loop stopped meanwhile
                pass

    def _stderr_tail(self) -> str:
        text = self._stderr.decode("utf-8", errors="replace").strip()
        if not text:
            return ""
        return ": " + _short(text[-600:], 400)

    def _ended_message(self) -> str:
        code = self._exit_code
        what = f"exited with code {code}" if code is not None and code >= 0 else "was killed" if code is not None else "closed the connection"
        return f"the server {what}{self._stderr_tail()}"

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and complete the MCP handshake; McpError when it does not start in time."""
        with self._lock:
            if self._closed:
                raise McpError(f"server {self.spec.name}: the session is closed")
            if self._started:
                return
            self._started = True
            self._loop = asyncio.new_event_loop()
            self._closing = asyncio.Event()
            self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{self.spec.name}", daemon=True)
            self._thread.start()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._runner = asyncio.run_coroutine_threadsafe(self._run(ready), self._loop)
        try:
            self._wait(ready, timeout=self.spec.startup_timeout_s, should_stop=None)
        except McpError as exc:
            self.close()
            raise McpError(f"server {self.spec.name} did not start: {exc}") from None
        except BaseException as exc:
            error = self._explain(exc)
            self.close()
            raise McpError(f"server {self.spec.name} did not start: {error}") from None

    def close(self) -> None:
        """Kill the server (its process group) at once and release the session. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._kill()
        runner, loop, thread = self._runner, self._loop, self._thread
        if runner is not None:
            try:
                runner.result(timeout=CLOSE_WAIT_S)
            except BaseException:  # noqa: BLE001 - it ended, one way or another
                runner.cancel()
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(CLOSE_WAIT_S)
            if thread is None or not thread.is_alive():
                loop.close()
        self._client = None

    def __enter__(self) -> McpSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------------

    def list_tools(self) -> list[McpToolInfo]:
        """Every tool the server lists (all pages), in its order."""
        client = self._require()
        tools: list[McpToolInfo] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self._request(functools.partial(client.list_tools, cursor=cursor), timeout=self.spec.call_timeout_s, should_stop=None)
            for tool in page.tools:
                if tool.name in seen:
                    raise self._die(McpError(f"malformed result: the server lists the tool {tool.name[:80]!r} twice"))
                seen.add(tool.name)
                tools.append(_tool_info(self.spec.name, tool))
            if len(tools) > MAX_TOOLS:
                raise McpError(f"the server lists more than {MAX_TOOLS} tools")
            cursor = page.next_cursor
            if not cursor:
                return tools
        raise McpError(f"the server's tool list runs past {MAX_PAGES} pages")

    def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float | None = None, should_stop: Callable[[], bool] | None = None
    ) -> McpCallResult:
        """Call a tool. McpError when the server fails; a tool's own error is a result with is_error=True.

        timeout_s may lower the server's call timeout, never raise it."""
        client = self._require()
        timeout = self.spec.call_timeout_s if timeout_s is None else max(0.1, min(float(timeout_s), self.spec.call_timeout_s))
        result = self._request(lambda: client.call_tool(name, arguments), timeout=timeout, should_stop=should_stop)
        return _call_result(result, self.spec.max_output_bytes)

    def _require(self) -> Client:
        if self._fatal is not None:
            raise McpError(f"server {self.spec.name} is not running: {self._fatal}")
        if not self._started:
            self.start()
        client = self._client
        if client is None or self._closed:
            raise McpError(f"server {self.spec.name} is not running: {self._ended_message()}")
        return client

    def _request(self, make: Callable[[], Awaitable[_T]], *, timeout: float, should_stop: Callable[[], bool] | None) -> _T:
        assert self._loop is not None
        self._received = 0

        async def run() -> _T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return self._wait(future, timeout=timeout, should_stop=should_stop)
        except McpError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a clear McpError
            raise McpError(self._explain(exc)) from None

    def _wait(self, future: concurrent.futures.Future[_T], *, timeout: float, should_stop: Callable[[], bool] | None) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.result(timeout=max(0.0, min(POLL_S, remaining)))
            except concurrent.futures.TimeoutError:
                pass
            if self._stopping(should_stop):
                future.cancel()
                raise self._die(McpError("stopped: the run is stopping, so the server was stopped"))
            if time.monotonic() >= deadline:
                future.cancel()
                raise self._die(McpError(f"timed out after {timeout:g} s; the server was stopped"))

    def _explain(self, exc: BaseException) -> str:
        """A short, redacted sentence for what went wrong; the session's own verdict (flood, garbage) wins."""
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # anyio task groups wrap the failure that matters
        if self._fatal is not None:
            return str(self._fatal)
        if isinstance(exc, McpError):
            return self._redact(str(exc))
        if isinstance(exc, MCPError):
            if exc.code == types.CONNECTION_CLOSED:
                self._wait_exit()
                return str(self._die(McpError(self._ended_message())))
            return self._redact(f"the server answered with an error: {_short(exc.message)}")
        if isinstance(exc, ValidationError):
            errors = "; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            return self._redact(f"malformed result: {_short(errors)}")
        if isinstance(exc, OSError):
            return self._redact(f"cannot run {self.spec.command[0] if self.spec.command else 'the server'!r}: {exc.strerror or exc}")
        if isinstance(exc, concurrent.futures.CancelledError | asyncio.CancelledError):
            return str(self._die(McpError(self._ended_message())))
        if isinstance(exc, RuntimeError | ValueError | TypeError):
            return self._redact(f"malformed result: {_short(str(exc))}")
        return self._redact(f"{type(exc).__name__}: {_short(str(exc))}")

    def _wait_exit(self) -> None:
        """Give a dying process a moment to be reaped, so its exit code and stderr make the message."""
        deadline = time.monotonic() + 1.0
        while self._pid is not None and self._exit_code is None and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- the event loop side --------------------------------------------------------------------------

    async def _run(self, ready: concurrent.futures.Future[None]) -> None:
        assert self._closing is not None
        try:
            transport = self._stdio() if self.spec.transport == "stdio" else self._http()
            client = Client(transport, mode="auto", cache=None, client_info=CLIENT_INFO)
            async with client:
                self._client = client
                if not ready.set_running_or_notify_cancel():
                    return
                ready.set_result(None)
                if not self._closed:
                    await self._closing.wait()
        except Exception as exc:  # noqa: BLE001 - handed to the thread waiting for start()
            if not ready.done():
                ready.set_exception(exc)
        finally:
            self._client = None

    def _note_received(self, count: int) -> None:
        self._received += count
        if self._received > self._limit:
            self._die(McpError(f"output over {self._limit} bytes; the server was stopped"))
            raise _Flooded

    def _command(self) -> tuple[list[str], dict[str, str]]:
        if self.sandbox is not None:
            return self.sandbox.interactive_argv(list(self.spec.command), env=dict(self.spec.env)), dict(self.spec.env)
        inherited = {k: os.environ[k] for k in HOST_ENV_KEYS if k in os.environ}
        return list(self.spec.command), {**inherited, **self.spec.env}

    @asynccontextmanager
    async def _stdio(self) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]]:
        argv, env = self._command()
        process = await anyio.open_process(argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env, start_new_session=True)
        self._pid = process.pid
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._pump_stdout, process, read_send)
            tasks.start_soon(self._pump_stdin, process, write_recv)
            tasks.start_soon(self._pump_stderr, process)
            tasks.start_soon(self._reap, process)
            try:
                yield read_recv, write_send
            finally:
                self._kill()
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WAIT_S):
                    await process.aclose()  # reaps it and closes its pipes while the loop still runs
                if process.returncode is not None:
                    self._reaped = True
                if self._exit_code is None:
                    self._exit_code = process.returncode
                # The asyncio transport is otherwise closed at garbage collection, on a loop already closed.
                transport = getattr(getattr(process, "_process", None), "_transport", None)
                if transport is not None:
                    transport.close()

    async def _reap(self, process: Process) -> None:
        self._exit_code = await process.wait()

    async def _pump_stdout(self, process: Process, send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        assert process.stdout is not None
        line = bytearray()
        async with send:
            try:
                async for chunk in process.stdout:
                    self._note_received(len(chunk))
                    start = 0
                    while True:
                        end = chunk.find(b"\n", start)
                        line += chunk[start:] if end < 0 else chunk[start:end]
                        if len(line) > self._limit:
                            self._die(McpError(f"output over {self._limit} bytes in one message; the server was stopped"))
                            return
                        if end < 0:
                            break
                        start = end + 1
                        if line.strip():
                            message = self._parse(bytes(line))
                            if message is None:
                                return
                            await send.send(SessionMessage(message))
                        line.clear()
            except _Flooded:
                return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                return
            finally:
                # The server closed its stdout (or was cut off): the session is over, tear the transport down.
                if self._closing is not None:
                    self._closing.set()

    def _parse(self, line: bytes) -> types.JSONRPCMessage | None:
        try:
            return types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError:
            sample = line[:120].decode("utf-8", errors="replace")
            self._die(McpError(f"malformed output: the server wrote something that is not JSON-RPC to stdout ({_short(sample, 120)!r})"))
            return None

    async def _pump_stdin(self, process: Process, receive: MemoryObjectReceiveStream[SessionMessage]) -> None:
        assert process.stdin is not None
        async with receive:
            try:
                async for message in receive:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(data.encode("utf-8"))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                return

    async def _pump_stderr(self, process: Process) -> None:
        assert process.stderr is not None
        try:
            async for chunk in process.stderr:
                self._stderr += chunk
                if len(self._stderr) > STDERR_KEEP_BYTES:
                    del self._stderr[: len(self._stderr) - STDERR_KEEP_BYTES]
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            return

    def _http(self) -> AbstractAsyncContextManager[Any]:
        url = httpx2.URL(self.spec.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise McpError(f"server {self.spec.name}: the URL must be http(s) with a host")
        origin = (url.scheme, url.host, url.port)

        async def only_the_declared_origin(request: httpx2.Request) -> None:
            if (request.url.scheme, request.url.host, request.url.port) != origin:
                raise McpError(f"refused a request to {request.url.host}: only {url.host} is declared for this server")

        session = self

        class CappedTransport(httpx2.AsyncHTTPTransport):
            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                response = await super().handle_async_request(request)
                response.stream = _CappedStream(response.stream, session._note_received)
                return response

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            http = httpx2.AsyncClient(
                headers=dict(self.spec.headers),
                timeout=httpx2.Timeout(HTTP_CONNECT_TIMEOUT_S, read=max(self.spec.call_timeout_s, self.spec.startup_timeout_s) + 5),
                event_hooks={"request": [only_the_declared_origin]},
                trust_env=False,  # no proxy, no .netrc: the declared endpoint and nothing else
                follow_redirects=False,
                transport=CappedTransport(trust_env=False),
            )
            async with http, streamable_http_client(str(url), http_client=http, max_sse_event_size=self._limit) as streams:
                yield streams

        return connect()


class _Flooded(Exception):
    """Raised inside a reader once the session died of too much output."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, note: Callable[[int], None]) -> None:
        self._inner = inner
        self._note = note

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            try:
                self._note(len(chunk))
            except _Flooded:
                raise httpx2.ReadError("response over the size limit") from None
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _tool_info(server: str, tool: types.Tool) -> McpToolInfo:
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") if tool.annotations else {}
    title = tool.title or (tool.annotations.title if tool.annotations and tool.annotations.title else "") or ""
    return McpToolInfo(
        server=server,
        name=tool.name,
        title=title,
        description=tool.description or "",
        input_schema=dict(tool.input_schema),
        annotations=annotations,
    )


def _block_text(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type} {block.mime_type}, about {len(block.data) * 3 // 4} bytes, not shown]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        return f"[resource {resource.uri}: binary {resource.mime_type or ''}, not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link {block.uri} {block.name}]"
    return f"[{getattr(block, 'type', 'unknown')} content, not shown]"


def _call_result(result: types.CallToolResult, max_bytes: int) -> McpCallResult:
    text = "\n".join(_block_text(block) for block in result.content)
    raw = result.structured_content
    structured: dict[str, Any] | None = raw if isinstance(raw, dict) else ({"value": raw} if raw is not None else None)
    truncated = False
    if structured is not None and len(json.dumps(structured, ensure_ascii=False, default=str)) > max_bytes:
        structured, truncated = None, True
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, default=str)
    encoded = text.encode("utf-8")
    if len(encoded) > max_bytes:
        text = encoded[:max_bytes].decode("utf-8", errors="ignore") + f"\n[truncated: the output was {len(encoded)} bytes, the limit is {max_bytes}]"
        truncated = True
    return McpCallResult(text=text, is_error=bool(result.is_error), structured=structured, truncated=truncated)


def discover(spec: ServerSpec, *, sandbox: Sandbox | None = None) -> list[McpToolInfo]:
    """Start the server, list its tools, stop it."""
    session = McpSession(spec, sandbox=sandbox)
    try:
        session.start()
        return session.list_tools()
    finally:
        session.close()
