"""Expanding the context of a pull request's diff: the hidden lines of a changed file, read through
the forge (local bare repo, or GitHub's contents API) at the head and the base (issue 12)."""

from __future__ import annotations

import re

import pytest
from helpers_dashboard import client_for, make_run

from agentops.forges.base import ChangeSet, ForgeError
from agentops.forges.local import LocalForge, local_repo_create
from agentops.forges.models import PullRequest
from agentops.runs.models import RunStatus

BASE = "".join(f"line {n}\n" for n in range(1, 61))
HEAD = BASE.replace("line 30\n", "line 30 changed\n")


@pytest.fixture
def pr(settings, tmp_path, agent) -> PullRequest:
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    source = tmp_path / "src"
    (source / "app").mkdir(parents=True)
    (source / "app" / "long.py").write_text(BASE)
    (source / "app" / "blob.bin").write_bytes(b"\x00\x01binary")
    local_repo_create("shop", source)
    forge = LocalForge(actor="agent:debugger")
    forge.push_branch("shop", "agent/fix", ChangeSet(message="change line 30", files={"app/long.py": HEAD}))
    info = forge.open_pull_request("shop", "agent/fix", "main", "Fix", "body", False, run=make_run(agent, status=RunStatus.SUCCEEDED))
    return PullRequest.objects.get(pk=info.extra["id"])


def text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def url(pr: PullRequest, **params: object) -> str:
    query = {"path": "app/long.py", "start": 1, "end": 26, "old": 1, "layout": "unified", **params}
    return f"/pulls/{pr.pk}/context/?" + "&".join(f"{k}={v}" for k, v in query.items() if v is not None)


def test_the_pull_request_page_offers_to_expand_the_gap_before_and_after_the_hunk(team, pr):
    html = client_for(team.viewer).get(f"/pulls/{pr.pk}/").content.decode()
    assert html.count('class="expand-btn"') == 4  # before and after the one hunk, in both layouts
    assert "Expand 26 hidden lines" in html and "Expand the rest of the file" in html
    assert f"/pulls/{pr.pk}/context/?path=app%2Flong.py&amp;start=1&amp;end=26&amp;old=1&amp;layout=unified" in html


def test_it_returns_the_hidden_lines_of_the_head_with_both_line_numbers(team, pr):
    response = client_for(team.viewer).get(url(pr))
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count('<tr class="ctx expanded">') == 26
    assert "line 26" in text(body) and "line 27" not in text(body) and "changed" not in text(body)
    assert '<td class="ln">26</td><td class="ln">26</td>' in body and "hl-" in body  # coloured


def test_the_rest_of_the_file_after_the_last_hunk_ends_at_the_end_of_the_file(team, pr):
    response = client_for(team.viewer).get(url(pr, start=34, end=None, old=34))
    body = response.content.decode()
    assert response.status_code == 200 and body.count("<tr") == 27  # lines 34..60
    assert "line 60" in text(body) and "expand-btn" not in body


def test_the_split_view_reads_its_left_side_from_the_base(team, pr):
    response = client_for(team.viewer).get(url(pr, start=27, end=33, old=27, layout="split"))
    body = text(response.content.decode())
    assert response.status_code == 200
    assert "line 30 changed" in body and body.count("line 30") == 2  # base on the left, head on the right
    assert response.content.decode().count('<td class="sep"></td>') == 7


def test_a_long_gap_comes_in_bounded_pieces_with_a_control_for_the_rest(team, pr, monkeypatch):
    from dashboard import views

    monkeypatch.setattr(views, "EXPAND_MAX_LINES", 10)
    body = client_for(team.viewer).get(url(pr)).content.decode()
    assert body.count('<tr class="ctx expanded">') == 10
    assert "start=11&amp;end=26&amp;old=11" in body and "Expand 16 hidden lines" in body


