"""Error groups in the dashboard: what broke, how often, and whether a run took it on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from helpers_dashboard import client_for, make_run

from agentops.agents.models import Trigger, TriggerKind
from agentops.runs.models import Run, RunStatus
from agentops.triggers.ingest import normalize_event, store_events
from agentops.triggers.models import ErrorCount, ErrorGroup, ErrorProject, TriggerRefusal


def event(
    *, value: str = "pool of 10 exhausted", exc_type: str = "ConnectionPoolExhaustedError", tags: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "level": "error",
        "platform": "python",
        "environment": "production",
        "release": "checkout@1.4.2",
        "tags": tags if tags is not None else {"service": "checkout", "region": "eu-west-1"},
        "exception": {
            "values": [
                {
                    "type": exc_type,
                    "value": value,
                    "module": "checkout.db",
                    "stacktrace": {
                        "frames": [
                            {"filename": "threading.py", "function": "run", "module": "threading", "lineno": 1, "in_app": False},
                            {"filename": "checkout/service.py", "function": "checkout", "module": "checkout.service", "lineno": 20, "in_app": True},
                            {
                                "filename": "checkout/db.py",
                                "function": "acquire",
                                "module": "checkout.db",
                                "lineno": 42,
                                "in_app": True,
                                "context_line": "raise ConnectionPoolExhaustedError(size)",
                                "pre_context": ["if not free:"],
                                "post_context": ["return conn"],
                            },
                        ]
                    },
                }
            ]
        },
        **extra,
    }


@pytest.fixture
def project(db) -> ErrorProject:
    return ErrorProject.objects.create(name="Checkout", slug="checkout")


def ingest(project: ErrorProject, *events: dict[str, Any]) -> ErrorGroup:
    stored = store_events(project=project, events=[normalize_event(e) for e in events], source="sentry")
    return ErrorGroup.objects.get(pk=stored[-1].group.pk)


@pytest.fixture
def group(project) -> ErrorGroup:
    return ingest(project, event(), event(value="pool of 10 exhausted"))


PAGES = ["/errors/", "/errors/?project=checkout", "/errors/{pk}/"]


def _pages(group: ErrorGroup) -> list[str]:
    return [p.format(pk=group.pk) for p in PAGES]


def test_the_error_pages_send_anonymous_visitors_to_sign_in(team, group):
    for path in _pages(group):
        response = client_for(None).get(path)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), path


def test_the_error_pages_refuse_an_outsider(team, group):
    for path in _pages(group):
        assert client_for(team.outsider).get(path).status_code == 403, path


@pytest.mark.parametrize("role", ["owner", "approver", "viewer"])
def test_every_member_reads_the_error_pages(team, group, role):
    client = client_for(getattr(team, role))
    for path in _pages(group):
        assert client.get(path).status_code == 200, path


def test_the_error_pages_are_read_only(team, group):
    assert client_for(team.owner).post("/errors/").status_code == 405
    assert client_for(team.owner).post(f"/errors/{group.pk}/").status_code == 405


def test_an_unknown_error_group_is_a_404(team):
    assert client_for(team.viewer).get("/errors/999999/").status_code == 404


def test_the_list_shows_each_problem_with_its_sparkline_and_its_run(team, agent, group):
    run = make_run(agent, status=RunStatus.SUCCEEDED, fingerprint=group.run_fingerprint)
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=run)
    body = client_for(team.viewer).get("/errors/").content.decode()
    for text in [
        "ConnectionPoolExhaustedError: pool of 10 exhausted",
        "checkout.db in acquire",
        "lvl-error",
        f'href="/errors/{group.pk}/"',
        f'href="/runs/{run.pk}/"',
        "s-succeeded",
    ]:
        assert text in body, text
    spark = body.split('class="spark"', 1)[1].split("</span></span>", 1)[0]
    assert spark.count("<span ") == 24
    assert 'class="h-100"' in spark and 'title="' in spark  # this hour's two events are the peak
    assert ': 2"' in spark


def test_the_sparkline_counts_the_last_24_hours_only(team, group):
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    ErrorCount.objects.create(group=group, hour=now - timedelta(hours=3), count=8)
    ErrorCount.objects.create(group=group, hour=now - timedelta(hours=30), count=500)
    body = client_for(team.viewer).get("/errors/").content.decode()
    spark = body.split('class="spark"', 1)[1].split("</span></span>", 1)[0]
    assert ': 8"' in spark and ': 500"' not in spark
    assert 'class="h-25"' in spark  # 2 of the peak 8


def test_the_list_filters_by_project(team, group):
    other = ErrorProject.objects.create(name="Billing", slug="billing")
    theirs = ingest(other, event(exc_type="KeyError", value="'invoice'"))
    body = client_for(team.viewer).get("/errors/?project=billing").content.decode()
    assert f"/errors/{theirs.pk}/" in body and f"/errors/{group.pk}/" not in body


def test_the_list_takes_a_bounded_number_of_queries(team, project, django_assert_max_num_queries):
    for i in range(30):
        ingest(project, event(exc_type=f"Error{i}", value=f"problem {i}"))
    client = client_for(team.viewer)
    client.get("/")
    with django_assert_max_num_queries(12):
        body = client.get("/errors/").content.decode()
    assert body.count('class="spark"') == 30


def test_the_detail_shows_the_stack_trace_tags_events_refusals_and_runs(team, agent, group):
    trigger = Trigger.objects.create(agent=agent, name="checkout errors", kind=TriggerKind.ERROR, rules={"project": "checkout"})
    now = timezone.now()
    TriggerRefusal.objects.create(trigger=trigger, group=group, reason="the agent's daily run cap is reached", count=3, first_at=now, last_at=now)
    mine = make_run(agent, status=RunStatus.FAILED, fingerprint=group.run_fingerprint, status_reason="tests failed in the sandbox")
    other = make_run(agent, status=RunStatus.SUCCEEDED, fingerprint="error:999999")
    body = client_for(team.viewer).get(f"/errors/{group.pk}/").content.decode()
    for text in [
        "ConnectionPoolExhaustedError",
        "pool of 10 exhausted",
        "<code>checkout/db.py</code>:42 in <code>acquire</code>",
        "<b>raise ConnectionPoolExhaustedError(size)</b>",
        "if not free:",
        "<code>threading.py</code>:1 in <code>run</code>",
        'class="frame in-app"',
        "<dt>region</dt><dd><code>eu-west-1</code></dd>",
        "checkout@1.4.2",
        "production",
        "checkout errors",
        "the agent&#x27;s daily run cap is reached",
        '<td class="num">3</td>',
        f'href="/runs/{mine.pk}/"',
        "tests failed in the sandbox",
    ]:
        assert text in body, text
    assert f'href="/runs/{other.pk}/"' not in body
    assert body.count("<tr><td title=") == 2  # both events


def test_the_error_page_escapes_a_malicious_exception_message(team, project):
    evil = "<script>alert(document.cookie)</script>"
    group = ingest(project, event(exc_type="ValueError", value=evil, tags={"user": '"><img src=x onerror=alert(1)>'}, message=evil))
    for path in [f"/errors/{group.pk}/", "/errors/"]:
        body = client_for(team.viewer).get(path).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body, path
        assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in body, path


def test_a_group_without_events_still_renders(team, project):
    now = timezone.now()
    group = ErrorGroup.objects.create(project=project, fingerprint="f" * 32, title="Gone", first_seen=now, last_seen=now)
    body = client_for(team.viewer).get(f"/errors/{group.pk}/").content.decode()
    assert "No events stored." in body


def test_only_an_admin_sees_a_projects_dsn(team, project, settings):
    settings.SITE_URL = "https://ops.example.com"
    dsn = project.dsn(settings.SITE_URL)
    assert dsn == f"https://{project.public_key}@ops.example.com/{project.pk}"
    assert dsn in client_for(team.owner).get("/errors/").content.decode()
    for user in [team.approver, team.viewer]:
        body = client_for(user).get("/errors/").content.decode()
        assert project.public_key not in body and "shown to admins only" in body
        assert project.webhook_secret not in body
    assert project.webhook_secret not in client_for(team.owner).get("/errors/").content.decode()


def test_the_admin_role_may_see_dsns_on_a_freshly_migrated_database(db):
    # The roles migrations, not ensure_roles(), grant it.
    assert Group.objects.get(name="admin").permissions.filter(content_type__app_label="triggers", codename="change_errorproject").exists()
    assert not Group.objects.get(name="approver").permissions.filter(codename="change_errorproject").exists()


def test_runs_of_other_groups_do_not_leak_into_a_group(team, agent, project):
    first = ingest(project, event(exc_type="A", value="a"))
    second = ingest(project, event(exc_type="B", value="b"))
    run = make_run(agent, status=RunStatus.QUEUED, fingerprint=second.run_fingerprint)
    assert f'href="/runs/{run.pk}/"' not in client_for(team.viewer).get(f"/errors/{first.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/"' in client_for(team.viewer).get(f"/errors/{second.pk}/").content.decode()
    assert Run.objects.filter(fingerprint=f"error:{second.pk}").count() == 1


# --- fix attempts: what the next event does, and a person's retry ------------------------------------


def _error_trigger(agent) -> Trigger:
    return Trigger.objects.create(agent=agent, name="errors", kind=TriggerKind.ERROR, rules={"project": "checkout", "cooldown_s": 3600})


def test_the_error_page_says_which_run_is_active(team, agent, group):
    run = make_run(agent, status=RunStatus.RUNNING, fingerprint=group.run_fingerprint)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=30))
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=run, count_at_last_run=1)
    body = client_for(team.viewer).get(f"/errors/{group.pk}/").content.decode()
    assert f"run #{run.pk} active" in body
    assert "1 event counted since the last run started" in body
    assert "Retry now" not in body


def test_the_error_page_shows_the_cooldown_and_offers_a_retry(team, agent, group):
    trigger = _error_trigger(agent)
    run = make_run(agent, status=RunStatus.SUCCEEDED, fingerprint=group.run_fingerprint)
    Run.objects.filter(pk=run.pk).update(trigger=trigger, finished_at=timezone.now(), model_calls=3)
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=run)
    body = client_for(team.approver).get(f"/errors/{group.pk}/").content.decode()
    assert "waiting: cooldown until " in body and "Retry now" in body
    # Viewers read the state but get no button (and the view refuses them, below).
    assert "Retry now" not in client_for(team.viewer).get(f"/errors/{group.pk}/").content.decode()


def test_the_error_page_shows_a_merged_fix(team, agent, group):
    from agentops.forges.models import PullRequest, PullRequestStatus

    run = make_run(agent, status=RunStatus.SUCCEEDED, fingerprint=group.run_fingerprint)
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now(), model_calls=3)
    PullRequest.objects.create(
        repo="checkout-service",
        number=3,
        title="fix",
        branch="agent/fix",
        base="main",
        run=run,
        status=PullRequestStatus.MERGED,
        merged_at=timezone.now() + timedelta(minutes=1),
    )
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=run)
    body = client_for(team.viewer).get(f"/errors/{group.pk}/").content.decode()
    assert "fix merged in PR #3; will retry on regression" in body


def test_a_retry_starts_a_run_and_is_audited(team, agent, group):
    from agentops.audit.models import AuditEvent

    trigger = _error_trigger(agent)
    run = make_run(agent, status=RunStatus.FAILED, fingerprint=group.run_fingerprint)
    Run.objects.filter(pk=run.pk).update(trigger=trigger, finished_at=timezone.now(), model_calls=3)
    ErrorGroup.objects.filter(pk=group.pk).update(last_run=run)
    response = client_for(team.approver).post(f"/errors/{group.pk}/retry/")
    fresh = Run.objects.filter(fingerprint=group.run_fingerprint).exclude(pk=run.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{fresh.pk}/"
    assert AuditEvent.objects.filter(action="error_group.retry", actor=team.approver).count() == 1
    # A second retry while that run is active is refused, and says why.
    response = client_for(team.approver).post(f"/errors/{group.pk}/retry/", follow=True)
    assert "still working on this problem" in response.content.decode()
    assert Run.objects.filter(fingerprint=group.run_fingerprint).count() == 2


@pytest.mark.parametrize("who", ["viewer", "outsider"])
def test_a_retry_needs_the_right_to_start_runs(team, agent, group, who):
    _error_trigger(agent)
    assert client_for(getattr(team, who)).post(f"/errors/{group.pk}/retry/").status_code == 403
    assert client_for(team.approver).get(f"/errors/{group.pk}/retry/").status_code == 405
    assert Run.objects.count() == 0
