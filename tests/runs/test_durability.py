"""A run survives its worker (SIGKILL mid-run, another worker takes over from the steps), and no run
is stranded in `queued`: a lost job, a broker that refuses one, a worker that cannot reach the
database all end with the reconciler giving the run a new job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from agentops.runs.models import Run, RunStatus, Step, StepKind, ToolExecution
from tests.support.processes import FINAL, qcluster, wait_for_status
from tests.support.tools import lines

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def worker(run_id: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url(),
        "AGENTOPS_TOOL_MODULES": "tests.support.tools",
        "AGENTOPS_LEASE_TTL_S": "2",
        "AGENTOPS_HEARTBEAT_S": "1",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "agentops", "execute", str(run_id)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_is_sigkilled_finishes_on_another_with_no_step_lost_or_repeated(make_agent, tmp_path):
    from agentops.runs.services import run_create
    from agentops.runs.tasks import reap

    ledger = tmp_path / "effects"
    script = [{"text": f"step {i}", "tool_calls": [{"name": "test_append", "arguments": {"text": f"e{i}", "then_sleep": 0.4}}]} for i in range(6)]
    script.append({"text": "done"})
    agent = make_agent(script=script, grants={"test_append": {"path": str(ledger)}})
    run = run_create(agent=agent, input="survive", enqueue=False)

    first = worker(run.pk)
    deadline = time.monotonic() + 60
    while len(lines(ledger)) < 3:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at_lines = len(lines(ledger))

    # The lease runs out; the reaper hands the run over (here we count it, then run the new worker).
    time.sleep(2.5)
    with pytest.MonkeyPatch.context() as mp:
        enqueued: list[int] = []
        mp.setattr("agentops.runs.services.run_enqueue", lambda *, run_id: enqueued.append(run_id))
        reap()
    assert enqueued == [run.pk]
    second = worker(run.pk)
    output, _ = second.communicate(timeout=120)
    run.refresh_from_db()
    assert run.status == "succeeded", (run.status_reason, output)
    assert run.attempts == 2

    seqs = list(Step.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)), "a step is missing or numbered twice"
    call_ids = list(Step.objects.filter(run=run, kind=StepKind.TOOL_CALL).values_list("payload__tool_call_id", flat=True))
    assert len(call_ids) == len(set(call_ids)) == 6, "a tool call was recorded twice"
    observed = list(Step.objects.filter(run=run, kind=StepKind.OBSERVATION).values_list("payload__tool_call_id", flat=True))
    assert sorted(observed) == sorted(call_ids)
    keys = [line.split()[0] for line in lines(ledger)]
    assert len(keys) == len(set(keys)), f"a side effect was repeated: {keys}"
    assert len(keys) >= killed_at_lines
    assert ToolExecution.objects.filter(run=run).count() == 6


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_django_q2_worker_runs_an_enqueued_run_and_resumes_it_after_approval(make_agent, tmp_path):
    from django.contrib.auth.models import User

    from agentops.approvals.models import Approval
    from agentops.approvals.services import approval_decide
    from agentops.runs.services import run_create

    ledger = tmp_path / "payments"
    script = [
        {"text": "look", "tool_calls": [{"name": "test_echo", "arguments": {"text": "hello"}}]},
        {"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "42 EUR"}}]},
        {"text": "done"},
    ]
    agent = make_agent(script=script, grants={"test_echo": {}, "test_pay": {"path": str(ledger)}}, trust_phase=3)
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": database_url(), "AGENTOPS_TOOL_MODULES": "tests.support.tools"}
    env.pop("REDIS_URL", None)
    log = tmp_path / "qcluster.log"
    # The waits end as soon as the run gets there, or at once if the cluster died; their limit only
    # has to outlast a cluster starting on a loaded machine.
    with qcluster(env, log) as cluster:
        run = run_create(agent=agent, input="pay the invoice", actor="test")
        wait_for_status(run.pk, ("waiting_approval",), timeout=180, what="the worker never reached the approval", log_path=log, worker=cluster)
        assert not ledger.exists()
        admin = User.objects.create_superuser("root", password="pw")
        approval_decide(approval=Approval.objects.get(run=run), actor=admin, approve=True)
        status = wait_for_status(run.pk, FINAL, timeout=180, what="the worker never finished the run", log_path=log, worker=cluster)
        assert status == "succeeded", Run.objects.get(pk=run.pk).status_reason
        assert len(lines(ledger)) == 1


# --- no stranded run: the reconciler and the hand-off ------------------------------------------


class Broker:
    """Stands in for django-q2's async_task at its boundary: records jobs, or refuses them like a
    broker that cannot be reached."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.down = False

    def __call__(self, func: str, run_id: int, **kwargs: object) -> str:
        assert func == "agentops.runs.tasks.execute_run"
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        self.jobs.append(run_id)
        return "task-id"


