"""People hear about what needs them: email and a Slack incoming webhook, each with a link."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from agentops.guardrails.killswitch import kill_switch_engage


@pytest.fixture
def slack():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


@pytest.fixture
def notifying(settings, slack):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AGENTOPS_NOTIFY_EMAILS = ["oncall@example.com"]
    settings.AGENTOPS_SLACK_WEBHOOK_URL = slack[0]
    settings.SITE_URL = "https://agentops.example.com"
    return slack[1]


def test_an_approval_waiting_is_announced_with_a_link(make_agent, start_run, notifying, tmp_path, django_capture_on_commit_callbacks):
    script = [{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "x"}}]}]
    # Announced once the request is committed (the decision write path's one notification).
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(make_agent(script=script, grants={"test_pay": {"path": str(tmp_path / "p")}}, trust_phase=3))
    approval = run.approvals.get()
    assert [m.to for m in mail.outbox] == [["oncall@example.com"]]
    assert f"https://agentops.example.com/approvals/#approval-{approval.pk}" in mail.outbox[0].body
    assert "test_pay" in notifying[0]["text"] and f"/approvals/#approval-{approval.pk}" in notifying[0]["text"]


def test_an_alarm_is_announced(make_agent, start_run, notifying):
    script = [{"text": "e", "tool_calls": [{"name": "test_echo", "arguments": {"text": "x"}}]}, {"text": "done"}]
    run = start_run(make_agent(script=script, grants={"test_echo": {}}, policy={"alarm_tool_calls": 1}))
    assert any("alarm" in m.subject.lower() and f"/runs/{run.pk}/" in m.body for m in mail.outbox)


def test_the_kill_switch_is_announced(db, notifying):
    kill_switch_engage(actor="alice", reason="runaway spend")
    assert mail.outbox[0].subject == "[agentops] Kill switch engaged" and "runaway spend" in mail.outbox[0].body
    assert "runaway spend" in notifying[0]["text"]


def test_an_unreachable_slack_never_fails_the_action(db, settings):
    settings.AGENTOPS_SLACK_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    state = kill_switch_engage(actor="alice", reason="drill")
    assert state.engaged


def test_no_secret_leaves_in_an_email_or_a_slack_message(db, notifying, settings):
    from agentops.notify import notify

    own = "own" + "x9" * 20
    settings.AGENTOPS_SECRET_VALUES = [own]
    stripe = "sk_" + "live_" + "Ab3" * 8
    notify(event="approval", subject=f"Pay with {stripe}", text=f"The model says: use {own} and '{stripe[:8]}' + '{stripe[8:]}'", path="/approvals/")
    sent = mail.outbox[0].subject + mail.outbox[0].body + notifying[0]["text"]
    assert own not in sent and stripe not in sent and stripe[8:] not in sent
    assert "[REDACTED]" in mail.outbox[0].body and "[REDACTED]" in notifying[0]["text"]
