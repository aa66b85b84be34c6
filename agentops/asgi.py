import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from agentops.mcp.server_asgi import McpMount  # noqa: E402
from agentops.triggers.asgi import IngestFastPath, Receive, Scope, Send  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402


async def django_http(scope: Scope, receive: Receive, send: Send) -> None:
    # The middlewares below are typed for plain dict messages, Django's handler for Mappings: the
    # messages are the same dicts either way.
    await django_asgi_app(scope, receive, cast(Callable[[Mapping[str, Any]], Awaitable[None]], send))


application = ProtocolTypeRouter(
    {
        # /mcp is agentops' own MCP server (agentops/mcp/server_asgi.py); error ingest is served ahead
        # of Django's request stack (agentops/triggers/asgi.py says why); the rest is Django.
        "http": McpMount(IngestFastPath(django_http)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
