"""agentops itself as an MCP server: a person operates agents from any MCP client (Claude Desktop, an
IDE, a script) with the same API token, the same role checks and the same domain functions as the
web and the JSON API.

Every tool is a thin shell: it takes the token the HTTP layer authenticated (agentops.mcp.server_asgi
puts it in the request's ASGI scope), checks the token's scope and its user's role exactly as
dashboard.api.api_view does (scope first, then role, then the action's permission), and calls the
selector or service the web calls. Nothing here decides a rule of its own. A refusal is a tool error
with a sentence saying why, never a crash; the ORM runs in a worker thread (database_sync_to_async)
so the event loop of the ASGI server never waits on the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from agentops.approvals import services as approval_services
from agentops.approvals.models import Approval, ApprovalStatus
from agentops.approvals.serializers import approval_to_dict
from agentops.guardrails import killswitch
from agentops.runs.models import RunStatus
from agentops.runs.serializers import run_to_dict, step_to_dict
from dashboard import access, selectors, timeline
from dashboard.api import MAX_LIMIT, _kill_switch_json
from dashboard.models import ApiToken, TokenScope

# Where the HTTP layer leaves the authenticated ApiToken in the request's ASGI scope.
TOKEN_SCOPE_KEY = "agentops.api_token"

TOKEN_NEEDS = f"deciding through MCP needs a token with the {TokenScope.OPERATE} or {TokenScope.ADMIN} scope"

INSTRUCTIONS = """\
agentops runs autonomous AI agents under budgets, tool grants and human approvals.
These tools act as the person who owns the API token, narrowed to the token's scope:
read (runs, traces, pending decisions, kill switch state), operate (also decide approvals),
admin (also engage the kill switch). Run and approval `url` fields are paths on the agentops
web server this MCP endpoint belongs to. Step payloads were redacted when they were written."""

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

T = TypeVar("T")

# What each tool needs: the token's scope (as the JSON API: reading needs read, deciding operate, the
# kill switch admin) and the permission the web's view requires of the user's role (None: any role).
REQUIREMENTS: dict[str, tuple[str, str | None]] = {
    "list_runs": (TokenScope.READ, None),
    "get_run": (TokenScope.READ, None),
    "read_trace": (TokenScope.READ, None),
    "list_pending_decisions": (TokenScope.READ, None),
    "kill_switch_status": (TokenScope.READ, None),
    "decide": (TokenScope.OPERATE, access.DECIDE),
    "engage_kill_switch": (TokenScope.ADMIN, access.KILL_SWITCH),
}


def _token_of(ctx: Context) -> ApiToken:
    """The token the HTTP layer authenticated for this request. Without one (a transport that did
    not go through agentops.mcp.server_asgi) every tool refuses: fail closed."""
    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    token = scope.get(TOKEN_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(token, ApiToken):
        raise ToolError("not authenticated: send Authorization: Bearer <agentops API token>")
    return token


def _authorize(token: ApiToken, tool: str) -> User:
    """The token's user, if the token's scope, the user's role and the tool's permission all allow
    it: the order and the words of dashboard.api.api_view, so a refusal reads the same everywhere."""
    needs, perm = REQUIREMENTS[tool]
    if not token.allows(needs):
        raise ToolError(f"this token's scope is {token.scope}; this needs {needs}")
    user = token.user
    if not access.is_member(user):
        raise ToolError("this token's user has no role")
    if perm is not None:
        try:
            access.require_perm(user, perm)
        except PermissionDenied as exc:
            raise ToolError(f"refused: {exc}") from None
    return user


async def _in_db_thread(fn: Callable[..., T], **kwargs: Any) -> T:
    """Run ORM work off the event loop, on a thread whose database connection is closed after the
    call (as channels' consumers do). A database that is down is a clear refusal, not a traceback."""
    try:
        return await database_sync_to_async(fn)(**kwargs)
    except DatabaseError:
        raise ToolError("the database is unavailable; retry later") from None


# --- reads -------------------------------------------------------------------------------------


def _list_runs(*, token: ApiToken, agent: str | None, status: str | None, limit: int, before_id: int | None) -> dict[str, Any]:
    _authorize(token, "list_runs")
    if status and status not in RunStatus.values:
        raise ToolError(f"status must be one of {', '.join(RunStatus.values)}")
    items = selectors.runs_page(status=status, agent_slug=agent, before_id=before_id, limit=limit)
    return {"runs": [run_to_dict(r) for r in items], "next_before_id": items[-1].pk if len(items) == limit else None}


def _get_run(*, token: ApiToken, run_id: int) -> dict[str, Any]:
    _authorize(token, "get_run")
    run = selectors.runs_with_agent().filter(pk=run_id).first()
    if run is None:
        raise ToolError(f"no run with the id {run_id}")
    return dict(run_to_dict(run))


def _read_trace(*, token: ApiToken, run_id: int, after_seq: int, limit: int) -> dict[str, Any]:
    _authorize(token, "read_trace")
    if not selectors.run_exists(run_id):
        raise ToolError(f"no run with the id {run_id}")
    steps = timeline.steps_window(run_id, after=after_seq, limit=limit)
    return {"steps": [step_to_dict(s) for s in steps], "next_after": steps[-1].seq if len(steps) == limit else None}


def _list_pending_decisions(*, token: ApiToken, limit: int) -> dict[str, Any]:
    user = _authorize(token, "list_pending_decisions")
    items = selectors.approvals_with_status(ApprovalStatus.PENDING, limit=limit)
    you_may_decide = token.allows(TokenScope.OPERATE) and access.allowed(user, access.DECIDE)
    return {
        # who_may_decide is the decision's own routing (group, separation of duties); through MCP the
        # token must also have the operate scope (TOKEN_NEEDS).
        "approvals": [approval_to_dict(a) for a in items],
        "token_needs": TOKEN_NEEDS,
        "you_may_decide": you_may_decide,
    }


def _kill_switch_status(*, token: ApiToken) -> dict[str, Any]:
    _authorize(token, "kill_switch_status")
    return _kill_switch_json(killswitch.control_state())


# --- actions -----------------------------------------------------------------------------------


def _decide(*, token: ApiToken, approval_id: int, decision: str, reason: str) -> dict[str, Any]:
    user = _authorize(token, "decide")
    approval = Approval.objects.filter(pk=approval_id).first()
    if approval is None:
        raise ToolError(f"no approval with the id {approval_id}")
    try:
        decided = approval_services.approval_decide(approval=approval, actor=user, approve=decision == "approve", comment=reason)
    except approval_services.ApprovalError as exc:
        # Not allowed, a rejection without a reason, or already decided ("... by <who>"): the service's words.
        raise ToolError(str(exc)) from None
    # A configuration change (two admins) belongs to no run.
    run = selectors.runs_with_agent().filter(pk=decided.run_id).first() if decided.run_id is not None else None
    return {"approval": approval_to_dict(decided), "run": run_to_dict(run) if run is not None else None}


def _engage_kill_switch(*, token: ApiToken, reason: str) -> dict[str, Any]:
    user = _authorize(token, "engage_kill_switch")
    try:
        state = killswitch.kill_switch_engage(actor=user, reason=reason)
    except killswitch.ReasonRequired as exc:
        raise ToolError(str(exc)) from None
    return _kill_switch_json(state)


# --- the tools ---------------------------------------------------------------------------------

RunId = Annotated[int, Field(ge=1, description="The run's id (as in /runs/<id>/).")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT}).")]


