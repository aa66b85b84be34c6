"""Error tracker tools (read-only): an error group and its recent events, limited to the agent's projects."""

from __future__ import annotations

from typing import Any

from agentops.tools.common import _schema
from agentops.tools.registry import ScopeViolation, Tool, ToolContext, ToolError, ToolResult, register
from agentops.tools.scopes import STRING_LIST
from agentops.triggers.ingest import hourly_counts
from agentops.triggers.models import ErrorGroup


def _group_in_scope(group_id: int | None, ctx: ToolContext) -> Any:
    if group_id is None:
        # The error that started this run.
        group_id = (ctx.run.context or {}).get("error_group_id")
        if not group_id:
            raise ToolError("this run was not started by an error: pass group_id")

    group = ErrorGroup.objects.select_related("project").filter(pk=group_id).first()
    # Same answer for "missing" and "not yours": no probing of other projects.
    if group is None or group.project.slug not in ctx.scope.get("projects", []):
        raise ScopeViolation(f"error group {group_id} is not in this agent's projects")
    return group


def format_stacktrace(stacktrace: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for n, exc in enumerate(stacktrace):
        if n:
            lines.append("\nDuring handling of the above exception, another exception occurred:\n")
        lines.append("Traceback (most recent call last):")
        for frame in exc.get("frames", []):
            marker = "" if frame.get("in_app") else "  [library]"
            lines.append(f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("function")}{marker}')
            if frame.get("context_line"):
                lines.append(f"    {frame['context_line'].strip()}")
        lines.append(f"{exc.get('type')}: {exc.get('value')}")
    return "\n".join(lines)


def error_get_group(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    group = _group_in_scope(args.get("group_id"), ctx)
    event = group.events.order_by("-received_at", "-id").first()
    hours = [(h, c) for h, c in hourly_counts(group, hours=24) if c]
    frequency = ", ".join(f"{h:%m-%d %H}:00 {c}" for h, c in hours) or "none in the last 24 hours"
    text = [
        f"Error group {group.pk} in project {group.project.slug}: {group.title}",
        f"Culprit: {group.culprit or 'unknown'}",
        f"Level: {group.level}; events: {group.count}; first seen {group.first_seen:%Y-%m-%d %H:%M:%S} UTC; last seen {group.last_seen:%Y-%m-%d %H:%M:%S} UTC",
        f"Events per hour (UTC, last 24 hours): {frequency}",
        f"Tags: {group.tags}",
    ]
    if event is not None:
        text += [
            f"\nLatest event {event.event_id} (release {event.release or '-'}, environment {event.environment or '-'}):",
            format_stacktrace(event.stacktrace) if event.stacktrace else event.message,
        ]
    return ToolResult(output="\n".join(text), data={"group_id": group.pk, "count": group.count})


def error_list_events(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    group = _group_in_scope(args.get("group_id"), ctx)
    limit = args.get("limit", 20)
    events = list(group.events.order_by("-received_at", "-id")[:limit])
    lines = [f"{len(events)} most recent of {group.count} events in group {group.pk}:"]
    for event in events:
        lines.append(
            f"- {event.received_at:%Y-%m-%d %H:%M:%S} {event.event_id} {event.level} "
            f"{event.exception_type}: {event.exception_value[:200]} release={event.release or '-'} tags={event.tags}"
        )
    return ToolResult(output="\n".join(lines))


SCOPE_PROJECTS = {
    "type": "object",
    "properties": {"projects": STRING_LIST},
    "required": ["projects"],
    "additionalProperties": False,
}

register(
    Tool(
        name="error_get_group",
        description="Read an error group from the error tracker: title, culprit, frequency per hour, tags and the latest stack trace.",
        input_schema=_schema({"group_id": {"type": "integer", "minimum": 1, "description": "default: the error group that started this run"}}),
        risk_class="read",
        scope_schema=SCOPE_PROJECTS,
        executor=error_get_group,
        side_effecting=False,
    )
)
register(
    Tool(
        name="error_list_events",
        description="List the most recent events of an error group (time, message, release, tags).",
        input_schema=_schema(
            {
                "group_id": {"type": "integer", "minimum": 1, "description": "default: the error group that started this run"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50},
            }
        ),
        risk_class="read",
        scope_schema=SCOPE_PROJECTS,
        executor=error_list_events,
        side_effecting=False,
    )
)
