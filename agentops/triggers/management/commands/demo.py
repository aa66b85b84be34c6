"""`manage.py demo`: set up the debugging-agent demo (idempotent), optionally send the production error.

    manage.py demo                                   # forge repo, error project, agent + trigger; prints the DSN
    manage.py demo --send-error http://127.0.0.1:8000  # ...then reports the real exception with sentry-sdk

The sample service's exception goes through the real sentry-sdk, over HTTP, to the running server's
Sentry-compatible endpoint; the critical rule of the debugging agent then starts a run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agentops.agents.models import Agent, Trigger, TriggerKind
from agentops.forges.local import local_repo_create
from agentops.triggers.models import ErrorProject

AGENT_SLUG = "debugging-agent"
REPOSITORY = "checkout-service"
PROJECT = "checkout"

TRIGGER_RULES = {"project": PROJECT, "min_level": "error", "tags": {"service": "checkout"}, "min_count": 1, "window_s": 300}


class Command(BaseCommand):
    help = "Set up the debugging-agent demo (forge repository, error project, agent, trigger); optionally send the error."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--send-error", metavar="URL", help="base URL of the running server to report the sample service's exception to")
        parser.add_argument("--spec", default=str(Path(settings.BASE_DIR) / "examples" / "agents.yaml"),
                            help="agents spec to apply first when it exists (default: examples/agents.yaml)")
        parser.add_argument("--customers", type=int, default=25, help="concurrent checkouts send_error.py simulates")
        parser.add_argument("--admin-login", metavar="FILE", help="make sure an admin user exists; write its login to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("admin_login"):
            self._ensure_admin(Path(options["admin_login"]))
        base = Path(settings.BASE_DIR) / "examples"
        repo = local_repo_create(REPOSITORY, base / "checkout-service")
        self.stdout.write(f"forge repository: {repo}")

        project, created = ErrorProject.objects.get_or_create(slug=PROJECT, defaults={"name": "Checkout"})
        self.stdout.write(f"error project {project.slug!r} ({'created' if created else 'exists'})")

        spec = Path(options["spec"])
        if spec.exists():
            from agentops.agents.spec import SpecError, apply_spec, load_spec

            try:
                result = apply_spec(load_spec(spec.read_text()), actor="demo")
            except SpecError as exc:
                raise CommandError(f"{spec}: {exc}") from None
            self.stdout.write(f"applied {spec.name}: created {result.created or '-'}, updated {result.updated or '-'}")
        agent = self._ensure_agent()
        self._ensure_trigger(agent)

        url = (options.get("send_error") or settings.SITE_URL).rstrip("/")
        dsn = project.dsn(url)
        self.stdout.write(f"DSN: {dsn}")
        self.stdout.write(f"webhook: POST {url}/hooks/errors/{project.slug}/  (X-Agentops-Signature: sha256=HMAC of the body)")
        if options.get("send_error"):
            script = base / "checkout-service" / "send_error.py"
            proc = subprocess.run([sys.executable, str(script), dsn, "--customers", str(options["customers"])],
                                  capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise CommandError(f"send_error.py failed: {proc.stderr.strip()[-2000:]}")
            self.stdout.write(proc.stdout.strip())

    def _ensure_agent(self) -> Agent:
        # The agent comes from the spec (examples/agents.yaml): one definition, applied like any other.
        agent = Agent.objects.filter(slug=AGENT_SLUG).first()
        if agent is None:
            raise CommandError(f"no agent {AGENT_SLUG!r}: apply a spec that defines it (--spec)")
        self.stdout.write(f"agent {AGENT_SLUG!r} (phase {agent.trust_phase}, planner {agent.config.get('planner')})")
        return agent

    def _ensure_trigger(self, agent: Agent) -> None:
        for trigger in agent.triggers.filter(kind=TriggerKind.ERROR):
            if (trigger.rules or {}).get("project") == PROJECT:
                self.stdout.write(f"error trigger {trigger.name!r} exists")
                return
        Trigger.objects.create(agent=agent, name="checkout-errors", kind=TriggerKind.ERROR, rules=TRIGGER_RULES)
        self.stdout.write("error trigger 'checkout-errors' created")

    def _ensure_admin(self, login_file: Path) -> None:
        """An admin login for the demo: generated once, kept in the data directory (never in the repo)."""
        import secrets

        from django.contrib.auth.models import User

        from dashboard.roles import ensure_roles

        groups = ensure_roles()
        user = User.objects.filter(username="admin").first()
        if user is None or not login_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser("admin", "admin@localhost", password)
            else:
                user.set_password(password)
                user.save()
            login_file.write_text(f"admin / {password}\n")
            login_file.chmod(0o600)
        user.groups.add(groups["admin"])
        self.stdout.write(f"admin login in {login_file}")
