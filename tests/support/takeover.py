"""A worker that dies at its first model call after a person decided, and another that takes the
run over: for the tests that check a decision survives a takeover."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from agentops.runs.controller import execute_run
from agentops.runs.models import Run
from agentops.runs.turns import ModelTurns


def resumed_after_a_takeover(run: Run, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The worker that resumes `run` dies at its first model call (the database went away) with its
    lease still set; once the lease expires, another worker takes the run over. Returns the run as
    the second worker left it."""
    real = ModelTurns.take
    state = {"armed": True}

    def take(self: ModelTurns) -> None:
        if state.pop("armed", False):
            raise OperationalError("the database went away")
        real(self)

    monkeypatch.setattr(ModelTurns, "take", take)
    assert execute_run(run.pk, owner="worker-1") == "database-unavailable"
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    execute_run(run.pk, owner="worker-2")
    run.refresh_from_db()
    return run
