"""The JSON API for chat bots and scripts: `Authorization: Bearer <token>`. A token acts as its
user narrowed to its scope (read / operate / admin) until it expires, so the same role checks and
the same domain functions apply as in the browser, and a token never does more than its scope."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

import jsonschema
from django.contrib.auth.models import User
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt

from agentops.agents.models import Agent
from agentops.agents.spec import hygiene_errors
from agentops.approvals import services as approval_services
from agentops.approvals.models import Approval, ApprovalStatus, DecisionKind
from agentops.approvals.serializers import approval_to_dict
from agentops.guardrails import killswitch
from agentops.runs import services as run_services
from agentops.runs.models import Run, RunStatus
from agentops.runs.serializers import run_to_dict, step_to_dict
from dashboard import access, selectors, timeline
from dashboard.models import ApiToken, TokenScope
from dashboard.openapi import SCHEMA
from dashboard.services import TokenRefused, api_token_authenticate

MAX_LIMIT = 500


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


READ_METHODS = frozenset({"GET", "HEAD"})


class ApiRequest(HttpRequest):
    """The request an api_view receives: its user is the token's (never AnonymousUser) and the
    token itself rides along. For annotations only; api_view sets both attributes."""

    user: User
    api_token: ApiToken


def api_view(*methods: str, write_scope: str = TokenScope.ADMIN) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """Token auth (no cookies, hence no CSRF), allowed methods, the token's scope, role
    membership, JSON errors. Reading needs the read scope; any other method needs write_scope
    (admin unless the endpoint says less, so a new endpoint starts closed)."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, raw = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not raw.strip():
                    raise TokenRefused("a valid bearer token is required")
                token = api_token_authenticate(raw.strip())
            except TokenRefused as exc:
                response = _error(401, str(exc))
                response["WWW-Authenticate"] = 'Bearer realm="agentops", error="invalid_token"'
                return response
            user = token.user
            if request.method not in methods:
                response = _error(405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            needed = TokenScope.READ if request.method in READ_METHODS else write_scope
            if not token.allows(needed):
                response = _error(403, f"this token's scope is {token.scope}; this needs {needed}")
                response["WWW-Authenticate"] = f'Bearer realm="agentops", error="insufficient_scope", scope="{needed}"'
                return response
            if not access.is_member(user):
                return _error(403, "this token's user has no role")
            # From here on the request is an ApiRequest: these two lines are what make it one.
            api_request = cast(ApiRequest, request)
            api_request.user = user
            api_request.api_token = token
            try:
                return view(api_request, *args, **kwargs)
            except ApiError as exc:
                return _error(exc.status, str(exc))
            except access.PermissionDenied as exc:
                return _error(403, str(exc) or "forbidden")

        return wrapper

    return decorate


def _body(request: HttpRequest, path: str) -> dict[str, Any]:
    """The JSON body, checked against this endpoint's request schema in the OpenAPI description:
    the document clients read is the one the server enforces."""
    # api_view let only this endpoint's methods through, so there is a method.
    request_body = SCHEMA["paths"][path][(request.method or "").lower()].get("requestBody", {})
    if not request.body:
        if request_body.get("required"):
            raise ApiError(400, "a JSON body is required")
        return {}
    try:
        data = json.loads(request.body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, NaN/Infinity, absurd nesting
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    problems = hygiene_errors(data)
    if problems:
        raise ApiError(400, "; ".join(problems[:5]))
    schema = request_body.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
        if error is not None:
            where = ".".join(map(str, error.absolute_path)) or "body"
            raise ApiError(400, f"{where}: {error.message}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _int_param(request: HttpRequest, name: str, default: int | None, *, maximum: int | None = None) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise ApiError(400, f"{name} must be between 0 and {maximum}" if maximum is not None else f"{name} must be >= 0")
    return value


# The API's names for the shared serializers (tests and callers import them from here).
run_json = run_to_dict
step_json = step_to_dict
approval_json = approval_to_dict


def openapi(request: HttpRequest) -> JsonResponse:
    # The schema describes the API and holds no data, so tools may fetch it without a token.
    return JsonResponse(SCHEMA)


@api_view("GET", "POST", write_scope=TokenScope.OPERATE)
def runs(request: ApiRequest) -> JsonResponse:
    if request.method == "POST":
        return _run_start(request)
    status = request.GET.get("status")
    if status and status not in RunStatus.values:
        raise ApiError(400, f"status must be one of {', '.join(RunStatus.values)}")
    before_id = _int_param(request, "before_id", None)
    limit = _int_param(request, "limit", 50, maximum=MAX_LIMIT) or 50
    items = selectors.runs_page(status=status, agent_slug=request.GET.get("agent"), before_id=before_id, limit=limit)
    return JsonResponse({"runs": [run_json(r) for r in items], "next_before_id": items[-1].pk if len(items) == limit else None})


def _run_start(request: ApiRequest) -> JsonResponse:
    access.require_perm(request.user, access.START_RUN)
    data = _body(request, "/runs/")
    agent = Agent.objects.filter(slug=data["agent"]).first()
    if agent is None:
        raise ApiError(404, f"no agent with the slug {data['agent']!r}")
    text = str(data.get("input", "")).strip()
    if not text:
        raise ApiError(400, "input is required: what the run should do")
    try:
        created = run_services.run_start_by_person(agent=agent, input=text, actor=request.user)
    except run_services.RunRefused as exc:
        raise ApiError(409, f"run refused: {exc}") from None
    except DatabaseError:
        # The run's transaction rolled back: say so, rather than a 500 that leaves the caller guessing.
        raise ApiError(503, "the database is unavailable: no run was created; retry later") from None
    if getattr(created, "dispatched", True) is False:
        # The run exists and will run: the reaper gives it a job once the task broker answers.
        body: dict[str, Any] = dict(run_json(created))
        body["dispatch"] = "deferred: the task broker is unreachable; the run stays queued and will be handed to a worker when it is back"
        return JsonResponse(body, status=202)
    return JsonResponse(run_json(created), status=201)


@api_view("GET")
def run(request: ApiRequest, run_id: int) -> JsonResponse:
    return JsonResponse(run_json(get_object_or_404(selectors.runs_with_agent(), pk=run_id)))


@api_view("GET")
def run_steps(request: ApiRequest, run_id: int) -> JsonResponse:
    get_object_or_404(Run.objects.only("pk"), pk=run_id)
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", 200, maximum=MAX_LIMIT) or 200
    steps = timeline.steps_window(run_id, after=after, limit=limit)
    return JsonResponse({"steps": [step_json(s) for s in steps], "next_after": steps[-1].seq if len(steps) == limit else None})


@api_view("POST", write_scope=TokenScope.OPERATE)
def run_cancel(request: ApiRequest, run_id: int) -> JsonResponse:
    access.require_perm(request.user, access.DECIDE)
    target = get_object_or_404(selectors.runs_with_agent(), pk=run_id)
    data = _body(request, "/runs/{run_id}/cancel/")
    if target.is_active:
        run_services.run_cancel(run=target, actor=request.user, reason=str(data.get("reason", "")))
        target.refresh_from_db()
    return JsonResponse(run_json(target))


@api_view("GET")
def approvals(request: HttpRequest) -> JsonResponse:
    """The decisions of every kind (pending by default, soonest expiry first); `kind` narrows them."""
    status = request.GET.get("status", ApprovalStatus.PENDING)
    if status not in ApprovalStatus.values:
        raise ApiError(400, f"status must be one of {', '.join(ApprovalStatus.values)}")
    kind = request.GET.get("kind") or None
    if kind is not None and kind not in DecisionKind.values:
        raise ApiError(400, f"kind must be one of {', '.join(DecisionKind.values)}")
    limit = _int_param(request, "limit", 100, maximum=MAX_LIMIT) or 100
    items = selectors.approvals_with_status(status, limit=limit, kind=kind)
    return JsonResponse({"approvals": [approval_json(a) for a in items]})


@api_view("POST", write_scope=TokenScope.OPERATE)
def approval_decide(request: access.AuthedRequest, approval_id: int) -> JsonResponse:
    """Decide any kind: `approve`, `comment`, and `edited_arguments` (an approval) or `answer`
    (a question's answer, a budget extension's amount, continue/stop)."""
    services = approval_services
    access.require_perm(request.user, access.DECIDE)
    approval = get_object_or_404(Approval.objects.select_related("run", "agent"), pk=approval_id)
    data = _body(request, "/approvals/{approval_id}/decide/")
    if not isinstance(data.get("approve"), bool):
        raise ApiError(400, '"approve" must be true or false')
    edited = data.get("edited_arguments")
    if edited is not None and not isinstance(edited, dict):
        raise ApiError(400, '"edited_arguments" must be a JSON object')
    answer = data.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ApiError(400, '"answer" must be a string')
    try:
        decided = services.approval_decide(
            approval=approval, actor=request.user, approve=data["approve"], comment=str(data.get("comment") or ""), edited_arguments=edited, answer=answer
        )
    except services.NotAllowed as exc:
        raise ApiError(403, str(exc)) from None
    except (services.CommentRequired, services.InvalidDecision) as exc:
        raise ApiError(400, str(exc)) from None
    except services.AlreadyDecided as exc:
        raise ApiError(409, str(exc)) from None
    return JsonResponse(approval_json(decided))


def _kill_switch_json(state: Any) -> dict[str, Any]:
    return {
        "engaged": state.engaged,
        "engaged_at": state.engaged_at.isoformat() if state.engaged_at else None,
        "engaged_by": state.engaged_by_label or None,
        "reason": state.reason,
        "released_at": state.released_at.isoformat() if state.released_at else None,
        "released_by": state.released_by_label or None,
        "release_reason": state.release_reason,
    }


@api_view("GET", "POST", write_scope=TokenScope.ADMIN)
def kill_switch(request: ApiRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse(_kill_switch_json(killswitch.control_state()))
    access.require_perm(request.user, access.KILL_SWITCH)
    data = _body(request, "/kill-switch/")
    if not isinstance(data.get("engaged"), bool):
        raise ApiError(400, '"engaged" must be true or false')
    try:
        if data["engaged"]:
            state = killswitch.kill_switch_engage(actor=request.user, reason=str(data.get("reason") or ""))
        else:
            state = killswitch.kill_switch_release(actor=request.user, reason=str(data.get("reason") or ""))
    except killswitch.ReasonRequired as exc:
        raise ApiError(400, str(exc)) from None
    return JsonResponse(_kill_switch_json(state))
