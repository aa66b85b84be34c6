"""Critical rules: which error groups start a run, dedup under a flood, refusals recorded."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from agentops.audit.models import AuditEvent
from agentops.guardrails.killswitch import kill_switch_engage
from agentops.runs.models import Run, RunStatus
from agentops.triggers.models import ErrorEvent, ErrorGroup, TriggerRefusal
from tests.triggers.factories import make_agent, make_error_trigger, make_project, sentry_event


def send(client: Client, project, **kw) -> None:
    event = sentry_event(event_id=uuid.uuid4().hex, **kw)
    payload = json.dumps(event).encode()
    body = b"{}\n" + json.dumps({"type": "event", "length": len(payload)}).encode() + b"\n" + payload
    response = client.post(
        f"/api/{project.pk}/envelope/",
        data=gzip.compress(body),
        content_type="application/x-sentry-envelope",
        HTTP_CONTENT_ENCODING="gzip",
        HTTP_X_SENTRY_AUTH=f"Sentry sentry_key={project.public_key}",
    )
    assert response.status_code == 200, response.content


@pytest.fixture
def setup(db):
    agent = make_agent()
    project = make_project()
    trigger = make_error_trigger(agent, tags={"service": "checkout"})
    return agent, project, trigger


def test_a_critical_error_starts_one_run_with_the_event_as_context(client, setup):
    agent, project, trigger = setup
    send(client, project)
    run = Run.objects.get()
    group = ErrorGroup.objects.get()
    assert (run.agent, run.trigger, run.trigger_kind, run.fingerprint) == (agent, trigger, "error", f"error:{group.pk}")
    assert run.context["error_group_id"] == group.pk
    assert run.context["exception_type"] == "ConnectionPoolExhaustedError"
    assert run.context["top_frames"][-1]["function"] == "acquire"
    assert "ConnectionPoolExhaustedError" in run.input
    group.refresh_from_db()
    assert group.last_run == run
    trigger.refresh_from_db()
    assert trigger.last_fired_at is not None


def test_an_event_below_the_minimum_level_starts_nothing(client, setup):
    _, project, _ = setup
    send(client, project, level="warning")
    assert Run.objects.count() == 0
    assert ErrorEvent.objects.count() == 1


def test_an_event_of_another_service_starts_nothing(client, setup):
    _, project, _ = setup
    send(client, project, tags={"service": "search"})
    assert Run.objects.count() == 0


def test_an_event_of_another_project_starts_nothing(client, setup):
    send(client, make_project("billing"))
    assert Run.objects.count() == 0


def test_a_disabled_trigger_starts_nothing(client, setup):
    _, project, trigger = setup
    trigger.enabled = False
    trigger.save()
    send(client, project)
    assert Run.objects.count() == 0


def test_a_frequency_rule_waits_for_enough_events_in_the_window(client, setup):
    _, project, trigger = setup
    trigger.rules = {**trigger.rules, "min_count": 3, "window_s": 60}
    trigger.save()
    send(client, project)
    send(client, project)
    assert Run.objects.count() == 0
    send(client, project)
    assert Run.objects.count() == 1


def test_a_tag_rule_may_accept_several_values(client, setup):
    _, project, trigger = setup
    trigger.rules = {**trigger.rules, "tags": {"service": ["checkout", "cart"]}}
    trigger.save()
    send(client, project, tags={"service": "cart"})
    assert Run.objects.count() == 1


def test_repeated_events_while_a_run_is_active_are_counted_not_refused(client, setup):
    _, project, _ = setup
    for _ in range(5):
        send(client, project)
    assert Run.objects.count() == 1
    group = ErrorGroup.objects.get()
    assert (group.count, group.count_at_last_run) == (5, 1)
    # Counting is not a refusal: no audit or refusal row per event.
    assert TriggerRefusal.objects.count() == 0


def test_an_event_after_a_run_ended_is_counted_during_the_cooldown(client, setup):
    _, project, _ = setup
    send(client, project)
    Run.objects.update(status=RunStatus.SUCCEEDED, finished_at=timezone.now(), model_calls=3)
    send(client, project)
    assert Run.objects.count() == 1


def test_the_kill_switch_refuses_and_records_why(client, setup):
    _, project, trigger = setup
    kill_switch_engage(actor="tester", reason="drill")
    send(client, project)
    assert Run.objects.count() == 0
    assert TriggerRefusal.objects.get().reason == "kill switch engaged"
    assert AuditEvent.objects.filter(action="run.refused", detail="kill switch engaged").count() == 1
    assert ErrorEvent.objects.count() == 1  # the event itself is kept


def test_a_paused_agent_refuses(client, setup):
    agent, project, _ = setup
    agent.paused = True
    agent.save()
    send(client, project)
    assert Run.objects.count() == 0
    assert TriggerRefusal.objects.get().reason == "agent paused"


def test_the_daily_run_cap_refuses(client, setup):
    agent, project, _ = setup
    agent.policy.daily_max_runs = 1
    agent.policy.save()
    send(client, project)
    # Failed before its first model call (infrastructure): not a fix attempt, so the group may retry.
    Run.objects.update(status=RunStatus.FAILED, finished_at=timezone.now() - timedelta(minutes=6))
    send(client, project)
    assert Run.objects.count() == 1
    assert TriggerRefusal.objects.get().reason == "daily run cap reached (1)"


def test_a_flood_of_a_thousand_identical_events_starts_exactly_one_run(client, setup):
    _, project, _ = setup
    for _ in range(1000):
        send(client, project)
    assert ErrorEvent.objects.count() == 1000
    group = ErrorGroup.objects.get()
    assert group.count == 1000
    assert Run.objects.count() == 1
    # The flood is counted on the group, not written as a refusal or an audit row per event.
    assert TriggerRefusal.objects.count() == 0
    assert AuditEvent.objects.filter(action="run.refused").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_flood_starts_exactly_one_run():
    agent = make_agent()
    project = make_project()
    make_error_trigger(agent)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        client = Client()
        try:
            barrier.wait()
            for _ in range(25):
                send(client, project)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ErrorEvent.objects.count() == 200
    assert ErrorGroup.objects.get().count == 200
    assert Run.objects.count() == 1
    assert ErrorGroup.objects.get().count_at_last_run >= 1
