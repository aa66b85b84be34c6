"""One decision model: every kind asked and decided through one write path, with its own checks, one
rule for who may decide (routing and separation of duties), expiry per kind and the two-admin rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agentops.agents import services as agent_services
from agentops.agents.models import Agent, Policy, ToolGrant
from agentops.agents.spec import SpecError, apply_spec, export_spec
from agentops.approvals.models import Approval, DecisionKind
from agentops.approvals.serializers import approval_to_dict
from agentops.approvals.services import (
    AlreadyDecided,
    CommentRequired,
    InvalidDecision,
    NotAllowed,
    approval_decide,
    approvals_expire,
    may_decide,
)
from agentops.audit.models import AuditEvent
from agentops.guardrails.killswitch import kill_switch_engage
from agentops.llm.prices import DEFAULT_MODEL
from agentops.runs.models import Run, StepKind
from tests.approvals.decision_support import REQUESTS, ask, mailer, person, waiting_run  # noqa: F401

pytestmark = pytest.mark.django_db


def decided_steps(run: Run) -> list[dict[str, Any]]:
    return list(run.steps.filter(kind=StepKind.APPROVAL_DECISION).order_by("seq").values_list("payload", flat=True))


# --- edit on approve ---------------------------------------------------------------------------------


def test_an_approver_approves_an_edited_call_and_both_versions_are_kept(mailer: Agent) -> None:
    run = waiting_run(mailer)
    approval = ask(run)
    edited = {"to": ["oncall@example.com"], "subject": "Restarted", "body": "Checkout was restarted at 03:12."}
    approval_decide(approval=approval, actor=person("ada"), approve=True, edited_arguments=edited)
    approval.refresh_from_db()
    assert (approval.status, approval.edited_arguments, approval.arguments["to"]) == ("approved", edited, ["ops@example.com"])
    event = AuditEvent.objects.get(action="approval.approved")
    assert event.after["arguments"]["to"] == ["ops@example.com"] and event.after["edited_arguments"] == edited
    [step] = decided_steps(run)
    assert step["edited_arguments"] == edited and step["kind"] == "approval"
    assert Run.objects.get(pk=run.pk).status == "queued"


@pytest.mark.parametrize(
    ("edited", "why"),
    [
        ({"to": ["ceo@elsewhere.org"], "subject": "x", "body": "y"}, "elsewhere.org"),  # outside the grant's scope
        ({"to": ["ops@example.com"], "subject": "x"}, "'body' is a required property"),  # against the tool's schema
        ({"to": "ops@example.com", "subject": "x", "body": "y"}, "is not of type 'array'"),
    ],
)
def test_it_refuses_an_edit_the_model_could_not_have_made_and_nothing_changes(mailer: Agent, edited: dict[str, Any], why: str) -> None:
    run = waiting_run(mailer)
    approval = ask(run)
    with pytest.raises(InvalidDecision, match="refused") as caught:
        approval_decide(approval=approval, actor=person("ada"), approve=True, edited_arguments=edited)
    assert why in str(caught.value)
    approval.refresh_from_db()
    assert approval.status == "pending" and approval.edited_arguments is None and not decided_steps(run)


def test_an_edit_that_changes_nothing_is_recorded_as_no_edit(mailer: Agent) -> None:
    approval = ask(waiting_run(mailer))
    approval_decide(approval=approval, actor=person("ada"), approve=True, edited_arguments=dict(approval.arguments))
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.edited_arguments is None


def test_only_an_approval_has_arguments_to_edit(mailer: Agent) -> None:
    approval = ask(waiting_run(mailer), DecisionKind.QUESTION)
    with pytest.raises(InvalidDecision, match="arguments to edit"):
        approval_decide(approval=approval, actor=person("ada"), approve=True, answer="staging", edited_arguments={"x": 1})


# --- questions, budget extensions, loops -------------------------------------------------------------


def test_a_question_is_answered_with_one_of_its_options(mailer: Agent) -> None:
    run = waiting_run(mailer)
    approval = ask(run, DecisionKind.QUESTION)
    ada = person("ada")
    for bad, why in (("", "an answer is required"), ("  ", "an answer is required"), ("the moon", "one of: staging, production")):
        with pytest.raises(InvalidDecision, match=why):
            approval_decide(approval=approval, actor=ada, approve=True, answer=bad)
    approval_decide(approval=approval, actor=ada, approve=True, answer="staging")
    approval.refresh_from_db()
    assert (approval.status, approval.answer) == ("approved", "staging")
    assert decided_steps(run)[0]["answer"] == "staging"


def test_a_question_without_options_takes_free_text_and_declining_needs_a_reason(mailer: Agent) -> None:
    run = waiting_run(mailer)
    free = ask(run, DecisionKind.QUESTION, request={"question": "What is the staging URL?", "options": []})
    approval_decide(approval=free, actor=person("ada"), approve=True, answer="https://staging.example.com")
    assert Approval.objects.get(pk=free.pk).answer == "https://staging.example.com"
    other = ask(run, DecisionKind.QUESTION, n=2)
    with pytest.raises(CommentRequired):
        approval_decide(approval=other, actor=person("bob"), approve=False)


def test_a_budget_extension_grants_the_proposed_amount_unless_the_person_says_another(mailer: Agent) -> None:
    run = waiting_run(mailer)
    first, second = ask(run, DecisionKind.BUDGET_EXTENSION), ask(run, DecisionKind.BUDGET_EXTENSION, n=2)
    ada = person("ada")
    approval_decide(approval=first, actor=ada, approve=True)
    approval_decide(approval=second, actor=ada, approve=True, answer="0.50")
    assert [Approval.objects.get(pk=a.pk).answer for a in (first, second)] == ["1", "0.5"]


@pytest.mark.parametrize(
    ("request_fields", "amount", "why"),
    [
        ({}, "0", "greater than 0"),
        ({}, "-1", "greater than 0"),
        ({}, "lots", "greater than 0"),
        ({}, "NaN", "greater than 0"),
        ({}, "20.01", "at most 10x the cap"),
        ({"cap": "tokens", "limit": "1000", "used": "1001", "extend_by": "500"}, "10.5", "whole number"),
    ],
)
def test_a_budget_extension_must_be_a_sensible_amount(mailer: Agent, request_fields: dict[str, Any], amount: str, why: str) -> None:
    approval = ask(waiting_run(mailer), DecisionKind.BUDGET_EXTENSION, request=REQUESTS[DecisionKind.BUDGET_EXTENSION] | request_fields)
    with pytest.raises(InvalidDecision, match=why):
        approval_decide(approval=approval, actor=person("ada"), approve=True, answer=amount)
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_stopping_at_a_budget_or_a_loop_needs_no_reason(mailer: Agent) -> None:
    run = waiting_run(mailer)
    budget, loop = ask(run, DecisionKind.BUDGET_EXTENSION), ask(run, DecisionKind.LOOP_ESCALATION)
    ada = person("ada")
    approval_decide(approval=budget, actor=ada, approve=False)
    approval_decide(approval=loop, actor=ada, approve=False)
    assert [(a.status, a.answer) for a in Approval.objects.filter(pk__in=[budget.pk, loop.pk]).order_by("pk")] == [("rejected", ""), ("rejected", "stop")]


def test_a_loop_escalation_is_continue_or_stop_and_the_answer_must_match_the_decision(mailer: Agent) -> None:
    run = waiting_run(mailer)
    loop = ask(run, DecisionKind.LOOP_ESCALATION)
    ada = person("ada")
    with pytest.raises(InvalidDecision, match="continue or stop"):
        approval_decide(approval=loop, actor=ada, approve=True, answer="maybe")
    with pytest.raises(InvalidDecision, match="contradicts"):
        approval_decide(approval=loop, actor=ada, approve=True, answer="stop")
    approval_decide(approval=loop, actor=ada, approve=True, answer="continue")
    assert Approval.objects.get(pk=loop.pk).answer == "continue"


# --- who may decide ----------------------------------------------------------------------------------


def test_a_tool_calls_decision_goes_to_the_group_its_grant_names(mailer: Agent) -> None:
    person("it-lead", groups=("it-ops",))  # creates the group
    ToolGrant.objects.filter(agent=mailer, tool="send_email").update(approver_group="it-ops", on_timeout="continue")
    approval = ask(waiting_run(mailer))
    assert (approval.approver_group, approval.on_expiry) == ("it-ops", "continue")
    outsider = person("ada")
    assert may_decide(outsider, approval) == (False, "only members of 'it-ops' may decide this")
    with pytest.raises(NotAllowed, match="only members of 'it-ops'"):
        approval_decide(approval=approval, actor=outsider, approve=True)
    approval_decide(approval=approval, actor=person("ivan", groups=("it-ops",)), approve=True)
    assert Approval.objects.get(pk=approval.pk).decided_by_label == "ivan"


def test_being_in_the_group_is_not_enough_without_the_approver_role(mailer: Agent) -> None:
    approval = ask(waiting_run(mailer), approver_group="it-ops")
    assert may_decide(person("vic", "viewer", groups=("it-ops",)), approval) == (False, "you are not allowed to decide approvals")


def test_the_person_who_started_a_run_may_not_decide_its_decisions(mailer: Agent) -> None:
    starter = person("sam")
    run = waiting_run(mailer, actor=starter)
    for kind in (DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION):
        approval = ask(run, kind, n=len(kind))
        allowed, why = may_decide(starter, approval)
        assert not allowed and why == "you started this run; someone else must decide its decisions"
    loop = Approval.objects.get(run=run, kind="loop_escalation")
    with pytest.raises(NotAllowed, match="you started this run"):
        approval_decide(approval=loop, actor=starter, approve=True, answer="continue")
    assert may_decide(person("ada"), loop)[0]


def test_the_policy_may_allow_self_approval(mailer: Agent) -> None:
    starter = person("sam")
    Policy.objects.filter(agent=mailer).update(self_approval_allowed=True)
    approval = ask(waiting_run(mailer, actor=starter))
    approval_decide(approval=approval, actor=starter, approve=True)
    assert Approval.objects.get(pk=approval.pk).status == "approved"


def test_who_changed_the_agents_grants_recently_may_not_decide_its_runs(mailer: Agent) -> None:
    admin = person("alice", "admin")
    agent_services.grant_save(agent=mailer, actor=admin, tool="write_file", scope={"paths": ["src/*"]}, approval="default")
    approval = ask(waiting_run(mailer))
    allowed, why = may_decide(admin, approval)
    assert not allowed and why.startswith("you changed this agent's grants or policy just now (grant.create)") and "24 h" in why
    # Two hours later it is still within the policy's cooldown, and says how long ago.
    AuditEvent.objects.filter(action="grant.create").update(at=timezone.now() - timedelta(hours=2))
    assert "2 h ago" in may_decide(admin, approval)[1]
    AuditEvent.objects.filter(action="grant.create").update(at=timezone.now() - timedelta(hours=25))
    assert may_decide(admin, approval) == (True, "")
    Policy.objects.filter(agent=mailer).update(grant_change_cooldown_h=48)
    assert not may_decide(admin, approval)[0]


def test_the_host_operator_decides_run_decisions_but_never_a_configuration_change(mailer: Agent) -> None:
    approval = ask(waiting_run(mailer))
    assert may_decide("cli:root", approval) == (True, "")
    change = agent_services.agent_update(agent=mailer, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="ready").pending_change
    assert change is not None
    allowed, why = may_decide("cli:root", change)
    assert not allowed and "signed in" in why
    assert may_decide("mallory-the-string", approval) == (False, "you are not allowed to decide approvals")


# --- two admins --------------------------------------------------------------------------------------


def test_raising_an_agent_to_phase_4_waits_for_a_second_admin_and_the_rest_applies(mailer: Agent) -> None:
    alice, dora = person("alice", "admin"), person("dora", "admin")
    updated = agent_services.agent_update(agent=mailer, actor=alice, changes={"trust_phase": 4, "name": "Mailer"}, reason="40 clean runs")
    change = updated.pending_change
    assert change is not None and change.kind == "config_change" and change.run_id is None and change.agent_id == mailer.pk
    assert change.request["change"] == {"trust_phase": 4} and change.requested_by == alice and change.reason == "40 clean runs"
    mailer.refresh_from_db()
    assert (mailer.name, mailer.trust_phase) == ("Mailer", 3)
    assert may_decide(alice, change) == (False, "you asked for this change; a second admin must decide it")
    assert may_decide(person("bob"), change) == (False, "only an admin may approve a configuration change")
    approval_decide(approval=change, actor=dora, approve=True)
    mailer.refresh_from_db()
    assert mailer.trust_phase == 4
    event = AuditEvent.objects.get(action="config_change.approved")
    assert (event.after["requested_by"], event.after["second_admin"], event.actor) == ("alice", "dora", dora)
    update = AuditEvent.objects.filter(action="agent.update", actor=dora).get()
    assert (update.before["trust_phase"], update.after["trust_phase"]) == (3, 4) and f"decision #{change.pk}" in update.detail


def test_granting_an_irreversible_tool_waits_for_a_second_admin_and_asking_again_asks_once(make_agent: Any) -> None:
    agent = make_agent(trust_phase=3)
    alice = person("alice", "admin")
    for _ in range(2):
        with pytest.raises(agent_services.SecondAdminRequired, match="grant send_email \\(irreversible\\) needs a second admin") as caught:
            agent_services.grant_save(agent=agent, actor=alice, tool="send_email", scope={"recipient_domains": ["example.com"]}, approval="default")
    assert not ToolGrant.objects.filter(agent=agent, tool="send_email").exists()
    [change] = Approval.objects.filter(kind="config_change")
    assert caught.value.decision == change and f"decision #{change.pk}" in caught.value.messages[0]
    approval_decide(approval=change, actor=person("dora", "admin"), approve=True)
    assert ToolGrant.objects.get(agent=agent, tool="send_email").scope == {"recipient_domains": ["example.com"]}


def test_a_rejected_change_applies_nothing_and_says_why(make_agent: Any) -> None:
    agent = make_agent(trust_phase=3)
    change = agent_services.agent_update(agent=agent, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="r").pending_change
    assert change is not None
    with pytest.raises(CommentRequired):
        approval_decide(approval=change, actor=person("dora", "admin"), approve=False)
    approval_decide(approval=change, actor=person("eve", "admin"), approve=False, comment="not yet")
    assert Agent.objects.get(pk=agent.pk).trust_phase == 3
    assert Approval.objects.get(pk=change.pk).comment == "not yet" and AuditEvent.objects.filter(action="config_change.rejected").exists()


def test_a_change_that_no_longer_applies_is_refused_and_stays_pending(make_agent: Any) -> None:
    agent = make_agent(trust_phase=3)
    with pytest.raises(agent_services.SecondAdminRequired) as caught:
        agent_services.grant_save(
            agent=agent, actor=person("alice", "admin"), tool="send_email", scope={"recipient_domains": ["example.com"]}, approval="default"
        )
    change = caught.value.decision
    Approval.objects.filter(pk=change.pk).update(request=change.request | {"change": {"tools": [{"tool": "no_such_tool", "scope": {}}]}})
    with pytest.raises(InvalidDecision, match="no longer applies"):
        approval_decide(approval=Approval.objects.get(pk=change.pk), actor=person("dora", "admin"), approve=True)
    assert Approval.objects.get(pk=change.pk).status == "pending" and not AuditEvent.objects.filter(action="config_change.approved").exists()


def test_a_spec_applied_over_an_agent_holds_phase_4_and_irreversible_grants_and_applies_the_rest(make_agent: Any) -> None:
    agent = make_agent(trust_phase=2, slug="mailer", name="Mailer")
    spec = export_spec([agent])
    spec["agents"][0] |= {"trust_phase": 4, "objective": "Now with email."}
    spec["agents"][0]["tools"] = [{"tool": "send_email", "scope": {"recipient_domains": ["example.com"]}}]
    result = apply_spec(spec, actor="cli:root")
    assert result.updated == ["mailer"] and len(result.pending) == 1 and "needs a second admin" in result.pending[0]
    agent.refresh_from_db()
    assert (agent.objective, agent.trust_phase, agent.grants.count()) == ("Now with email.", 2, 0)
    change = Approval.objects.get(kind="config_change")
    assert change.request["change"]["trust_phase"] == 4 and [g["tool"] for g in change.request["change"]["tools"]] == ["send_email"]
    assert change.requested_by is None and change.requested_by_label == "cli:root"
    # The host account's owner, signed in, is the same person: not a second admin.
    assert not may_decide(person("root", "admin"), change)[0]
    approval_decide(approval=change, actor=person("dora", "admin"), approve=True)
    agent.refresh_from_db()
    assert agent.trust_phase == 4 and list(agent.grants.values_list("tool", flat=True)) == ["send_email"]


def test_a_new_agent_from_a_spec_keeps_its_tools_but_starts_below_phase_4(db: Any) -> None:
    spec = {
        "version": 1,
        "agents": [
            {
                "name": "New",
                "slug": "new",
                "objective": "x",
                "model": DEFAULT_MODEL,
                "trust_phase": 4,
                "tools": [{"tool": "send_email", "scope": {"recipient_domains": ["example.com"]}}],
            }
        ],
    }
    result = apply_spec(spec, actor="test")
    agent = Agent.objects.get(slug="new")
    assert result.created == ["new"] and agent.trust_phase == 3 and agent.grants.filter(tool="send_email").exists()
    assert Approval.objects.get(kind="config_change").request["change"] == {"trust_phase": 4}


def test_weakening_separation_of_duties_waits_for_a_second_admin(mailer: Agent) -> None:
    alice = person("alice", "admin")
    policy = agent_services.policy_update(agent=mailer, actor=alice, changes={"self_approval_allowed": True, "grant_change_cooldown_h": 0, "max_tool_calls": 7})
    policy.refresh_from_db()
    assert (policy.max_tool_calls, policy.self_approval_allowed, policy.grant_change_cooldown_h) == (7, False, 24)
    change = Approval.objects.get(kind="config_change")
    assert change.request["change"] == {"policy": {"self_approval_allowed": True, "grant_change_cooldown_h": 0}}
    approval_decide(approval=change, actor=person("dora", "admin"), approve=True)
    policy.refresh_from_db()
    assert (policy.self_approval_allowed, policy.grant_change_cooldown_h, policy.max_tool_calls) == (True, 0, 7)


def test_the_spec_carries_the_new_policy_and_grant_fields_and_refuses_bad_ones(mailer: Agent) -> None:
    person("lead", groups=("it-ops",))
    spec = export_spec([mailer])
    agent = spec["agents"][0]
    agent["policy"] |= {"extendable_caps": ["cost", "iterations"], "max_extensions_per_run": 2, "loop_escalation": "nudge_ask"}
    agent["tools"][0] |= {"approver_group": "it-ops", "on_timeout": "continue"}
    apply_spec(spec, actor="test")
    exported = export_spec([mailer])["agents"][0]
    assert exported["policy"]["extendable_caps"] == ["cost", "iterations"] and exported["policy"]["loop_escalation"] == "nudge_ask"
    assert (exported["tools"][0]["approver_group"], exported["tools"][0]["on_timeout"]) == ("it-ops", "continue")
    bad = export_spec([mailer])
    bad["agents"][0]["policy"] |= {"extendable_caps": ["daily_cost"], "loop_escalation": "panic"}
    bad["agents"][0]["tools"][0]["approver_group"] = "nobody-here"
    with pytest.raises(SpecError) as caught:
        apply_spec(bad, actor="test")
    text = "\n".join(caught.value.errors)
    assert "extendable_caps[0]" in text and "loop_escalation" in text
    bad["agents"][0]["policy"] = exported["policy"]
    with pytest.raises(SpecError, match="there is no group named 'nobody-here'"):
        apply_spec(bad, actor="test")


# --- expiry and the kill switch ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION])
@pytest.mark.parametrize("on_expiry", ["halt", "continue"])
def test_every_kind_expires_and_the_run_resumes_to_act_on_its_on_expiry(mailer: Agent, kind: str, on_expiry: str) -> None:
    run = waiting_run(mailer)
    approval = ask(run, kind, on_expiry=on_expiry)
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1 and approvals_expire() == 0
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_label) == ("expired", "system")
    [step] = decided_steps(run)
    assert (step["status"], step["kind"], step["on_expiry"]) == ("expired", kind, on_expiry)
    assert Run.objects.get(pk=run.pk).status == "queued"
    assert AuditEvent.objects.get(action=f"{kind}.expired").after["kind"] == kind
    with pytest.raises(AlreadyDecided, match="expired"):
        approval_decide(approval=approval, actor=person("ada"), approve=True, answer="continue" if kind == "loop_escalation" else None)


def test_an_expired_configuration_change_applies_nothing(make_agent: Any) -> None:
    agent = make_agent(trust_phase=3)
    change = agent_services.agent_update(agent=agent, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="r").pending_change
    assert change is not None and change.expires_at > timezone.now() + timedelta(days=6)
    Approval.objects.filter(pk=change.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire() == 1
    assert Agent.objects.get(pk=agent.pk).trust_phase == 3 and Approval.objects.get(pk=change.pk).status == "expired"


def test_the_kill_switch_rejects_pending_decisions_of_every_kind_with_a_run(mailer: Agent) -> None:
    run = waiting_run(mailer)
    asked = [
        ask(run, kind, n=i)
        for i, kind in enumerate([DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION])
    ]
    change = agent_services.agent_update(agent=mailer, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="r").pending_change
    kill_switch_engage(actor="cli:root", reason="runaway")
    assert {Approval.objects.get(pk=a.pk).status for a in asked} == {"rejected"}
    assert Run.objects.get(pk=run.pk).status == "killed"
    # A configuration change belongs to no run: the switch stops runs, it does not decide configuration.
    assert change is not None and Approval.objects.get(pk=change.pk).status == "pending"


# --- what every reader shows -------------------------------------------------------------------------


def test_every_kind_says_what_is_asked_why_who_may_decide_and_when_it_expires(mailer: Agent) -> None:
    person("lead", groups=("it-ops",))
    run = waiting_run(mailer)
    shown: dict[str, Any] = {
        kind: approval_to_dict(ask(run, kind, n=i, approver_group="it-ops" if kind == "approval" else None))
        for i, kind in enumerate([DecisionKind.APPROVAL, DecisionKind.QUESTION, DecisionKind.BUDGET_EXTENSION, DecisionKind.LOOP_ESCALATION])
    }
    shown["config_change"] = approval_to_dict(
        agent_services.agent_update(agent=mailer, actor=person("alice", "admin"), changes={"trust_phase": 4}, reason="r").pending_change  # type: ignore[arg-type]
    )
    assert shown["approval"]["asked"] == f"{mailer.name} asks to run send_email" and shown["approval"]["who_may_decide"].startswith("members of 'it-ops'")
    assert "except whoever started the run" in shown["approval"]["who_may_decide"]
    assert shown["question"]["asked"].endswith("asks: Which environment may I restart?") and shown["question"]["options"] == ["staging", "production"]
    assert shown["budget_extension"]["asked"] == f"{mailer.name}: cost cap $2 reached (used $2.01); extend by $1?"
    assert shown["loop_escalation"]["options"] == ["continue", "stop"] and "same call repeated" in shown["loop_escalation"]["asked"]
    assert shown["config_change"]["run_id"] is None and shown["config_change"]["asked"].startswith("alice asks to change")
    assert shown["config_change"]["who_may_decide"] == "a second admin, signed in to agentops (not alice)"
    for item in shown.values():
        assert item["expires_at"] and item["on_expiry"] == "halt" and item["why_needed"] and item["status"] == "pending"
    assert shown["budget_extension"]["evidence"]["spend"]["max_cost_usd"] and isinstance(shown["approval"]["evidence"]["trace"], list)


def test_granting_an_irreversible_mcp_tool_waits_for_a_second_admin(make_agent: Any) -> None:
    from agentops.mcp.services import mcp_grant
    from tests.mcp.config_support import add_server, store_tool

    agent = make_agent(trust_phase=3)
    server = add_server(agent, "ops")
    wipe = store_tool(server, "wipe", annotations={"destructiveHint": True})
    store_tool(server, "echo")  # read-only: granted at once
    alice = person("alice", "admin")
    assert mcp_grant(agent=agent, tool="mcp__ops__echo", scope={}, approval="default", risk_override="", actor=alice).pinned_digest
    with pytest.raises(agent_services.SecondAdminRequired, match="grant mcp__ops__wipe \\(irreversible\\)"):
        mcp_grant(agent=agent, tool="mcp__ops__wipe", scope={}, approval="default", risk_override="", actor=alice)
    # Lowering an irreversible tool's risk so that it would run without a person is held too.
    with pytest.raises(agent_services.SecondAdminRequired, match="risk overridden to read"):
        mcp_grant(agent=agent, tool="mcp__ops__wipe", scope={}, approval="default", risk_override="read", actor=alice)
    assert not ToolGrant.objects.filter(tool="mcp__ops__wipe").exists()
    first = Approval.objects.filter(kind="config_change").order_by("pk").first()
    assert first is not None
    approval_decide(approval=first, actor=person("dora", "admin"), approve=True)
    assert ToolGrant.objects.get(tool="mcp__ops__wipe").pinned_digest == wipe.digest


def test_a_decision_is_emailed_once_with_a_deep_link(mailer: Agent, settings: Any, mailoutbox: Any, django_capture_on_commit_callbacks: Any) -> None:
    settings.AGENTOPS_NOTIFY_EMAILS = ["oncall@example.com"]
    settings.SITE_URL = "https://agentops.example.com"
    with django_capture_on_commit_callbacks(execute=True):
        approval = ask(waiting_run(mailer), DecisionKind.BUDGET_EXTENSION)
    [mail] = mailoutbox
    assert "cost cap $2 reached" in mail.subject and f"https://agentops.example.com/approvals/#approval-{approval.pk}" in mail.body
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, actor=person("ada"), approve=True)
    assert len(mailoutbox) == 1  # deciding sends no mail: the Slack message (if any) is updated instead


def test_the_cli_apply_says_what_waits_for_a_second_admin(make_agent: Any, tmp_path: Any) -> None:
    import io

    from django.core.management import call_command

    from agentops.agents.spec import dump_spec

    agent = make_agent(trust_phase=3, slug="mailer", name="Mailer")
    spec = export_spec([agent])
    spec["agents"][0]["trust_phase"] = 4
    path = tmp_path / "agents.yaml"
    path.write_text(dump_spec(spec))
    out = io.StringIO()
    call_command("agentops", "apply", str(path), stdout=out)
    change = Approval.objects.get(kind="config_change")
    assert f"pending: mailer: trust phase 3 -> 4 needs a second admin (decision #{change.pk})" in out.getvalue()
    assert Agent.objects.get(pk=agent.pk).trust_phase == 3 and change.requested_by_label.startswith("cli:")
