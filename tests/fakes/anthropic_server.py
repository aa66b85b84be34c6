"""A small fake of the Anthropic Messages API, served over a real socket.

The product talks to it through the real `anthropic` SDK (``base_url=fake.base_url``), so tests
exercise the SDK's request building and response parsing, not a mock. Each POST to
``/v1/messages`` takes the next scripted response from the queue (or asks ``handler``), and every
request is recorded so tests can assert what the SDK actually sent.

    with FakeAnthropic([error(529), message(text="hi")]) as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)
        ...
        assert fake.requests[0].headers["x-api-key"] == "k"
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "message",
    "tool_use",
    "error",
    "delay",
    "malformed_json",
    "missing_content",
    "raw",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}

_ids = itertools.count(1)


# -- response builders ---------------------------------------------------------------------------
# A response spec is a plain dict: {"status", "body" (JSON-able) | "raw" (str), "headers", "delay_s"}.


def tool_use(name: str, input: Any = None, id: str | None = None) -> dict:
    """A tool_use content block (for ``message(tools=[...])``)."""
    return {"type": "tool_use", "id": id or f"toolu_fake_{next(_ids)}", "name": name, "input": input or {}}


def message(
    text: str | None = None,
    tools: Iterable[dict] = (),
    *,
    stop_reason: str | None = None,
    model: str | None = None,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int | None = 0,
    cache_read_input_tokens: int | None = 0,
    content: list[dict] | None = None,
    headers: dict | None = None,
) -> dict:
    """A successful Messages API response. ``model=None`` echoes the requested model."""
    blocks = list(content) if content is not None else []
    if content is None:
        if text is not None:
            blocks.append({"type": "text", "text": text})
        blocks.extend(tools)
    if stop_reason is None:
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_creation_input_tokens is not None:
        usage["cache_creation_input_tokens"] = cache_creation_input_tokens
    if cache_read_input_tokens is not None:
        usage["cache_read_input_tokens"] = cache_read_input_tokens
    body = {
        "id": f"msg_fake_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"status": 200, "body": body, "headers": dict(headers or {})}


def error(status: int, msg: str | None = None, *, retry_after: float | None = None, type: str | None = None) -> dict:
    """An API error in Anthropic's envelope; ``retry_after`` sets the ``retry-after`` header (seconds)."""
    err_type = type or _ERROR_TYPES.get(status, "api_error")
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    body = {"type": "error", "error": {"type": err_type, "message": msg or f"fake {err_type}"}}
    return {"status": status, "body": body, "headers": headers}


def delay(seconds: float, then: dict | None = None) -> dict:
    """Sleep ``seconds`` before sending ``then`` (default: a plain text message) — for timeouts."""
    spec = dict(then or message(text="late"))
    spec["delay_s"] = seconds
    return spec


def raw(body: str, *, status: int = 200, content_type: str = "application/json") -> dict:
    return {"status": status, "raw": body, "headers": {"content-type": content_type}}


def malformed_json() -> dict:
    """A 200 whose body is not JSON at all."""
    return raw('{"id": "msg_broken", "content": [')


def missing_content() -> dict:
    """A 200 that parses as JSON but has no ``content``."""
    spec = message(text="x")
    del spec["body"]["content"]
    return spec


# -- the server ----------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it did not parse

    @property
    def api_key(self) -> str | None:
        """The key the client authenticated with: ``x-api-key``, or the ``Authorization: Bearer``
        header that the 2.x SDK sends for ``api_key=``."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


class FakeAnthropic:
    def __init__(
        self,
        responses: Iterable[dict] = (),
        *,
        handler: Callable[[dict], dict] | None = None,
    ) -> None:
        """``responses`` are served in order; once they run out, ``handler(request_json)`` answers
        (it may return a response spec or a bare Messages body). With neither, the server answers
        400 so a test that makes an unexpected call fails loudly instead of hanging or retrying."""
        self._queue: deque[dict] = deque(responses)
        self.handler = handler
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wake handlers sleeping in a delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeAnthropic is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # scripting
    def push(self, *responses: dict) -> None:
        with self._lock:
            self._queue.extend(responses)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    # request handling
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        text = h.rfile.read(length).decode("utf-8") if length else ""
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        record = RecordedRequest(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
            spec = self._queue.popleft() if self._queue else None
        if spec is None:
            if h.path.split("?")[0] != "/v1/messages":
                spec = error(404, f"FakeAnthropic serves /v1/messages only, not {h.path}")
            elif self.handler is not None:
                spec = self.handler(body if isinstance(body, dict) else {})
                if "status" not in spec:  # a bare Messages body
                    spec = {"status": 200, "body": spec}
            else:
                spec = error(400, "FakeAnthropic: no scripted response left for this request")

        if spec.get("delay_s") and self._closing.wait(spec["delay_s"]):
            return  # shutting down: drop the connection
        self._send(h, spec, body)

    def _send(self, h: BaseHTTPRequestHandler, spec: dict, request_body: Any) -> None:
        headers = {"content-type": "application/json", **spec.get("headers", {})}
        if "raw" in spec:
            payload = spec["raw"].encode("utf-8")
        else:
            out = spec.get("body")
            if isinstance(out, dict) and out.get("type") == "message" and out.get("model") is None:
                requested = request_body.get("model") if isinstance(request_body, dict) else None
                out = {**out, "model": requested or "claude-fake"}
            payload = json.dumps(out).encode("utf-8")
        headers.setdefault("request-id", f"req_fake_{next(_ids)}")
        try:
            h.send_response(spec.get("status", 200))
            for name, value in headers.items():
                h.send_header(name, value)
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) — that is what the test wanted
