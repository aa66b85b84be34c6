"""No secret is stored or served in clear: a run whose model puts the installation's own
SECRET_KEY and ANTHROPIC_API_KEY (and a key shape) in its tool arguments, tool results, final text,
loop-detector quotes and approval reasons leaves none of them in any table, page or API answer."""

from __future__ import annotations

import io
import json
import secrets as random
import string
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from agentops.redaction import REDACTED

ALNUM = string.ascii_letters + string.digits


@pytest.fixture
def own_secrets(settings) -> list[str]:
    secret_key = f"own{uuid.uuid4().hex}{uuid.uuid4().hex[:10]}"  # no recognisable shape: only configuration can catch it
    api_key = "sk-" + "ant-api03-" + uuid.uuid4().hex + uuid.uuid4().hex
    settings.SECRET_KEY = secret_key
    settings.ANTHROPIC_API_KEY = api_key
    settings.AGENTOPS_SECRET_VALUES = [secret_key, api_key]
    stripe = "sk_" + "live_" + "".join(random.choice(ALNUM) for _ in range(24))
    return [secret_key, api_key, stripe]


def dump() -> str:
    """Every row of every model, except the agents: a scripted planner's script (the model's
    words, replayed) is agent configuration a person wrote, not something the run stored."""
    out = io.StringIO()
    call_command("dumpdata", exclude=["agents.agent"], stdout=out)
    return out.getvalue()


def leaks(secrets: list[str]) -> list[str]:
    text = dump()
    found = []
    for row in json.loads(text):
        serialized = json.dumps(row)
        found += [f"{row['model']} #{row.get('pk')}: {s[:10]}" for s in secrets if s in serialized]
    return found


def served(run) -> dict[str, str]:
    from django.contrib.auth.models import User

    from dashboard.roles import ensure_roles
    from dashboard.services import api_token_create

    admin = User.objects.create_user(f"reader-{run.pk}", "r@example.com", "x")
    admin.groups.add(ensure_roles()["admin"])
    client = Client()
    client.force_login(admin)
    _, token = api_token_create(user=admin, name="read", scope="read")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_HOST": "localhost"}
    responses = {
        "run page": client.get(f"/runs/{run.pk}/", HTTP_HOST="localhost"),
        "api run": client.get(f"/api/v1/runs/{run.pk}/", **bearer),
        "api steps": client.get(f"/api/v1/runs/{run.pk}/steps/", **bearer),
    }
    for name, response in responses.items():
        assert response.status_code == 200, name
    return {name: response.content.decode() for name, response in responses.items()}


def test_a_run_that_handles_secrets_stores_and_serves_none_of_them(make_agent, start_run, own_secrets, tmp_path):
    said = " ".join(own_secrets)
    script = [
        {"text": f"Reading the config: {said}", "tool_calls": [{"name": "test_echo", "arguments": {"text": said}}]},
        # A side-effecting call: its arguments and result go to the idempotency ledger.
        {"text": "Writing it down.", "tool_calls": [{"name": "test_append", "arguments": {"text": said}}]},
        {"text": f"Done. For the record: {said}"},
    ]
    agent = make_agent(script=script, grants={"test_echo": {}, "test_append": {"path": str(tmp_path / "out")}})
    run = start_run(agent, input=f"rotate {own_secrets[0]}")
    from agentops.runs.models import ToolExecution

    assert ToolExecution.objects.filter(run=run).exists()
    assert REDACTED in dump()
    assert leaks(own_secrets) == []
    for name, body in served(run).items():
        assert [s[:10] for s in own_secrets if s in body] == [], name


def test_the_loop_detectors_quote_of_the_arguments_is_redacted(make_agent, start_run, own_secrets):
    script = [{"text": "again", "tool_calls": [{"name": "test_fail", "arguments": {"what": own_secrets[0]}}]} for _ in range(8)]
    run = start_run(make_agent(script=script, grants={"test_fail": {}}, policy={"max_iterations": 20}))
    assert run.status == "failed" and "loop" in run.status_reason
    assert leaks(own_secrets) == []


def test_an_approvals_reason_and_arguments_are_redacted(make_agent, start_run, own_secrets, tmp_path):
    script = [{"text": f"Paying, authorised by {own_secrets[1]}", "tool_calls": [{"name": "test_pay", "arguments": {"text": own_secrets[2]}}]}]
    run = start_run(make_agent(script=script, grants={"test_pay": {"path": str(tmp_path / "pay")}}, trust_phase=3))
    approval = run.approvals.get()
    assert own_secrets[2] not in str(approval.arguments)
    assert leaks(own_secrets) == []


