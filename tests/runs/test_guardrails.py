"""Kill switch, pause, daily aggregate caps, rate limits: each stops what it must, at once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from agentops.approvals.models import Approval
from agentops.audit.models import AuditEvent
from agentops.guardrails.killswitch import ReasonRequired, agent_pause, kill_switch_engage, kill_switch_release
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from agentops.runs.services import RunRefused, run_cancel, run_create
from tests.support.tools import lines


def wait_script(seconds: float = 60) -> list[dict]:
    return [{"text": "waiting", "tool_calls": [{"name": "wait", "arguments": {"seconds": seconds}}]}, {"text": "done"}]


def run_in_thread(run_id: int) -> threading.Thread:
    def work() -> None:
        try:
            execute_run(run_id)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_engaging_needs_a_reason(db):
    with pytest.raises(ReasonRequired):
        kill_switch_engage(actor="test", reason=" ")


@pytest.mark.django_db(transaction=True)
def test_the_kill_switch_halts_running_runs_inside_a_slow_tool_within_a_second(make_agent):
    agent = make_agent(script=wait_script(), grants={"wait": {}})
    runs = [run_create(agent=agent, input="x", enqueue=False) for _ in range(3)]
    threads = [run_in_thread(r.pk) for r in runs]
    wait_for(lambda: Run.objects.filter(pk__in=[r.pk for r in runs], steps__kind=StepKind.TOOL_CALL).count() == 3)
    started = time.monotonic()
    state = kill_switch_engage(actor="test", reason="drill by hand")
    wait_for(lambda: Run.objects.filter(pk__in=[r.pk for r in runs], status="killed").count() == 3, timeout=5)
    assert time.monotonic() - started < 1.0
    for t in threads:
        t.join(5)
    after = Run.objects.filter(pk__in=[r.pk for r in runs], steps__kind__in=[StepKind.TOOL_CALL, StepKind.MODEL_CALL], steps__created_at__gt=state.engaged_at)
    assert after.count() == 0
    assert AuditEvent.objects.filter(action="kill_switch.engage").count() == 1


def test_the_kill_switch_kills_waiting_runs_rejects_their_approvals_and_refuses_new_runs(make_agent, start_run, tmp_path):
    agent = make_agent(
        script=[{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "x"}}]}],
        grants={"test_pay": {"path": str(tmp_path / "p")}},
        trust_phase=3,
    )
    waiting = start_run(agent)
    queued = run_create(agent=agent, input="later", enqueue=False)
    kill_switch_engage(actor="test", reason="incident")
    assert Run.objects.get(pk=waiting.pk).status == "killed"
    assert Run.objects.get(pk=queued.pk).status == "killed"
    assert Approval.objects.get(run=waiting).status == "rejected"
    with pytest.raises(RunRefused, match="kill switch"):
        run_create(agent=agent, input="new", enqueue=False)
    assert AuditEvent.objects.filter(action="run.refused", detail="kill switch engaged").exists()
    kill_switch_release(actor="test", reason="incident over")
    assert run_create(agent=agent, input="new", enqueue=False).status == "queued"


def test_a_killed_run_does_not_resume_after_a_late_approval(make_agent, start_run, tmp_path):
    agent = make_agent(
        script=[{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "x"}}]}],
        grants={"test_pay": {"path": str(tmp_path / "p")}},
        trust_phase=3,
    )
    run = start_run(agent)
    kill_switch_engage(actor="test", reason="stop")
    kill_switch_release(actor="test", reason="ok")
    assert execute_run(run.pk) == "not-claimed"
    assert not (tmp_path / "p").exists()


@pytest.mark.django_db(transaction=True)
def test_pausing_an_agent_halts_its_running_run(make_agent):
    agent = make_agent(script=wait_script(), grants={"wait": {}})
    run = run_create(agent=agent, input="x", enqueue=False)
    thread = run_in_thread(run.pk)
    wait_for(lambda: Run.objects.filter(pk=run.pk, steps__kind=StepKind.TOOL_CALL).exists())
    agent_pause(agent=agent, actor="test", reason="misbehaving")
    thread.join(5)
    run.refresh_from_db()
    assert run.status == "killed" and "paused" in run.status_reason


@pytest.mark.django_db(transaction=True)
def test_a_person_can_stop_one_run(make_agent):
    agent = make_agent(script=wait_script(), grants={"wait": {}})
    run = run_create(agent=agent, input="x", enqueue=False)
    other = run_create(agent=agent, input="y", enqueue=False)
    thread = run_in_thread(run.pk)
    wait_for(lambda: Run.objects.filter(pk=run.pk, steps__kind=StepKind.TOOL_CALL).exists())
    run_cancel(run=run, actor="test", reason="not needed")
    thread.join(5)
    assert Run.objects.get(pk=run.pk).status == "killed"
    assert Run.objects.get(pk=other.pk).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_triggers_cannot_pass_the_daily_run_cap(make_agent):
    agent = make_agent(policy={"daily_max_runs": 5})
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def trigger() -> None:
        try:
            barrier.wait()
            run_create(agent=agent, input="x", enqueue=False)
            outcomes.append("run")
        except RunRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("run") == 5
    assert Run.objects.filter(agent=agent).count() == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_cannot_jointly_pass_a_daily_action_cap(make_agent, tmp_path):
    ledger = tmp_path / "effects"
    script = [{"text": "w", "tool_calls": [{"name": "test_append", "arguments": {"text": str(i)}}]} for i in range(5)]
    agent = make_agent(script=script, grants={"test_append": {"path": str(ledger)}}, policy={"daily_action_caps": {"write": 7}})
    runs = [run_create(agent=agent, input="x", enqueue=False) for _ in range(4)]
    threads = [run_in_thread(r.pk) for r in runs]
    for t in threads:
        t.join(30)
    # Each run alone (5 writes) respects the cap of 7; together they may do exactly 7.
    assert len(lines(ledger)) == 7
    assert Run.objects.filter(pk__in=[r.pk for r in runs], status="budget_exceeded").count() >= 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_cannot_jointly_pass_the_daily_cost_cap(make_agent):
    turn = {"text": "t", "tool_calls": [{"name": "test_echo", "arguments": {"text": "x"}}], "input_tokens": 100_000, "output_tokens": 0}
    agent = make_agent(script=[turn] * 10, grants={"test_echo": {}}, policy={"daily_max_cost_usd": Decimal("1.0"), "max_cost_usd": Decimal("100")})
    runs = [run_create(agent=agent, input="x", enqueue=False) for _ in range(4)]
    threads = [run_in_thread(r.pk) for r in runs]
    for t in threads:
        t.join(30)
    from agentops.guardrails.daily import daily_value

    spent = sum(Run.objects.get(pk=r.pk).cost_usd for r in runs)
    # Scripted turns reserve nothing up front, so the cap may be passed by at most one call per run.
    per_call = Run.objects.get(pk=runs[0].pk).steps.filter(kind=StepKind.MODEL_CALL).first().cost_usd
    assert spent <= Decimal("1.0") + per_call * 4
    assert daily_value(agent_id=agent.pk, key="cost_usd") == spent
    assert all(Run.objects.get(pk=r.pk).status == "budget_exceeded" for r in runs)


def test_a_rate_limit_makes_the_run_wait_and_records_it(make_agent, start_run, monkeypatch):
    from agentops.runs import controller

    script = [{"text": "e", "tool_calls": [{"name": "test_echo", "arguments": {"text": str(i)}}]} for i in range(3)] + [{"text": "done"}]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"rate_limit_per_minute": 2})
    clock = {"now": 1_000_000.0}
    monkeypatch.setattr(controller.time, "time", lambda: clock["now"])
    real_sleep = time.sleep

    def fast_sleep(seconds: float) -> None:
        clock["now"] += 61
        real_sleep(0)

    monkeypatch.setattr(controller.time, "sleep", fast_sleep)
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock["now"])
    run = start_run(agent)
    guard = run.steps.filter(kind=StepKind.GUARDRAIL).first()
    assert guard is not None and guard.payload["guard"] == "rate_limit"
    assert run.outcome == "no_change" and run.tool_calls == 3, run.status_reason


@pytest.mark.django_db(transaction=True)
def test_a_drill_halts_every_synthetic_run_and_is_recorded():
    from agentops.guardrails.drills import drill_run
    from agentops.guardrails.models import ControlState

    drill = drill_run(actor="test", synthetic_runs=3)
    assert drill.status == "passed", drill.details
    assert drill.time_to_halt_ms is not None and drill.time_to_halt_ms <= 1000
    assert drill.actions_after_engage == 0
    assert ControlState.objects.get(pk=1).engaged is False


@pytest.mark.django_db(transaction=True)
def test_the_drill_command_queues_for_a_worker_and_runs_inline_with_wait(monkeypatch, capsys):
    from django.core.management import call_command

    from agentops.guardrails.models import Drill

    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda name, *args, **kw: queued.append((name, args)))
    call_command("agentops", "drill", "--runs", "1")
    first = Drill.objects.get()
    assert first.status == "running" and queued == [("agentops.runs.tasks.execute_drill", (first.pk,))]
    assert "queued for a worker" in capsys.readouterr().out
    first.status = "failed"
    first.save(update_fields=["status"])

    call_command("agentops", "drill", "--runs", "1", "--wait")
    second = Drill.objects.exclude(pk=first.pk).get()
    assert second.status == "passed", second.details
    assert f"drill {second.pk}: passed" in capsys.readouterr().out
    assert len(queued) == 1, "--wait runs the drill here, without a job"
