"""The local forge: bare repositories on disk, pull requests as rows, a real git merge."""

from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth import get_user_model

from agentops.audit.models import AuditEvent
from agentops.forges import ChangeSet, ForgeError, MergeError, ProtectedBranchError, get_forge
from agentops.forges.local import LocalForge, local_repo_create, pull_request_close, pull_request_mark_ready, pull_request_merge
from agentops.forges.models import PullRequest, PullRequestStatus

pytestmark = pytest.mark.django_db


def show(repo_path, rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo_path, capture_output=True, text=True, check=True).stdout


def rev(repo_path, ref: str) -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=repo_path, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(settings, tmp_path):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    source = tmp_path / "src"
    (source / "app").mkdir(parents=True)
    (source / "app" / "pool.py").write_text("SIZE = 10\n")
    (source / "tests").mkdir()
    (source / "tests" / "test_pool.py").write_text("def test_size():\n    assert True\n")
    path = local_repo_create("shop", source, protected=["release"])
    return path


def change(**files) -> ChangeSet:
    return ChangeSet(message="Make the pool configurable", files={k.replace("__", "/").removesuffix("_py") + ".py": v for k, v in files.items()})


def test_it_creates_a_bare_repository_once(repo, tmp_path):
    assert (repo / "HEAD").exists()
    first = rev(repo, "main")
    assert local_repo_create("shop", tmp_path / "src") == repo
    assert rev(repo, "main") == first
    forge = LocalForge()
    assert forge.default_branch("shop") == "main"
    assert forge.protected_branches("shop") == ["main", "release"]
    assert forge.clone_source("shop") == str(repo)


def test_it_pushes_a_branch_and_opens_a_pull_request_with_the_diff(repo):
    forge = LocalForge(actor="agent:debugging-agent")
    head = forge.push_branch("shop", "agent/fix-pool", change(app__pool_py="SIZE = 50\n", app__config_py="X = 1\n"))
    assert show(repo, head, "app/pool.py") == "SIZE = 50\n"
    assert show(repo, "main", "app/pool.py") == "SIZE = 10\n"
    info = forge.open_pull_request("shop", "agent/fix-pool", "main", "Fix pool", "Root cause: ...", draft=True)
    assert (info.number, info.draft, info.status, info.head_sha) == (1, True, "open", head)
    pr = PullRequest.objects.get()
    assert "-SIZE = 10\n+SIZE = 50" in pr.diff
    assert "app/config.py" in pr.diff
    assert pr.changed_lines == 3
    assert pr.author_label == "agent:debugging-agent"
    assert info.url.endswith(f"/{pr.pk}/")


def test_a_second_push_fast_forwards_and_reopening_updates_the_same_pull_request(repo):
    forge = LocalForge()
    first = forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 20\n"))
    forge.open_pull_request("shop", "agent/fix", "main", "Fix", "", draft=False)
    second = forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 50\n"))
    assert first in subprocess.run(["git", "rev-list", second], cwd=repo, capture_output=True, text=True).stdout
    info = forge.open_pull_request("shop", "agent/fix", "main", "Fix v2", "", draft=False)
    assert info.number == 1
    assert PullRequest.objects.get().title == "Fix v2"
    assert "+SIZE = 50" in PullRequest.objects.get().diff


def test_it_never_pushes_to_the_default_or_a_protected_branch(repo):
    forge = LocalForge()
    before = {b: rev(repo, b) for b in ("main", "release")}
    for branch in ("main", "release"):
        with pytest.raises(ProtectedBranchError):
            forge.push_branch("shop", branch, change(app__pool_py="SIZE = 99\n"))
    for branch in ("+agent/x", "agent/x:main", "refs/heads/main", "agent/../main", "-f"):
        with pytest.raises(ForgeError):
            forge.push_branch("shop", branch, change(app__pool_py="SIZE = 99\n"))
    assert {b: rev(repo, b) for b in ("main", "release")} == before


def test_it_never_publishes_a_branch_whose_name_carries_a_secret(repo):
    forge = LocalForge()
    key = "AKIA" + "QYLPMN5HFIQR7XKT"  # an access-key shape, built here so the repo holds none
    with pytest.raises(ForgeError, match="contains a secret"):
        forge.push_branch("shop", f"agent/{key}", change(app__pool_py="SIZE = 99\n"))
    refs = subprocess.run(["git", "-C", repo, "for-each-ref", "--format=%(refname)"], capture_output=True, text=True, check=True).stdout
    assert key not in refs


