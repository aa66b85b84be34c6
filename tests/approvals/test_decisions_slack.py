"""Every kind of decision in Slack: its own buttons (Extend by X / Stop, Continue / Stop, one button per
option, a link only for a configuration change), decided through the same approval_decide as the web.
Against a local server speaking Slack's Web API, with signed interaction payloads."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User

from agentops.agents import services as agent_services
from agentops.approvals.models import Approval, DecisionKind, SlackIdentity, SlackMessage
from agentops.approvals.slack import ANSWER_ACTION, APPROVE_ACTION, REJECT_ACTION
from tests.approvals.decision_support import ask, mailer, person, waiting_run  # noqa: F401
from tests.approvals.slack_server import FakeSlack
from tests.approvals.test_slack import ENDPOINT, TEAM, fake_slack, sign  # noqa: F401

pytestmark = pytest.mark.django_db


def linked(user: User, slack_user_id: str) -> User:
    SlackIdentity.objects.create(user=user, team_id=TEAM, slack_user_id=slack_user_id)
    return user


def message_of(fake: FakeSlack, approval: Approval) -> dict[str, Any]:
    ts = SlackMessage.objects.get(approval=approval).ts
    return fake.messages[ts]


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**e, "block_id": b["block_id"]} for b in message["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]


def click(client: Any, fake: FakeSlack, pressed: dict[str, Any], *, user: str, capture: Any, comment: str | None = None) -> Any:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "team_id": TEAM},
        "team": {"id": TEAM},
        "state": {"values": {"agentops_comment": {"comment": {"type": "plain_text_input", "value": comment}}}},
        "response_url": fake.response_url(),
        "actions": [{"type": "button", "action_id": pressed["action_id"], "block_id": pressed["block_id"], "value": pressed["value"]}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    with capture(execute=True):
        return client.post(
            ENDPOINT,
            data=body,
            content_type="application/x-www-form-urlencoded",
            HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
            HTTP_X_SLACK_SIGNATURE=sign(body, timestamp=timestamp),
        )


def told(fake: FakeSlack) -> list[str]:
    with fake.lock:
        return [body["text"] for _, body in fake.answers]


def test_a_budget_extension_offers_extend_and_stop_and_extending_grants_the_amount_shown(
    mailer: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ada = linked(person("ada"), "U0ADA")
    with django_capture_on_commit_callbacks(execute=True):
        approval = ask(waiting_run(mailer), DecisionKind.BUDGET_EXTENSION)
    message = message_of(fake_slack, approval)
    assert "cost cap $2 reached" in message["text"]
    extend, stop = buttons(message)
    assert (extend["action_id"], extend["text"]["text"], stop["action_id"], stop["text"]["text"]) == (
        APPROVE_ACTION,
        "Extend the cost cap by $1",
        REJECT_ACTION,
        "Stop",
    )
    assert click(client, fake_slack, extend, user="U0ADA", capture=django_capture_on_commit_callbacks).status_code == 200
    approval.refresh_from_db()
    assert (approval.status, approval.answer, approval.decided_by) == ("approved", "1", ada)
    assert "Extended by 1 by ada" in fake_slack.calls("chat.update")[-1]["text"]


def test_a_loop_escalation_offers_continue_and_stop(mailer: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any) -> None:
    linked(person("ada"), "U0ADA")
    with django_capture_on_commit_callbacks(execute=True):
        approval = ask(waiting_run(mailer), DecisionKind.LOOP_ESCALATION)
    go_on, stop = buttons(message_of(fake_slack, approval))
    assert (go_on["text"]["text"], stop["text"]["text"]) == ("Continue", "Stop")
    click(client, fake_slack, stop, user="U0ADA", capture=django_capture_on_commit_callbacks)
    approval.refresh_from_db()
    assert (approval.status, approval.answer) == ("rejected", "stop")
    assert "Stopped by ada" in fake_slack.calls("chat.update")[-1]["text"]


def test_a_question_offers_one_button_per_option_and_the_answer_is_the_stored_option(
    mailer: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    linked(person("ada"), "U0ADA")
    with django_capture_on_commit_callbacks(execute=True):
        approval = ask(waiting_run(mailer), DecisionKind.QUESTION)
    options = buttons(message_of(fake_slack, approval))
    assert [(b["action_id"], b["text"]["text"]) for b in options] == [(ANSWER_ACTION, "staging"), (ANSWER_ACTION, "production")]
    # An index that names no option is refused, not guessed.
    forged = {**options[0], "value": options[0]["value"].rsplit(":", 1)[0] + ":7"}
    click(client, fake_slack, forged, user="U0ADA", capture=django_capture_on_commit_callbacks)
    assert Approval.objects.get(pk=approval.pk).status == "pending" and "does not decide" in told(fake_slack)[-1]
    click(client, fake_slack, options[1], user="U0ADA", capture=django_capture_on_commit_callbacks)
    approval.refresh_from_db()
    assert (approval.status, approval.answer) == ("approved", "production")
    assert "Answered by ada: production" in fake_slack.calls("chat.update")[-1]["text"]


def test_a_free_text_question_and_a_configuration_change_are_linked_not_buttoned(
    mailer: Any, fake_slack: FakeSlack, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        question = ask(waiting_run(mailer), DecisionKind.QUESTION, request={"question": "Which URL?", "options": []})
        change = agent_services.agent_update(agent=mailer, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="r").pending_change
    assert change is not None
    for approval in (question, change):
        message = message_of(fake_slack, approval)
        assert not buttons(message) and f"/approvals/#approval-{approval.pk}" in json.dumps(message["blocks"])
    assert "a second admin" in json.dumps(message_of(fake_slack, change)["blocks"])


def test_slack_refuses_who_the_web_refuses(mailer: Any, fake_slack: FakeSlack, client: Any, django_capture_on_commit_callbacks: Any) -> None:
    starter = linked(person("sam"), "U0SAM")
    with django_capture_on_commit_callbacks(execute=True):
        approval = ask(waiting_run(mailer, actor=starter), DecisionKind.LOOP_ESCALATION)
    go_on, _ = buttons(message_of(fake_slack, approval))
    click(client, fake_slack, go_on, user="U0SAM", capture=django_capture_on_commit_callbacks)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert told(fake_slack) == ["You started this run; someone else must decide its decisions. Nothing was changed."]
