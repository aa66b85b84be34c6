"""A small fake of the Anthropic Messages API, served over a real socket.

The product talks to it through the real `anthropic` SDK (``base_url=fake.base_url``), so tests
exercise the SDK's request building and response parsing, not a mock. Each POST to
``/v1/messages`` takes the next scripted response from the queue (or asks ``handler``), and every
request is recorded so tests can assert what the SDK actually sent.

    with FakeAnthropic([error(529), message(text="hi")]) as fake:
        client = anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)
        ...
        assert fake.requests[0].headers["x-api-key"] == "k"

With ``strict=True`` it also plays the real API's request validation (``api_violations``): a request the
real API would refuse (an unknown block echoed back, a tool-use id that is not an id or is reused, a
tool_use without its tool_result) gets a 400 and lands in ``fake.rejected``. The adversarial suite
(tests/adversarial) uses it to play a hostile model: scripted malformed blocks, odd ids, impossible
usage, ``stop_reason="max_tokens"``, errors, delays.
"""

from __future__ import annotations

import itertools
import json
import re
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
    "api_violations",
    "KNOWN_BLOCK_TYPES",
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


# -- what the real API refuses ------------------------------------------------------------------
# The block types the Messages API accepts back in a request (assistant and user turns). Anything else
# (a block type a hostile or newer model invented) is a 400 from the real API.
KNOWN_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
    }
)
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]{1,200}$")


def api_violations(body: Any) -> list[str]:
    """Why the real Messages API would answer this request body with 400 (empty: it would accept it).

    Covers what a controller replaying model output can get wrong: unknown block types echoed back,
    tool_use ids that are not ids, ids reused, tool_use without its tool_result right after, results
    for calls that were never made, and non-object tool inputs."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems: list[str] = []
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["messages: a non-empty list is required"]
    seen_ids: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            problems.append(f"messages.{i}: role must be user or assistant")
            continue
        content = msg.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            problems.append(f"messages.{i}.content: a string or a list of blocks is required")
            continue
        if not content and not (msg["role"] == "assistant" and i == len(messages) - 1):
            problems.append(f"messages.{i}.content: empty")
        uses: list[str] = []
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in KNOWN_BLOCK_TYPES:
                problems.append(f"messages.{i}.content.{j}: unknown block type {kind!r}")
                continue
            if kind == "tool_use":
                if msg["role"] != "assistant":
                    problems.append(f"messages.{i}.content.{j}: tool_use in a user turn")
                tid = block.get("id")
                if not isinstance(tid, str) or not _TOOL_USE_ID.match(tid):
                    problems.append(f"messages.{i}.content.{j}.id: does not match ^[a-zA-Z0-9_-]+$ (length {len(str(tid))})")
                elif tid in seen_ids:
                    problems.append(f"messages.{i}.content.{j}.id: tool_use ids must be unique ({tid})")
                else:
                    seen_ids.add(tid)
                    uses.append(tid)
                if not isinstance(block.get("input"), dict):
                    problems.append(f"messages.{i}.content.{j}.input: an object is required")
                if not isinstance(block.get("name"), str) or not re.match(r"^[a-zA-Z0-9_-]{1,128}$", block.get("name") or ""):
                    problems.append(f"messages.{i}.content.{j}.name: not a tool name")
            if kind == "text" and not isinstance(block.get("text"), str):
                problems.append(f"messages.{i}.content.{j}.text: a string is required")
        if uses:
            following = messages[i + 1] if i + 1 < len(messages) else None
            answered: list[str] = []
            if following is not None and isinstance(following.get("content"), list):
                answered = [b.get("tool_use_id") for b in following["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
            missing = [u for u in uses if u not in answered]
            if following is not None and missing:
                problems.append(f"messages.{i}: tool_use ids without tool_result blocks immediately after: {missing}")
        if msg["role"] == "user" and i > 0:
            previous = messages[i - 1]
            asked = set()
            if isinstance(previous.get("content"), list):
                asked = {b.get("id") for b in previous["content"] if isinstance(b, dict) and b.get("type") == "tool_use"}
            for j, block in enumerate(content):
                if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                    problems.append(f"messages.{i}.content.{j}: tool_result for unknown tool_use_id {str(block.get('tool_use_id'))[:60]!r}")
    if messages[0].get("role") != "user":
        problems.append("messages.0: the first message must be a user turn")
    return problems


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
        strict: bool = False,
    ) -> None:
        """``responses`` are served in order; once they run out, ``handler(request_json)`` answers
        (it may return a response spec or a bare Messages body). With neither, the server answers
        400 so a test that makes an unexpected call fails loudly instead of hanging or retrying.

        ``strict``: check each request the way the real API does (``api_violations``) and answer one
        it would refuse with its 400, recording why in ``rejected`` (the scripted response is not used)."""
        self._queue: deque[dict] = deque(responses)
        self.handler = handler
        self.strict = strict
        self.rejected: list[list[str]] = []
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
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True)
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
        violations = api_violations(body) if self.strict and h.path.split("?")[0] == "/v1/messages" else []
        with self._lock:
            self.requests.append(record)
            if violations:
                self.rejected.append(violations)
                spec = error(400, "; ".join(violations)[:1000])
            else:
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
