"""General-purpose tools. Code, forge and error-tracker tools register from their own modules
(``agentops.tools.catalog`` imports them all)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from agentops.tools.registry import Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import STRING_LIST, require_recipients_in_scope, require_url_in_scope

HTTP_GET_MAX_BYTES = 200_000


def _http_get(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    require_url_in_scope(args["url"], ctx.scope)
    request = urllib.request.Request(args["url"], headers={"User-Agent": "agentops"})
    # Redirects could leave the allowed domains: refuse to follow them.
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=min(float(ctx.scope.get("timeout_s", 10)), 30)) as response:
            body = response.read(HTTP_GET_MAX_BYTES + 1)
            status = response.status
    except urllib.error.HTTPError as exc:
        return ToolResult(output=f"HTTP {exc.code}", is_error=True)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ToolError(f"request failed: {exc}") from None
    text = body[:HTTP_GET_MAX_BYTES].decode("utf-8", errors="replace")
    if len(body) > HTTP_GET_MAX_BYTES:
        text += f"\n[truncated at {HTTP_GET_MAX_BYTES} bytes]"
    return ToolResult(output=f"HTTP {status}\n{text}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _send_email(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    recipients = args["to"]
    require_recipients_in_scope(recipients, ctx.scope)
    sent = send_mail(args["subject"], args["body"], settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
    return ToolResult(output=f"sent to {', '.join(recipients)}" if sent else "not sent", is_error=not sent)


register(
    Tool(
        name="http_get",
        description="Fetch a web page or API response by URL (GET only, allowed domains only, no redirects).",
        input_schema={
            "type": "object",
            "properties": {"url": {"type": "string", "maxLength": 2000}},
            "required": ["url"],
            "additionalProperties": False,
        },
        risk_class="read",
        scope_schema={
            "type": "object",
            "properties": {"domains": STRING_LIST, "timeout_s": {"type": "number", "minimum": 1, "maximum": 30}},
            "required": ["domains"],
            "additionalProperties": False,
        },
        executor=_http_get,
        side_effecting=False,
        scope_check=lambda args, scope: require_url_in_scope(args["url"], scope),
    )
)

register(
    Tool(
        name="send_email",
        description="Send an email. Leaves the building: a person approves every message.",
        input_schema={
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": {"type": "string", "format": "email", "maxLength": 254}, "minItems": 1, "maxItems": 20},
                "subject": {"type": "string", "minLength": 1, "maxLength": 200},
                "body": {"type": "string", "maxLength": 20000},
            },
            "required": ["to", "subject", "body"],
            "additionalProperties": False,
        },
        risk_class="irreversible",
        scope_schema={
            "type": "object",
            "properties": {"recipient_domains": STRING_LIST},
            "required": ["recipient_domains"],
            "additionalProperties": False,
        },
        executor=_send_email,
        scope_check=lambda args, scope: require_recipients_in_scope(args["to"], scope),
    )
)


def _wait(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Blocks like a slow real tool (a long test run), but stops the moment the run must stop."""
    deadline = time.monotonic() + float(args["seconds"])
    while time.monotonic() < deadline:
        if ctx.should_stop():
            return ToolResult(output="stopped", is_error=True)
        time.sleep(0.02)
    return ToolResult(output=f"waited {args['seconds']} s")


register(
    Tool(
        name="wait",
        description="Wait for a number of seconds (used by kill-switch drills and benchmarks).",
        input_schema={
            "type": "object",
            "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
        risk_class="read",
        scope_schema={"type": "object", "additionalProperties": False},
        executor=_wait,
        side_effecting=False,
        waits=True,
    )
)