async def list_runs(
    ctx: Context,
    agent: Annotated[str | None, Field(description="Only this agent's runs (its slug).")] = None,
    status: Annotated[str | None, Field(description=f"Only runs in this status: one of {', '.join(RunStatus.values)}.")] = None,
    limit: Limit = 50,
    before_id: Annotated[int | None, Field(ge=1, description="Page backwards: only runs older than this id (the previous page's next_before_id).")] = None,
) -> dict[str, Any]:
    """Runs, newest first, with their status, outcome, cost and totals (the JSON API's /api/runs/)."""
    return await _in_db_thread(_list_runs, token=_token_of(ctx), agent=agent, status=status, limit=limit, before_id=before_id)


async def get_run(ctx: Context, run_id: RunId) -> dict[str, Any]:
    """One run: its status, outcome and why, tokens, cost, tool calls, iterations and step count."""
    return await _in_db_thread(_get_run, token=_token_of(ctx), run_id=run_id)


async def read_trace(
    ctx: Context,
    run_id: RunId,
    after_seq: Annotated[int, Field(ge=0, description="Only steps after this sequence number (0: from the start).")] = 0,
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"At most this many steps (1 to {MAX_LIMIT}).")] = 200,
) -> dict[str, Any]:
    """A run's trace: its steps in order (model turns, tool calls and results, approvals, guardrail
    events), redacted when written. Continue from next_after while it is not null."""
    return await _in_db_thread(_read_trace, token=_token_of(ctx), run_id=run_id, after_seq=after_seq, limit=limit)