def test_it_refuses_paths_outside_the_work_tree(repo):
    forge = LocalForge()
    for path in ("../evil", "/etc/passwd", ".git/hooks/pre-commit", "a/../../b"):
        with pytest.raises(ForgeError):
            forge.push_branch("shop", "agent/x", ChangeSet(message="m", files={path: "x"}))


def test_a_person_merges_with_a_real_git_merge(repo):
    forge = LocalForge()
    forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 50\n"))
    forge.open_pull_request("shop", "agent/fix", "main", "Fix", "", draft=False)
    pr = PullRequest.objects.get()
    person = get_user_model().objects.create_user("reviewer")
    sha = pull_request_merge(pr=pr, actor=person)
    assert rev(repo, "main") == sha
    assert show(repo, "main", "app/pool.py") == "SIZE = 50\n"
    parents = subprocess.run(["git", "rev-list", "--parents", "-n1", sha], cwd=repo, capture_output=True, text=True).stdout.split()
    assert len(parents) == 3  # a merge commit
    assert (pr.status, pr.merged_by, pr.merged_by_label, pr.merge_sha) == (PullRequestStatus.MERGED, person, "reviewer", sha)
    assert AuditEvent.objects.filter(action="pull_request.merge", actor_label="reviewer").exists()
    with pytest.raises(MergeError, match="merged, not open"):
        pull_request_merge(pr=pr, actor=person)


def test_a_draft_must_be_marked_ready_before_merging(repo):
    forge = LocalForge()
    forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 50\n"))
    forge.open_pull_request("shop", "agent/fix", "main", "Fix", "", draft=True)
    pr = PullRequest.objects.get()
    with pytest.raises(MergeError, match="draft"):
        pull_request_merge(pr=pr, actor="reviewer")
    pull_request_mark_ready(pr=pr, actor="reviewer")
    assert pull_request_merge(pr=pr, actor="reviewer") == rev(repo, "main")


def test_a_conflicting_pull_request_does_not_merge_and_changes_nothing(repo):
    forge = LocalForge()
    forge.push_branch("shop", "agent/a", change(app__pool_py="SIZE = 50\n"))
    forge.push_branch("shop", "agent/b", change(app__pool_py="SIZE = 70\n"))
    a = PullRequest.objects.get(number=forge.open_pull_request("shop", "agent/a", "main", "A", "", draft=False).number)
    b = PullRequest.objects.get(number=forge.open_pull_request("shop", "agent/b", "main", "B", "", draft=False).number)
    pull_request_merge(pr=a, actor="reviewer")
    main = rev(repo, "main")
    with pytest.raises(MergeError, match="does not merge cleanly"):
        pull_request_merge(pr=b, actor="reviewer")
    assert rev(repo, "main") == main
    b.refresh_from_db()
    assert b.status == PullRequestStatus.OPEN


def test_a_closed_pull_request_cannot_be_merged(repo):
    forge = LocalForge()
    forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 50\n"))
    forge.open_pull_request("shop", "agent/fix", "main", "Fix", "", draft=False)
    pr = PullRequest.objects.get()
    pull_request_close(pr=pr, actor="reviewer", reason="not needed")
    with pytest.raises(MergeError):
        pull_request_merge(pr=pr, actor="reviewer")


def test_the_forge_merge_and_comment_work_by_number(repo):
    forge = LocalForge(actor="agent:x")
    forge.push_branch("shop", "agent/fix", change(app__pool_py="SIZE = 50\n"))
    number = forge.open_pull_request("shop", "agent/fix", "main", "Fix", "", draft=False).number
    assert "#comment-" in forge.comment("shop", number, "All gates passed.")
    assert PullRequest.objects.get().comments.get().body == "All gates passed."
    sha = forge.merge("shop", number)
    assert rev(repo, "main") == sha
    assert PullRequest.objects.get().merged_by_label == "agent:x"


def test_an_unknown_repository_or_branch_is_an_error(repo):
    forge = LocalForge()
    with pytest.raises(ForgeError, match="does not exist"):
        forge.clone_source("nope")
    with pytest.raises(ForgeError, match="does not exist"):
        forge.open_pull_request("shop", "agent/none", "main", "x", "", draft=False)
    with pytest.raises(ForgeError):
        repo_name = "../etc"
        forge.clone_source(repo_name)


def test_get_forge_reads_the_agent_config(repo, settings):
    class A:
        slug = "a"
        config = {}

    assert get_forge(A()).kind == "local"
    A.config = {"forge": "github"}
    settings.GITHUB_TOKEN = None
    with pytest.raises(ForgeError, match="GITHUB_TOKEN"):
        get_forge(A())
    A.config = {"forge": "gitlab"}
    with pytest.raises(ForgeError, match="unknown forge"):
        get_forge(A())
