"""Deciding approvals from Slack: asked with two buttons bound to the call, clicked back signed, decided
through the same approval_decide as the web, and the message always says what was decided."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from agentops.approvals import slack as slack_module
from agentops.approvals.models import Approval, SlackIdentity, SlackMessage
from agentops.approvals.services import approval_decide
from agentops.approvals.slack import APPROVE_ACTION, COMMENT_ACTION, COMMENT_BLOCK, REJECT_ACTION
from agentops.audit.models import AuditEvent
from agentops.guardrails.killswitch import kill_switch_engage
from agentops.runs.controller import execute_run
from agentops.runs.models import StepKind
from dashboard.roles import ensure_roles
from tests.approvals.slack_server import FakeSlack
from tests.support.tools import lines

TOKEN = "test-bot-token-for-the-fake-slack"
SECRET = "test-signing-secret-0123456789abcdef"
TEAM = "T0ACME"
ENDPOINT = "/integrations/slack/interactions"


@pytest.fixture
def fake_slack(settings: Any) -> Iterator[FakeSlack]:
    fake = FakeSlack(token=TOKEN).start()
    settings.AGENTOPS_SLACK_BOT_TOKEN = TOKEN
    settings.AGENTOPS_SLACK_SIGNING_SECRET = SECRET
    settings.AGENTOPS_SLACK_CHANNEL = "#approvals"
    settings.AGENTOPS_SLACK_API_URL = fake.api_url
    settings.SITE_URL = "https://agentops.example.com"
    yield fake
    fake.stop()


def person(username: str, role: str, *, slack_user_id: str | None = None, active: bool = True) -> User:
    user = User.objects.create_user(username, password="pw", is_active=active)
    user.groups.add(ensure_roles()[role])
    if slack_user_id:
        SlackIdentity.objects.create(user=user, team_id=TEAM, slack_user_id=slack_user_id)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def ada(db: Any) -> User:
    return person("ada", "approver", slack_user_id="U0ADA")


@pytest.fixture
def waiting_run(make_agent: Any, start_run: Any, tmp_path: Any, fake_slack: FakeSlack, django_capture_on_commit_callbacks: Any) -> tuple[Any, Any]:
    ledger = tmp_path / "payments"
    script = [{"text": "Paying the invoice.", "tool_calls": [{"name": "test_pay", "arguments": {"text": "100 EUR to ACME"}}]}, {"text": "done"}]
    agent = make_agent(script=script, grants={"test_pay": {"path": str(ledger)}}, trust_phase=3)
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(agent)
    assert run.status == "waiting_approval"
    return run, ledger


def posted(fake: FakeSlack) -> dict[str, Any]:
    [message] = fake.calls("chat.postMessage")
    return message


def button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return {**element, "block_id": block["block_id"]}
    raise AssertionError(f"no {action_id} button in the message")


def click_payload(
    fake: FakeSlack, *, action: str = APPROVE_ACTION, user: str = "U0ADA", comment: str | None = None, response_url: str | None = None
) -> dict[str, Any]:
    """What Slack sends when someone clicks a button of the message agentops posted."""
    message = posted(fake)
    pressed = button(message, action)
    ts = next(iter(fake.messages))
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0AGENTOPS",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": FakeSlack.CHANNEL_ID, "is_ephemeral": False},
        "trigger_id": "1.2.3",
        "team": {"id": TEAM, "domain": "acme"},
        "channel": {"id": FakeSlack.CHANNEL_ID, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": message["text"], "blocks": message["blocks"]},
        "state": {"values": {COMMENT_BLOCK: {COMMENT_ACTION: {"type": "plain_text_input", "value": comment}}}},
        "response_url": response_url or fake.response_url(),
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": pressed["block_id"],
                "value": pressed["value"],
                "text": pressed["text"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def sign(body: str | bytes, *, timestamp: str, secret: str = SECRET) -> str:
    """As Slack signs: v0= hex HMAC-SHA256 of "v0:{timestamp}:{body}" with the app's signing secret."""
    raw = body if isinstance(body, bytes) else body.encode()
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()


def send(client: Any, body: str | bytes, *, timestamp: str | None = None, signature: str | None = None, secret: str = SECRET) -> Any:
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    signature = sign(body, timestamp=timestamp, secret=secret) if signature is None else signature
    return client.post(
        ENDPOINT, data=body, content_type="application/x-www-form-urlencoded", HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=signature
    )


