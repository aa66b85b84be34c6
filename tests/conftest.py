"""Shared fixtures: an agent with a policy, and the test suite's own tools."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

import tests.support.tools  # noqa: F401  registers test_* tools in this process


def _requires_real(component: str, reason: str) -> None:
    """Locally a missing component skips with its reason; in CI it fails (nothing may skip)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{component} is required in CI: {reason}")
    pytest.skip(f"{component} unavailable: {reason}")


@pytest.fixture
def require_real() -> Callable[[str, str], None]:
    return _requires_real


@pytest.fixture
def make_agent(db: Any) -> Callable[..., Any]:
    from agentops.agents.models import Agent, Policy, ToolGrant
    from agentops.llm.prices import DEFAULT_MODEL

    counter = iter(range(1, 10_000))

    def make(
        *, script: list[dict] | None = None, grants: dict[str, dict] | None = None, trust_phase: int = 1, policy: dict | None = None, **fields: Any
    ) -> Agent:
        n = next(counter)
        config = fields.pop("config", {"planner": "scripted", "script": script or []})
        agent = Agent.objects.create(
            name=fields.pop("name", f"agent {n}"),
            slug=fields.pop("slug", f"agent-{n}"),
            objective=fields.pop("objective", "Test objective."),
            model=fields.pop("model", DEFAULT_MODEL),
            trust_phase=trust_phase,
            config=config,
            **fields,
        )
        Policy.objects.create(agent=agent, **(policy or {}))
        for tool, scope in (grants or {}).items():
            approval = scope.pop("_approval", "default") if isinstance(scope, dict) else "default"
            ToolGrant.objects.create(agent=agent, tool=tool, scope=scope, approval=approval)
        return agent

    return make


@pytest.fixture
def start_run() -> Callable[..., Any]:
    """Create a run (not enqueued) and drive it in this process."""
    from agentops.runs.controller import execute_run
    from agentops.runs.services import run_create

    def start(agent: Any, input: str = "do the thing", *, execute: bool = True, **kw: Any) -> Any:
        run = run_create(agent=agent, input=input, actor="test", enqueue=False, **kw)
        if execute:
            execute_run(run.pk)
            run.refresh_from_db()
        return run

    return start


def step_kinds(run: Any) -> list[str]:
    return list(run.steps.order_by("seq").values_list("kind", flat=True))


@pytest.fixture(params=["bubblewrap", "docker"])
def sandbox_backend(request: Any, settings: Any, require_real: Callable[[str, str], None]) -> Any:
    """Each real sandbox backend in turn, with a sandbox root of its own, for tests of the
    isolation itself (in CI a missing backend fails; locally it is skipped, saying why)."""
    import shutil
    import tempfile

    from agentops.sandbox import available_backends

    reason = available_backends()[request.param]
    if reason:
        require_real(request.param, reason)
    settings.AGENTOPS_SANDBOX_BACKEND = request.param
    root = tempfile.mkdtemp(prefix=f"agentops-{request.node.module.__name__.rsplit('.', 1)[-1]}-")
    os.chmod(root, 0o711)
    settings.AGENTOPS_SANDBOX_ROOT = root
    yield request.param
    shutil.rmtree(root, ignore_errors=True)