@pytest.fixture
def broker(monkeypatch) -> Broker:
    fake = Broker()
    monkeypatch.setattr("django_q.tasks.async_task", fake)
    return fake


def run_create_dispatched(agent) -> Run:
    """run_create as a web request does it: its on-commit hand-off runs (inside a test's
    transaction it would not)."""
    from django.test import TestCase

    from agentops.runs.services import run_create

    with TestCase.captureOnCommitCallbacks(execute=True):
        return run_create(agent=agent, input="go")


def backdate(run: Run, seconds: float, *, handed_off: bool = True) -> None:
    """As if the run was created (and, if handed_off, last given a job) `seconds` ago."""
    past = timezone.now() - timedelta(seconds=seconds)
    Run.objects.filter(pk=run.pk).update(created_at=past, **({"heartbeat_at": past} if handed_off else {}))


@pytest.mark.django_db
def test_a_run_is_handed_to_the_broker_only_after_its_transaction_commits(make_agent, broker, django_capture_on_commit_callbacks):
    agent = make_agent(script=[{"text": "done"}])
    from agentops.runs.services import run_create

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = run_create(agent=agent, input="go")
    assert broker.jobs == [] and callbacks
    for callback in callbacks:
        callback()
    assert broker.jobs == [run.pk]
    assert run.dispatched is True
    assert Run.objects.get(pk=run.pk).heartbeat_at is not None


@pytest.mark.django_db
def test_the_reconciler_gives_a_new_job_to_a_queued_run_whose_job_was_lost(make_agent, broker, settings):
    from agentops.runs.tasks import reap

    settings.AGENTOPS_DISPATCH_GRACE_S = 10
    run = run_create_dispatched(make_agent(script=[{"text": "done"}]))
    assert broker.jobs == [run.pk]
    assert reap()["redispatched"] == 0, "a run handed off moments ago still has its job"
    backdate(run, 30)
    assert reap()["redispatched"] == 1
    assert broker.jobs == [run.pk, run.pk]
    assert reap()["redispatched"] == 0, "the new hand-off counts as a live job for another grace period"


@pytest.mark.django_db
def test_a_run_the_broker_refused_stays_queued_and_is_dispatched_once_the_broker_is_back(make_agent, broker, settings):
    from agentops.runs.tasks import reap

    settings.AGENTOPS_DISPATCH_GRACE_S = 10
    broker.down = True
    run = run_create_dispatched(make_agent(script=[{"text": "done"}]))
    assert run.dispatched is False
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    backdate(run, 30, handed_off=False)
    assert reap()["redispatched"] == 0, "the broker is still down"
    broker.down = False
    assert reap()["redispatched"] == 1
    assert broker.jobs == [run.pk]