async def list_pending_decisions(ctx: Context, limit: Limit = 100) -> dict[str, Any]:
    """Actions waiting for a person, soonest deadline first: the tool, its arguments, its risk, why
    the agent wants it, why a person must decide, when it expires, and who may decide."""
    return await _in_db_thread(_list_pending_decisions, token=_token_of(ctx), limit=limit)


async def decide(
    ctx: Context,
    approval_id: Annotated[int, Field(ge=1, description="The pending approval's id (from list_pending_decisions).")],
    decision: Annotated[Literal["approve", "reject"], Field(description="approve or reject.")],
    reason: Annotated[str, Field(max_length=4000, description="Why; required to reject. Recorded with the decision and in the audit log.")] = "",
) -> dict[str, Any]:
    """Approve or reject a pending action, as yourself. Exactly one decision wins: a second one is
    refused and says who decided. An approved action then runs once; the run resumes either way."""
    return await _in_db_thread(_decide, token=_token_of(ctx), approval_id=approval_id, decision=decision, reason=reason)


async def kill_switch_status(ctx: Context) -> dict[str, Any]:
    """Whether the global kill switch is engaged, since when, by whom and why."""
    return await _in_db_thread(_kill_switch_status, token=_token_of(ctx))


async def engage_kill_switch(
    ctx: Context,
    reason: Annotated[str, Field(max_length=4000, description="Why every agent must stop now (required; audited).")],
) -> dict[str, Any]:
    """Stop every agent now: running runs halt before their next action, waiting runs are killed
    with their approvals rejected, new runs are refused until a person releases the switch in the web."""
    return await _in_db_thread(_engage_kill_switch, token=_token_of(ctx), reason=reason)


TOOLS: list[tuple[Callable[..., Any], str, ToolAnnotations]] = [
    (list_runs, "List runs", READ),
    (get_run, "Get a run", READ),
    (read_trace, "Read a run's trace", READ),
    (list_pending_decisions, "List pending decisions", READ),
    (kill_switch_status, "Kill switch status", READ),
    (decide, "Decide a pending action", ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)),
    (
        engage_kill_switch,
        "Engage the kill switch",
        # Engaging twice is engaging once; it destroys work in flight.
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    ),
]


def build_server() -> MCPServer:
    """A fresh MCPServer with the agentops tools (one per session manager: a manager runs once)."""
    server: MCPServer = MCPServer("agentops", title="agentops control room", instructions=INSTRUCTIONS)
    for fn, title, hints in TOOLS:
        server.add_tool(fn, title=title, annotations=hints, structured_output=True)
    return server
