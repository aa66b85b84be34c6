"""The tool catalog: which modules' tools a run may be granted, loaded once Django's apps are ready.

A tool module registers its tools when it is imported (``agentops.tools.registry.register``). The
built-in modules are imported here, in the order the model has always seen their tools; a deployment
names its own modules in ``AGENTOPS_TOOL_MODULES`` (the test suite names ``tests.support.tools``).
The registry imports none of them (they import it), so the registry, the scopes and the gates that use
them have no import cycle. ``RunsConfig.ready`` calls ``load_tools``; a run's own tools (from MCP
servers) are added to its ``ToolSet``, never here.
"""

from __future__ import annotations

import importlib

from django.conf import settings

# Import order is registration order (the tool list the model sees): keep it, do not sort.
# isort: off
from agentops.tools import builtin  # noqa: F401  http_get, send_email, wait
from agentops.tools import errors  # noqa: F401  the error tracker
from agentops.tools import repo  # noqa: F401  the workspace
from agentops.tools import git  # noqa: F401  commits
from agentops.tools import pull_requests  # noqa: F401  the forge, behind the verification gates
from agentops.tools import ask  # noqa: F401  ask_person (the controller carries it out)
# isort: on

_extra_loaded = False


def load_tools() -> None:
    """Import the modules named in AGENTOPS_TOOL_MODULES, once (the built-in ones came with this
    module). A module that cannot be imported stops the process at start, not a run later."""
    global _extra_loaded
    if _extra_loaded:
        return
    for module in getattr(settings, "AGENTOPS_TOOL_MODULES", []):
        importlib.import_module(module)
    _extra_loaded = True
