"""Per-run resources the tools share: the sandbox and the forge, created on first use.

A run that resumes on another worker (after a crash or an approval) gets a fresh sandbox with the
workspace restored from the last diff recorded in the idempotency ledger, so the state of the code
never depends on worker memory.
"""

from __future__ import annotations

import logging
from typing import Any

from agentops.runs.models import ExecutionStatus, Run, ToolExecution

log = logging.getLogger(__name__)


class RunServices:
    def __init__(self, run: Run) -> None:
        self.run = run
        self._sandbox: Any = None
        self._forge: Any = None

    def forge(self) -> Any:
        if self._forge is None:
            from agentops.forges import get_forge

            self._forge = get_forge(self.run.agent)
        return self._forge

    def sandbox(self) -> Any:
        if self._sandbox is None:
            from agentops.sandbox import SandboxLimits, create_sandbox

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

    def close(self) -> None:
        if self._sandbox is not None:
            try:
                self._sandbox.destroy()
            except Exception:
                log.warning("destroying the sandbox of run %s failed", self.run.pk, exc_info=True)
            self._sandbox = None
