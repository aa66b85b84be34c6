from __future__ import annotations

import json
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import nh3
from django import template
from django.utils import timezone as tz
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince, timeuntil
from markdown_it import MarkdownIt

from dashboard.palette import PALETTE

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


@register.filter
def pct_step(value: float | None) -> int:
    """A percentage as a whole number 0..100, for the w-/h-/l-<n> classes of app.css: the
    Content-Security-Policy allows no inline style attributes."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0
    if number != number:  # NaN
        return 0
    return max(0, min(100, round(number)))


@register.filter
def palette_index(colour: str) -> int:
    """The position of a chart colour in the palette, for the c-<n> classes of app.css."""
    try:
        return PALETTE.index(colour)
    except ValueError:
        return len(PALETTE) - 1


# --- outcomes: what a run achieved, beside its status ---------------------------------------------

OUTCOME_LABELS = {
    "pr_opened": "PR opened",
    "pr_merged": "PR merged",
    "report_submitted": "report submitted",
    "acted": "acted",
    "no_change": "no change",
    "refused": "refused",
    "gate_failed": "stopped by a gate",
    "budget": "over budget",
    "loop": "stopped: loop",
    "killed_by_switch": "kill switch",
    "stopped_by_person": "stopped by a person",
    "rejected": "rejected by a person",
    "malformed_output": "malformed output",
    "truncated": "output truncated",
    "model_refused": "model refused",
    "infrastructure": "infrastructure failure",
    "error": "error",
}
_OUTCOME_CSS = {
    "pr_opened": "good",
    "pr_merged": "good",
    "report_submitted": "good",
    "acted": "good",
    "no_change": "warn",
    "refused": "warn",
    "truncated": "warn",
    "stopped_by_person": "stop",
    "killed_by_switch": "stop",
    "rejected": "stop",
}


@register.filter
def outcome_label(code: str | None) -> str:
    if not code:
        return ""
    return OUTCOME_LABELS.get(code, str(code).replace("_", " "))


@register.filter
def outcome_css(code: str | None) -> str:
    return _OUTCOME_CSS.get(code or "", "bad")


# --- time: relative in the page, absolute (with the zone) on hover and in the browser's zone ------


@register.simple_tag
def when(value: Any, absolute: bool = False) -> SafeString:
    """<time> with the relative time as text and the absolute UTC time as its title; app.js
    rewrites the title (and, with absolute, the text) into the reader's local time and zone."""

    if not value:
        return mark_safe("—")  # noqa: S308 - a constant
    iso = value.isoformat()
    utc = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if absolute:
        text = utc
    else:
        now = tz.now()
        text = f"{timesince(value, now).split(',')[0]} ago" if value <= now else f"in {timeuntil(value, now).split(',')[0]}"
        if text.startswith("0\xa0minutes"):
            text = "just now"
    css = "abs" if absolute else "rel"
    return format_html('<time class="{}" datetime="{}" title="{}">{}</time>', css, iso, utc, text)


# --- markdown, rendered and sanitised (PR descriptions and reports are written by a model) ---------

_MD_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}


@register.filter
def markdown(text: str | None) -> SafeString:
    """Markdown to HTML; raw HTML in the source is escaped, and the result is sanitised again by
    nh3 (allow-listed tags, no attributes but safe link targets, no inline style or script)."""
    source = (text or "")[:200_000]
    html = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough").render(source)
    clean = nh3.clean(
        html,
        tags=_MD_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 above


# --- numbers in one format, with units ------------------------------------------------------------


@register.filter
def ms(value: int | None) -> str:
    """A duration in milliseconds: '850 ms', '12.4 s', '3m 05s'; '—' when unknown."""
    if value is None or value == "":
        return "—"
    try:
        number = int(value)
    except (TypeError, ValueError):
        return "—"
    if number < 1000:
        return f"{number} ms"
    if number < 60_000:
        return f"{number / 1000:.1f} s"
    minutes, secs = divmod(number // 1000, 60)
    return f"{minutes}m {secs:02d}s"


@register.filter
def tokens(value: int | None) -> str:
    """A count in the one format of the dashboard: 12345 -> '12,345' (thousands separators, no
    abbreviation, so a budget and what was spent against it read alike)."""
    return thousands(value)


@register.filter
def thousands(value: Any) -> str:
    """600000 -> '600,000'; '—' for nothing."""
    if value is None or value == "":
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def usd(value: Any) -> str:
    """Money in the one format of the dashboard: '$5.00', '$1,234.50', and up to 4 decimals below
    a dollar where cents would hide the cost ('$0.0117'); '—' for nothing."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "—"
    if not amount.is_finite():
        return "—"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount == 0 or amount >= 1 or amount == cents:
        return f"{sign}${cents:,.2f}"
    if amount < Decimal("0.00005"):
        return f"{sign}<$0.0001"
    text = f"{amount.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP):.4f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{cents:.2f}"
    return f"{sign}${text}"


@register.filter
def duration(value: Any) -> str:
    """Seconds as a duration: 1800 -> '30m', 86400 -> '24h', 90 -> '1m 30s', 0 -> '0s'."""
    if value is None or value == "":
        return "—"
    try:
        total = int(value)
    except (TypeError, ValueError):
        return "—"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return " ".join(p for p in parts if p) or "0s"


@register.filter
def linecount(text: str | None) -> int:
    return (text or "").count("\n") + 1


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def kind_label(kind: str) -> str:
    return {
        "model_call": "model turns",
        "tool_call": "tool calls",
        "observation": "observations",
        "approval_request": "approval requests",
        "approval_decision": "decisions",
        "guardrail": "guardrails",
        "gate": "gates",
        "error": "errors",
        "status": "status",
        "input": "input",
        "output": "output",
        "alarm": "alarms",
        "progress": "progress",
        "retry": "retries",
        "compaction": "compactions",
    }.get(kind, kind.replace("_", " "))


@register.filter
def per(value: Any, count: Any) -> Any:
    """value / count (cost per turn); 0 when count is 0 or not a number."""
    try:
        return Decimal(value) / Decimal(count) if count else Decimal("0")
    except (InvalidOperation, TypeError, ValueError):
        return Decimal("0")
