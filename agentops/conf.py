"""Small readers for deployment values from the environment.

Each one fails loudly (ImproperlyConfigured naming the variable) rather than guessing: a typo in
a cap or a URL must stop the process at start-up, not silently fall back to a default.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import Any, overload

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@overload
def env_str(name: str, default: str, *, required: bool = False) -> str: ...
@overload
def env_str(name: str, default: None = None, *, required: bool = False) -> str | None: ...
def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"{name} must be set")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_decimal(name: str, default: str) -> Decimal:
    raw = os.environ.get(name) or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def database_config(url: str | None, *, default_sqlite_path: str) -> dict[str, Any]:
    """Turn DATABASE_URL into Django's DATABASES['default'].

    Only the engines we test on are accepted: an unknown scheme is a configuration error, not a
    fallback to SQLite.
    """
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": default_sqlite_path,
            # The worker and the web server share the file: wait on locks instead of failing.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
            # A file, not shared-cache memory: worker threads and subprocesses in tests must see
            # the same database and wait on its locks like in production.
            # Per process, so that two test sessions on one machine never share (and delete) one file.
            "TEST": {"NAME": default_sqlite_path.replace(".sqlite3", f"-test-{os.getpid()}.sqlite3")},
        }
    scheme = url.split(":", 1)[0].lower()
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(f"DATABASE_URL scheme {scheme!r} is not supported (use postgres:// or sqlite://)")
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    except Exception as exc:  # dj_database_url raises ValueError/KeyError on garbage
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid URL: {exc}") from None
    if config["ENGINE"].endswith("sqlite3"):
        config.setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
    else:
        # Server-side parameters let psycopg prepare the controller's hot statements once per
        # connection instead of PostgreSQL parsing and planning them on every step.
        # (Behind a transaction-pooling PgBouncer, set DATABASE_PREPARE_THRESHOLD=off.)
        options = config.setdefault("OPTIONS", {})
        options.setdefault("server_side_binding", True)
        threshold = os.environ.get("DATABASE_PREPARE_THRESHOLD", "5")
        options.setdefault("prepare_threshold", None if threshold.lower() in ("off", "none", "") else int(threshold))
    return config
