"""Secrets never reach storage: every step payload, artifact and audit record passes through here."""

from __future__ import annotations

import functools
import re
from typing import Any

from django.conf import settings

REDACTED = "[REDACTED]"

# Token shapes worth catching even when nobody configured them as secrets.
_PATTERNS = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{10,}"),
    re.compile(r"sk-[A-Za-z0-9]{32,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{30,}"),
    re.compile(r"xox[abprs]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)[A-Za-z0-9._\-]{16,}"),
]


def _secret_values() -> tuple[str, ...]:
    return _usable_secrets(tuple(getattr(settings, "AGENTOPS_SECRET_VALUES", []) or []))


@functools.lru_cache(maxsize=8)
def _usable_secrets(values: tuple[str, ...]) -> tuple[str, ...]:
    # Short values would redact ordinary words; such a "secret" is a configuration mistake anyway.
    return tuple(sorted((v for v in values if isinstance(v, str) and len(v) >= 8), key=len, reverse=True))


# Every pattern above starts with one of these: one scan tells whether the eight are worth running.
_MAYBE = re.compile(r"sk-|gh[pousr]_|github_pat_|xox[abprs]-|AKIA|PRIVATE KEY|(?i:authorization)")


def redact_text(text: str) -> str:
    for value in _secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    if not _MAYBE.search(text):
        return text
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def contains_secret(text: str) -> bool:
    return redact_text(text) != text


def redact(value: Any) -> Any:
    """Return a copy of value (str / list / dict / scalars) with secrets replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