def click(client: Any, payload: dict[str, Any], capture: Any) -> Any:
    with capture(execute=True):
        response = send(client, urlencode({"payload": json.dumps(payload)}))
    return response


def answers(fake: FakeSlack) -> list[str]:
    with fake.lock:
        return [body["text"] for _, body in fake.answers]


def shown(fake: FakeSlack) -> str:
    """What the channel shows now: the last text of the one message."""
    [message] = fake.messages.values()
    return json.dumps(message["blocks"])


# --- asking ---------------------------------------------------------------------------------------


def test_a_pending_approval_is_posted_with_approve_and_reject_bound_to_the_exact_call(waiting_run: Any, fake_slack: FakeSlack) -> None:
    run, _ = waiting_run
    approval = Approval.objects.get(run=run)
    message = posted(fake_slack)
    assert message["channel"] == "#approvals" and "test_pay" in message["text"]
    approve, reject = button(message, APPROVE_ACTION), button(message, REJECT_ACTION)
    assert approve["value"] == reject["value"] == f"{approval.pk}:{slack_module.call_binding(approval)}"
    assert "100 EUR to ACME" in json.dumps(message["blocks"]) and f"/approvals/#approval-{approval.pk}" in json.dumps(message["blocks"])
    stored = SlackMessage.objects.get(approval=approval)
    assert (stored.channel, stored.ts, stored.shown_status) == (FakeSlack.CHANNEL_ID, next(iter(fake_slack.messages)), "pending")


def test_the_binding_changes_when_the_call_changes(waiting_run: Any) -> None:
    approval = Approval.objects.get(run=waiting_run[0])
    before = slack_module.call_binding(approval)
    approval.arguments = {"text": "100 EUR to ACME "}
    assert slack_module.call_binding(approval) != before


