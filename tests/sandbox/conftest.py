"""Fixtures for the sandbox contract suite: real Docker and real bubblewrap, no database."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from agentops.sandbox import available_backends, create_sandbox

BACKENDS = ["docker", "bubblewrap"]
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="package", autouse=True)
def sandbox_scope():
    """Our own sandbox scope: reapers and kill switches of other test sessions on this machine leave our
    sandboxes alone, and ours leave theirs alone."""
    scope = f"test-sandbox-{uuid.uuid4().hex[:8]}"
    old_env = os.environ.get("AGENTOPS_SANDBOX_SCOPE")
    os.environ["AGENTOPS_SANDBOX_SCOPE"] = scope  # for the subprocesses of these tests
    django_settings, missing = None, object()
    old_setting = missing
    try:
        from django.conf import settings as django_settings

        old_setting = getattr(django_settings, "AGENTOPS_SANDBOX_SCOPE", missing)
        django_settings.AGENTOPS_SANDBOX_SCOPE = scope  # for this process, when Django settings are loaded
    except Exception:
        django_settings = None
    yield scope
    if old_env is None:
        os.environ.pop("AGENTOPS_SANDBOX_SCOPE", None)
    else:
        os.environ["AGENTOPS_SANDBOX_SCOPE"] = old_env
    if django_settings is not None:
        if old_setting is missing:
            delattr(django_settings, "AGENTOPS_SANDBOX_SCOPE")
        else:
            django_settings.AGENTOPS_SANDBOX_SCOPE = old_setting


@pytest.fixture(scope="session")
def backend_reasons() -> dict[str, str | None]:
    return available_backends()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, backend_reasons) -> str:
    """Each backend in turn. In CI (CI=true) a missing backend fails; locally it is skipped, saying why."""
    reason = backend_reasons[request.param]
    if reason:
        msg = f"sandbox backend {request.param!r} unavailable: {reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        print(msg)
        pytest.skip(msg)
    return request.param


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> str:
    """A small git repository with a module and its test."""
    path = tmp_path_factory.mktemp("sandbox-repo")
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "tests").mkdir()
    (path / "tests" / "test_calc.py").write_text("from calc import add\n\n\ndef test_add():\n    assert add(2, 2) == 4\n")
    (path / ".gitignore").write_text("__pycache__/\n")
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", ".")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "initial")
    return str(path)


@pytest.fixture(scope="session")
def new_run_id():
    def make(prefix: str = "contract") -> str:
        return f"test-{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(scope="module")
def sandbox(backend, repo, new_run_id):
    """One sandbox per backend and module, for the tests whose effects do not collide."""
    sb = create_sandbox(run_id=new_run_id(backend), repo=repo, backend=backend)
    yield sb
    sb.destroy()


@pytest.fixture
def make_sandbox(backend, repo, new_run_id):
    """Fresh sandboxes for tests that destroy or reap them; all destroyed at teardown."""
    made = []

    def make(run_id: str | None = None, **kwargs):
        sb = create_sandbox(run_id=run_id or new_run_id(backend), repo=repo, backend=backend, **kwargs)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.destroy()
