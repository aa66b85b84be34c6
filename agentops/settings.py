"""All settings of agentops, in one place, read from the environment (see README "Configuration")."""

from __future__ import annotations

from pathlib import Path

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
    "agentops.agents",
    "agentops.runs",
    "agentops.approvals",
    "agentops.guardrails",
    "agentops.audit",
    "agentops.triggers",
    "agentops.forges",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A prefix of its own lets several installations (or test sessions) share one Redis.
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("AGENTOPS_CHANNEL_PREFIX", "agentops")},
        }
    }
else:
    # In-process only: live views in the embedded default catch up from the database by seq.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

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
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

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
# Values that must never reach storage: redacted from every step, artifact and audit payload.
AGENTOPS_SECRET_VALUES = [v for v in (ANTHROPIC_API_KEY, GITHUB_TOKEN, SECRET_KEY) if v]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