def test_no_secret_reaches_the_slack_message(
    make_agent: Any, start_run: Any, tmp_path: Any, fake_slack: FakeSlack, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    own = "own" + "q7" * 20
    script = [{"text": f"Paying with {own}.", "tool_calls": [{"name": "test_pay", "arguments": {"text": f"pay {own}"}}]}]
    agent = make_agent(script=script, grants={"test_pay": {"path": str(tmp_path / "p")}}, trust_phase=3)
    with django_capture_on_commit_callbacks(execute=True):
        start_run(agent)
        # Configured after the approval was stored: only the Slack layer's own redaction can catch it.
        settings.AGENTOPS_SECRET_VALUES = [own]
    sent = json.dumps(posted(fake_slack))
    assert own not in sent and "[REDACTED]" in sent


def test_a_long_call_is_clipped_to_what_slack_accepts(
    make_agent: Any, start_run: Any, tmp_path: Any, fake_slack: FakeSlack, django_capture_on_commit_callbacks: Any
) -> None:
    # "&" doubles as "&amp;" in Slack's markup: the clip must hold after escaping.
    script = [{"text": "<&>" * 2000, "tool_calls": [{"name": "test_pay", "arguments": {"text": "&" * 6000}}]}]
    agent = make_agent(script=script, grants={"test_pay": {"path": str(tmp_path / "p")}}, trust_phase=3)
    with django_capture_on_commit_callbacks(execute=True):
        start_run(agent)
    assert SlackMessage.objects.count() == 1 and "&amp;" in json.dumps(posted(fake_slack)["blocks"])


# --- deciding from Slack --------------------------------------------------------------------------


def test_approving_from_slack_resumes_the_run_as_the_web_does(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, ledger = waiting_run
    response = click(client, click_payload(fake_slack), django_capture_on_commit_callbacks)
    assert response.status_code == 200
    approval = Approval.objects.get(run=run)
    assert (approval.status, approval.decided_by, approval.decided_by_label) == ("approved", ada, "ada")
    run.refresh_from_db()
    assert run.status == "queued"
    assert execute_run(run.pk) == "finished"
    run.refresh_from_db()
    assert run.status == "succeeded" and len(lines(ledger)) == 1
    # The message now says who approved it, and offers no buttons any more.
    [update] = fake_slack.calls("chat.update")
    assert update["ts"] == SlackMessage.objects.get(approval=approval).ts and "Approved by ada" in update["text"]
    assert APPROVE_ACTION not in shown(fake_slack) and SlackMessage.objects.get(approval=approval).shown_status == "approved"
    event = AuditEvent.objects.get(action="approval.approved")
    assert event.actor == ada and event.after["via"] == "slack"


def test_rejecting_from_slack_needs_the_reason_typed_in_the_message(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, ledger = waiting_run
    assert click(client, click_payload(fake_slack, action=REJECT_ACTION, comment="  "), django_capture_on_commit_callbacks).status_code == 200
    assert Approval.objects.get(run=run).status == "pending" and "reason" in answers(fake_slack)[0]
    assert not fake_slack.calls("chat.update")
    click(client, click_payload(fake_slack, action=REJECT_ACTION, comment="wrong supplier"), django_capture_on_commit_callbacks)
    approval = Approval.objects.get(run=run)
    assert (approval.status, approval.comment) == ("rejected", "wrong supplier")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "rejected" and not ledger.exists()
    assert "wrong supplier" in run.steps.filter(kind=StepKind.OBSERVATION).last().payload["output"]
    assert "Rejected by ada: wrong supplier" in fake_slack.calls("chat.update")[-1]["text"]


def test_a_second_click_is_told_who_already_decided(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = waiting_run
    person("bob", "approver", slack_user_id="U0BOB")
    click(client, click_payload(fake_slack), django_capture_on_commit_callbacks)
    response = click(client, click_payload(fake_slack, action=REJECT_ACTION, user="U0BOB", comment="no"), django_capture_on_commit_callbacks)
    assert response.status_code == 200
    assert Approval.objects.get(run=run).status == "approved"
    assert answers(fake_slack) == ["This approval was already approved by ada."]
    assert AuditEvent.objects.filter(action__startswith="approval.").count() == 1
    assert "Approved by ada" in shown(fake_slack)


def test_a_stale_message_is_brought_up_to_date_by_the_next_click(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = waiting_run
    # Decided on the web while Slack was failing: the message still offers its buttons.
    fake_slack.error = "ratelimited"
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("dashboard:approval_decide", args=[Approval.objects.get(run=run).pk]), {"decision": "approve"})
    assert APPROVE_ACTION in shown(fake_slack)
    fake_slack.error = None
    client.logout()
    click(client, click_payload(fake_slack, action=REJECT_ACTION, comment="stop"), django_capture_on_commit_callbacks)
    assert answers(fake_slack) == ["This approval was already approved by ada."]
    assert "Approved by ada" in shown(fake_slack) and APPROVE_ACTION not in shown(fake_slack)
    assert Approval.objects.get(run=run).status == "approved"


def test_a_click_after_the_expiry_is_told_it_expired(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, ledger = waiting_run
    Approval.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    click(client, click_payload(fake_slack), django_capture_on_commit_callbacks)
    assert Approval.objects.get(run=run).status == "expired"
    assert answers(fake_slack) == ["This approval expired before the decision."]
    assert "Expired without a decision" in shown(fake_slack)
    execute_run(run.pk)
    assert not ledger.exists()


@pytest.mark.parametrize("who", ["unlinked", "viewer", "inactive approver", "other workspace"])
def test_it_refuses_a_slack_user_who_may_not_decide_and_nothing_changes(
    who: str, waiting_run: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = waiting_run
    if who == "viewer":
        person("vic", "viewer", slack_user_id="U0VIC")
    elif who == "inactive approver":
        person("ina", "approver", slack_user_id="U0VIC", active=False)
    elif who == "other workspace":
        user = person("oli", "approver")
        SlackIdentity.objects.create(user=user, team_id="T0OTHER", slack_user_id="U0VIC")
    response = click(client, click_payload(fake_slack, user="U0VIC"), django_capture_on_commit_callbacks)
    assert response.status_code == 200
    assert Approval.objects.get(run=run).status == "pending"
    assert run.__class__.objects.get(pk=run.pk).status == "waiting_approval"
    [answer] = answers(fake_slack)
    assert ("not linked" in answer) if who in ("unlinked", "other workspace") else ("not allowed" in answer)
    assert not fake_slack.calls("chat.update") and not AuditEvent.objects.filter(action__startswith="approval.").exists()


def test_it_refuses_a_click_on_a_call_that_changed_since_it_was_posted(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, ledger = waiting_run
    Approval.objects.filter(run=run).update(arguments={"text": "9999 EUR to EVIL"})
    click(client, click_payload(fake_slack), django_capture_on_commit_callbacks)
    assert Approval.objects.get(run=run).status == "pending"
    assert "no longer matches" in answers(fake_slack)[0]
    assert not ledger.exists()


def test_a_response_url_that_is_not_slack_is_never_called(
    waiting_run: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    elsewhere = FakeSlack(token=TOKEN).start()
    try:
        click(client, click_payload(fake_slack, user="U0NOBODY", response_url=elsewhere.response_url()), django_capture_on_commit_callbacks)
    finally:
        elsewhere.stop()
    assert not elsewhere.answers and not answers(fake_slack)


# --- requests that are not Slack's clicks ---------------------------------------------------------


def _bad_requests(payload: dict[str, Any]) -> dict[str, tuple[str | bytes, dict[str, Any]]]:
    body = urlencode({"payload": json.dumps(payload)})
    now = int(time.time())
    other_action = json.loads(json.dumps(payload))
    other_action["actions"][0]["action_id"] = "agentops_open"
    forged_value = json.loads(json.dumps(payload))
    forged_value["actions"][0]["value"] = "1 OR 1=1"
    no_user = {k: v for k, v in payload.items() if k not in ("user", "team")}
    nul_comment = json.loads(json.dumps(payload))
    nul_comment["state"]["values"][COMMENT_BLOCK][COMMENT_ACTION]["value"] = "ok\x00"
    return {
        "bad signature": (body, {"secret": "not-the-signing-secret"}),
        "stale timestamp": (body, {"timestamp": str(now - 301)}),
        "future timestamp": (body, {"timestamp": str(now + 400)}),
        "timestamp not a number": (body, {"timestamp": "soon"}),
        "no signature": (body, {"signature": ""}),
        "malformed signature": (body, {"signature": "v1=abc"}),
        "malformed JSON": ("payload=" + "%7B%22type%22%3A", {}),
        "no payload field": (urlencode({"other": "x"}), {}),
        "JSON body instead of a form": (json.dumps(payload), {}),
        "not UTF-8": (b"payload=%7B%7D\xff\xfe", {}),
        "payload not UTF-8": ("payload=%FF%FE", {}),
        "another payload type": (urlencode({"payload": json.dumps({**payload, "type": "view_submission"})}), {}),
        "unknown action": (urlencode({"payload": json.dumps(other_action)}), {}),
        "forged button value": (urlencode({"payload": json.dumps(forged_value)}), {}),
        "no user": (urlencode({"payload": json.dumps(no_user)}), {}),
        "NUL in the comment": (urlencode({"payload": json.dumps(nul_comment)}), {}),
    }


BAD = [
    "bad signature",
    "stale timestamp",
    "future timestamp",
    "timestamp not a number",
    "no signature",
    "malformed signature",
    "malformed JSON",
    "no payload field",
    "JSON body instead of a form",
    "not UTF-8",
    "payload not UTF-8",
    "another payload type",
    "unknown action",
    "forged button value",
    "no user",
    "NUL in the comment",
]


@pytest.mark.parametrize("case", BAD)
def test_it_refuses_a_request_that_is_not_a_valid_signed_click_and_nothing_changes(
    case: str, waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = waiting_run
    body, how = _bad_requests(click_payload(fake_slack))[case]
    with django_capture_on_commit_callbacks(execute=True):
        response = send(client, body, **how)
    expected = 401 if case in BAD[:6] else 400
    assert response.status_code == expected, response.content
    assert Approval.objects.get(run=run).status == "pending"
    assert not fake_slack.calls("chat.update") and not answers(fake_slack)


def test_it_refuses_a_replayed_request(waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any) -> None:
    run, _ = waiting_run
    # A rejection without a reason changes nothing: its replay must be refused before it is read.
    body = urlencode({"payload": json.dumps(click_payload(fake_slack, action=REJECT_ACTION))})
    timestamp = str(int(time.time()))
    with django_capture_on_commit_callbacks(execute=True):
        first = send(client, body, timestamp=timestamp)
        replay = send(client, body, timestamp=timestamp)
    assert (first.status_code, replay.status_code) == (200, 401)
    assert len(answers(fake_slack)) == 1 and Approval.objects.get(run=run).status == "pending"


def test_the_endpoint_takes_only_post(db: Any, fake_slack: FakeSlack, client: Any) -> None:
    assert client.get(ENDPOINT).status_code == 405


def test_the_endpoint_is_closed_without_a_signing_secret(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.AGENTOPS_SLACK_SIGNING_SECRET = None
    assert click(client, click_payload(fake_slack), django_capture_on_commit_callbacks).status_code == 404
    assert Approval.objects.get(run=waiting_run[0]).status == "pending"


# --- decisions made elsewhere ---------------------------------------------------------------------


def test_a_web_decision_updates_the_slack_message(
    waiting_run: Any, fake_slack: FakeSlack, ada: User, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = waiting_run
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("dashboard:approval_decide", args=[Approval.objects.get(run=run).pk]), {"decision": "reject", "comment": "not today"})
    assert response.status_code == 302
    [update] = fake_slack.calls("chat.update")
    assert "Rejected by ada: not today" in update["text"] and REJECT_ACTION not in shown(fake_slack)
    assert not AuditEvent.objects.get(action="approval.rejected").after.get("via")


def test_the_kill_switch_updates_the_slack_message(waiting_run: Any, fake_slack: FakeSlack, django_capture_on_commit_callbacks: Any) -> None:
    run, _ = waiting_run
    with django_capture_on_commit_callbacks(execute=True):
        kill_switch_engage(actor="alice", reason="runaway spend")
    assert Approval.objects.get(run=run).status == "rejected"
    assert "Rejected by system" in fake_slack.calls("chat.update")[0]["text"] and APPROVE_ACTION not in shown(fake_slack)


# --- Slack down -----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("outage", ["connection refused", "slack error", "no answer"])
def test_a_slack_outage_never_breaks_the_approval_or_the_run(
    outage: str,
    make_agent: Any,
    start_run: Any,
    tmp_path: Any,
    fake_slack: FakeSlack,
    ada: User,
    settings: Any,
    monkeypatch: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    silent = socket.socket()
    if outage == "connection refused":
        settings.AGENTOPS_SLACK_API_URL = f"http://127.0.0.1:{_closed_port()}/api/"
    elif outage == "slack error":
        fake_slack.error = "channel_not_found"
    else:
        # Accepts the connection (the kernel's backlog) and never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.AGENTOPS_SLACK_API_URL = f"http://127.0.0.1:{silent.getsockname()[1]}/api/"
        monkeypatch.setattr(slack_module, "TIMEOUT_S", 1)
    ledger = tmp_path / "payments"
    script = [{"text": "pay", "tool_calls": [{"name": "test_pay", "arguments": {"text": "5 EUR"}}]}, {"text": "done"}]
    agent = make_agent(script=script, grants={"test_pay": {"path": str(ledger)}}, trust_phase=3)
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(agent)
    assert time.monotonic() - started < 10
    silent.close()
    approval = Approval.objects.get(run=run)
    assert run.status == "waiting_approval" and approval.status == "pending" and not SlackMessage.objects.exists()
    # Still decidable (here as the web does it), and the run goes on.
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, actor=ada, approve=True)
    assert execute_run(run.pk) == "finished" and len(lines(ledger)) == 1


# --- linking Slack users --------------------------------------------------------------------------


def test_an_admin_links_a_slack_user_from_the_command_line(db: Any) -> None:
    ada = person("ada", "approver")
    call_command("agentops", "slack", "link", "ada", "t0acme", "U0ADA")
    identity = SlackIdentity.objects.get(user=ada)
    assert (identity.team_id, identity.slack_user_id) == ("T0ACME", "U0ADA") and identity.linked_by_label.startswith("cli:")
    assert AuditEvent.objects.get(action="slack.link").after == {"team_id": "T0ACME", "slack_user_id": "U0ADA"}
    person("bob", "approver")
    with pytest.raises(CommandError, match="already linked to ada"):
        call_command("agentops", "slack", "link", "bob", "T0ACME", "U0ADA")
    with pytest.raises(CommandError, match="letters and digits"):
        call_command("agentops", "slack", "link", "bob", "T0ACME", "<@U0ADA>")
    with pytest.raises(CommandError, match="no user"):
        call_command("agentops", "slack", "link", "nobody", "T0ACME", "U0NOBODY")
    call_command("agentops", "slack", "unlink", "ada")
    assert not SlackIdentity.objects.exists() and AuditEvent.objects.filter(action="slack.unlink").count() == 1
    call_command("agentops", "slack", "link", "bob", "T0ACME", "U0ADA")
    assert SlackIdentity.objects.get().user.username == "bob"
    out = io.StringIO()
    call_command("agentops", "slack", "list", stdout=out)
    assert out.getvalue().startswith("bob: T0ACME/U0ADA")


def test_linking_a_user_who_may_not_decide_warns_the_admin(db: Any) -> None:
    person("vic", "viewer")
    err = io.StringIO()
    call_command("agentops", "slack", "link", "vic", "T0ACME", "U0VIC", stderr=err)
    assert "may not decide approvals" in err.getvalue() and SlackIdentity.objects.filter(user__username="vic").exists()