@pytest.mark.django_db
def test_a_run_resumed_by_an_approval_whose_hand_off_failed_is_dispatched_by_the_reconciler(make_agent, broker, settings, tmp_path):
    from django.contrib.auth.models import User

    from agentops.approvals.models import Approval
    from agentops.approvals.services import approval_decide
    from agentops.runs.controller import execute_run
    from agentops.runs.tasks import reap

    settings.AGENTOPS_DISPATCH_GRACE_S = 10
    script = [{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "1 EUR"}}]}, {"text": "done"}]
    run = run_create_dispatched(make_agent(script=script, grants={"test_pay": {"path": str(tmp_path / "pay")}}, trust_phase=3))
    assert execute_run(run.pk) == "waiting"
    backdate(run, 60)  # created and last worked on long ago
    broker.down = True
    approval_decide(approval=Approval.objects.get(run=run), actor=User.objects.create_superuser("root", password="pw"), approve=True)
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    broker.down = False
    broker.jobs.clear()
    assert reap()["redispatched"] == 1 and broker.jobs == [run.pk]
    assert execute_run(run.pk) == "finished"
    assert len(lines(tmp_path / "pay")) == 1


@pytest.mark.django_db
def test_the_reconciler_leaves_runs_that_are_not_queued_or_still_leased_alone(make_agent, broker, settings):
    from agentops.runs.tasks import reap

    settings.AGENTOPS_DISPATCH_GRACE_S = 1
    agent = make_agent(script=[{"text": "done"}])
    old = timezone.now() - timedelta(seconds=60)
    held = run_create_dispatched(agent)
    Run.objects.filter(pk=held.pk).update(
        status=RunStatus.RUNNING, created_at=old, heartbeat_at=old, lease_owner="w", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )
    waiting = run_create_dispatched(agent)
    Run.objects.filter(pk=waiting.pk).update(status=RunStatus.WAITING_APPROVAL, created_at=old, heartbeat_at=old)
    done = run_create_dispatched(agent)
    Run.objects.filter(pk=done.pk).update(status=RunStatus.SUCCEEDED, created_at=old, heartbeat_at=old)
    broker.jobs.clear()
    counts = reap()
    assert (counts["redispatched"], counts["requeued"], broker.jobs) == (0, 0, [])
    Run.objects.filter(pk=held.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert reap()["requeued"] == 1 and broker.jobs == [held.pk]


def api_headers() -> dict[str, str]:
    from django.contrib.auth.models import User

    from dashboard.roles import ensure_roles
    from dashboard.services import api_token_create

    user = User.objects.create_user("starter", password="pw-starter")
    user.groups.add(ensure_roles()["admin"])
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t', scope='operate')[1]}"}


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_202_for_a_run_it_could_not_hand_off_and_the_run_still_runs(client, make_agent, broker, settings):
    from agentops.runs.tasks import reap

    settings.AGENTOPS_DISPATCH_GRACE_S = 1
    agent = make_agent(script=[{"text": "done"}])
    headers = api_headers()
    broker.down = True
    response = client.post("/api/v1/runs/", data=json.dumps({"agent": agent.slug, "input": "go"}), content_type="application/json", **headers)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and "deferred" in body["dispatch"]
    broker.down = False
    backdate(Run.objects.get(pk=body["id"]), 5, handed_off=False)
    reap()
    assert broker.jobs == [body["id"]]
    response = client.post("/api/v1/runs/", data=json.dumps({"agent": agent.slug, "input": "again"}), content_type="application/json", **headers)
    assert response.status_code == 201 and "dispatch" not in response.json()


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_503_and_leaves_nothing_when_the_database_fails_mid_create(client, make_agent, broker, monkeypatch):
    from agentops.guardrails.daily import daily_consume

    agent = make_agent(script=[{"text": "done"}], policy={"daily_max_runs": 1})
    headers = api_headers()

    def refuse(**kwargs: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("agentops.runs.services.step_record", refuse)
    response = client.post("/api/v1/runs/", data=json.dumps({"agent": agent.slug, "input": "go"}), content_type="application/json", **headers)
    assert response.status_code == 503 and "no run was created" in response.json()["error"]
    assert not Run.objects.filter(agent=agent).exists()
    assert broker.jobs == []
    assert daily_consume(agent_id=agent.pk, key="runs", amount=1, cap=1), "the failed create kept the day's only run"


@pytest.mark.django_db
def test_a_worker_that_cannot_reach_the_database_keeps_the_run_queued_for_the_reconciler(make_agent, broker, monkeypatch, settings, tmp_path):
    from agentops.runs import tasks

    settings.AGENTOPS_DISPATCH_GRACE_S = 1
    script = [{"text": "w", "tool_calls": [{"name": "test_append", "arguments": {"text": "once"}}]}, {"text": "done"}]
    run = run_create_dispatched(make_agent(script=script, grants={"test_append": {"path": str(tmp_path / "effects")}}))
    calls: list[int] = []

    def unreachable(run_id: int, owner: str | None = None) -> str:
        calls.append(run_id)
        raise OperationalError('connection to server at "127.0.0.1", port 5440 failed: Connection refused')

    with monkeypatch.context() as m:
        m.setattr("agentops.runs.controller.execute_run", unreachable)
        m.setattr(tasks, "CLAIM_RETRY_DELAYS_S", (0, 0))
        assert tasks.execute_run(run.pk) == "database-unavailable"
    assert len(calls) == 3, "the claim is retried, boundedly"
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    backdate(run, 5)
    assert tasks.reap()["redispatched"] == 1
    assert tasks.execute_run(run.pk) == "finished"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.status_reason
    assert len(lines(tmp_path / "effects")) == 1


@pytest.mark.django_db
def test_a_database_error_mid_run_leaves_the_run_to_be_taken_over_instead_of_failing_it(make_agent, broker, monkeypatch, tmp_path):
    from agentops.runs.tasks import execute_run
    from agentops.runs.turns import ModelTurns

    script = [{"text": "w", "tool_calls": [{"name": "test_append", "arguments": {"text": "once"}}]}, {"text": "done"}]
    run = run_create_dispatched(make_agent(script=script, grants={"test_append": {"path": str(tmp_path / "effects")}}))
    real = ModelTurns.take
    turns = iter(["ok", "fail"])

    def flaky(self: ModelTurns) -> None:
        if next(turns, "ok") == "fail":
            raise OperationalError("terminating connection due to administrator command")
        real(self)

    with monkeypatch.context() as m:
        m.setattr(ModelTurns, "take", flaky)
        m.setattr("agentops.runs.tasks.CLAIM_RETRY_DELAYS_S", ())
        assert execute_run(run.pk) == "database-unavailable"
        assert execute_run(run.pk) == "not-claimed", "the lease still holds: nobody else may take it yet"
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and not run.final_error, "a database outage is not the run's failure"
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert execute_run(run.pk) == "finished"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2
    assert len(lines(tmp_path / "effects")) == 1


def test_the_reaper_loop_in_a_worker_survives_a_failing_pass_and_keeps_reaping(monkeypatch):
    from agentops.runs.tasks import ReaperLoop

    passes: list[float] = []

    def flaky() -> dict[str, int]:
        passes.append(time.monotonic())
        if len(passes) == 1:
            raise OperationalError("connection refused")  # the database is down for this pass
        return {"requeued": 0, "redispatched": 0}

    monkeypatch.setattr("agentops.runs.tasks.reap", flaky)
    loop = ReaperLoop(0.05)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while len(passes) < 3:
            assert time.monotonic() < deadline, f"only {len(passes)} passes"
            time.sleep(0.01)
    finally:
        loop.stopped.set()
        loop.join(2)
    assert not loop.is_alive()


def test_a_reaper_period_of_zero_starts_no_reaper_thread(settings, monkeypatch):
    from agentops.runs import tasks

    settings.AGENTOPS_REAPER_S = 0
    monkeypatch.setattr(tasks, "_reaper", None)
    tasks.start_reaper(sender="django_q", proc_name="Process-1")
    assert tasks._reaper is None
