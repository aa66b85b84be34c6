"""A run survives its worker: SIGKILL mid-run, another worker takes over from the steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from agentops.runs.models import Run, Step, StepKind, ToolExecution
from tests.support.processes import FINAL, qcluster, wait_for_status
from tests.support.tools import lines

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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
    with qcluster(env, log):
        run = run_create(agent=agent, input="pay the invoice", actor="test")
        wait_for_status(run.pk, ("waiting_approval",), timeout=60, what="the worker never reached the approval", log_path=log)
        assert not ledger.exists()
        admin = User.objects.create_superuser("root", password="pw")
        approval_decide(approval=Approval.objects.get(run=run), actor=admin, approve=True)
        status = wait_for_status(run.pk, FINAL, timeout=60, what="the worker never finished the run", log_path=log)
        assert status == "succeeded", Run.objects.get(pk=run.pk).status_reason
        assert len(lines(ledger)) == 1
