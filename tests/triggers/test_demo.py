"""`manage.py demo`: idempotent setup, and the sample service's real exception starting a run."""

from __future__ import annotations

import io
import subprocess
import time

import pytest
from django.core.management import call_command

from agentops.agents.models import Agent, Trigger
from agentops.runs.models import Run
from agentops.triggers.models import ErrorEvent, ErrorGroup, ErrorProject

pytestmark = pytest.mark.django_db(transaction=True)


def demo(*args: str) -> str:
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def test_demo_setup_is_idempotent(settings, tmp_path):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    first = demo()
    second = demo()
    assert "created ['debugging-agent', 'debugging-agent-mcp', 'test-expansion-agent']" in first and "created -, updated -" in second
    assert ErrorProject.objects.count() == 1 and Agent.objects.count() == 3
    assert Trigger.objects.filter(kind="error").count() == 1
    repo = tmp_path / "forge" / "checkout-service.git"
    log = subprocess.run(["git", "log", "--oneline", "main"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert len(log.splitlines()) == 1
    assert "DSN: http://" in second


def test_demo_sends_the_real_exception_which_starts_one_run(settings, tmp_path, live_server):
    settings.AGENTOPS_FORGE_ROOT = tmp_path / "forge"
    out = demo("--send-error", live_server.url)
    assert "failed with ConnectionPoolExhaustedError" in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not Run.objects.exists():
        time.sleep(0.05)
    group = ErrorGroup.objects.get()
    assert group.exception_type.endswith("ConnectionPoolExhaustedError")
    assert group.count == ErrorEvent.objects.count() >= 10
    frames = ErrorEvent.objects.first().stacktrace[-1]["frames"]
    assert frames[-1]["filename"].endswith("checkout/db.py") and frames[-1]["function"] == "acquire"
    run = Run.objects.get(agent__slug="debugging-agent")
    assert (run.trigger_kind, run.fingerprint) == ("error", f"error:{group.pk}")
    # The MCP variant takes on the same problem, started by hand, with the same trigger data.
    variant = Run.objects.get(agent__slug="debugging-agent-mcp")
    assert (variant.trigger_kind, variant.input, variant.context) == ("manual", run.input, run.context)
    assert f"MCP variant run: {live_server.url}/runs/{variant.pk}/" in out
