"""The HTTP side of agentops' MCP server: `/mcp` (and `/mcp/`) in the same ASGI process as the web.

Order of things for every request, before the MCP SDK sees a byte of it:
1. The Host header must be one Django would accept (ALLOWED_HOSTS), and so must an Origin header if a
   browser sent one (DNS rebinding).
2. `Authorization: Bearer <token>` must be a live API token (dashboard.services.api_token_authenticate,
   the JSON API's own check): otherwise 401 with WWW-Authenticate. The token is checked on every
   request, so a revoked or expired token stops working at once.
3. Only POST is served (stateless: no session to end, no server-to-client stream to open).
4. The token goes into the request's ASGI scope (agentops.mcp.server.TOKEN_SCOPE_KEY), where each tool
   finds it and checks its scope and its user's role.

The SDK's session manager runs stateless with JSON responses: each POST is a whole exchange, no
session outlives a request, and any worker process can answer. Its task group must be running before
it serves anything; daphne sends no ASGI lifespan events, so the manager is started on the first
request, in a task of its own that lives as long as the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http.request import validate_host
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Send as StarletteSend

from agentops.mcp.server import TOKEN_SCOPE_KEY, build_server
from agentops.triggers.asgi import _host_allowed
from dashboard.models import ApiToken
from dashboard.services import TokenRefused, api_token_authenticate

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MCP_PATHS = frozenset({"/mcp", "/mcp/"})
# Tool arguments are small (ids, a reason): a megabyte is generous, and refused before it is buffered.
MAX_BODY_BYTES = 1024 * 1024


def _header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "")


def _origin_allowed(scope: Scope) -> bool:
    """No Origin (every non-browser MCP client) or one whose host Django would serve."""
    origin = _header(scope, b"origin")
    if not origin:
        return True
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return False
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    # The form ALLOWED_HOSTS uses: IPv6 addresses in brackets.
    return bool(host) and validate_host(f"[{host}]" if ":" in host else host, allowed)


def _authenticate(header: str) -> ApiToken:
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise TokenRefused("a valid bearer token is required")
    return api_token_authenticate(raw.strip())


async def _reply(send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class McpEndpoint:
    """ASGI app for `/mcp`: authentication, then the MCP SDK's streamable HTTP transport."""

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await _reply(send, 404, {"error": "not found"})
        if not _host_allowed(scope):
            return await _reply(send, 400, {"error": "invalid Host header"})
        if not _origin_allowed(scope):
            return await _reply(send, 403, {"error": "this Origin may not use the MCP endpoint"})
        try:
            token = await database_sync_to_async(_authenticate)(_header(scope, b"authorization"))
        except TokenRefused as exc:
            return await _reply(send, 401, {"error": str(exc)}, [(b"www-authenticate", b'Bearer realm="agentops", error="invalid_token"')])
        except DatabaseError:
            return await _reply(send, 503, {"error": "the database is unavailable; retry later"}, [(b"retry-after", b"5")])
        if scope.get("method") != "POST":
            # Stateless: there is no session to end (DELETE) and nothing would ever be sent on a
            # server-to-client stream (GET), which would only hold a connection open. The spec's answer
            # for both is 405.
            return await _reply(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
        try:
            manager = await self._running_manager()
        except Exception:
            log.exception("the MCP session manager did not start")
            return await _reply(send, 503, {"error": "the MCP server is starting or failed to start; retry later"}, [(b"retry-after", b"5")])
        # As Django's ASGI handler does per request: the tools' thread-sensitive database work gets a
        # thread of this request's own instead of queueing behind every other caller's.
        async with ThreadSensitiveContext():
            # The SDK's types are Starlette's (MutableMapping messages); the messages are the same dicts.
            await manager.handle_request({**scope, TOKEN_SCOPE_KEY: token}, receive, cast(StarletteSend, send))

    async def _running_manager(self) -> StreamableHTTPSessionManager:
        loop = asyncio.get_running_loop()
        if self._manager is not None and self._loop is loop and self._runner is not None and not self._runner.done():
            return self._manager
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
        async with self._lock:
            if self._manager is not None and self._runner is not None and not self._runner.done():
                return self._manager
            # A manager runs once: a new one (with a new server) each time one has to be started.
            server = build_server()
            server.streamable_http_app(
                stateless_http=True,
                json_response=True,
                max_request_body_size=MAX_BODY_BYTES,
                # Host and Origin are checked above against Django's ALLOWED_HOSTS, not the SDK's
                # localhost-only default.
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            manager = server.session_manager
            started = asyncio.Event()

            async def hold() -> None:
                async with manager.run():
                    started.set()
                    await asyncio.Event().wait()  # until the loop ends or close() cancels it

            # A context of its own: the runner must not inherit this request's (its thread, its token).
            runner = loop.create_task(hold(), name="agentops-mcp-session-manager", context=contextvars.Context())
            waiter = loop.create_task(started.wait())
            await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                waiter.cancel()
                runner.result()  # raises why it ended
                raise RuntimeError("the MCP session manager ended before it started")
            self._manager, self._runner = manager, runner
            return manager

    async def close(self) -> None:
        """Stop the session manager (tests; a server that shuts down just drops it with its loop)."""
        runner, self._runner, self._manager = self._runner, None, None
        if runner is not None and not runner.done():
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass


class McpMount:
    """ASGI middleware: `/mcp` and `/mcp/` go to the MCP endpoint, every other request to `app`."""

    def __init__(self, app: ASGIApp, *, endpoint: McpEndpoint | None = None) -> None:
        self.app = app
        self.endpoint = endpoint or McpEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in MCP_PATHS:
            return await self.endpoint(scope, receive, send)
        return await self.app(scope, receive, send)
