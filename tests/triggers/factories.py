"""Objects the issue-5 tests share: a debugging agent with a policy, an error project, a trigger."""

from __future__ import annotations

from typing import Any

from agentops.agents.models import Agent, Policy, Trigger, TriggerKind
from agentops.triggers.models import ErrorProject


def make_agent(slug: str = "debugging-agent", *, trust_phase: int = 3, config: dict[str, Any] | None = None, **policy: Any) -> Agent:
    agent = Agent.objects.create(
        name=slug.replace("-", " ").title(),
        slug=slug,
        objective="Fix critical errors.",
        model="claude-sonnet-4-6",
        trust_phase=trust_phase,
        config=config
        if config is not None
        else {
            "repository": "checkout-service",
            "forge": "local",
            "base_branch": "main",
            "test_command": "python3 -m pytest -q",
            "planner": "scripted",
        },
    )
    Policy.objects.create(agent=agent, **policy)
    return agent


def make_project(slug: str = "checkout") -> ErrorProject:
    return ErrorProject.objects.create(name=slug.title(), slug=slug)


def make_error_trigger(agent: Agent, **rules: Any) -> Trigger:
    base = {"project": "checkout", "min_level": "error"}
    base.update(rules)
    return Trigger.objects.create(agent=agent, name=f"errors-{agent.slug}", kind=TriggerKind.ERROR, rules=base)


def sentry_event(
    *,
    event_id: str | None = None,
    level: str = "error",
    exc_type: str = "ConnectionPoolExhaustedError",
    value: str = "pool of 10 exhausted",
    tags: dict[str, str] | None = None,
    lineno: int = 42,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "level": level,
        "platform": "python",
        "environment": "production",
        "tags": tags if tags is not None else {"service": "checkout"},
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": value,
                    "module": "checkout.db",
                    "stacktrace": {
                        "frames": [
                            {"filename": "threading.py", "function": "run", "module": "threading", "lineno": 1, "in_app": False},
                            {"filename": "checkout/service.py", "function": "checkout", "module": "checkout.service", "lineno": 20, "in_app": True},
                            {
                                "filename": "checkout/db.py",
                                "function": "acquire",
                                "module": "checkout.db",
                                "lineno": lineno,
                                "in_app": True,
                                "context_line": "raise ConnectionPoolExhaustedError(...)",
                                "vars": {"password": "hunter2"},
                            },
                        ]
                    },
                }
            ]
        },
    }
    if event_id:
        event["event_id"] = event_id
    event.update(extra)
    return event


# --- real sandboxes ------------------------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def bubblewrap(settings, require_real):
    """Sandboxes on the bubblewrap backend, in a root of their own. Import this fixture into a module.

    Locally a missing bwrap (or a host python3 without pytest) skips with the reason printed; in CI it fails."""
    from agentops.sandbox import available_backends

    reason = available_backends()["bubblewrap"]
    if reason:
        print(f"bubblewrap unavailable: {reason}")
        require_real("bubblewrap", reason)
    if subprocess.run(["/usr/bin/python3", "-m", "pytest", "--version"], capture_output=True).returncode != 0:
        print("the host python3 has no pytest")
        require_real("python3-pytest", "the host python3 has no pytest (apt-get install python3-pytest)")
    settings.AGENTOPS_SANDBOX_BACKEND = "bubblewrap"
    # Traversable by the sandbox's unprivileged uid, and private: another test process's reaper must
    # not take our sandboxes for orphans of its own database.
    root = tempfile.mkdtemp(prefix="agentops-test-sandboxes-")
    os.chmod(root, 0o711)
    settings.AGENTOPS_SANDBOX_ROOT = root
    yield root
    shutil.rmtree(root, ignore_errors=True)
