"""One run per error group per fix attempt, and no group ever muted (issue 10, items 1 and 4)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from agentops.audit.models import AuditEvent
from agentops.forges.models import PullRequest, PullRequestStatus
from agentops.runs.models import Run, RunStatus
from agentops.triggers.ingest import group_snapshot
from agentops.triggers.models import ErrorGroup
from agentops.triggers.rules import RetryRefused, error_group_retry, group_state
from tests.triggers.factories import make_agent, make_error_trigger, make_project, sentry_event


def send(client: Client, project, **kw) -> None:
    response = client.post(
        f"/api/{project.pk}/store/",
        data=json.dumps(sentry_event(event_id=uuid.uuid4().hex, **kw)),
        content_type="application/json",
        HTTP_X_SENTRY_AUTH=f"Sentry sentry_key={project.public_key}",
    )
    assert response.status_code == 200, response.content


@pytest.fixture
def setup(db):
    agent = make_agent()
    project = make_project()
    trigger = make_error_trigger(agent, cooldown_s=3600)
    return agent, project, trigger


def _end(run: Run, *, status: str = RunStatus.SUCCEEDED, ago: timedelta = timedelta(seconds=0), model_calls: int = 4, reason: str = "") -> None:
    Run.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now() - ago, model_calls=model_calls, status_reason=reason)


def test_a_run_stuck_in_queued_does_not_mute_its_group(client, setup):
    _, project, _ = setup
    send(client, project)
    stuck = Run.objects.get()
    Run.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(hours=1))
    send(client, project)
    stuck.refresh_from_db()
    assert stuck.status == RunStatus.FAILED and stuck.status_reason.startswith("stuck")
    fresh = Run.objects.exclude(pk=stuck.pk).get()
    assert fresh.status == RunStatus.QUEUED
    assert ErrorGroup.objects.get().last_run == fresh


def test_a_running_run_whose_worker_is_gone_does_not_mute_its_group(client, setup):
    _, project, _ = setup
    send(client, project)
    orphan = Run.objects.get()
    Run.objects.filter(pk=orphan.pk).update(status=RunStatus.RUNNING, lease_owner="dead", lease_expires_at=timezone.now() - timedelta(hours=1))
    send(client, project)
    assert Run.objects.count() == 2
    orphan.refresh_from_db()
    assert orphan.status == RunStatus.FAILED


def test_a_live_running_run_keeps_its_group_and_the_events_are_counted(client, setup):
    _, project, _ = setup
    send(client, project)
    live = Run.objects.get()
    Run.objects.filter(pk=live.pk).update(status=RunStatus.RUNNING, lease_owner="w1", lease_expires_at=timezone.now() + timedelta(seconds=30))
    for _ in range(3):
        send(client, project)
    assert Run.objects.count() == 1
    live.refresh_from_db()
    assert live.status == RunStatus.RUNNING
    group = ErrorGroup.objects.get()
    state = group_state(group_snapshot(group.pk))
    assert (state.kind, state.counted, state.label) == ("active", 3, f"run #{live.pk} active")


def test_a_flood_after_a_run_ended_is_counted_not_rerun(client, setup):
    _, project, _ = setup
    send(client, project)
    _end(Run.objects.get())
    for _ in range(200):
        send(client, project)
    assert Run.objects.count() == 1
    group = ErrorGroup.objects.get()
    assert group.count - group.count_at_last_run == 200
    assert group_state(group_snapshot(group.pk)).label.startswith("waiting: cooldown until ")


def test_the_next_event_after_the_cooldown_starts_a_new_attempt(client, setup):
    _, project, _ = setup
    send(client, project)
    first = Run.objects.get()
    _end(first, ago=timedelta(seconds=3601))  # the trigger's cooldown_s is 3600
    send(client, project)
    send(client, project)
    assert Run.objects.count() == 2
    assert ErrorGroup.objects.get().last_run != first


def test_the_default_cooldown_is_a_day(client, db):
    agent, project = make_agent(), make_project()
    make_error_trigger(agent)
    send(client, project)
    _end(Run.objects.get(), ago=timedelta(hours=23))
    send(client, project)
    assert Run.objects.count() == 1


def test_a_run_that_failed_before_working_does_not_block_its_group(client, setup):
    _, project, _ = setup
    send(client, project)
    _end(Run.objects.get(), status=RunStatus.FAILED, model_calls=0, reason="database unavailable", ago=timedelta(minutes=6))
    send(client, project)
    assert Run.objects.count() == 2


def test_a_merged_fix_waits_for_a_regression(client, setup):
    _, project, _ = setup
    send(client, project)
    run = Run.objects.get()
    _end(run, ago=timedelta(seconds=5000))  # cooldown over, but the fix was merged: only a regression reruns
    merged_at = timezone.now() + timedelta(minutes=5)
    PullRequest.objects.create(
        repo="checkout-service", number=3, title="fix", branch="agent/fix", base="main", run=run, status=PullRequestStatus.MERGED, merged_at=merged_at
    )
    send(client, project)  # received before the merge (the deploy is not out yet)
    assert Run.objects.count() == 1
    group = ErrorGroup.objects.get()
    assert group_state(group_snapshot(group.pk)).label == "fix merged in PR #3; will retry on regression"
    PullRequest.objects.filter(number=3).update(merged_at=timezone.now() - timedelta(minutes=1))
    send(client, project)  # the error came back after the merge
    assert Run.objects.count() == 2
    group.refresh_from_db()
    assert group.regressed_at is not None
    assert group_state(group_snapshot(group.pk)).label.startswith("regressed after fix; run #")


def test_a_person_retries_at_once_and_it_is_audited(client, setup, django_user_model):
    _, project, _ = setup
    send(client, project)
    _end(Run.objects.get())
    person = django_user_model.objects.create_user("oncall", "oncall@example.com", "pw")
    run = error_group_retry(group=ErrorGroup.objects.get(), actor=person)
    assert Run.objects.count() == 2 and run.status == RunStatus.QUEUED
    assert AuditEvent.objects.filter(action="error_group.retry", actor=person).count() == 1
    with pytest.raises(RetryRefused, match="still working"):
        error_group_retry(group=ErrorGroup.objects.get(), actor=person)
    assert Run.objects.count() == 2


def test_the_cooldown_is_read_defensively_from_the_rules(client, db):
    agent, project = make_agent(), make_project()
    make_error_trigger(agent, cooldown_s="soon")
    send(client, project)
    _end(Run.objects.get(), ago=timedelta(hours=1))
    send(client, project)
    assert Run.objects.count() == 1  # a bad value falls back to the default day


def test_an_event_of_a_group_with_a_live_run_costs_one_query(client, setup, django_assert_num_queries):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement ingest is PostgreSQL's; the embedded SQLite database uses the ORM")
    _, project, _ = setup
    send(client, project)  # creates the group and its run; the project and triggers are now cached
    send(client, project)
    with django_assert_num_queries(1):
        send(client, project)
    assert Run.objects.count() == 1 and ErrorGroup.objects.get().count == 3


def test_a_run_that_just_failed_before_working_retries_after_a_short_wait_not_at_once(client, setup):
    _, project, _ = setup
    send(client, project)
    _end(Run.objects.get(), status=RunStatus.FAILED, model_calls=0, reason="infrastructure: the sandbox could not be reached")
    send(client, project)
    assert Run.objects.count() == 1
    group = ErrorGroup.objects.get()
    assert group_state(group_snapshot(group.pk)).label.startswith("waiting: run #")


def test_a_run_waiting_for_an_approval_long_expired_does_not_block(client, setup):
    from agentops.approvals.models import Approval

    _, project, _ = setup
    send(client, project)
    waiting = Run.objects.get()
    Run.objects.filter(pk=waiting.pk).update(status=RunStatus.WAITING_APPROVAL)
    assert not Approval.objects.filter(run=waiting).exists()
    send(client, project)
    assert Run.objects.count() == 2