def test_it_refuses_an_outsider(team, pr):
    assert client_for(team.outsider).get(url(pr)).status_code in (403, 404)
    assert client_for(None).get(url(pr)).status_code == 302


@pytest.mark.parametrize(
    "params",
    [
        {"start": 0},
        {"start": -1},
        {"start": "abc"},
        {"start": None},
        {"start": 10, "end": 5},
        {"start": "1" * 40},
        {"old": "x"},
        {"end": "9" * 12},
        {"layout": "sideways"},
    ],
)
def test_it_answers_a_bad_line_range_with_400(team, pr, params):
    response = client_for(team.viewer).get(url(pr, **params))
    assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("path", ["../../etc/passwd", "app/other.py", "app/blob.bin", "%00", "", "/etc/passwd", "app/long.py%0A"])
def test_it_reads_only_the_files_the_pull_request_changes(team, pr, path):
    response = client_for(team.viewer).get(url(pr, path=path))
    # (a NUL byte is refused earlier, by the site's request checks, with 400)
    assert response.status_code in (400, 404) and b"line 1" not in response.content


def test_a_start_past_the_end_of_the_file_returns_no_rows_and_no_error(team, pr):
    response = client_for(team.viewer).get(url(pr, start=5000, end=None, old=5000))
    assert response.status_code == 200 and "<tr" not in response.content.decode()


def test_the_quoted_path_is_never_reflected_as_html(team, pr):
    response = client_for(team.viewer).get(url(pr, path="<script>alert(1)</script>"))
    assert response.status_code == 404 and response["Content-Type"].startswith("text/plain")


# --- the forge contract -------------------------------------------------------------------------


def test_the_local_forge_reads_a_file_at_a_commit_and_at_a_branch(pr):
    forge = LocalForge()
    assert forge.read_file("shop", pr.head_sha, "app/long.py") == HEAD
    assert forge.read_file("shop", pr.base_sha, "app/long.py") == BASE
    assert forge.read_file("shop", "main", "app/long.py") == BASE


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        ("main", "app/missing.py"),
        ("main", "app"),
        ("main", "app/blob.bin"),
        ("main", "../x"),
        ("--output=/tmp/x", "app/long.py"),
        ("HEAD~1", "app/long.py"),
        ("main..x", "app/long.py"),
        ("0" * 40, "app/long.py"),
        ("nobranch", "app/long.py"),
    ],
)
def test_the_local_forge_refuses_what_is_not_a_readable_file(pr, ref, path):
    with pytest.raises(ForgeError):
        LocalForge().read_file("shop", ref, path)


def test_the_local_forge_refuses_a_file_larger_than_the_limit(pr, monkeypatch):
    import agentops.forges.local as local

    monkeypatch.setattr(local, "MAX_READ_BYTES", 100)
    with pytest.raises(ForgeError, match="too large"):
        LocalForge().read_file("shop", "main", "app/long.py")


def test_the_github_forge_reads_a_file_through_the_contents_api():
    from agentops.forges.github_forge import GitHubForge
    from tests.fakes.github_server import TOKEN, FakeGitHub

    with FakeGitHub() as fake:
        repo = fake.add_repo("acme/shop", files={"app/long.py": BASE})
        forge = GitHubForge(token=TOKEN, base_url=fake.base_url, fast=True)
        assert forge.read_file("acme/shop", "main", "app/long.py") == BASE
        assert forge.read_file("acme/shop", repo.branches["main"], "app/long.py") == BASE
        with pytest.raises(ForgeError):
            forge.read_file("acme/shop", "main", "app/missing.py")
        with pytest.raises(ForgeError):
            forge.read_file("acme/shop", "HEAD~1", "app/long.py")


def test_every_forge_implements_read_file():
    from agentops.forges.base import Forge
    from agentops.forges.github_forge import GitHubForge

    assert "read_file" in Forge.__abstractmethods__
    assert LocalForge.read_file is not Forge.read_file and GitHubForge.read_file is not Forge.read_file
