"""The local forge's pull requests in the dashboard: read by every member, acted on by approvers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.urls import reverse
from helpers_dashboard import client_for, csrf_post, make_run

from agentops.audit.models import AuditEvent
from agentops.forges.base import ChangeSet
from agentops.forges.local import LocalForge, local_repo_create, pull_request_url
from agentops.forges.models import PullRequest, PullRequestComment, PullRequestStatus
from agentops.runs.models import RunStatus, StepKind
from agentops.runs.steps import step_record


def rev(repo: Path, ref: str) -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(settings, tmp_path) -> Path:
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    source = tmp_path / "src"
    (source / "checkout").mkdir(parents=True)
    (source / "checkout" / "cart.py").write_text("def total(items):\n    return sum(items) + shipping(items)\n")
    return local_repo_create("shop", source)


def open_pr(agent, *, draft: bool = False, body: str = "Root cause: shipping() returns None.", branch: str = "agent/fix-cart") -> PullRequest:
    run = make_run(agent, status=RunStatus.SUCCEEDED)
    forge = LocalForge(actor="agent:debugger")
    forge.push_branch(
        "shop",
        branch,
        ChangeSet(message="Treat missing shipping as 0", files={"checkout/cart.py": "def total(items):\n    return sum(items) + (shipping(items) or 0)\n"}),
    )
    info = forge.open_pull_request("shop", branch, "main", "Fix the cart total", body, draft, run=run)
    return PullRequest.objects.get(pk=info.extra["id"])


@pytest.fixture
def pr(repo, agent) -> PullRequest:
    return open_pr(agent)


@pytest.fixture
def draft(repo, agent) -> PullRequest:
    return open_pr(agent, draft=True, branch="agent/draft-fix")


PAGES = ["/pulls/", "/pulls/?state=all", "/pulls/{pk}/"]
POSTS = ["dashboard:pull_request_merge", "dashboard:pull_request_ready", "dashboard:pull_request_close", "dashboard:pull_request_comment"]


# --- reading ---------------------------------------------------------------------------------


def test_the_pull_request_pages_send_anonymous_visitors_to_sign_in(team, pr):
    for path in [p.format(pk=pr.pk) for p in PAGES]:
        response = client_for(None).get(path)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), path


def test_the_pull_request_pages_refuse_an_outsider(team, pr):
    for path in [p.format(pk=pr.pk) for p in PAGES]:
        assert client_for(team.outsider).get(path).status_code == 403, path


@pytest.mark.parametrize("role", ["owner", "approver", "viewer"])
def test_every_member_reads_the_pull_request_pages(team, pr, role):
    client = client_for(getattr(team, role))
    for path in [p.format(pk=pr.pk) for p in PAGES]:
        assert client.get(path).status_code == 200, path


def test_an_unknown_pull_request_is_a_404(team):
    assert client_for(team.viewer).get("/pulls/999999/").status_code == 404


def test_the_link_a_run_result_carries_now_resolves(team, pr):
    assert pull_request_url(pr).endswith(f"/pulls/{pr.pk}/")
    assert reverse("dashboard:pull_request", args=[pr.pk]) == f"/pulls/{pr.pk}/"


def test_the_nav_links_to_pull_requests_and_errors(team):
    body = client_for(team.viewer).get("/").content.decode()
    assert 'href="/pulls/"' in body and ">Pull requests<" in body
    assert 'href="/errors/"' in body and ">Errors<" in body


def test_the_list_shows_open_pull_requests_with_drafts_and_filters_by_state(team, pr, draft):
    client = client_for(team.viewer)
    body = client.get("/pulls/").content.decode()
    assert f"/pulls/{pr.pk}/" in body and f"/pulls/{draft.pk}/" in body
    assert "agent/fix-cart" in body and f"/runs/{pr.run_id}/" in body
    body = client.get("/pulls/?state=ready").content.decode()
    assert f"/pulls/{pr.pk}/" in body and f"/pulls/{draft.pk}/" not in body
    body = client.get("/pulls/?state=draft").content.decode()
    assert f"/pulls/{draft.pk}/" in body and f"/pulls/{pr.pk}/" not in body
    assert "No merged pull requests." in client.get("/pulls/?state=merged").content.decode()
    assert client.get("/pulls/?state=bogus").status_code == 200


def test_the_page_shows_title_state_branches_run_gates_diff_and_comments(team, pr):
    step_record(run=pr.run, kind=StepKind.GATE, payload={"gate": "tests", "passed": True, "detail": "12 passed in 0.4s"})
    step_record(run=pr.run, kind=StepKind.GATE, payload={"gate": "secrets", "passed": False, "detail": "found an AWS key in config.py"})
    PullRequestComment.objects.create(pull_request=pr, author_label="agent:debugger", body="Verified with the failing test first.")
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    for text in [
        "Fix the cart total",
        "shop#1",
        '<span class="pill d-running">open</span>',
        "<code>agent/fix-cart</code> → <code>main</code>",
        f'href="/runs/{pr.run_id}/"',
        "Root cause: shipping() returns None.",
        "<code>tests</code>",
        "d-passed",
        "12 passed in 0.4s",
        "<code>secrets</code>",
        "d-failed",
        "found an AWS key",
        # the diff: a table per file, line numbers, Pygments colours (issue 12)
        '<tr class="add">',
        '<tr class="del">',
        '<span class="hl-ow">or</span>',
        'href="#file-',
        "Verified with the failing test first.",
    ]:
        assert text in body, text


def test_the_body_is_shown_as_text_never_as_html(team, repo, agent):
    pr = open_pr(agent, body='<script>alert("pwned")</script><img src=x onerror=alert(1)>')
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body
    # rendered as markdown with raw HTML escaped, then sanitised: the tags are text
    assert "&lt;script&gt;alert(" in body and "&lt;img src=x" in body


def test_a_pull_request_without_a_run_says_so(team, pr):
    PullRequest.objects.filter(pk=pr.pk).update(run=None)
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert "No run: no gate results." in body and "agent:debugger" in body


def test_an_approver_sees_the_actions_and_a_viewer_does_not(team, pr, draft):
    approver = client_for(team.approver)
    body = approver.get(f"/pulls/{pr.pk}/").content.decode()
    assert reverse("dashboard:pull_request_merge", args=[pr.pk]) in body
    assert reverse("dashboard:pull_request_close", args=[pr.pk]) in body
    assert reverse("dashboard:pull_request_comment", args=[pr.pk]) in body
    assert reverse("dashboard:pull_request_ready", args=[pr.pk]) not in body
    body = approver.get(f"/pulls/{draft.pk}/").content.decode()
    assert reverse("dashboard:pull_request_ready", args=[draft.pk]) in body
    assert reverse("dashboard:pull_request_merge", args=[draft.pk]) not in body
    viewer = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert "/merge/" not in viewer and "/close/" not in viewer and "/comment/" not in viewer


# --- acting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POSTS)
def test_every_pull_request_post_without_a_csrf_token_is_refused(team, pr, name):
    response = client_for(team.owner, csrf=True).post(reverse(name, args=[pr.pk]), {"body": "x", "reason": "x"})
    assert response.status_code == 403
    pr.refresh_from_db()
    assert pr.status == PullRequestStatus.OPEN and not pr.comments.exists()


@pytest.mark.parametrize("name", POSTS)
def test_every_pull_request_action_refuses_an_outsider_and_a_viewer(team, pr, name):
    for user in [team.outsider, team.viewer]:
        assert client_for(user).post(reverse(name, args=[pr.pk]), {"body": "x"}).status_code == 403
    pr.refresh_from_db()
    assert pr.status == PullRequestStatus.OPEN and not pr.comments.exists()


@pytest.mark.parametrize("name", POSTS)
def test_every_pull_request_action_sends_anonymous_visitors_to_sign_in(team, pr, name):
    response = client_for(None).post(reverse(name, args=[pr.pk]), {"body": "x"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_pull_request_action_is_post_only(team, pr):
    assert client_for(team.approver).get(reverse("dashboard:pull_request_merge", args=[pr.pk])).status_code == 405


def test_an_approver_merges_and_the_base_branch_moves(team, repo, pr):
    before = rev(repo, "main")
    head = rev(repo, "agent/fix-cart")
    response = csrf_post(team.approver, f"/pulls/{pr.pk}/merge/", {}, page=f"/pulls/{pr.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/pulls/{pr.pk}/"
    after = rev(repo, "main")
    assert after != before
    assert rev(repo, "main^1") == before and rev(repo, "main^2") == head  # a real merge commit
    assert "(shipping(items) or 0)" in show(repo, "main", "checkout/cart.py")
    pr.refresh_from_db()
    assert pr.status == PullRequestStatus.MERGED and pr.merged_by == team.approver and pr.merged_by_label == "bob" and pr.merge_sha == after
    assert AuditEvent.objects.filter(action="pull_request.merge", actor_label="bob").count() == 1
    body = client_for(team.approver).get(f"/pulls/{pr.pk}/").content.decode()
    assert "merged" in body and "by bob" in body and "/merge/" not in body


def test_a_merge_shows_its_result_as_a_message(team, repo, pr):
    response = client_for(team.approver).post(f"/pulls/{pr.pk}/merge/", follow=True)
    assert "Merged #1 into main" in response.content.decode()
    again = client_for(team.approver).post(f"/pulls/{pr.pk}/merge/", follow=True)
    assert "Merge refused: pull request #1 is merged, not open" in again.content.decode()
    assert AuditEvent.objects.filter(action="pull_request.merge").count() == 1


def test_a_viewer_cannot_merge(team, repo, pr):
    before = rev(repo, "main")
    assert csrf_post(team.viewer, f"/pulls/{pr.pk}/merge/", {}, page=f"/pulls/{pr.pk}/").status_code == 403
    assert rev(repo, "main") == before
    pr.refresh_from_db()
    assert pr.status == PullRequestStatus.OPEN


def test_a_draft_cannot_be_merged_until_marked_ready(team, repo, draft):
    before = rev(repo, "main")
    response = client_for(team.approver).post(f"/pulls/{draft.pk}/merge/", follow=True)
    assert "Merge refused" in response.content.decode() and "is a draft" in response.content.decode()
    assert rev(repo, "main") == before
    draft.refresh_from_db()
    assert draft.status == PullRequestStatus.OPEN and draft.draft
    csrf_post(team.approver, f"/pulls/{draft.pk}/ready/", {}, page=f"/pulls/{draft.pk}/")
    draft.refresh_from_db()
    assert not draft.draft
    assert AuditEvent.objects.filter(action="pull_request.ready", actor_label="bob").count() == 1
    client_for(team.approver).post(f"/pulls/{draft.pk}/merge/")
    assert rev(repo, "main") != before


def test_marking_a_ready_pull_request_ready_changes_nothing(team, pr):
    response = client_for(team.approver).post(f"/pulls/{pr.pk}/ready/", follow=True)
    assert "was not an open draft" in response.content.decode()
    assert not AuditEvent.objects.filter(action="pull_request.ready").exists()


def test_an_approver_closes_a_pull_request_with_a_reason(team, repo, pr):
    before = rev(repo, "main")
    csrf_post(team.approver, f"/pulls/{pr.pk}/close/", {"reason": "wrong fix"}, page=f"/pulls/{pr.pk}/")
    pr.refresh_from_db()
    assert pr.status == PullRequestStatus.CLOSED and pr.closed_at is not None
    assert rev(repo, "main") == before
    event = AuditEvent.objects.get(action="pull_request.close")
    assert event.actor_label == "bob" and event.detail == "wrong fix"
    again = client_for(team.approver).post(f"/pulls/{pr.pk}/close/", follow=True)
    assert "was already closed" in again.content.decode()
    assert "Merge refused" in client_for(team.approver).post(f"/pulls/{pr.pk}/merge/", follow=True).content.decode()


def test_an_approver_comments_and_it_is_audited(team, pr):
    response = csrf_post(team.approver, f"/pulls/{pr.pk}/comment/", {"body": "  Please add a <b>test</b>.  "}, page=f"/pulls/{pr.pk}/")
    comment = pr.comments.get()
    assert response["Location"] == f"/pulls/{pr.pk}/#comment-{comment.pk}"
    assert comment.body == "Please add a <b>test</b>." and comment.author_label == "bob"
    assert AuditEvent.objects.filter(action="pull_request.comment", actor_label="bob").count() == 1
    body = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert f'id="comment-{comment.pk}"' in body and "Please add a &lt;b&gt;test&lt;/b&gt;." in body


def test_an_empty_comment_is_refused_with_a_message(team, pr):
    response = client_for(team.approver).post(f"/pulls/{pr.pk}/comment/", {"body": "   "}, follow=True)
    assert "a comment needs a body" in response.content.decode()
    assert not pr.comments.exists() and not AuditEvent.objects.filter(action="pull_request.comment").exists()
