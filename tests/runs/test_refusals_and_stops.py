"""Refused calls count, loops are caught early, every stop explains itself, and a run's outcome says
what happened: driven by the scripted planner in this process."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.core import mail
from django.db import connection

from agentops.approvals.models import Approval
from agentops.approvals.services import approval_decide
from agentops.runs.controller import execute_run
from agentops.runs.models import Run, StepKind
from agentops.tools.registry import Tool, ToolError, ToolResult, register
from tests.support.tools import lines

ATTEMPTS: list[str] = []


def _unreachable(args: dict[str, Any], ctx: Any) -> ToolResult:
    ATTEMPTS.append(ctx.tool_call_id)
    try:
        raise requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")
    except requests.exceptions.ConnectionError as exc:
        raise ToolError(f"the sandbox could not be started: {exc}") from None


def _escaping_link(args: dict[str, Any], ctx: Any) -> ToolResult:
    from agentops.sandbox.base import PathRejected

    # As a sandbox reports a symlink that resolves outside the workspace, wrapped as a plain error.
    try:
        raise PathRejected("tests/up/../../etc/passwd resolves outside the workspace")
    except PathRejected as exc:
        raise ToolError(f"cannot read: {exc}") from None


register(
    Tool(
        name="test_link",
        description="Follows a link.",
        input_schema={"type": "object"},
        risk_class="read",
        scope_schema={"type": "object"},
        executor=_escaping_link,
        side_effecting=False,
    )
)
register(
    Tool(
        name="test_unreachable",
        description="Needs a service that is down.",
        input_schema={"type": "object"},
        risk_class="read",
        scope_schema={"type": "object"},
        executor=_unreachable,
        side_effecting=False,
    )
)


def call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def turn(*calls: dict, text: str = "thinking", **extra: Any) -> dict:
    return {"text": text, "tool_calls": list(calls), **extra}


def guards(run: Run) -> list[str]:
    return [s.payload["guard"] for s in run.steps.filter(kind=StepKind.GUARDRAIL).order_by("seq")]


def last_guard(run: Run) -> dict:
    return run.steps.filter(kind=StepKind.GUARDRAIL).order_by("-seq").first().payload


# --- refusals count ---------------------------------------------------------------------------


def test_fifteen_hundred_refused_calls_in_one_turn_stop_at_the_tool_call_cap(make_agent, start_run):
    many = [call(f"nope_{i}") for i in range(1500)]
    agent = make_agent(script=[turn(*many), {"text": "done"}], policy={"max_tool_calls": 5})
    started = time.monotonic()
    run = start_run(agent)
    assert time.monotonic() - started < 5
    assert run.status == "budget_exceeded" and run.outcome == "budget"
    assert run.tool_calls == 5 and run.refused_calls == 5
    assert run.steps.count() < 20


def test_a_streak_of_refusals_is_a_loop_even_when_every_call_differs(make_agent, start_run):
    agent = make_agent(script=[turn(*[call(f"nope_{chr(97 + i % 26)}{chr(97 + i // 26)}") for i in range(40)])], policy={"loop_escalation": "stop"})
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "loop" and "in a row" in run.status_reason
    assert run.refused_calls == 10


def test_invalid_arguments_count_as_refused_calls(make_agent, start_run, tmp_path):
    agent = make_agent(script=[turn(call("test_append", wrong=1)), {"text": "done"}], grants={"test_append": {"path": str(tmp_path / "f")}})
    run = start_run(agent)
    assert run.tool_calls == 1 and run.refused_calls == 1
    assert run.status == "failed" and run.outcome == "refused" and "1 refused" in run.status_reason


def test_near_identical_calls_with_one_changing_number_are_a_loop_before_the_iteration_cap(make_agent, start_run):
    script = [turn(call("test_echo", text="line", repeat=i)) for i in range(1, 40)]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"max_iterations": 30, "loop_escalation": "stop"})
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "loop" and "near-identical" in run.status_reason
    assert run.iterations == 8


def test_calls_that_differ_in_words_are_not_near_identical(make_agent, start_run):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    agent = make_agent(script=[turn(call("test_echo", text=w)) for w in words] + [{"text": "done"}], grants={"test_echo": {}})
    run = start_run(agent)
    assert run.outcome == "no_change" and run.tool_calls == 10


def pay(text: str) -> dict:
    return turn(call("test_pay", text=text), text="pay")


def test_asking_again_for_a_rejected_action_is_refused_without_a_new_approval(make_agent, start_run, tmp_path, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password="pw")
    agent = make_agent(
        script=[pay("100"), pay("100"), pay("100"), {"text": "done"}],
        grants={"test_pay": {"path": str(tmp_path / "p")}},
        trust_phase=3,
        policy={"loop_escalation": "stop"},
    )
    run = start_run(agent)
    approval_decide(approval=Approval.objects.get(run=run), actor=boss, approve=False, comment="no")
    execute_run(run.pk)
    run.refresh_from_db()
    assert Approval.objects.filter(run=run).count() == 1
    assert "repeated_approval" in guards(run)
    assert run.status == "failed" and run.outcome == "loop"
    assert run.tool_calls == 3 and run.refused_calls == 3
    assert not (tmp_path / "p").exists()


def test_a_model_that_re_asks_after_every_rejection_is_stopped(make_agent, start_run, tmp_path, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password="pw")
    agent = make_agent(
        script=[pay(str(n)) for n in ("one", "two", "three", "four", "five")],
        grants={"test_pay": {"path": str(tmp_path / "p")}},
        trust_phase=3,
        policy={"loop_escalation": "stop"},
    )
    run = start_run(agent)
    for _ in range(3):
        approval_decide(approval=Approval.objects.get(run=run, status="pending"), actor=boss, approve=False, comment="no")
        execute_run(run.pk)
        run.refresh_from_db()
    assert run.status == "failed" and run.outcome == "loop" and "rejected by a person" in run.status_reason
    assert Approval.objects.filter(run=run).count() == 3


def test_a_symlink_refusal_is_a_scope_guardrail_and_a_refused_call_however_the_tool_reports_it(make_agent, start_run):
    run = start_run(make_agent(script=[turn(call("test_link")), {"text": "done"}], grants={"test_link": {}}))
    assert "scope" in guards(run)
    assert run.tool_calls == 1 and run.refused_calls == 1
    assert run.outcome == "refused"
    kinds = list(run.steps.order_by("seq").values_list("kind", flat=True))
    assert kinds.index("tool_call") < kinds.index("guardrail")  # the call, then why it was refused


# --- every stop explains itself -----------------------------------------------------------------


def test_the_daily_cost_cap_stop_records_a_guardrail_step(make_agent, start_run):
    script = [turn(call("test_echo", text="a"), input_tokens=100_000, output_tokens=1000), turn(call("test_echo", text="b"))]
    agent = make_agent(script=script, grants={"test_echo": {}}, policy={"daily_max_cost_usd": Decimal("0.01")})
    run = start_run(agent)
    assert run.status == "budget_exceeded" and run.outcome == "budget"
    assert last_guard(run)["guard"] == "daily_cost_cap" and "daily cost cap" in last_guard(run)["reason"]


def test_the_wall_clock_cap_inside_a_running_tool_records_a_guardrail_step(make_agent, start_run):
    agent = make_agent(script=[turn(call("wait", seconds=30))], grants={"wait": {}}, policy={"max_wall_clock_s": 1})
    run = start_run(agent)
    assert run.status == "budget_exceeded" and run.outcome == "budget"
    guard = last_guard(run)
    assert guard["guard"] == "budget" and guard["measure"] == "wall_clock_s" and guard["during_tool"] is True


@pytest.mark.django_db(transaction=True)
def test_the_kill_switch_engaged_during_a_model_call_records_why_the_run_stopped(make_agent):
    from agentops.guardrails.killswitch import kill_switch_engage, kill_switch_release
    from agentops.runs.services import run_create

    agent = make_agent(script=[turn(call("test_echo", text="a"), delay_s=1.0), {"text": "done"}], grants={"test_echo": {}})
    run = run_create(agent=agent, input="x", actor="test", enqueue=False)

    def work() -> None:
        try:
            execute_run(run.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not Run.objects.filter(pk=run.pk, status="running").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # inside the model call
        kill_switch_engage(actor="test", reason="drill")
        worker.join(10)
    finally:
        kill_switch_release(actor="test", reason="done")
    run.refresh_from_db()
    assert run.status == "killed" and run.outcome == "killed_by_switch"
    assert last_guard(run)["guard"] == "kill_switch"
    assert not run.steps.filter(kind=StepKind.TOOL_CALL).exists()


def test_a_lost_lease_where_the_row_is_still_ours_is_explained(make_agent, start_run, monkeypatch):
    from agentops.runs import controller

    original = controller.RunLoop.check_guards

    def lose_then_check(self, **kw):  # as if the heartbeat's renewal had failed
        self.heartbeat.lost.set()
        return original(self, **kw)

    monkeypatch.setattr(controller.RunLoop, "check_guards", lose_then_check)
    run = start_run(make_agent(script=[turn(call("test_echo", text="a"))], grants={"test_echo": {}}))
    assert run.status == "failed" and run.outcome == "infrastructure"
    assert last_guard(run)["guard"] == "lease"


# --- outcomes ---------------------------------------------------------------------------------


def test_a_run_that_acted_succeeds_and_says_what_it_did(make_agent, start_run, tmp_path):
    agent = make_agent(script=[turn(call("test_append", text="a")), {"text": "done"}], grants={"test_append": {"path": str(tmp_path / "f")}})
    run = start_run(agent)
    assert run.status == "succeeded" and run.outcome == "acted" and run.outcome_detail == "1 actions succeeded"
    assert len(lines(tmp_path / "f")) == 1


def test_a_run_whose_every_action_was_refused_does_not_read_succeeded(make_agent, start_run):
    agent = make_agent(script=[turn(call("rm_rf", path="/")), turn(call("curl", url="x")), {"text": "done, all fixed"}])
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "refused"
    assert run.outcome_detail == "refused (2 refused calls, none succeeded)"
    assert run.steps.order_by("-seq").first().payload["outcome"] == "refused"


def test_a_run_stopped_by_a_person_says_so(make_agent, start_run):
    from agentops.runs.services import run_cancel

    run = start_run(make_agent(script=[turn(call("test_echo", text="a"))], grants={"test_echo": {}}), execute=False)
    run_cancel(run=run, actor="test", reason="not today")
    run.refresh_from_db()
    assert run.status == "killed" and run.outcome == "stopped_by_person"


def test_the_api_shows_the_outcome(make_agent, start_run):
    from dashboard.api import run_json

    run = start_run(make_agent(script=[{"text": "nothing to do"}]))
    shown = run_json(run)
    assert shown["outcome"] == "no_change" and "changed nothing" in shown["outcome_detail"]


# --- infrastructure ---------------------------------------------------------------------------


@pytest.fixture
def infra_fast(settings):
    settings.AGENTOPS_INFRA_RETRIES = 2
    settings.AGENTOPS_INFRA_BACKOFF_S = 0.01
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AGENTOPS_NOTIFY_EMAILS = ["oncall@example.com"]
    return settings


def test_an_unreachable_service_is_named_retried_with_backoff_then_stops_the_run(make_agent, start_run, infra_fast):
    ATTEMPTS.clear()
    script = [turn(call("test_unreachable")), turn(call("test_unreachable", again=True)), {"text": "done"}]
    run = start_run(make_agent(script=script, grants={"test_unreachable": {}}))
    assert run.status == "failed" and run.outcome == "infrastructure"
    assert "loop" not in run.status_reason and "could not be reached" in run.status_reason
    infra = [s.payload for s in run.steps.filter(kind=StepKind.ERROR) if s.payload.get("kind") == "infrastructure"]
    assert [e["attempt"] for e in infra] == [1, 2, 3]
    assert len(ATTEMPTS) == 3 and run.iterations == 1  # retried by the controller, not by the model
    assert last_guard(run)["guard"] == "infrastructure"
    assert any("Infrastructure failure" in m.subject for m in mail.outbox)


@pytest.mark.slow
def test_with_the_docker_engine_unreachable_the_run_stops_as_infrastructure_and_nothing_runs_unsandboxed(
    make_agent, start_run, infra_fast, tmp_path, monkeypatch
):
    from agentops.forges.local import local_repo_create

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead-docker.sock")
    infra_fast.AGENTOPS_SANDBOX_BACKEND = "docker"
    infra_fast.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello.py").write_text("print('hi')\n")
    local_repo_create("hello", source)
    marker = tmp_path / "ran-on-host"
    script = [turn(call("run_command", command=f"touch {marker}")) for _ in range(8)] + [{"text": "done"}]
    agent = make_agent(script=script, grants={"run_command": {}}, config={"planner": "scripted", "script": script, "repository": "hello", "forge": "local"})
    run = start_run(agent)
    assert run.status == "failed" and run.outcome == "infrastructure", run.status_reason
    assert "loop" not in run.status_reason
    assert not marker.exists()
    assert run.steps.filter(kind=StepKind.ERROR, payload__kind="infrastructure").count() == 3


def test_the_loop_detector_catches_one_tool_failing_the_same_way_whatever_the_arguments():
    from agentops.guardrails.loops import Action, LoopDetector, action_key, shape_key

    detector = LoopDetector()
    for word in ["alpha", "beta", "gamma", "delta"]:
        detector.add(Action(action_key("grep", {"q": word}), "same-error", True, shape_key("grep", {"q": word})))
        assert detector.check() is None
    detector.add(Action(action_key("grep", {"q": "omega"}), "same-error", True, shape_key("grep", {"q": "omega"})))
    assert "failed with the same error" in detector.check()


def test_the_loop_detector_sees_numbers_inside_strings_as_one_call_paging_along():
    from agentops.guardrails.loops import Action, LoopDetector, action_key, shape_key

    detector = LoopDetector()
    for n in range(1, 9):
        args = {"path": "app.py", "range": f"{n * 10}-{n * 10 + 9}"}
        assert detector.check(action_key("read_file", args)) is None
        detector.add(Action(action_key("read_file", args), f"obs{n}", False, shape_key("read_file", args)))
    assert "near-identical" in detector.check()


def test_changing_only_the_disposable_workspace_is_no_change(make_agent, start_run):
    from agentops.tools.registry import unregister

    register(
        Tool(
            name="test_edit",
            description="Edits the sandbox only.",
            input_schema={"type": "object"},
            risk_class="write",
            scope_schema={"type": "object"},
            executor=lambda args, ctx: ToolResult(output="edited", data={"workspace_diff": "+x"}),
        )
    )
    try:
        run = start_run(make_agent(script=[turn(call("test_edit")), {"text": "fixed it"}], grants={"test_edit": {}}))
    finally:
        unregister("test_edit")
    assert run.status == "failed" and run.outcome == "no_change"
