"""The GitHub forge through the real PyGithub, against FakeGitHub over a real socket."""

from __future__ import annotations

import subprocess

import pytest

from agentops.forges import ChangeSet, ForgeError, MergeError, ProtectedBranchError, get_forge
from agentops.forges.github_forge import GitHubForge, default_clone_url
from tests.fakes.github_server import TOKEN, FakeGitHub

REPO = "acme/checkout"


@pytest.fixture
def gh():
    with FakeGitHub() as fake:
        fake.add_repo(REPO, files={"app/pool.py": "SIZE = 10\n", "README.md": "hi\n"}, protected=["release"])
        yield fake


@pytest.fixture
def forge(gh):
    return GitHubForge(token=TOKEN, base_url=gh.base_url, fast=True)


def change(content: str = "SIZE = 50\n", **more) -> ChangeSet:
    return ChangeSet(message="Make the pool configurable", files={"app/pool.py": content, **more})


def test_it_reads_the_default_and_protected_branches(forge):
    assert forge.default_branch(REPO) == "main"
    assert forge.protected_branches(REPO) == ["release"]


def test_it_pushes_a_branch_through_the_git_data_api(gh, forge):
    sha = forge.push_branch(REPO, "agent/fix-pool", change(**{"docs/pool.md": "50\n", "README.md": None}))
    repo = gh.repos[REPO]
    assert repo.branches["agent/fix-pool"] == sha
    assert repo.commits[sha]["parents"] == [repo.branches["main"]]
    assert repo.files_at("agent/fix-pool") == {"app/pool.py": "SIZE = 50\n", "docs/pool.md": "50\n"}
    assert repo.files_at("main")["app/pool.py"] == "SIZE = 10\n"


def test_a_second_push_fast_forwards_the_branch(gh, forge):
    first = forge.push_branch(REPO, "agent/fix", change("SIZE = 20\n"))
    second = forge.push_branch(REPO, "agent/fix", change("SIZE = 50\n"))
    repo = gh.repos[REPO]
    assert repo.commits[second]["parents"] == [first]
    assert ("PATCH", "/api/v3/repos/acme/checkout/git/refs/heads/agent/fix") in gh.requests
    assert forge.push_branch(REPO, "agent/fix", change("SIZE = 50\n")) == second  # nothing new


def test_it_never_pushes_to_the_default_or_a_protected_branch(gh, forge):
    for branch in ("main", "release"):
        with pytest.raises(ProtectedBranchError):
            forge.push_branch(REPO, branch, change())
    for branch in ("+agent/x", "refs/heads/main", "agent/x:main"):
        with pytest.raises(ForgeError):
            forge.push_branch(REPO, branch, change())
    # Refused in the forge layer: not one write reached GitHub.
    assert gh.writes() == []


def test_it_opens_draft_and_ready_pull_requests(gh, forge):
    forge.push_branch(REPO, "agent/a", change())
    draft = forge.open_pull_request(REPO, "agent/a", "main", "Fix pool", "Root cause: ...", draft=True)
    assert (draft.number, draft.draft, draft.status, draft.branch, draft.base) == (1, True, "open", "agent/a", "main")
    assert draft.url == "https://github.example/acme/checkout/pull/1"
    forge.push_branch(REPO, "agent/b", change("SIZE = 60\n"))
    ready = forge.open_pull_request(REPO, "agent/b", "main", "Fix pool", "", draft=False)
    assert (ready.number, ready.draft) == (2, False)
    again = forge.open_pull_request(REPO, "agent/b", "main", "Fix pool v2", "", draft=False)
    assert again.number == 2
    assert gh.repos[REPO].pulls[2]["title"] == "Fix pool v2"


def test_it_comments_and_merges(gh, forge):
    forge.push_branch(REPO, "agent/a", change())
    number = forge.open_pull_request(REPO, "agent/a", "main", "Fix", "", draft=False).number
    assert forge.comment(REPO, number, "All gates passed.").endswith("#issuecomment-1")
    sha = forge.merge(REPO, number)
    repo = gh.repos[REPO]
    assert repo.branches["main"] == sha
    assert repo.files_at("main")["app/pool.py"] == "SIZE = 50\n"
    assert forge.pull_request(REPO, number).status == "merged"


def test_a_draft_does_not_merge(gh, forge):
    forge.push_branch(REPO, "agent/a", change())
    number = forge.open_pull_request(REPO, "agent/a", "main", "Fix", "", draft=True).number
    with pytest.raises(MergeError, match="draft"):
        forge.merge(REPO, number)


def test_bad_credentials_and_unknown_repositories_are_forge_errors(gh):
    with pytest.raises(ForgeError, match="401"):
        GitHubForge(token="wrong", base_url=gh.base_url, fast=True).default_branch(REPO)
    with pytest.raises(ForgeError, match="404"):
        GitHubForge(token=TOKEN, base_url=gh.base_url, fast=True).default_branch("acme/nope")


def test_get_forge_builds_the_github_forge_from_settings(gh, settings):
    settings.GITHUB_TOKEN = TOKEN
    settings.GITHUB_BASE_URL = gh.base_url

    class Agent:
        slug = "debugging-agent"
        config = {"forge": "github"}

    forge = get_forge(Agent())
    assert forge.kind == "github"
    assert forge.default_branch(REPO) == "main"


def test_the_clone_url_follows_the_base_url():
    assert default_clone_url("https://api.github.com") == "https://github.com/{repo}.git"
    assert default_clone_url("https://ghe.example.com/api/v3") == "https://ghe.example.com/{repo}.git"


def test_clone_source_keeps_a_local_mirror_fresh(tmp_path, gh):
    origin = tmp_path / "origin"
    origin.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=origin, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    (origin / "a.txt").write_text("1\n")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    forge = GitHubForge(token=TOKEN, base_url=gh.base_url, fast=True, mirror_root=tmp_path / "mirrors", clone_url=str(tmp_path / "{repo}"))
    mirror = forge.clone_source("origin")
    (origin / "a.txt").write_text("2\n")
    run("commit", "-q", "-am", "two")
    assert forge.clone_source("origin") == mirror
    shown = subprocess.run(["git", "show", "main:a.txt"], cwd=mirror, capture_output=True, text=True, check=True).stdout
    assert shown == "2\n"
