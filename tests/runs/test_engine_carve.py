"""The engine's seams: the heartbeat thread, the reaper's schedules, the lease on every step write,
the run's status transitions and the one budget-history rule."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pytest

from agentops.runs.models import Run, StepKind
from tests.runs.test_controller import call, turn


def test_a_heartbeat_thread_keeps_the_method_the_interpreter_calls_after_a_fork(settings):
    from agentops.runs.controller import Heartbeat

    settings.AGENTOPS_HEARTBEAT_S = 60
    beat = Heartbeat(run_id=0, owner="w")
    assert callable(beat._stop), "threading.Thread._stop must not be shadowed by an attribute"
    beat.start()
    # Fork while the heartbeat thread is alive and read what the child's interpreter wrote to stderr:
    # after a fork it calls _stop() on every other thread.
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    try:
        pid = os.fork()
        if pid == 0:  # the child: its after-fork hooks have already run
            os._exit(0)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as child_stderr:
        written = child_stderr.read()
    beat.stop()
    beat.join(timeout=5)
    assert "TypeError" not in written, written
    assert not beat.is_alive()


@pytest.mark.django_db
def test_the_reaper_does_not_swallow_a_schedule_that_cannot_be_imported(monkeypatch):
    from agentops.runs import tasks

    def broken(now: Any) -> list[Any]:
        raise ImportError("No module named 'croniter'")

    monkeypatch.setattr(tasks, "fire_due_schedules", broken)
    with pytest.raises(ImportError):
        tasks.reap()


@pytest.mark.django_db(transaction=True)
def test_a_gate_step_written_after_another_worker_took_the_run_over_is_refused(make_agent, monkeypatch):
    """A worker presumed dead but still inside a tool must not write the gate's verdict into a run
    that now belongs to someone else."""
    from agentops.redaction import contains_secret as real
    from agentops.runs.controller import execute_run
    from agentops.runs.services import run_create

    taken_over = threading.Event()

    def check_then_lose_the_lease(text: Any) -> bool:
        # The moment between the tool's start and its gate step: another worker claims the run.
        Run.objects.filter(pk=run.pk).update(lease_owner="another-worker")
        taken_over.set()
        return real(text)

    agent = make_agent(
        script=[turn(call("submit_report", root_cause="the pool", summary="sized at 10")), {"text": "done"}],
        grants={"submit_report": {}},
        trust_phase=2,
    )
    run = run_create(agent=agent, input="find it", actor="test", enqueue=False)
    # Where the tool looks it up: submit_report's secrets gate.
    monkeypatch.setattr("agentops.tools.pull_requests.contains_secret", check_then_lose_the_lease)
    assert execute_run(run.pk, owner="first-worker") == "lease-lost"
    assert taken_over.is_set()
    assert not run.steps.filter(kind=StepKind.GATE).exists(), "a gate step was written without the lease"
    assert not run.steps.filter(kind=StepKind.OBSERVATION).exists()


@pytest.mark.django_db
def test_a_tool_context_writes_its_steps_only_under_the_lease(make_agent):
    from agentops.runs.services import run_create
    from agentops.runs.steps import LeaseLost
    from agentops.tools.registry import ToolContext

    agent = make_agent()
    run = run_create(agent=agent, input="x", actor="test", enqueue=False)
    Run.objects.filter(pk=run.pk).update(lease_owner="holder")
    ctx = ToolContext(
        run=run, agent=agent, scope={}, tool_call_id="c", idempotency_key="k", should_stop=lambda: False, emit=lambda text: None, lease_owner="not-the-holder"
    )
    with pytest.raises(LeaseLost):
        ctx.record_step(StepKind.GATE, {"gate": "secrets", "passed": True, "detail": "-"})
    ctx.lease_owner = "holder"
    assert ctx.record_step(StepKind.GATE, {"gate": "secrets", "passed": True, "detail": "-"}).kind == StepKind.GATE


@pytest.mark.django_db
def test_each_status_transition_wins_only_from_the_state_it_starts_from(make_agent):
    from agentops.runs import transitions
    from agentops.runs.models import RunStatus
    from agentops.runs.services import run_create

    run = run_create(agent=make_agent(), input="x", actor="test", enqueue=False)
    assert transitions.claim(run.pk, "w1")
    assert not transitions.claim(run.pk, "w2"), "a leased running run is not claimable"
    assert not transitions.await_approval(run.pk, "w2"), "only the lease holder may park the run"
    assert not transitions.resume_after_decision(run.pk), "a running run is not waiting"
    assert transitions.await_approval(run.pk, "w1")
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL and run.lease_owner == ""
    assert transitions.resume_after_decision(run.pk)
    assert not transitions.resume_after_decision(run.pk), "a decision resumes the run once"
    assert transitions.finish(run_id=run.pk, status=RunStatus.KILLED, reason="kill switch engaged")
    assert not transitions.finish(run_id=run.pk, status=RunStatus.FAILED, reason="late"), "a run finishes once"
    run.refresh_from_db()
    assert run.status == RunStatus.KILLED and run.outcome == "killed_by_switch"
    assert not transitions.claim(run.pk, "w3")


def test_nothing_outside_transitions_writes_a_run_status():
    """One writer per state change: a status UPDATE anywhere else is a second writer."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    writers = []
    for path in [*(root / "agentops").rglob("*.py"), *(root / "dashboard").rglob("*.py")]:
        if "migrations" in path.parts or path.name == "transitions.py":
            continue
        if re.search(r"\.update\([^)]*\bstatus=RunStatus\.", path.read_text()):
            writers.append(str(path.relative_to(root)))
    assert writers == []


@pytest.mark.django_db
def test_a_spec_that_changes_a_cost_cap_marks_the_budget_as_set_by_a_person(make_agent):
    from agentops.agents.spec import apply_spec, export_spec

    agent = make_agent(slug="budgeted")
    spec = export_spec()
    assert agent.policy.budget_set_by_person is False
    apply_spec(spec, actor="test")
    agent.policy.refresh_from_db()
    assert agent.policy.budget_set_by_person is False, "an unchanged cap is not a person's choice"
    mine = next(a for a in spec["agents"] if a["slug"] == "budgeted")
    mine["policy"]["max_cost_usd"] = "2.5"
    apply_spec(spec, actor="test")
    agent.policy.refresh_from_db()
    assert agent.policy.budget_set_by_person is True and str(agent.policy.max_cost_usd) == "2.500000"


@pytest.mark.django_db
def test_the_grant_form_and_the_spec_refuse_never_for_an_irreversible_tool_with_one_rule():
    from agentops.agents.spec import grant_approval_error
    from agentops.tools.registry import all_tools
    from dashboard.forms import GrantForm

    irreversible = next(t for t in all_tools().values() if t.risk_class == "irreversible")
    rule = grant_approval_error(irreversible, "never")
    assert rule and grant_approval_error(irreversible, "always") is None
    form = GrantForm(data={"tool": irreversible.name, "scope": "{}", "approval": "never"})
    assert not form.is_valid()
    assert rule in form.errors.get("approval", [])
