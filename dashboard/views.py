"""Pages and actions. Thin: check the role, fetch, call one domain function, redirect."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.forms import ModelChoiceField
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from agentops.agents import services as agent_services
from agentops.agents.models import Agent, Policy, ToolGrant, Trigger
from agentops.approvals import serializers as decision_serializers
from agentops.approvals import services as approval_services
from agentops.approvals.models import Approval, ApprovalStatus
from agentops.audit.models import AuditEvent
from agentops.forges import local as forge
from agentops.forges.base import ForgeError
from agentops.forges.models import PullRequest, PullRequestStatus
from agentops.guardrails import drills as guardrail_drills
from agentops.guardrails import killswitch
from agentops.guardrails.models import DailyUsage, Drill, DrillStatus
from agentops.llm.prices import model_retirement
from agentops.runs import services as run_services
from agentops.runs.models import ACTIVE_STATUSES, Run, Step, StepKind
from agentops.runs.steps import step_full_text
from agentops.tools.registry import get_tool
from agentops.triggers.ingest import group_snapshot, hourly_counts
from agentops.triggers.models import (
    ErrorCount,
    ErrorGroup,
    ErrorProject,
    TriggerRefusal,
)
from agentops.triggers.rules import RetryRefused, cooldown_of, error_group_retry, group_state
from dashboard import access, diffview, forms, services, timeline
from dashboard.access import AuthedRequest, member_required, require_perm
from dashboard.maturity import TIER_CSS, last_passed_drill_at, maturity_tier
from dashboard.palette import PALETTE
from dashboard.readable import action_caps, field_changes, rule_lines, scope_rows
from dashboard.selectors import run_context


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


# --- overview --------------------------------------------------------------------------------


def _agents_with_tiers() -> list[dict[str, Any]]:
    agents = list(Agent.objects.select_related("policy").prefetch_related("grants"))
    drill_at = last_passed_drill_at()
    today = timezone.now().date()
    usage: dict[tuple[int, str], Decimal] = {(row.agent_id, row.key): row.value for row in DailyUsage.objects.filter(day=today, key__in=["runs", "cost_usd"])}
    rows = []
    for agent in agents:
        policy = timeline.policy_of(agent)
        tier, reasons = maturity_tier(agent, policy=policy, grants=list(agent.grants.all()), drill_passed_at=drill_at)
        cost = usage.get((agent.pk, "cost_usd"), Decimal("0"))
        runs = usage.get((agent.pk, "runs"), Decimal("0"))
        cost_cap = policy.daily_max_cost_usd if policy else None
        runs_cap = policy.daily_max_runs if policy else None
        rows.append(
            {
                "agent": agent,
                "tier": tier,
                "tier_css": TIER_CSS[tier],
                "reasons": reasons,
                "cost": cost,
                "cost_cap": cost_cap,
                "cost_pct": min(100, float(cost / cost_cap * 100)) if cost_cap else None,
                "runs": int(runs),
                "runs_cap": runs_cap,
                "runs_pct": min(100, float(runs / runs_cap * 100)) if runs_cap else None,
            }
        )
    return rows


def _drill_slug() -> str:
    return guardrail_drills.DRILL_AGENT_SLUG


def everyday_runs() -> Any:
    """Runs people look at: the kill-switch drill's synthetic runs are shown on Drills only."""
    return Run.objects.exclude(agent__slug=_drill_slug())


def waiting_pull_requests() -> Any:
    """Pull requests a person must act on: open and ready for review (a merge needs a person)."""
    return PullRequest.objects.filter(status=PullRequestStatus.OPEN, draft=False)


@member_required
@require_GET
def overview(request: AuthedRequest) -> HttpResponse:
    now = timezone.now()
    pending = list(Approval.objects.filter(status=ApprovalStatus.PENDING).select_related("run__agent", "agent").order_by("expires_at")[:50])
    waiting_prs = list(waiting_pull_requests().select_related("run__agent").order_by("created_at")[:20])
    context = {
        "active_runs": list(everyday_runs().filter(status__in=ACTIVE_STATUSES).select_related("agent")[:50]),
        "pending": pending,
        "approval_rows": approval_rows(pending[:10], request.user),
        "waiting_prs": waiting_prs,
        "waiting_total": len(pending) + len(waiting_prs),
        "agents": (agents := [row for row in _agents_with_tiers() if row["agent"].slug != _drill_slug()]),
        "today_total": sum((row["cost"] for row in agents), Decimal("0")),
        "recent_runs": list(everyday_runs().exclude(status__in=ACTIVE_STATUSES).select_related("agent")[:10]),
        "now": now,
    }
    template = "dashboard/overview.html#live" if request.htmx else "dashboard/overview.html"
    return render(request, template, context)


# --- kill switch and drills ------------------------------------------------------------------


@member_required
@require_GET
def killswitch_panel(request: AuthedRequest) -> HttpResponse:
    """The banner and the button, re-fetched by every page when the switch changes."""
    return render(request, "dashboard/_killswitch.html")


@member_required
@require_POST
def killswitch_engage(request: AuthedRequest) -> HttpResponse:
    require_perm(request.user, access.KILL_SWITCH)
    try:
        killswitch.kill_switch_engage(actor=request.user, reason=request.POST.get("reason", ""))
    except killswitch.ReasonRequired as exc:
        messages.error(request, str(exc))
    else:
        messages.warning(request, "Kill switch engaged: every agent is stopping.")
    return redirect(_safe_next(request, reverse("dashboard:overview")))


@member_required
@require_POST
def killswitch_release(request: AuthedRequest) -> HttpResponse:
    require_perm(request.user, access.KILL_SWITCH)
    try:
        killswitch.kill_switch_release(actor=request.user, reason=request.POST.get("reason", ""))
    except killswitch.ReasonRequired as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Kill switch released: agents may run again.")
    return redirect(_safe_next(request, reverse("dashboard:overview")))


