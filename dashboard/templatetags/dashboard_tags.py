from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

DIFF_MAX_LINES = 5000


@register.filter
def difflines(diff: str) -> SafeString:
    """A unified diff as escaped lines coloured by their first character."""
    out = []
    lines = (diff or "").splitlines()
    for line in lines[:DIFF_MAX_LINES]:
        if line.startswith(("+++", "---", "diff ", "index ")):
            css = "d-file"
        elif line.startswith("@@"):
            css = "d-hunk"
        elif line.startswith("+"):
            css = "d-add"
        elif line.startswith("-"):
            css = "d-del"
        else:
            css = "d-ctx"
        out.append(f'<span class="{css}">{escape(line)}</span>')
    if len(lines) > DIFF_MAX_LINES:
        out.append(f'<span class="d-hunk">… {len(lines) - DIFF_MAX_LINES} more lines</span>')
    return mark_safe("\n".join(out))  # noqa: S308 - every line is escaped above


@register.filter
def seconds(value: int | float | None) -> str:
    """12345 -> '3h 25m'; 75 -> '1m 15s'."""
    if value is None:
        return "—"
    total = int(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@register.filter
def pct(value: float | None) -> str:
    return f"{float(value or 0):.1f}"
