"""Per-run resources the tools share: the sandbox and the forge, created on first use.

A run that resumes on another worker (after a crash or an approval) gets a fresh sandbox with the
workspace restored from the last diff recorded in the idempotency ledger, so the state of the code
never depends on worker memory.

Whatever else a run opens for itself (an MCP server's session) registers a close hook
(``add_close_hook``). ``close`` runs the hooks, newest first, then destroys the sandbox: the worker
calls it once, whenever it lets go of the run (finished, stopped, killed, waiting for a person, lease
lost, or crashed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agentops.forges import get_forge
from agentops.runs.models import ExecutionStatus, Run, ToolExecution
from agentops.sandbox import SandboxLimits, create_sandbox

log = logging.getLogger(__name__)


class RunServices:
    def __init__(self, run: Run) -> None:
        self.run = run
        self._sandbox: Any = None
        self._forge: Any = None
        self._close_hooks: list[Callable[[], None]] = []

    def forge(self) -> Any:
        if self._forge is None:
            self._forge = get_forge(self.run.agent)
        return self._forge

    def sandbox(self) -> Any:
        if self._sandbox is None:
            agent = self.run.agent
            policy = agent.policy
            repo_name = agent.config.get("repository")
            if not repo_name:
                raise RuntimeError("this agent has no repository configured (config.repository)")
            forge = self.forge()
            limits = SandboxLimits.from_policy(policy)
            self._sandbox = create_sandbox(
                run_id=str(self.run.pk),
                repo=forge.clone_source(repo_name),
                ref=self.run.context.get("ref") or agent.config.get("base_branch", "main"),
                limits=limits,
                image=agent.config.get("sandbox_image"),
            )
            self._restore_workspace()
        return self._sandbox

    def _restore_workspace(self) -> None:
        # Failed calls count too: a test run that fails still leaves the files it was given.
        last = (
            ToolExecution.objects.filter(run=self.run, status__in=[ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED], result__data__has_key="workspace_diff")
            .order_by("-finished_at", "-pk")
            .first()
        )
        if last is None:
            return
        diff = ((last.result or {}).get("data") or {}).get("workspace_diff") or ""
        if diff.strip():
            self._sandbox.write_file(".agentops-restore.patch", diff)
            result = self._sandbox.exec("git apply --whitespace=nowarn .agentops-restore.patch && rm .agentops-restore.patch", timeout=60)
            if result.exit_code != 0:
                raise RuntimeError(f"could not restore the workspace of run {self.run.pk}: {result.output[-500:]}")

    @property
    def has_sandbox(self) -> bool:
        return self._sandbox is not None

    @property
    def sandbox_backend(self) -> str | None:
        """Which isolation this run's commands get (named on every step a sandbox produced)."""
        return getattr(self._sandbox, "backend", None)

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        """Close a per-run resource (an MCP session) when the worker lets go of the run."""
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Close what the run opened: the hooks newest first (a session may live in the sandbox),
        then the sandbox. A failure is logged and the rest is still closed."""
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                log.warning("closing a resource of run %s failed", self.run.pk, exc_info=True)
        if self._sandbox is not None:
            try:
                self._sandbox.destroy()
            except Exception:
                log.warning("destroying the sandbox of run %s failed", self.run.pk, exc_info=True)
            self._sandbox = None
