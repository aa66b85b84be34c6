from __future__ import annotations

from decimal import Decimal

import pytest
from helpers_dashboard import make_approval, make_run

from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.llm.prices import DEFAULT_MODEL
from agentops.runs.models import Run
from tests.support.team import team  # noqa: F401  the fixture


@pytest.fixture
def agent(db) -> Agent:
    agent = Agent.objects.create(name="Debugger", slug="debugger", objective="Fix production errors.", model=DEFAULT_MODEL)
    Policy.objects.create(agent=agent, daily_max_runs=50, daily_max_cost_usd=Decimal("20"))
    ToolGrant.objects.create(agent=agent, tool="http_get", scope={"domains": ["example.com"]})
    return agent


@pytest.fixture
def run(agent) -> Run:
    return make_run(agent)


@pytest.fixture
def approval(run):
    return make_approval(run)


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
    # Hashing four passwords per test with PBKDF2 dominates the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