@pytest.mark.django_db
def test_every_orm_write_path_redacts(make_agent, own_secrets):
    from agentops.audit.services import audit_record
    from agentops.runs.models import Run, ToolExecution

    secret = own_secrets[0]
    run = Run.objects.create(agent=make_agent(), input=f"a {secret}", context={"event": {secret: secret}})
    Run.objects.filter(pk=run.pk).update(status_reason=f"loop on {secret}", final_error=secret, result={"final_text": secret})
    run.outcome_detail = secret
    run.save()
    Run.objects.bulk_update([Run(pk=run.pk, agent_id=run.agent_id, status_reason=f"again {secret}")], ["status_reason"])
    ToolExecution.objects.create(key="k1", run=run, tool="t", arguments={"a": secret}, result={"output": secret})
    audit_record(actor="alice", action="test", target=run, before={"x": secret}, after=[secret], detail=secret)
    # Read back with SQL, past any Python on the read path: what the database holds.
    with connection.cursor() as cursor:
        cursor.execute("SELECT input, context, status_reason, final_error, result, outcome_detail FROM runs_run")
        rows = cursor.fetchall()
    assert rows and all(secret not in str(row) for row in rows)
    assert leaks([secret]) == []


def test_notifications_carry_no_secret(settings, own_secrets):
    from django.core import mail

    from agentops.notify import notify

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AGENTOPS_NOTIFY_EMAILS = ["oncall@example.com"]
    settings.AGENTOPS_SLACK_WEBHOOK_URL = None
    notify(event="approval", subject=f"pay with {own_secrets[2]}", text=f"reason: {own_secrets[0]} {own_secrets[1]}", path="/approvals/")
    message = mail.outbox[-1]
    assert [s for s in own_secrets if s in message.subject + message.body] == []
    assert REDACTED in message.body


@pytest.mark.django_db
def test_identifiers_the_model_chooses_are_redacted_and_still_find_their_row(make_agent, own_secrets):
    from agentops.runs.models import Run, Step, ToolExecution
    from agentops.runs.steps import step_record

    secret = own_secrets[0]
    run = Run.objects.create(agent=make_agent())
    key = f"run-{run.pk}:toolu_{secret}"
    ToolExecution.objects.create(key=key, run=run, tool="t")
    # The idempotency lookup prepares its value the same way: a retry still finds the ledger row.
    assert ToolExecution.objects.get(key=key).run_id == run.pk
    # The model id of a step comes from the API's answer (hand-written SQL on PostgreSQL).
    step = step_record(run=run, kind="model_call", payload={"text": "hi"}, model_id=f"claude-{secret}")
    assert secret not in Step.objects.get(pk=step.pk).model_id
    assert leaks([secret]) == []


@pytest.mark.django_db
def test_rows_stored_in_clear_before_the_fix_can_be_scrubbed(make_agent, own_secrets):
    from agentops.fields import scrub_stored_secrets
    from agentops.runs.models import Run

    secret = own_secrets[1]
    run = Run.objects.create(agent=make_agent())
    with connection.cursor() as cursor:  # as an older version wrote it
        cursor.execute("UPDATE runs_run SET status_reason = %s WHERE id = %s", [f"loop on {secret}", run.pk])
    assert leaks([secret])
    assert scrub_stored_secrets() >= 1
    assert leaks([secret]) == []
    assert REDACTED in Run.objects.get(pk=run.pk).status_reason


def test_a_key_streamed_across_progress_chunks_is_never_stored_in_part(make_agent, start_run):
    from agentops.runs.models import Step, StepKind

    key = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    head, tail = key[:12], key[12:]
    script = [
        {"text": "stream", "tool_calls": [{"name": "test_stream", "arguments": {"pieces": ["building\n", "STRIPE=" + head, tail + "\nok\n"], "pause_s": 0.6}}]},
        {"text": "done"},
    ]
    agent = make_agent(script=script, grants={"test_stream": {}})
    run = start_run(agent)
    progress = "".join(s.payload.get("output", "") for s in Step.objects.filter(run=run, kind=StepKind.PROGRESS).order_by("seq"))
    assert "building" in progress and "ok" in progress
    assert head not in progress and tail not in progress
    assert "[REDACTED]" in progress
