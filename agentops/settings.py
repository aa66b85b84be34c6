"""All settings of agentops, in one place, read from the environment (see README "Configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from agentops.conf import (
    database_config,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("AGENTOPS_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-dev-key-only-for-debug"  # noqa: S105 - only ever used with DEBUG on
    elif env_bool("AGENTOPS_EPHEMERAL_SECRET_KEY"):
        # Set by manage.py for commands that sign nothing (makemigrations, check, …): a throwaway key
        # that no session, token or cookie will ever outlive.
        import secrets

        SECRET_KEY = secrets.token_urlsafe(50)
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set unless DEBUG=1")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "django_htmx",
    "template_partials",
    "axes",
    "agentops.agents",
    "agentops.runs",
    "agentops.approvals",
    "agentops.guardrails",
    "agentops.audit",
    "agentops.triggers",
    "agentops.forges",
    "agentops.mcp",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "dashboard.middleware.RejectUnstorableInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lock-out raised during authentication into its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "agentops.urls"
ASGI_APPLICATION = "agentops.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.control_room",
            ],
        },
    }
]

DATABASES = {
    "default": database_config(env_str("DATABASE_URL"), default_sqlite_path=str(DATA_DIR / "agentops.sqlite3")),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")

# channels_redis waits for a consumer's next message with a blocking BZPOPMIN of brpop_timeout
# (5 s). redis-py >= 8 reads every reply with a 5 s socket timeout by default, so each idle wait
# ended in redis.exceptions.TimeoutError and daphne closed the websocket with 1011. The read
# timeout must outlast the blocking pop; it stays finite so a dead Redis is still noticed.
CHANNEL_REDIS_SOCKET_TIMEOUT_S = env_int("AGENTOPS_CHANNEL_REDIS_SOCKET_TIMEOUT_S", 30, minimum=10)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": CHANNEL_REDIS_SOCKET_TIMEOUT_S,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "health_check_interval": 15,
                    }
                ],
                # A prefix of its own lets several installations (or test sessions) share one Redis.
                "prefix": env_str("AGENTOPS_CHANNEL_PREFIX", "agentops"),
            },
        }
    }
else:
    # In-process only: live views in the embedded default catch up from the database by seq.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# How often a live view re-reads the database besides the channel layer's messages (0: never;
# unset: often with the in-memory layer, rarely with Redis).
if env_str("AGENTOPS_LIVE_POLL_S") is not None:
    AGENTOPS_LIVE_POLL_S = env_int("AGENTOPS_LIVE_POLL_S", 0, minimum=0)

# The longest a run may hold a worker before django-q2 considers the task lost; runs waiting for
# approval free their worker, so this only bounds active work. retry must exceed timeout.
AGENTOPS_TASK_TIMEOUT_S = env_int("AGENTOPS_TASK_TIMEOUT_S", 3600, minimum=60)
Q_CLUSTER = {
    # The queue's name: installations sharing one Redis broker need different names.
    "name": env_str("AGENTOPS_Q_NAME", "agentops"),
    "workers": env_int("AGENTOPS_WORKERS", 2, minimum=1),
    "timeout": AGENTOPS_TASK_TIMEOUT_S,
    "retry": AGENTOPS_TASK_TIMEOUT_S + 120,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": 0.2,
    "label": "Tasks",
}
# The reaper: every worker process reconciles at start and then every AGENTOPS_REAPER_S (0: only
# the minute-by-minute django-q2 schedule). A queued run whose last hand-off to the broker is older
# than AGENTOPS_DISPATCH_GRACE_S and that no worker claimed gets a new job (a duplicate is harmless:
# claiming is a conditional UPDATE), so a run stranded by a lost job runs within two reaper periods.
AGENTOPS_REAPER_S = env_int("AGENTOPS_REAPER_S", 60, minimum=0)
AGENTOPS_DISPATCH_GRACE_S = env_int("AGENTOPS_DISPATCH_GRACE_S", max(1, AGENTOPS_REAPER_S // 2), minimum=1)
if REDIS_URL:
    # Bounded waits: a Redis that does not answer must fail an enqueue in seconds (the run stays
    # queued for the reconciler), never hang a web request. The read timeout outlasts the
    # broker's 1 s blocking pop.
    _sep = "&" if "?" in REDIS_URL else "?"
    Q_CLUSTER["redis"] = f"{REDIS_URL}{_sep}socket_connect_timeout=5&socket_timeout=10"
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out username/address is refused before its password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling (django-axes): after AGENTOPS_LOGIN_FAILURE_LIMIT wrong passwords for one
# username, or from one address, sign-in is refused for the cool-off, even with the right password.
AXES_FAILURE_LIMIT = env_int("AGENTOPS_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AGENTOPS_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# Either one alone locks: a spray over many usernames from one address, or a guess at one username
# from many addresses.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
# Tries while locked are refused, not counted: the cool-off ends when it said it would.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# The client address is the socket's peer; a header set by the client (X-Forwarded-For) must not
# let it pick a fresh address per guess. Behind a reverse proxy, name the header it sets.
AXES_IPWARE_META_PRECEDENCE_ORDER = tuple(env_list("AGENTOPS_CLIENT_IP_HEADERS", ["REMOTE_ADDR"]))
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# --- transport and browser security --------------------------------------------------------
# Secure cookies by default in production; the embedded demo on http://127.0.0.1 turns them off
# with AGENTOPS_SECURE_COOKIES=0 (a browser never sends a Secure cookie back over plain http).
AGENTOPS_SECURE_COOKIES = env_bool("AGENTOPS_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = AGENTOPS_SECURE_COOKIES
CSRF_COOKIE_SECURE = AGENTOPS_SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
# htmx sends the token from the page (hx-headers), so no script needs to read the cookie.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Browsers honour HSTS only over https, so it is harmless on the demo's plain http.
SECURE_HSTS_SECONDS = env_int("AGENTOPS_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("AGENTOPS_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("AGENTOPS_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("AGENTOPS_SSL_REDIRECT", False)
if env_bool("AGENTOPS_BEHIND_TLS_PROXY", False):
    # Only behind a proxy that always sets this header itself (else a client could claim https).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline script or style anywhere: templates use static files and CSS classes only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        # The live views' websockets (older browsers do not match ws: against 'self').
        "connect-src": ["'self'", "ws:", "wss:"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without collectstatic in the embedded default

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "agentops@localhost")
AGENTOPS_NOTIFY_EMAILS = env_list("AGENTOPS_NOTIFY_EMAILS", [])
AGENTOPS_SLACK_WEBHOOK_URL = env_str("AGENTOPS_SLACK_WEBHOOK_URL")
# Deciding approvals from Slack (agentops.approvals.slack): a bot token posts each approval with
# Approve / Reject buttons to the channel; clicks come back to /integrations/slack/interactions,
# signed with the app's signing secret. Unset token or channel: nothing is posted; unset secret:
# the endpoint refuses every request.
AGENTOPS_SLACK_BOT_TOKEN = env_str("AGENTOPS_SLACK_BOT_TOKEN")
AGENTOPS_SLACK_SIGNING_SECRET = env_str("AGENTOPS_SLACK_SIGNING_SECRET")
AGENTOPS_SLACK_CHANNEL = env_str("AGENTOPS_SLACK_CHANNEL")
AGENTOPS_SLACK_API_URL = env_str("AGENTOPS_SLACK_API_URL", "https://slack.com/api/")

# --- the engine --------------------------------------------------------------------------
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
ANTHROPIC_TIMEOUT_S = env_int("ANTHROPIC_TIMEOUT_S", 120, minimum=1)
ANTHROPIC_MAX_RETRIES = env_int("ANTHROPIC_MAX_RETRIES", 4, minimum=0)
ANTHROPIC_BACKOFF_S = float(env_str("ANTHROPIC_BACKOFF_S", "1.0"))
AGENTOPS_SANDBOX_BACKEND = env_choice("AGENTOPS_SANDBOX_BACKEND", ("auto", "docker", "bubblewrap"), "auto")
AGENTOPS_SANDBOX_IMAGE = env_str("AGENTOPS_SANDBOX_IMAGE", "agentops-sandbox:1")
# Which deployment sandboxes belong to: the reaper and the kill switch touch only their own.
AGENTOPS_SANDBOX_SCOPE = env_str("AGENTOPS_SANDBOX_SCOPE", "default")
AGENTOPS_SANDBOX_ROOT = env_str("AGENTOPS_SANDBOX_ROOT")
AGENTOPS_FORGE_ROOT = Path(env_str("AGENTOPS_FORGE_ROOT", str(DATA_DIR / "forge")))
AGENTOPS_ARTIFACT_ROOT = Path(env_str("AGENTOPS_ARTIFACT_ROOT", str(DATA_DIR / "artifacts")))
GITHUB_TOKEN = env_str("GITHUB_TOKEN")
GITHUB_BASE_URL = env_str("GITHUB_BASE_URL", "https://api.github.com")
# A run's lease: the worker renews it every HEARTBEAT seconds; after TTL without renewal the
# reaper hands the run to another worker.
AGENTOPS_LEASE_TTL_S = env_int("AGENTOPS_LEASE_TTL_S", 30, minimum=2)
AGENTOPS_HEARTBEAT_S = env_int("AGENTOPS_HEARTBEAT_S", 5, minimum=1)
if AGENTOPS_HEARTBEAT_S * 2 > AGENTOPS_LEASE_TTL_S:
    raise ImproperlyConfigured("AGENTOPS_LEASE_TTL_S must be at least twice AGENTOPS_HEARTBEAT_S")
# Extra modules that register tools on import (your own tools, or the test suite's).
AGENTOPS_TOOL_MODULES = env_list("AGENTOPS_TOOL_MODULES", [])
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")


def _url_password(url: str | None) -> str | None:
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


# Values that must never be stored, served, sent or logged (agentops.redaction): the
# installation's own keys, passwords and webhook URLs, plus any listed in AGENTOPS_EXTRA_SECRETS.
# (The error projects' webhook secrets live in the database; the redaction reads them from there.)
AGENTOPS_SECRET_VALUES = [
    v
    for v in (
        SECRET_KEY,
        ANTHROPIC_API_KEY,
        GITHUB_TOKEN,
        DATABASES["default"].get("PASSWORD"),
        _url_password(REDIS_URL),
        EMAIL_HOST_PASSWORD,
        AGENTOPS_SLACK_WEBHOOK_URL,
        AGENTOPS_SLACK_BOT_TOKEN,
        AGENTOPS_SLACK_SIGNING_SECRET,
        *env_list("AGENTOPS_EXTRA_SECRETS", []),
        # What MCP servers may reference as ${AGENTOPS_SECRET_...} (agentops.mcp.references).
        *(value for name, value in os.environ.items() if name.startswith("AGENTOPS_SECRET_")),
    )
    if v
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every handler gets the redacting filter (agentops.audit.apps also puts it on handlers that
    # libraries add themselves, and on every record at creation).
    "filters": {
        "redact": {"()": "agentops.redaction.RedactingFilter"},
        # A 403 is logged as one line, without the PermissionDenied traceback Django attaches.
        "forbidden_one_line": {"()": "dashboard.log_filters.ForbiddenWithoutTraceback"},
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "django.request": {"filters": ["forbidden_one_line"]}},
}