@member_required
@require_GET
def drills(request: AuthedRequest) -> HttpResponse:
    items = list(Drill.objects.select_related("started_by")[:50])
    context = {"drills": items, "running": any(d.status == DrillStatus.RUNNING for d in items)}
    if request.htmx and request.GET.get("part") == "history":
        # Polled while a drill runs on a worker, until it reports.
        return render(request, "dashboard/drills.html#history", context)
    return render(request, "dashboard/drills.html", context)


@member_required
@require_POST
def drill_start(request: AuthedRequest) -> HttpResponse:
    require_perm(request.user, access.DRILL)
    try:
        synthetic = max(1, min(20, int(request.POST.get("synthetic_runs") or 5)))
    except ValueError:
        synthetic = 5
    try:
        # The drill itself runs on a worker; this page follows it until it reports.
        drill = guardrail_drills.drill_start(actor=request.user, synthetic_runs=synthetic)
    except guardrail_drills.DrillRefused as exc:
        messages.error(request, f"Drill refused: {exc}")
        return redirect("dashboard:drills")
    messages.info(request, f"Drill {drill.pk} started on a worker: the kill switch is engaged for real while it runs; its result appears below.")
    return redirect("dashboard:drills")


# --- agents ----------------------------------------------------------------------------------


@member_required
@require_GET
def agent_list(request: AuthedRequest) -> HttpResponse:
    return render(request, "dashboard/agent_list.html", {"agents": [row for row in _agents_with_tiers() if row["agent"].slug != _drill_slug()]})


@member_required
@require_GET
def live_counts(request: AuthedRequest) -> HttpResponse:
    """The header's counters, re-read by every page when the overview socket says something changed."""
    return JsonResponse(
        {
            "approvals": Approval.objects.filter(status=ApprovalStatus.PENDING).count(),
            "active": everyday_runs().filter(status__in=ACTIVE_STATUSES).count(),
            "pulls": waiting_pull_requests().count(),
        }
    )


def _agent(slug: str) -> Agent:
    return get_object_or_404(Agent.objects.select_related("policy", "paused_by"), slug=slug)


