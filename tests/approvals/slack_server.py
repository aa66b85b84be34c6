"""A stand-in for Slack on a real socket: the Web API methods agentops calls (chat.postMessage,
chat.update, checked like Slack does: bot token, channel, existing message) and the response_url hooks
that carry private answers to the person who clicked."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class FakeSlack:
    CHANNEL_ID = "C0APPROVALS"

    def __init__(self, *, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.api_calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        # When set, every Web API call answers {"ok": false, "error": <this>} (Slack's own failures).
        self.error: str | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def api_url(self) -> str:
        return f"{self.origin}/api/"

    def response_url(self, name: str = "click") -> str:
        return f"{self.origin}/actions/T0ACME/{name}"

    def calls(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for name, body in self.api_calls if name == method]

    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _blocks_valid(blocks: Any) -> bool:
        """Slack's limits that a long call or reason could break (Slack answers invalid_blocks)."""
        if blocks is None:
            return True
        if not isinstance(blocks, list) or len(blocks) > 50:
            return False
        limits = {"header": 150, "section": 3000}
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            if len(text) > limits.get(block.get("type"), 3000) or len(block.get("block_id", "")) > 255:
                return False
            for element in block.get("elements", []):
                if len(element.get("value", "")) > 2000 or len(element.get("text", "") if isinstance(element.get("text"), str) else "") > 3000:
                    return False
        return True

    def _api(self, method: str, body: dict[str, Any], authorization: str) -> dict[str, Any]:
        if authorization != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        if not self._blocks_valid(body.get("blocks")):
            return {"ok": False, "error": "invalid_blocks"}
        with self.lock:
            self.api_calls.append((method, body))
            if self.error:
                return {"ok": False, "error": self.error}
            if method == "chat.postMessage":
                if not body.get("channel") or not (body.get("text") or body.get("blocks")):
                    return {"ok": False, "error": "no_text" if body.get("channel") else "channel_not_found"}
                ts = f"1700000000.{len(self.messages) + 1:06d}"
                self.messages[ts] = {"text": body.get("text"), "blocks": body.get("blocks")}
                return {"ok": True, "channel": self.CHANNEL_ID, "ts": ts, "message": self.messages[ts]}
            if method == "chat.update":
                if body.get("channel") != self.CHANNEL_ID or body.get("ts") not in self.messages:
                    return {"ok": False, "error": "message_not_found"}
                self.messages[body["ts"]] = {"text": body.get("text"), "blocks": body.get("blocks")}
                return {"ok": True, "channel": self.CHANNEL_ID, "ts": body["ts"], "text": body.get("text")}
        return {"ok": False, "error": "unknown_method"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                if self.path.startswith("/api/"):
                    reply = fake._api(self.path.removeprefix("/api/"), body, self.headers.get("Authorization", ""))
                    data, kind = json.dumps(reply).encode(), "application/json; charset=utf-8"
                else:
                    with fake.lock:
                        fake.answers.append((self.path, body))
                    data, kind = b"ok", "text/plain"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
