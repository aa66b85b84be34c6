"""`manage.py agentops <command>`: the operator's command line.

apply FILE / export: agents as code.  run AGENT --input … [--wait]: start a run.  trace RUN: a run's
steps as JSON lines.  kill --reason / release --reason: the kill switch.  reap: one reaper pass.
approvals list|show|decide: the decisions waiting for a person (approve / reject APPROVAL: the
short forms).  drill [--wait]: rehearse the kill switch.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentops.agents.models import Agent
from agentops.agents.services import SecondAdminRequired
from agentops.agents.spec import SpecError, apply_spec, dump_spec, export_spec, load_spec, spec_warnings, validate_spec
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind, SlackIdentity
from agentops.approvals.serializers import approval_to_dict, on_expiry_text
from agentops.approvals.services import ApprovalError, approval_decide, can_decide
from agentops.approvals.slack import SlackLinkError, slack_identity_link, slack_identity_unlink
from agentops.guardrails.drills import DrillRefused, drill_run, drill_start
from agentops.guardrails.killswitch import ReasonRequired, kill_switch_engage, kill_switch_release
from agentops.mcp.models import McpServer
from agentops.mcp.services import DiscoveryFailed, mcp_discover, mcp_grant, mcp_tool_rows
from agentops.runs.controller import execute_run
from agentops.runs.models import FINAL_STATUSES, Run, Step
from agentops.runs.serializers import step_to_dict
from agentops.runs.services import RunRefused, run_create
from agentops.runs.tasks import reap


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
            p = sub.add_parser(name, help=f"{name} a pending decision (short for: approvals decide ID {name})")
            p.add_argument("approval", type=int)
            p.add_argument("--comment", default="")
            p.add_argument("--edit", default=None, help="approve: the arguments to run instead of the model's (a JSON object)")
            p.add_argument("--answer", default=None, help="a question's answer, a budget extension's amount, continue/stop")
        self._add_approvals_arguments(sub)
        p = sub.add_parser("execute", help="run one queued run in this process (used by tests and debugging)")
        p.add_argument("run", type=int)
        p = sub.add_parser("drill", help="rehearse the kill switch on synthetic runs and record the result")
        p.add_argument("--runs", type=int, default=5)
        p.add_argument("--wait", action="store_true", help="run it here and wait for the result (default: a worker runs it)")
        self._add_mcp_arguments(sub)
        self._add_slack_arguments(sub)

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, "cmd_" + options["command"])(**options)

    def cmd_apply(self, *, file: str, check: bool, **_: Any) -> None:
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
        # Not applied: an admin signed in to the web approves it (the host account is not a second admin).
        for pending in result.pending:
            self.stdout.write(f"pending: {pending}")

    def cmd_export(self, *, output: str | None, agent: list[str] | None, **_: Any) -> None:
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
        try:
            kill_switch_engage(actor=_actor(), reason=reason)
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("kill switch engaged")

    def cmd_release(self, *, reason: str, **_: Any) -> None:
        try:
            kill_switch_release(actor=_actor(), reason=reason)
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("kill switch released")

    def cmd_reap(self, **_: Any) -> None:
        self.stdout.write(json.dumps(reap()))

    def _decide(self, approval_id: int, approve: bool, comment: str, edit: str | None = None, answer: str | None = None) -> None:
        edited: Any = None
        if edit is not None:
            try:
                edited = json.loads(edit)
            except json.JSONDecodeError as exc:
                raise CommandError(f"--edit is not valid JSON: {exc}") from None
            if not isinstance(edited, dict):
                raise CommandError("--edit must be a JSON object (the tool's arguments)")
        try:
            approval = Approval.objects.select_related("run", "agent").get(pk=approval_id)
            decided = approval_decide(approval=approval, actor=_actor(), approve=approve, comment=comment, edited_arguments=edited, answer=answer)
        except Approval.DoesNotExist:
            raise CommandError(f"no decision {approval_id}") from None
        except ApprovalError as exc:
            raise CommandError(str(exc)) from None
        noun = "approval" if decided.kind == DecisionKind.APPROVAL else decided.kind.replace("_", " ")
        detail = " (edited)" if decided.edited_arguments is not None else (f": {decided.answer}" if decided.answer else "")
        self.stdout.write(f"{noun} {approval_id}: {decided.status}{detail}")

    def cmd_approve(self, *, approval: int, comment: str, edit: str | None = None, answer: str | None = None, **_: Any) -> None:
        self._decide(approval, True, comment, edit, answer)

    def cmd_reject(self, *, approval: int, comment: str, answer: str | None = None, **_: Any) -> None:
        self._decide(approval, False, comment, None, answer)

    # --- approvals: the decisions of every kind --------------------------------------------------

    def _add_approvals_arguments(self, sub: Any) -> None:
        p = sub.add_parser("approvals", help="decisions waiting for a person: list, show, decide")
        approvals = p.add_subparsers(dest="approvals_command", required=True)
        q = approvals.add_parser("list", help="decisions (pending by default, soonest expiry first)")
        q.add_argument("--status", choices=list(ApprovalStatus.values), default=ApprovalStatus.PENDING)
        q.add_argument("--kind", choices=list(DecisionKind.values))
        q.add_argument("--json", action="store_true", help="one JSON object a line (the API's shape)")
        q = approvals.add_parser("show", help="one decision in full, as JSON (the API's shape)")
        q.add_argument("approval", type=int)
        q = approvals.add_parser("decide", help="decide one: approve or reject, with --edit or --answer")
        q.add_argument("approval", type=int)
        q.add_argument("decision", choices=["approve", "reject"])
        q.add_argument("--comment", default="", help="why (required to reject an approval, a question or a configuration change)")
        q.add_argument("--edit", default=None, help="approve an approval with these arguments instead of the model's (a JSON object)")
        q.add_argument("--answer", default=None, help="a question's answer, a budget extension's amount, continue/stop")

    def cmd_approvals(self, *, approvals_command: str, **options: Any) -> None:
        if approvals_command == "decide":
            self._decide(options["approval"], options["decision"] == "approve", options["comment"], options["edit"], options["answer"])
            return
        if approvals_command == "show":
            found = Approval.objects.select_related("run", "agent").filter(pk=options["approval"]).first()
            if found is None:
                raise CommandError(f"no decision {options['approval']}")
            self.stdout.write(json.dumps(approval_to_dict(found), indent=2, default=str))
            return
        status = options["status"]
        items = Approval.objects.filter(status=status).select_related("run", "agent")
        if options.get("kind"):
            items = items.filter(kind=options["kind"])
        items = items.order_by("expires_at" if status == ApprovalStatus.PENDING else "-decided_at")[:200]
        for item in items:
            shown = approval_to_dict(item)
            if options.get("json"):
                self.stdout.write(json.dumps(shown, default=str))
                continue
            where = f"run {item.run_id}" if item.run_id else f"agent {shown['agent']}"
            self.stdout.write(f"#{item.pk} {item.kind} {item.status} ({where}, expires {shown['expires_at']}): {shown['asked']}")
            self.stdout.write(f"    why: {item.why_needed or '-'}; who may decide: {shown['who_may_decide']}; if nobody decides: {on_expiry_text(item)}")

    def cmd_execute(self, *, run: int, **_: Any) -> None:
        self.stdout.write(execute_run(run))

    def cmd_drill(self, *, runs: int, wait: bool = False, **_: Any) -> None:
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

    # --- mcp: an agent's MCP servers, their discovered tools, and grants pinned to them -----------

    def _add_mcp_arguments(self, sub: Any) -> None:
        p = sub.add_parser("mcp", help="an agent's MCP servers: list, discover tools, grant a tool")
        mcp = p.add_subparsers(dest="mcp_command", required=True)
        q = mcp.add_parser("list", help="the agent's MCP servers and their tools, with grant status")
        q.add_argument("agent", help="agent slug")
        q = mcp.add_parser("discover", help="start a server, list its tools and store what it lists")
        q.add_argument("agent", help="agent slug")
        q.add_argument("server", help="server name")
        q = mcp.add_parser("grant", help="grant (or grant again) a discovered MCP tool, pinned to what discovery saw")
        q.add_argument("agent", help="agent slug")
        q.add_argument("tool", help="mcp__<server>__<tool>")
        q.add_argument(
            "--scope", default="{}", help='argument constraints as JSON: {"arguments": {"<arg>": {"values": [...], "prefixes": [...], "pattern": "..."}}}'
        )
        q.add_argument("--risk", choices=["read", "write", "irreversible"], default="", help="risk class instead of the one the tool's annotations imply")
        q.add_argument("--approval", choices=["default", "always", "never"], default="default")

    def cmd_mcp(self, *, mcp_command: str, agent: str, **options: Any) -> None:
        try:
            target = Agent.objects.get(slug=agent)
        except Agent.DoesNotExist:
            raise CommandError(f"no agent with slug {agent!r}") from None
        getattr(self, "_mcp_" + mcp_command)(target, **options)

    def _mcp_list(self, agent: Any, **_: Any) -> None:
        rows = mcp_tool_rows(agent)
        if not rows:
            self.stdout.write(f"{agent.slug}: no MCP servers")
            return
        for server in agent.mcp_servers.order_by("name"):
            where = server.url if server.transport == "http" else " ".join(server.command)
            discovered = server.discovered_at.isoformat(timespec="seconds") if server.discovered_at else "never discovered"
            state = "" if server.enabled else " (disabled)"
            self.stdout.write(f"{server.name}{state}: {server.transport}, {server.location}: {where} [{discovered}]")
            if server.discovery_error:
                self.stdout.write(f"  last discovery failed: {server.discovery_error}")
            for row in rows.get(server.pk, []):
                self.stdout.write(f"  {row.qualified_name:<50} {row.risk:<12} {row.status}")

    def _mcp_discover(self, agent: Any, *, server: str, **_: Any) -> None:
        found = McpServer.objects.filter(agent=agent, name=server).first()
        if found is None:
            raise CommandError(f"{agent.slug} has no MCP server {server!r}")
        try:
            snapshots = mcp_discover(server=found, actor=_actor())
        except DiscoveryFailed as exc:
            raise CommandError(f"discovery of {server} failed: {exc}") from None
        self.stdout.write(f"{server}: {len(snapshots)} tools")
        for snapshot in snapshots:
            changed = " (changed)" if snapshot.changed_at and snapshot.changed_at == snapshot.last_seen_at else ""
            self.stdout.write(f"  {snapshot.qualified_name:<50} {snapshot.risk_class:<12} {snapshot.digest[:12]}{changed}")

    def _mcp_grant(self, agent: Any, *, tool: str, scope: str, risk: str, approval: str, **_: Any) -> None:
        try:
            parsed = json.loads(scope)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--scope is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise CommandError("--scope must be a JSON object")
        try:
            grant = mcp_grant(agent=agent, tool=tool, scope=parsed, approval=approval, risk_override=risk, actor=_actor())
        except SecondAdminRequired as exc:
            self.stdout.write(f"{tool}: {exc.messages[0]}")
            return
        except ValidationError as exc:
            for error in exc.messages:
                self.stderr.write(f"{tool}: {error}")
            raise CommandError(f"{len(exc.messages)} error(s); nothing was changed") from None
        self.stdout.write(f"granted {grant.tool} to {agent.slug}, pinned at {grant.pinned_digest[:12]}")

    # --- slack: which Slack user decides as which agentops user -------------------------------------

    def _add_slack_arguments(self, sub: Any) -> None:
        p = sub.add_parser("slack", help="link Slack users to agentops users (for deciding approvals in Slack)")
        slack = p.add_subparsers(dest="slack_command", required=True)
        q = slack.add_parser("link", help="clicks by this Slack user decide as this agentops user, with its permissions")
        q.add_argument("username", help="agentops username")
        q.add_argument("team_id", help="Slack workspace id, T…")
        q.add_argument("slack_user_id", help="Slack member id, U… or W…")
        q = slack.add_parser("unlink", help="this agentops user can no longer decide from Slack")
        q.add_argument("username", help="agentops username")
        slack.add_parser("list", help="the linked Slack users")

    def cmd_slack(self, *, slack_command: str, **options: Any) -> None:
        if slack_command == "list":
            for identity in SlackIdentity.objects.select_related("user").order_by("user__username"):
                self.stdout.write(f"{identity.user.get_username()}: {identity.team_id}/{identity.slack_user_id} (linked by {identity.linked_by_label or '?'})")
            return
        username = options["username"]
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if slack_command == "unlink":
            done = slack_identity_unlink(user=user, actor=_actor())
            self.stdout.write(f"{username}: unlinked" if done else f"{username}: was not linked")
            return
        try:
            identity = slack_identity_link(user=user, team_id=options["team_id"], slack_user_id=options["slack_user_id"], actor=_actor())
        except SlackLinkError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{username}: linked to {identity.team_id}/{identity.slack_user_id}")
        if not can_decide(user):
            self.stderr.write(f"note: {username} may not decide approvals (not active, or no approver role): clicks will be refused")
