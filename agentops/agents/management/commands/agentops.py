"""`manage.py agentops <command>`: the operator's command line.

apply FILE / export: agents as code.  run AGENT --input … [--wait]: start a run.  trace RUN: a run's
steps as JSON lines.  kill --reason / release --reason: the kill switch.  reap: one reaper pass.
approve / reject APPROVAL: decide from the host shell.  drill [--wait]: rehearse the kill switch.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentops.runs.models import FINAL_STATUSES


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


class Command(BaseCommand):
    help = "Operate agentops: apply/export agent specs, start and trace runs, the kill switch."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        p = sub.add_parser("apply", help="create or update agents from a YAML spec (all or nothing)")
        p.add_argument("file")
        p.add_argument("--check", action="store_true", help="validate only, change nothing")
        p = sub.add_parser("export", help="write the agents' configuration as a YAML spec")
        p.add_argument("--output", "-o", help="file to write (default: stdout)")
        p.add_argument("--agent", action="append", help="only these agent slugs")
        p = sub.add_parser("run", help="start a run of an agent")
        p.add_argument("agent", help="agent slug")
        p.add_argument("--input", required=True)
        p.add_argument("--wait", action="store_true", help="run it in this process and wait for the end")
        p.add_argument("--planner", choices=["scripted", "anthropic"])
        p = sub.add_parser("trace", help="a run's steps")
        p.add_argument("run", type=int)
        p.add_argument("--format", choices=["jsonl", "text"], default="jsonl")
        p = sub.add_parser("kill", help="engage the kill switch")
        p.add_argument("--reason", required=True)
        p = sub.add_parser("release", help="release the kill switch")
        p.add_argument("--reason", required=True)
        sub.add_parser("reap", help="one reaper pass: orphaned runs, expired approvals, stale sandboxes")
        for name in ("approve", "reject"):
            p = sub.add_parser(name, help=f"{name} a pending approval")
            p.add_argument("approval", type=int)
            p.add_argument("--comment", default="")
        p = sub.add_parser("execute", help="run one queued run in this process (used by tests and debugging)")
        p.add_argument("run", type=int)
        p = sub.add_parser("drill", help="rehearse the kill switch on synthetic runs and record the result")
        p.add_argument("--runs", type=int, default=5)
        p.add_argument("--wait", action="store_true", help="run it here and wait for the result (default: a worker runs it)")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, "cmd_" + options["command"])(**options)

    def cmd_apply(self, *, file: str, check: bool, **_: Any) -> None:
        from agentops.agents.spec import SpecError, apply_spec, load_spec, spec_warnings, validate_spec

        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        try:
            data = load_spec(text)
            for warning in spec_warnings(data):
                self.stderr.write(f"{file}: warning: {warning}")
            if check:
                errors = validate_spec(data)
                if errors:
                    raise SpecError(errors)
                self.stdout.write(f"{file}: valid ({len(data['agents'])} agents)")
                return
            result = apply_spec(data, actor=_actor())
        except SpecError as exc:
            for error in exc.errors:
                self.stderr.write(f"{file}: {error}")
            raise CommandError(f"{len(exc.errors)} error(s); nothing was changed") from None
        for label, slugs in (("created", result.created), ("updated", result.updated), ("unchanged", result.unchanged)):
            for slug in slugs:
                self.stdout.write(f"{label}: {slug}")

    def cmd_export(self, *, output: str | None, agent: list[str] | None, **_: Any) -> None:
        from agentops.agents.models import Agent
        from agentops.agents.spec import dump_spec, export_spec

        agents = Agent.objects.order_by("slug")
        if agent:
            agents = agents.filter(slug__in=agent)
        text = dump_spec(export_spec(agents))
        if output:
            Path(output).write_text(text)
            self.stdout.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")

    def cmd_run(self, *, agent: str, input: str, wait: bool, planner: str | None, **_: Any) -> None:
        from agentops.agents.models import Agent
        from agentops.runs.controller import execute_run
        from agentops.runs.services import RunRefused, run_create

        try:
            target = Agent.objects.get(slug=agent)
        except Agent.DoesNotExist:
            raise CommandError(f"no agent with slug {agent!r}") from None
        try:
            run = run_create(agent=target, input=input, actor=_actor(), planner_kind=planner, enqueue=not wait)
        except RunRefused as exc:
            raise CommandError(f"run refused: {exc}") from None
        self.stdout.write(f"run {run.pk} created")
        if not wait:
            return
        execute_run(run.pk)
        # A run that waits for a person is handed to the workers after the decision; follow it.
        while True:
            run.refresh_from_db()
            if run.status in FINAL_STATUSES:
                break
            time.sleep(0.5)
        self.stdout.write(f"run {run.pk}: {run.status} ({run.status_reason})")
        if run.status != "succeeded":
            sys.exit(1)

    def cmd_trace(self, *, run: int, format: str, **_: Any) -> None:
        from agentops.runs.models import Run, Step
        from agentops.runs.serializers import step_to_dict

        if not Run.objects.filter(pk=run).exists():
            raise CommandError(f"no run {run}")
        for step in Step.objects.filter(run_id=run).order_by("seq").iterator(chunk_size=500):
            shown = step_to_dict(step, full_text=True)
            payload = shown["payload"]
            # The export's own key names (older than the API's), kept for scripts that read them.
            row = {
                "seq": shown["seq"],
                "kind": shown["kind"],
                "at": shown["created_at"],
                "model": shown["model_id"] or None,
                "input_tokens": shown["input_tokens"],
                "output_tokens": shown["output_tokens"],
                "cost_usd": shown["cost_usd"],
                "latency_ms": shown["latency_ms"],
                "payload": payload,
            }
            if format == "jsonl":
                self.stdout.write(json.dumps(row, default=str))
            else:
                summary = payload.get("text") or payload.get("tool") or payload.get("reason") or payload.get("status") or ""
                self.stdout.write(f"{step.seq:>5} {step.kind:<18} {str(summary)[:120]}")

    def cmd_kill(self, *, reason: str, **_: Any) -> None:
        from agentops.guardrails.killswitch import ReasonRequired, kill_switch_engage

        try:
            kill_switch_engage(actor=_actor(), reason=reason)
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("kill switch engaged")

    def cmd_release(self, *, reason: str, **_: Any) -> None:
        from agentops.guardrails.killswitch import ReasonRequired, kill_switch_release

        try:
            kill_switch_release(actor=_actor(), reason=reason)
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("kill switch released")

    def cmd_reap(self, **_: Any) -> None:
        from agentops.runs.tasks import reap

        self.stdout.write(json.dumps(reap()))

    def _decide(self, approval_id: int, approve: bool, comment: str) -> None:
        from agentops.approvals.models import Approval
        from agentops.approvals.services import ApprovalError, approval_decide

        try:
            approval = Approval.objects.get(pk=approval_id)
            approval_decide(approval=approval, actor=_actor(), approve=approve, comment=comment)
        except Approval.DoesNotExist:
            raise CommandError(f"no approval {approval_id}") from None
        except ApprovalError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"approval {approval_id}: {'approved' if approve else 'rejected'}")

    def cmd_approve(self, *, approval: int, comment: str, **_: Any) -> None:
        self._decide(approval, True, comment)

    def cmd_reject(self, *, approval: int, comment: str, **_: Any) -> None:
        self._decide(approval, False, comment)

    def cmd_execute(self, *, run: int, **_: Any) -> None:
        from agentops.runs.controller import execute_run

        self.stdout.write(execute_run(run))

    def cmd_drill(self, *, runs: int, wait: bool = False, **_: Any) -> None:
        from agentops.guardrails.drills import DrillRefused, drill_run, drill_start

        try:
            if not wait:
                queued = drill_start(actor=_actor(), synthetic_runs=runs)
                self.stdout.write(f"drill {queued.pk}: queued for a worker; see the Drills page or run with --wait")
                return
            drill = drill_run(actor=_actor(), synthetic_runs=runs)
        except DrillRefused as exc:
            raise CommandError(f"drill refused: {exc}") from None
        self.stdout.write(f"drill {drill.pk}: {drill.status}; time to halt {drill.time_to_halt_ms} ms; actions after engage {drill.actions_after_engage}")
        if drill.status != "passed":
            sys.exit(1)
