"""`manage.py demo`: set up the debugging-agent demo (idempotent), optionally send the production error.

    manage.py demo                                   # forge repo, error project, agent + trigger; prints the DSN
    manage.py demo --send-error http://127.0.0.1:8000  # ...then reports the real exception with sentry-sdk

The sample service's exception goes through the real sentry-sdk, over HTTP, to the running server's
Sentry-compatible endpoint; the critical rule of the debugging agent then starts a run, whose URL is
printed (and written to --run-url-file) as soon as it exists, so a person can watch it live.

Run again, it resumes: the spec is applied only to agents that do not exist yet (what a person
changed in the dashboard stays), and the error is reported only while no run was started for it.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from agentops.agents.models import Agent, Trigger, TriggerKind
from agentops.agents.spec import SpecError, apply_spec, load_spec
from agentops.forges.local import local_repo_create
from agentops.runs.models import Run
from agentops.runs.services import RunRefused, run_create
from agentops.triggers.models import ErrorGroup, ErrorProject
from dashboard.roles import ensure_roles

AGENT_SLUG = "debugging-agent"
# Its variant that does its git work through an MCP server inside the sandbox (examples/agents.yaml).
MCP_AGENT_SLUG = "debugging-agent-mcp"
REPOSITORY = "checkout-service"
PROJECT = "checkout"

TRIGGER_RULES = {"project": PROJECT, "min_level": "error", "tags": {"service": "checkout"}, "min_count": 1, "window_s": 300}


class Command(BaseCommand):
    help = "Set up the debugging-agent demo (forge repository, error project, agent, trigger); optionally send the error."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--send-error", metavar="URL", help="base URL of the running server to report the sample service's exception to")
        parser.add_argument(
            "--spec",
            default=str(Path(settings.BASE_DIR) / "examples" / "agents.yaml"),
            help="agents spec to apply first when it exists (default: examples/agents.yaml)",
        )
        parser.add_argument("--customers", type=int, default=25, help="concurrent checkouts send_error.py simulates")
        parser.add_argument("--admin-login", metavar="FILE", help="make sure an admin user exists; write its login to FILE")
        parser.add_argument("--run-url-file", metavar="FILE", help="write the URL of the error's run to FILE once it exists")
        parser.add_argument("--wait-for-run", type=float, default=30, metavar="SECONDS", help="how long --send-error waits for the run to start")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("admin_login"):
            self._ensure_admin(Path(options["admin_login"]))
        base = Path(settings.BASE_DIR) / "examples"
        repo = local_repo_create(REPOSITORY, base / "checkout-service")
        self.stdout.write(f"forge repository: {repo}")

        project, created = ErrorProject.objects.get_or_create(slug=PROJECT, defaults={"name": "Checkout"})
        self.stdout.write(f"error project {project.slug!r} ({'created' if created else 'exists'})")

        spec = Path(options["spec"])
        created_agents = self._apply_new_agents(spec) if spec.exists() else []
        agent = self._ensure_agent()
        if AGENT_SLUG in created_agents or not spec.exists():
            # Only for an agent set up just now: a trigger a person removed since stays removed.
            self._ensure_trigger(agent)

        url = (options.get("send_error") or settings.SITE_URL).rstrip("/")
        dsn = project.dsn(url)
        self.stdout.write(f"DSN: {dsn}")
        self.stdout.write(f"webhook: POST {url}/hooks/errors/{project.slug}/  (X-Agentops-Signature: sha256=HMAC of the body)")
        if options.get("send_error"):
            existing = self._error_run(project)
            if existing is not None:
                # Reporting again would only start a run that finds its fix already made.
                self.stdout.write(f"the error was reported before and run #{existing.pk} ({existing.status}) took it on: not reporting it again")
                self._announce(existing, url, options.get("run_url_file"))
                return
            script = base / "checkout-service" / "send_error.py"
            proc = subprocess.run(
                [sys.executable, str(script), dsn, "--customers", str(options["customers"])], capture_output=True, text=True, timeout=120, check=False
            )
            if proc.returncode != 0:
                raise CommandError(f"send_error.py failed: {proc.stderr.strip()[-2000:]}")
            self.stdout.write(proc.stdout.strip())
            deadline = time.monotonic() + max(0.0, options["wait_for_run"])
            run = self._error_run(project)
            while run is None and time.monotonic() < deadline:
                time.sleep(0.2)
                run = self._error_run(project)
            if run is None:
                self.stdout.write(f"no run has started yet: watch {url}/runs/")
            else:
                self._announce(run, url, options.get("run_url_file"))
                self._start_mcp_variant(run, url)

    def _apply_new_agents(self, spec: Path) -> list[str]:
        """Apply the spec's agents that do not exist yet. Applying over an existing agent would
        undo what a person changed in the dashboard since (the spec is the truth for the agents
        it names), so those are left as they are."""
        try:
            data = load_spec(spec.read_text())
        except SpecError as exc:
            raise CommandError(f"{spec}: {exc}") from None
        listed = data.get("agents")
        agents: list[Any] = listed if isinstance(listed, list) else []
        slugs = [a.get("slug") for a in agents if isinstance(a, dict)]
        existing = set(Agent.objects.filter(slug__in=[s for s in slugs if isinstance(s, str)]).values_list("slug", flat=True))
        new = [a for a in agents if not (isinstance(a, dict) and a.get("slug") in existing)]
        if existing:
            self.stdout.write(f"kept as configured: {', '.join(sorted(existing))} (the spec is not applied over them)")
        if not new:
            self.stdout.write(f"applied {spec.name}: created -, updated -")
            return []
        try:
            result = apply_spec({**data, "agents": new}, actor="demo")
        except SpecError as exc:
            raise CommandError(f"{spec}: {exc}") from None
        self.stdout.write(f"applied {spec.name}: created {result.created or '-'}, updated {result.updated or '-'}")
        return list(result.created)

    @staticmethod
    def _error_run(project: ErrorProject) -> Run | None:
        """The run started for the demo's error, if any (one per error group, by its fingerprint)."""
        fingerprints = [group.run_fingerprint for group in ErrorGroup.objects.filter(project=project)]
        if not fingerprints:
            return None
        return Run.objects.filter(agent__slug=AGENT_SLUG, fingerprint__in=fingerprints).order_by("pk").first()

    def _start_mcp_variant(self, error_run: Run, url: str) -> None:
        """The same problem for the MCP variant of the agent, started by hand (as a person would from
        its page), so the demo also shows a run whose git tools come from an MCP server."""
        agent = Agent.objects.filter(slug=MCP_AGENT_SLUG).first()
        if agent is None or Run.objects.filter(agent=agent).exists():
            return
        try:
            run = run_create(agent=agent, input=error_run.input, actor="demo", context=dict(error_run.context or {}))
        except RunRefused as exc:
            self.stdout.write(f"the MCP variant was not started: {exc}")
            return
        self.stdout.write(f"MCP variant run: {url}/runs/{run.pk}/")

    def _announce(self, run: Run, url: str, run_url_file: str | None) -> None:
        run_url = f"{url}/runs/{run.pk}/"
        self.stdout.write(f"run: {run_url}")
        if run_url_file:
            Path(run_url_file).write_text(run_url + "\n")

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