@member_required
@require_GET
def agent_detail(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    grants = list(agent.grants.all())
    policy = timeline.policy_of(agent)
    tier, reasons = maturity_tier(agent, policy=policy, grants=grants)
    grant_rows = [
        {
            "grant": g,
            "risk": (tool.risk_class if (tool := get_tool(g.tool)) else "unknown"),
            "errors": agent_services.grant_scope_errors(g.tool, g.scope),
            "scope_rows": scope_rows(g.tool, g.scope),
        }
        for g in grants
    ]
    trigger_rows = [{"trigger": t, "rules": rule_lines(t.kind, t.rules)} for t in agent.triggers.all()]
    return render(
        request,
        "dashboard/agent_detail.html",
        {
            "agent": agent,
            "policy": policy,
            "grants": grant_rows,
            "triggers": trigger_rows,
            "trust_consequence": forms.PHASE_CONSEQUENCES.get(agent.trust_phase, ""),
            "action_caps": action_caps(policy.daily_action_caps) if policy else [],
            "tier": tier,
            "tier_css": TIER_CSS[tier],
            "reasons": reasons,
            "history": services.budget_history(agent),
            "runs": list(agent.runs.all()[:10]),
            "model_retires": model_retirement(agent.model),
        },
    )


def _render_edit(request: HttpRequest, agent: Agent, *, status: int = 200, **bound: Any) -> HttpResponse:
    policy = timeline.policy_of(agent) or Policy(agent=agent)
    grant_forms = []
    for grant in agent.grants.all():
        form = bound.get(f"grant_{grant.pk}") or forms.GrantForm(
            prefix=f"g{grant.pk}",
            tool=grant.tool,
            initial={
                "tool": grant.tool,
                "scope": grant.scope,
                "approval": grant.approval,
                "approver_group": grant.approver_group,
                "on_timeout": grant.on_timeout,
            },
        )
        grant_forms.append((grant, form))
    trigger_forms = []
    for trigger in agent.triggers.all():
        form = bound.get(f"trigger_{trigger.pk}") or forms.TriggerForm(prefix=f"t{trigger.pk}", instance=trigger)
        trigger_forms.append((trigger, form, rule_lines(trigger.kind, trigger.rules)))
    context = {
        "agent": agent,
        "agent_form": bound.get("agent_form") or forms.AgentForm(instance=agent),
        "policy_form": bound.get("policy_form") or forms.PolicyForm(instance=policy),
        "grant_forms": grant_forms,
        "new_grant_form": bound.get("new_grant") or forms.GrantForm(prefix="new"),
        "trigger_forms": trigger_forms,
        "new_trigger_form": bound.get("new_trigger") or forms.TriggerForm(prefix="newt"),
        "history": services.budget_history(agent),
        "phase_consequences": forms.PHASE_CONSEQUENCES,
    }
    return render(request, "dashboard/agent_edit.html", context, status=status)


@member_required
def agent_edit(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    if request.method == "GET":
        require_perm(request.user, access.CONFIGURE)
        return _render_edit(request, agent)
    if request.method != "POST":
        return HttpResponse(status=405)
    require_perm(request.user, access.CONFIGURE)
    require_perm(request.user, access.CHANGE_POLICY)
    # Bind to copies: ModelForm validation writes into its instance, and the services diff against the database.
    agent_form = forms.AgentForm(request.POST, instance=Agent.objects.get(pk=agent.pk))
    policy_form = forms.PolicyForm(request.POST, instance=Policy.objects.filter(agent=agent).first() or Policy(agent=agent))
    if not (agent_form.is_valid() and policy_form.is_valid()):
        return _render_edit(request, agent, status=400, agent_form=agent_form, policy_form=policy_form)
    try:
        # Both or neither: a policy the validator refuses must not leave the agent half-saved.
        with transaction.atomic():
            updated = agent_services.agent_update(
                agent=agent, actor=request.user, changes=agent_form.cleaned_data, reason=agent_form.cleaned_data["trust_reason"]
            )
            policy = agent_services.policy_update(agent=agent, actor=request.user, changes=policy_form.cleaned_data)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form = policy_form if field in policy_form.fields else agent_form
            form.add_error(field if field in form.fields else None, errors)
        return _render_edit(request, agent, status=400, agent_form=agent_form, policy_form=policy_form)
    messages.success(request, f"Saved {agent.name}.")
    # What one admin may not do alone was not saved: it waits for a second admin.
    for pending in (updated.pending_change, policy.pending_change):
        if pending is not None:
            messages.warning(request, f"{pending.request.get('summary', 'A change')} needs a second admin: it waits as decision #{pending.pk} in Decisions.")
    return redirect("dashboard:agent_detail", slug=agent.slug)


@member_required
@require_POST
def grant_save(request: AuthedRequest, slug: str, grant_id: int | None = None) -> HttpResponse:
    agent = _agent(slug)
    grant = None
    if grant_id is None:
        require_perm(request.user, access.ADD_GRANT)
        form = forms.GrantForm(request.POST, prefix="new")
        key = "new_grant"
    else:
        require_perm(request.user, access.CHANGE_GRANT)
        grant = get_object_or_404(ToolGrant, pk=grant_id, agent=agent)
        form = forms.GrantForm(request.POST, prefix=f"g{grant.pk}", tool=grant.tool, initial={"scope": grant.scope})
        key = f"grant_{grant.pk}"
    if form.is_valid():
        try:
            agent_services.grant_save(agent=agent, actor=request.user, grant=grant, **form.cleaned_data)
        except agent_services.SecondAdminRequired as exc:
            messages.warning(request, exc.messages[0])
            return redirect(reverse("dashboard:agent_edit", args=[agent.slug]) + "#grants")
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        except IntegrityError:  # the unique (agent, tool) constraint
            form.add_error("tool", "this agent already has a grant for that tool")
        else:
            messages.success(request, f"Saved the {form.cleaned_data['tool']} grant.")
            return redirect(reverse("dashboard:agent_edit", args=[agent.slug]) + "#grants")
    return _render_edit(request, agent, status=400, **{key: form})


@member_required
@require_POST
def grant_delete(request: AuthedRequest, slug: str, grant_id: int) -> HttpResponse:
    agent = _agent(slug)
    require_perm(request.user, access.DELETE_GRANT)
    grant = get_object_or_404(ToolGrant, pk=grant_id, agent=agent)
    agent_services.grant_delete(grant=grant, actor=request.user)
    messages.success(request, f"Removed the {grant.tool} grant.")
    return redirect(reverse("dashboard:agent_edit", args=[agent.slug]) + "#grants")


@member_required
@require_POST
def trigger_save(request: AuthedRequest, slug: str, trigger_id: int | None = None) -> HttpResponse:
    agent = _agent(slug)
    trigger = None
    if trigger_id is None:
        require_perm(request.user, access.ADD_TRIGGER)
        form = forms.TriggerForm(request.POST, prefix="newt")
        key = "new_trigger"
    else:
        require_perm(request.user, access.CHANGE_TRIGGER)
        trigger = get_object_or_404(Trigger, pk=trigger_id, agent=agent)
        form = forms.TriggerForm(request.POST, prefix=f"t{trigger.pk}", instance=Trigger.objects.get(pk=trigger.pk))
        key = f"trigger_{trigger.pk}"
    if form.is_valid():
        try:
            agent_services.trigger_save(agent=agent, actor=request.user, trigger=trigger, changes=form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Saved the trigger {form.cleaned_data['name']}.")
            return redirect(reverse("dashboard:agent_edit", args=[agent.slug]) + "#triggers")
    return _render_edit(request, agent, status=400, **{key: form})


@member_required
@require_POST
def agent_pause(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    require_perm(request.user, access.CONFIGURE)
    try:
        killswitch.agent_pause(agent=agent, actor=request.user, reason=request.POST.get("reason", ""))
    except killswitch.ReasonRequired as exc:
        messages.error(request, str(exc))
    else:
        messages.warning(request, f"{agent.name} is paused; its runs are stopping.")
    return redirect("dashboard:agent_detail", slug=agent.slug)


@member_required
@require_POST
def agent_run_start(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    require_perm(request.user, access.START_RUN)
    text = request.POST.get("input", "").strip()
    if not text:
        messages.error(request, "Say what the run should do.")
        return redirect("dashboard:agent_detail", slug=agent.slug)
    try:
        run = run_services.run_start_by_person(agent=agent, input=text, actor=request.user)
    except run_services.RunRefused as exc:
        messages.error(request, f"Run refused: {exc}")
        return redirect("dashboard:agent_detail", slug=agent.slug)
    return redirect("dashboard:run_detail", run_id=run.pk)


@member_required
@require_POST
def agent_resume(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = _agent(slug)
    require_perm(request.user, access.CONFIGURE)
    killswitch.agent_resume(agent=agent, actor=request.user)
    messages.success(request, f"{agent.name} resumed.")
    return redirect("dashboard:agent_detail", slug=agent.slug)


# --- runs ------------------------------------------------------------------------------------


@member_required
@require_GET
def run_list(request: AuthedRequest) -> HttpResponse:
    form = forms.RunFilterForm(request.GET or None)
    runs = Run.objects.select_related("agent", "trigger")
    if request.GET.get("agent", "") != _drill_slug():
        runs = runs.exclude(agent__slug=_drill_slug())
        agent_field = cast(ModelChoiceField, form.fields["agent"])  # declared so in RunFilterForm
        agent_field.queryset = Agent.objects.exclude(slug=_drill_slug())
    q = request.GET.get("q", "").strip()[:200]
    if q:
        # Free text over what a person remembers of a run: its input, agent, error, reason or outcome.
        match = (
            Q(input__icontains=q) | Q(agent__name__icontains=q) | Q(final_error__icontains=q) | Q(status_reason__icontains=q) | Q(outcome_detail__icontains=q)
        )
        if q.lstrip("#").isdigit():
            match |= Q(pk=int(q.lstrip("#")[:12]))
        runs = runs.filter(match)
    if form.is_valid():
        data = form.cleaned_data
        if data["agent"]:
            runs = runs.filter(agent=data["agent"])
        if data["status"]:
            runs = runs.filter(status=data["status"])
        if data["trigger"]:
            runs = runs.filter(trigger_kind=data["trigger"])
        if data["since"]:
            runs = runs.filter(created_at__date__gte=data["since"])
        if data["until"]:
            runs = runs.filter(created_at__date__lte=data["until"])
    page = Paginator(runs, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    template = "dashboard/run_list.html#live" if request.htmx else "dashboard/run_list.html"
    return render(request, template, {"form": form, "page": page, "query": query.urlencode(), "q": q})


def _run(run_id: int) -> Run:
    return get_object_or_404(Run.objects.select_related("agent__policy", "trigger"), pk=run_id)


def _error_group_of(run: Run) -> ErrorGroup | None:
    fingerprint = run.fingerprint or ""
    if not fingerprint.startswith("error:") or not fingerprint[6:].isdigit():
        return None
    return ErrorGroup.objects.filter(pk=int(fingerprint[6:])).only("pk", "title").first()


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name)
    if value is None or value == "":
        return None
    try:
        return max(0, min(int(value), 2**31 - 1))
    except ValueError:
        raise Http404(f"{name} must be a number") from None


def _trace_bounds(run: Run) -> tuple[Any, Any]:
    """The waterfall's time axis: the run's start to its end (or now, while it runs)."""
    start = run.started_at or run.created_at
    end = run.finished_at or (timezone.now() if run.is_active else None)
    return start, end


@member_required
@require_GET
def run_detail(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    if request.htmx and request.GET.get("part") == "actions":
        # Re-fetched by the page when the run's status changes: the buttons need this request's CSRF token.
        return render(request, "dashboard/run_detail.html#actions", {"run": run, "pending": list(run.approvals.filter(status=ApprovalStatus.PENDING))})
    around = _int_param(request, "around")
    steps = timeline.steps_window(run.pk, around=around)
    newest = run.next_seq - 1
    last_seq = steps[-1].seq if steps else 0
    t0, t1 = _trace_bounds(run)
    pr = (run.result or {}).get("pull_request") if isinstance(run.result, dict) else None
    local_pr = _local_pull_request(run)
    context = {
        **run_context(run),
        "spans": timeline.build_trace(steps, t0=t0, t1=t1),
        "trace": timeline.trace_summary(run.pk),
        "first_seq": steps[0].seq if steps else None,
        "show_more": bool(steps) and steps[0].seq > 1,
        "show_later": around is not None and last_seq < newest,
        "last_seq": last_seq,
        # Live catch-up starts after what is shown, or, past a gap, after the newest step.
        "newest_seq": newest if around is not None else last_seq,
        "pending": list(run.approvals.filter(status=ApprovalStatus.PENDING)),
        "gates": gate_rows(run.pk),
        "diff": timeline.run_diff(run) or (local_pr.diff if local_pr else ""),
        "pull_request": pr if isinstance(pr, dict) else ({"number": local_pr.number, "title": local_pr.title, "branch": local_pr.branch} if local_pr else None),
        "local_pr": local_pr,
        "pr_status": (local_pr.status if local_pr else (pr or {}).get("status", "")) if (local_pr or isinstance(pr, dict)) else "",
        "can_merge": local_pr is not None and local_pr.status == "open" and not local_pr.draft,
        "error_group": _error_group_of(run),
    }
    return render(request, "dashboard/run_detail.html", context)


def _local_pull_request(run: Run) -> PullRequest | None:
    """The newest pull request the local forge holds for this run, if any."""
    return PullRequest.objects.filter(run=run).order_by("-id").first()


@member_required
@require_GET
def run_steps(request: AuthedRequest, run_id: int) -> HttpResponse:
    """A fragment of the trace: earlier steps (?before=seq) or newer ones (?after=seq)."""
    run = get_object_or_404(Run.objects.only("pk", "created_at", "started_at", "finished_at", "status"), pk=run_id)
    before, after = _int_param(request, "before"), _int_param(request, "after")
    steps = timeline.steps_window(run.pk, before=before, after=after)
    t0, t1 = _trace_bounds(run)
    context = {
        "run": run,
        "spans": timeline.build_trace(steps, t0=t0, t1=t1),
        "first_seq": steps[0].seq if steps else None,
        "show_more": before is not None and bool(steps) and steps[0].seq > 1,
    }
    return render(request, "dashboard/run_detail.html#steps", context)


@member_required
@require_GET
def step_text(request: AuthedRequest, run_id: int, seq: int, field: str) -> HttpResponse:
    step = get_object_or_404(Step, run_id=run_id, seq=seq)
    if field not in step.payload:
        raise Http404("no such field")
    return HttpResponse(step_full_text(step, field), content_type="text/plain; charset=utf-8")


@member_required
@require_POST
def run_stop(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    require_perm(request.user, access.DECIDE)
    if run.is_active:
        run_services.run_cancel(run=run, actor=request.user, reason=request.POST.get("reason", ""))
        messages.warning(request, f"Run {run.pk} is stopping.")
    else:
        messages.info(request, f"Run {run.pk} had already finished ({run.status}).")
    return redirect(_safe_next(request, reverse("dashboard:run_detail", args=[run.pk])))


# --- pull requests (the local forge) ---------------------------------------------------------

# "open" includes drafts (what an agent below trust phase 3 opens); "ready" is what can be merged now.
PR_STATES = ("open", "ready", "draft", "merged", "closed", "all")


@member_required
@require_GET
def pull_request_list(request: AuthedRequest) -> HttpResponse:
    state = request.GET.get("state", "open")
    if state not in PR_STATES:
        state = "open"
    prs = PullRequest.objects.select_related("run__agent")
    if state == "ready":
        prs = prs.filter(status=PullRequestStatus.OPEN, draft=False)
    elif state == "draft":
        prs = prs.filter(status=PullRequestStatus.OPEN, draft=True)
    elif state != "all":
        prs = prs.filter(status=state)
    page = Paginator(prs, 50).get_page(request.GET.get("page"))
    return render(request, "dashboard/pull_request_list.html", {"page": page, "state": state, "states": PR_STATES, "query": f"state={state}"})


def _pull_request(pk: int) -> PullRequest:
    return get_object_or_404(PullRequest.objects.select_related("run__agent"), pk=pk)


def gate_rows(run_id: int | None) -> list[dict[str, Any]]:
    """The verification gates the run recorded (Step rows of kind gate), in order."""
    if run_id is None:
        return []
    rows = []
    for step in Step.objects.filter(run_id=run_id, kind=StepKind.GATE).order_by("seq"):
        payload = step.payload if isinstance(step.payload, dict) else {}
        rows.append({"seq": step.seq, "gate": str(payload.get("gate", "?")), "passed": payload.get("passed") is True, "detail": payload.get("detail", "")})
    return rows


@member_required
@require_GET
def pull_request_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    pr = _pull_request(pk)
    is_open = pr.status == PullRequestStatus.OPEN
    context = {
        "pr": pr,
        "parsed": diffview.parse(pr.diff or ""),
        "error_group": _error_group_of(pr.run) if pr.run is not None else None,
        "gates": gate_rows(pr.run_id),
        "comments": list(pr.comments.all()),
        "can_review": access.allowed(request.user, access.REVIEW_PULL_REQUEST),
        "can_merge": is_open and not pr.draft,
        "can_mark_ready": is_open and pr.draft,
        "can_close": is_open,
    }
    return render(request, "dashboard/pull_request_detail.html", context)


EXPAND_MAX_LINES = 500  # lines sent per "expand"; a longer gap gets a further control for the rest
EXPAND_MAX_LINE_NO = 10_000_000


def _plain(status: int, message: str) -> HttpResponse:
    # Text, not HTML: the message may quote what the request sent.
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _line_number(raw: str | None, *, optional: bool = False) -> int | None:
    if raw in (None, "") and optional:
        return None
    if raw is None or not raw.isdigit() or len(raw) > 8 or not 1 <= int(raw) <= EXPAND_MAX_LINE_NO:
        raise ValueError("a line number is a whole number from 1")
    return int(raw)


@member_required
@require_GET
def pull_request_context(request: AuthedRequest, pk: int) -> HttpResponse:
    """The lines of one changed file that the diff hides (an "expand" control), read through the
    forge at the pull request's head, and for the split view's left side at its base."""
    pr = _pull_request(pk)
    path = request.GET.get("path", "")
    layout = request.GET.get("layout", "unified")
    if layout not in ("unified", "split"):
        return _plain(400, "layout is unified or split")
    try:
        start = _line_number(request.GET.get("start"))
        end = _line_number(request.GET.get("end"), optional=True)
        old_start = _line_number(request.GET.get("old"))
    except ValueError as exc:
        return _plain(400, str(exc))
    assert start is not None and old_start is not None
    if end is not None and end < start:
        return _plain(400, "end is before start")
    # Only the files this pull request changes, and only while they exist on both sides.
    changed = {f.path: f for f in diffview.parse(pr.diff or "", highlight=False).files}
    f = changed.get(path)
    if f is None or not f.expandable:
        return _plain(404, "that file is not an expandable part of this pull request")
    if not pr.head_sha:
        return _plain(404, "this pull request has no recorded head commit")
    limit = min(end if end is not None else EXPAND_MAX_LINE_NO, start + EXPAND_MAX_LINES - 1)
    forge_ = forge.LocalForge(actor=f"dashboard:{request.user.get_username()}")
    try:
        head_lines = forge_.read_file(pr.repo, pr.head_sha, f.path).splitlines()
        base_lines: list[str] = []
        if layout == "split" and pr.base_sha:
            base_lines = forge_.read_file(pr.repo, pr.base_sha, f.old_path or f.path).splitlines()
    except ForgeError as exc:
        return _plain(404, f"cannot read the file: {exc}")
    shown = head_lines[start - 1 : limit]
    last = start + len(shown) - 1
    new_html = diffview.highlight_lines(f.path, shown)
    old_slice = base_lines[old_start - 1 : old_start - 1 + len(shown)]
    old_html = diffview.highlight_lines(f.old_path or f.path, old_slice) if layout == "split" else []
    rows = [
        {
            "new": start + i,
            "old": old_start + i,
            "html": html,
            # The base's own line when it was read (split view); the unchanged head line otherwise.
            "old_html": old_html[i] if i < len(old_html) else html,
        }
        for i, html in enumerate(new_html)
    ]
    rest = None
    more = end is None and len(head_lines) > last or end is not None and end > last
    if shown and more:
        rest = diffview.Gap(start=last + 1, end=end, old_start=old_start + len(shown))
    context = {"pr": pr, "file": f, "rows": rows, "layout": layout, "rest": rest}
    return render(request, "dashboard/_diff_context.html", context)


@member_required
@require_POST
def pull_request_merge(request: AuthedRequest, pk: int) -> HttpResponse:
    require_perm(request.user, access.REVIEW_PULL_REQUEST)
    pr = _pull_request(pk)
    try:
        sha = forge.pull_request_merge(pr=pr, actor=request.user)
    except ForgeError as exc:  # MergeError: draft, not open, conflict, base moved; or git itself failed
        messages.error(request, f"Merge refused: {exc}")
    else:
        messages.success(request, f"Merged #{pr.number} into {pr.base} ({sha[:10]}).")
    return redirect("dashboard:pull_request", pk=pr.pk)


@member_required
@require_POST
def pull_request_mark_ready(request: AuthedRequest, pk: int) -> HttpResponse:
    require_perm(request.user, access.REVIEW_PULL_REQUEST)
    pr = _pull_request(pk)
    was_draft = pr.draft and pr.status == PullRequestStatus.OPEN
    pr = forge.pull_request_mark_ready(pr=pr, actor=request.user)
    if was_draft and not pr.draft:
        messages.success(request, f"#{pr.number} is ready for review.")
    else:
        messages.info(request, f"#{pr.number} was not an open draft ({pr.status}).")
    return redirect("dashboard:pull_request", pk=pr.pk)


@member_required
@require_POST
def pull_request_close(request: AuthedRequest, pk: int) -> HttpResponse:
    require_perm(request.user, access.REVIEW_PULL_REQUEST)
    pr = _pull_request(pk)
    was_open = pr.status == PullRequestStatus.OPEN
    pr = forge.pull_request_close(pr=pr, actor=request.user, reason=request.POST.get("reason", "").strip())
    if was_open and pr.status == PullRequestStatus.CLOSED:
        messages.warning(request, f"Closed #{pr.number} without merging.")
    else:
        messages.info(request, f"#{pr.number} was already {pr.status}.")
    return redirect("dashboard:pull_request", pk=pr.pk)


@member_required
@require_POST
def pull_request_comment(request: AuthedRequest, pk: int) -> HttpResponse:
    require_perm(request.user, access.REVIEW_PULL_REQUEST)
    pr = _pull_request(pk)
    try:
        comment = forge.pull_request_comment(pr=pr, actor=request.user, body=request.POST.get("body", ""))
    except ForgeError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:pull_request", pk=pr.pk)
    return redirect(reverse("dashboard:pull_request", args=[pr.pk]) + f"#comment-{comment.pk}")


# --- errors ----------------------------------------------------------------------------------

SPARK_HOURS = 24


def sparklines(groups: list[ErrorGroup], *, hours: int = SPARK_HOURS) -> dict[int, list[dict[str, Any]]]:
    """Events per hour of each group over the last `hours` hours, zero-filled, as bar heights: the
    same numbers as agentops.triggers.ingest.hourly_counts, in one query for the whole page."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours - 1)
    found: dict[tuple[int, Any], int] = {
        (group_id, hour): count
        for group_id, hour, count in ErrorCount.objects.filter(group__in=groups, hour__gte=start, hour__lte=end).values_list("group_id", "hour", "count")
    }
    result = {}
    for group in groups:
        counts = [(start + timedelta(hours=i), found.get((group.pk, start + timedelta(hours=i)), 0)) for i in range(hours)]
        result[group.pk] = _spark(counts)
    return result


def _spark(counts: list[tuple[Any, int]]) -> list[dict[str, Any]]:
    peak = max((c for _, c in counts), default=0) or 1
    return [{"hour": hour, "count": count, "pct": count / peak * 100} for hour, count in counts]


@member_required
@require_GET
def error_list(request: AuthedRequest) -> HttpResponse:
    groups = ErrorGroup.objects.select_related("project", "last_run")
    project = request.GET.get("project", "").strip()
    if project:
        groups = groups.filter(project__slug=project)
    page = Paginator(groups, 50).get_page(request.GET.get("page"))
    spark = sparklines(list(page))
    show_dsn = access.allowed(request.user, access.SEE_ERROR_PROJECT_DSN)
    projects = [{"project": p, "dsn": p.dsn(settings.SITE_URL) if show_dsn else None} for p in ErrorProject.objects.annotate(group_count=Count("groups"))]
    context = {
        "rows": [{"group": g, "spark": spark[g.pk]} for g in page],
        "page": page,
        "projects": projects,
        "project": project,
        "show_dsn": show_dsn,
        "query": f"project={project}" if project else "",
    }
    return render(request, "dashboard/error_list.html", context)


@member_required
@require_GET
def error_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(ErrorGroup.objects.select_related("project", "last_run"), pk=pk)
    events = list(group.events.all()[:20])
    latest = events[0] if events else None
    context = {
        "group": group,
        "latest": latest,
        "exceptions": (latest.stacktrace if latest and isinstance(latest.stacktrace, list) else []),
        "tags": sorted(((latest.tags if latest else None) or group.tags or {}).items()),
        "events": events,
        "spark": _spark(hourly_counts(group, hours=SPARK_HOURS)),
        "refusals": list(TriggerRefusal.objects.filter(group=group).select_related("trigger__agent")[:50]),
        "runs": list(Run.objects.filter(fingerprint=group.run_fingerprint).select_related("agent").order_by("-created_at")[:50]),
        "fix_state": error_fix_state(group),
        "can_retry": access.allowed(request.user, access.START_RUN),
    }
    return render(request, "dashboard/error_detail.html", context)


def error_fix_state(group: ErrorGroup) -> Any:
    """What the next event of this group does: run active, cooldown, fix merged, regressed (the
    same decision ingest makes)."""
    snapshot = group_snapshot(group.pk)
    trigger = Trigger.objects.filter(pk=snapshot.run_trigger_id).first() if snapshot.run_trigger_id else None
    return group_state(snapshot, cooldown_s=cooldown_of(trigger.rules if trigger and isinstance(trigger.rules, dict) else None))


@member_required
@require_POST
def error_retry(request: AuthedRequest, pk: int) -> HttpResponse:
    require_perm(request.user, access.START_RUN)
    group = get_object_or_404(ErrorGroup.objects.select_related("project"), pk=pk)
    try:
        run = error_group_retry(group=group, actor=request.user)
    except RetryRefused as exc:
        messages.error(request, f"Retry refused: {exc}")
        return redirect("dashboard:error_detail", pk=group.pk)
    messages.info(request, f"Run #{run.pk} started for this problem.")
    return redirect("dashboard:run_detail", run_id=run.pk)


# --- decisions (approvals of every kind) -------------------------------------------------------


def approval_rows(
    approvals: list[Approval], user: Any = None, *, errors: dict[int, str] | None = None, posted: dict[int, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """What the decision cards show: what is asked, why, the evidence, who may decide (and whether
    `user` may, or why not), when it expires and what expiry does; `errors`/`posted`: a refused
    decision's message and what the person typed, shown again in place."""
    now = timezone.now()
    policies: dict[int | None, Policy] = {p.agent_id: p for p in Policy.objects.filter(agent_id__in={a.agent_id for a in approvals if a.agent_id})}
    rows = []
    for approval in approvals:
        args = approval.arguments or {}
        evidence = approval.evidence if isinstance(approval.evidence, dict) else {}
        request = approval.request if isinstance(approval.request, dict) else {}
        diff = (
            next((args[k] for k in ("diff", "patch") if isinstance(args.get(k), str)), "")
            or evidence.get("diff")
            or (timeline.run_diff(approval.run) if approval.run else "")
        )
        may, why_not = approval_services.may_decide(user, approval) if user is not None else (True, "")
        typed = (posted or {}).get(approval.pk, {})
        rows.append(
            {
                "approval": approval,
                "kind": approval.kind,
                "asked": decision_serializers.asked(approval),
                "arguments": timeline._pretty(args),
                "edited": typed.get("edited_arguments") or timeline._pretty(args),
                "edited_arguments": timeline._pretty(approval.edited_arguments) if approval.edited_arguments is not None else "",
                "answer": typed.get("answer", request.get("extend_by", "") if approval.kind == "budget_extension" else ""),
                "comment": typed.get("comment", ""),
                "posted_edit": bool(typed.get("edited_arguments")),
                "request": request,
                "change": timeline._pretty(request.get("change", {})) if approval.kind == "config_change" else "",
                "options": decision_serializers.options_of(approval),
                "diff": diff,
                "spend": _spend_rows(evidence.get("spend")),
                "trace": evidence.get("trace") or [],
                "who": decision_serializers.who_may_decide(approval, policy=policies.get(approval.agent_id) or Policy()),
                "on_expiry": decision_serializers.on_expiry_text(approval),
                "may_decide": may,
                "why_not": why_not,
                "error": (errors or {}).get(approval.pk, ""),
                "seconds_left": max(0, int((approval.expires_at - now).total_seconds())),
                "expired": approval.expires_at <= now,
            }
        )
    return rows


def _spend_rows(spend: Any) -> list[tuple[str, Any, Any]]:
    """(what, used, cap) of a decision's spend evidence, for the card."""
    if not isinstance(spend, dict):
        return []
    names = [("cost (USD)", "cost_usd"), ("tokens", "tokens"), ("tool calls", "tool_calls"), ("iterations", "iterations")]
    return [(label, spend[key], spend.get(f"max_{key}", "?")) for label, key in names if key in spend]


def _decisions_page(
    request: AuthedRequest, *, status: int = 200, errors: dict[int, str] | None = None, posted: dict[int, dict[str, str]] | None = None
) -> HttpResponse:
    pending = list(Approval.objects.filter(status=ApprovalStatus.PENDING).select_related("run", "agent").order_by("expires_at")[:100])
    decided = list(Approval.objects.exclude(status=ApprovalStatus.PENDING).select_related("run", "agent").order_by("-decided_at")[:30])
    template = "dashboard/approvals.html#live" if request.htmx else "dashboard/approvals.html"
    context = {"rows": approval_rows(pending, request.user, errors=errors, posted=posted), "decided": decided}
    return render(request, template, context, status=status)


@member_required
@require_GET
def approval_list(request: AuthedRequest) -> HttpResponse:
    return _decisions_page(request)


def _decided_message(approval: Approval, approve: bool) -> str:
    if approval.kind == "question":
        return f"Answered the question of run {approval.run_id}." if approve else f"Declined to answer the question of run {approval.run_id}."
    if approval.kind == "budget_extension":
        return f"Extended the budget of run {approval.run_id} by {approval.answer}." if approve else f"Stopped run {approval.run_id} at its budget."
    if approval.kind == "loop_escalation":
        return f"Run {approval.run_id} continues." if approve else f"Stopped run {approval.run_id}."
    if approval.kind == "config_change":
        return f"Applied the change to {approval.agent.name if approval.agent else 'the agent'} as the second admin." if approve else "Rejected the change."
    edited = " (edited)" if approval.edited_arguments is not None else ""
    return f"{'Approved' if approve else 'Rejected'}: {approval.tool}{edited} for run {approval.run_id}."


@member_required
@require_POST
def approval_decide(request: AuthedRequest, approval_id: int) -> HttpResponse:
    require_perm(request.user, access.DECIDE)
    approval = get_object_or_404(Approval.objects.select_related("run", "agent"), pk=approval_id)
    form = forms.DecisionForm(request.POST)
    typed = {name: str(request.POST.get(name, "")) for name in ("edited_arguments", "answer", "comment")}
    if not form.is_valid():
        # Shown in place, on the decision's card, with what the person typed.
        message = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        return _decisions_page(request, status=400, errors={approval.pk: message}, posted={approval.pk: typed})
    approve = form.cleaned_data["decision"] == "approve"
    try:
        decided = approval_services.approval_decide(
            approval=approval,
            actor=request.user,
            approve=approve,
            comment=form.cleaned_data["comment"],
            edited_arguments=form.cleaned_data["edited_arguments"],
            answer=form.cleaned_data["answer"] or None,
        )
    except approval_services.NotAllowed as exc:
        return _decisions_page(request, status=403, errors={approval.pk: str(exc)}, posted={approval.pk: typed})
    except (approval_services.CommentRequired, approval_services.InvalidDecision) as exc:
        return _decisions_page(request, status=400, errors={approval.pk: str(exc)}, posted={approval.pk: typed})
    except approval_services.AlreadyDecided as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _decided_message(decided, approve))
    return redirect(_safe_next(request, reverse("dashboard:approvals")))


# --- audit and spend -------------------------------------------------------------------------


@member_required
@require_GET
def audit_log(request: AuthedRequest) -> HttpResponse:
    events = AuditEvent.objects.all()
    action = request.GET.get("action", "").strip()
    actor = request.GET.get("actor", "").strip()
    if action:
        events = events.filter(action__startswith=action)
    if actor:
        events = events.filter(actor_label=actor)
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    # Each entry beside the fields it changed (the template lays out the pairs).
    entries = [(event, field_changes(event.before, event.after)) for event in page]
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "dashboard/audit.html", {"page": page, "entries": entries, "action": action, "actor": actor, "query": query.urlencode()})


@member_required
@require_GET
def spend(request: AuthedRequest) -> HttpResponse:
    try:
        days = max(1, min(90, int(request.GET.get("days", 14))))
    except ValueError:
        days = 14
    today = timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        everyday_runs()
        .filter(created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day", "agent__name")
        .annotate(cost=Sum("cost_usd"), runs=Count("id"))
        .order_by("day", "agent__name")
    )
    by_day: dict[Any, dict[str, Decimal]] = defaultdict(dict)
    agent_names: list[str] = []
    for row in rows:
        by_day[row["day"]][row["agent__name"]] = row["cost"] or Decimal("0")
        if row["agent__name"] not in agent_names:
            agent_names.append(row["agent__name"])
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(agent_names))}
    totals = {day: sum(v.values(), Decimal("0")) for day, v in by_day.items()}
    # Each agent's own daily cap, drawn in its colour: the cap is per agent, so a sum of caps
    # would hide an agent over its cap behind another one under its own.
    caps = {name: cap for name, cap in Policy.objects.exclude(agent__slug=_drill_slug()).values_list("agent__name", "daily_max_cost_usd") if cap}
    for name in sorted(caps):
        if name not in colours:
            colours[name] = PALETTE[len(colours) % len(PALETTE)]
    # The scale follows what was spent; a cap far above it (more than 4x the costliest day) would
    # flatten every bar to a sliver, so it is named in the legend as above the chart instead.
    highest = max(totals.values(), default=Decimal("0"))
    in_scale = [cap for cap in caps.values() if not highest or cap <= highest * 4]
    peak = max([highest, *in_scale], default=Decimal("0")) or Decimal("1")
    cap_lines = [
        {"agent": name, "cap": cap, "pct": float(cap / peak * 100), "colour": colours[name], "above": cap > peak} for name, cap in sorted(caps.items())
    ]
    columns = []
    for i in range(days):
        day = start + timedelta(days=i)
        segments = [
            {"agent": name, "cost": cost, "pct": float(cost / peak * 100), "colour": colours[name], "over": name in caps and cost > caps[name]}
            for name, cost in sorted(by_day.get(day, {}).items())
            if cost
        ]
        columns.append({"day": day, "total": totals.get(day, Decimal("0")), "segments": segments, "over": any(s["over"] for s in segments)})
    period_runs = everyday_runs().filter(created_at__date__gte=start)
    per_agent_rows = (
        period_runs.values("agent__name")
        .annotate(
            cost=Sum("cost_usd"),
            runs=Count("id"),
            turns=Sum("model_calls"),
            tokens=Sum("input_tokens") + Sum("output_tokens") + Sum("cache_read_tokens") + Sum("cache_write_tokens"),
        )
        .order_by("-cost")
    )
    today_cost = dict(everyday_runs().filter(created_at__date=today).values_list("agent__name").annotate(c=Sum("cost_usd")))
    per_agent = []
    for row in per_agent_rows:
        name, cost = row["agent__name"], row["cost"] or Decimal("0")
        cap = caps.get(name)
        spent_today = today_cost.get(name) or Decimal("0")
        per_agent.append(
            {
                "agent": name,
                "colour": colours.get(name, PALETTE[-1]),
                "cost": cost,
                "runs": row["runs"],
                "turns": row["turns"] or 0,
                "tokens": row["tokens"] or 0,
                "per_run": cost / row["runs"] if row["runs"] else None,
                "per_turn": cost / row["turns"] if row["turns"] else None,
                "cap": cap,
                "today": spent_today,
                "today_pct": float(spent_today / cap * 100) if cap else None,
                "days_over": sum(1 for day_costs in by_day.values() if cap and day_costs.get(name, Decimal("0")) > cap),
            }
        )
    models = (
        period_runs.values("model")
        .annotate(
            runs=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cache_tokens=Sum("cache_read_tokens") + Sum("cache_write_tokens"),
            cost=Sum("cost_usd"),
        )
        .order_by("-cost")
    )
    costly_runs = list(period_runs.filter(cost_usd__gt=0).select_related("agent").order_by("-cost_usd")[:10])
    for run in costly_runs:
        run.step_count = max(0, run.next_seq - 1)
    # The costliest model turns, among the steps of the period's 50 costliest runs: a step never
    # costs more than its run, and the (run, seq) index keeps this bounded however long runs grow.
    top_run_ids = list(period_runs.filter(cost_usd__gt=0).order_by("-cost_usd").values_list("id", flat=True)[:50])
    costly_steps = list(
        Step.objects.filter(run_id__in=top_run_ids, kind=StepKind.MODEL_CALL, cost_usd__gt=0)
        .select_related("run__agent")
        .order_by("-cost_usd", "run_id", "seq")[:10]
    )
    grand_total = sum(totals.values(), Decimal("0"))
    return render(
        request,
        "dashboard/spend.html",
        {
            "days": days,
            "columns": columns,
            "peak": peak,
            "legend": sorted((n, c) for n, c in colours.items() if n in agent_names or n in caps),
            "models": list(models),
            "grand_total": grand_total,
            "cap_lines": cap_lines,
            "per_agent": per_agent,
            "costly_runs": costly_runs,
            "costly_steps": costly_steps,
        },
    )


# --- API tokens ------------------------------------------------------------------------------


@member_required
def tokens(request: AuthedRequest) -> HttpResponse:
    new_token = None
    form = forms.TokenForm(request.POST or None, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                _, new_token = services.api_token_create(user=request.user, name=data["name"], scope=data["scope"], expires_in_days=data["expires_in_days"])
            except (services.ScopeNotAllowed, ValueError) as exc:
                form.add_error(None, str(exc))
            else:
                form = forms.TokenForm(user=request.user)
    elif request.method != "GET":
        return HttpResponse(status=405)
    response = render(
        request,
        "dashboard/tokens.html",
        {"tokens": request.user.api_tokens.all(), "form": form, "new_token": new_token, "now": timezone.now()},
    )
    if new_token:
        # The secret is in this page only: no cache may keep a copy.
        response["Cache-Control"] = "no-store"
    return response


@member_required
@require_POST
def token_revoke(request: AuthedRequest, token_id: int) -> HttpResponseRedirect:
    # Someone else's token is a 404: its existence is none of your business.
    token = get_object_or_404(request.user.api_tokens, pk=token_id)
    services.api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Revoked {token.name}.")
    return redirect("dashboard:tokens")
