"""One redaction for every write path: which secrets it recognises, how it replaces them, what it
leaves alone, and how fast ordinary text goes through.

Every key below is built at run time from random characters (and split literals), so this file
holds nothing a secret scanner should flag: obviously fake, but of the exact shape.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets as random
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from agentops.redaction import REDACTED, contains_secret, redact, redact_text

ROOT = Path(__file__).resolve().parents[1]
UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits
LOWER_HEX = "0123456789abcdef"


def rnd(alphabet: str, n: int) -> str:
    return "".join(random.choice(alphabet) for _ in range(n))


def aws_secret() -> str:
    # A slash in the middle, as real ones often have, and never all hex.
    return rnd(ALNUM, 18) + "/" + rnd(ALNUM, 10) + "+" + rnd(string.ascii_uppercase, 10)


def pem() -> str:
    body = "\n".join(rnd(ALNUM + "+/", 64) for _ in range(8))
    return "-----BEGIN " + "RSA PRIVATE" + " KEY-----\n" + body + "\n-----END " + "RSA PRIVATE" + " KEY-----\n"


def shapes() -> dict[str, tuple[str, str]]:
    """name -> (text carrying the key, the key itself)."""
    keys = {
        "stripe live secret key": "sk_" + "live_" + rnd(ALNUM, 24),
        "stripe live key of today's length": "sk_" + "live_" + rnd(ALNUM, 99),
        "stripe restricted key": "rk_" + "live_" + rnd(ALNUM, 24),
        "aws access key id": "AK" + "IA" + rnd(UPPER_DIGITS, 16),
        "github token": "gh" + "p_" + rnd(ALNUM, 36),
        "github fine-grained token": "github_" + "pat_" + rnd(ALNUM + "_", 60),
        "gitlab token": "gl" + "pat-" + rnd(ALNUM, 20),
        "slack bot token": "xo" + "xb-" + rnd(string.digits, 11) + "-" + rnd(string.digits, 12) + "-" + rnd(ALNUM, 24).lower(),
        "slack webhook": "https://hooks." + "slack.com/services/T" + rnd(UPPER_DIGITS, 8) + "/B" + rnd(UPPER_DIGITS, 8) + "/" + rnd(ALNUM, 24),
        "sendgrid key": "S" + "G." + rnd(ALNUM, 22) + "." + rnd(ALNUM, 43),
        "twilio key": "S" + "K" + rnd(LOWER_HEX, 32),
        "anthropic key": "sk-" + "ant-api03-" + rnd(ALNUM, 80),
        "openai project key": "sk-" + "proj-" + rnd(ALNUM, 48),
        "google api key": "AI" + "za" + rnd(ALNUM, 35),
        "our own api token": "ao" + "p_" + rnd(ALNUM + "-_", 43),
        "json web token": "ey" + "J" + rnd(ALNUM, 20) + ".ey" + "J" + rnd(ALNUM, 30) + "." + rnd(ALNUM + "-_", 43),
        "telegram bot token": rnd(string.digits, 9) + ":" + rnd(ALNUM, 35),
        "private key (PEM)": pem(),
    }
    cases = {name: (f"config value: {key} (end)", key) for name, key in keys.items()}
    secret = aws_secret()
    cases["aws secret access key in an env file"] = (f"AWS_SECRET_ACCESS_KEY={secret}\nREGION=eu-west-1", secret)
    cases["aws secret access key in the cli's json"] = (json.dumps({"AccessKeyId": "x", "SecretAccessKey": secret}), secret)
    cases["aws secret access key in an ini file"] = (f"[default]\naws_secret_access_key = {secret}\n", secret)
    cases["aws secret access key quoted in code"] = (f'client(aws_secret_access_key="{secret}")', secret)
    password = rnd(ALNUM, 14)
    cases["password in a url"] = (f"DATABASE_URL=postgres://app:{password}@db:5432/app", password)
    bearer = rnd(ALNUM, 40)
    cases["bearer header"] = (f"curl -H 'Authorization: Bearer {bearer}' https://api.example.com", bearer)
    key = pem()
    encoded = base64.b64encode(key.encode()).decode()
    cases["base64-encoded private key"] = (f"PRIVATE_KEY_B64={encoded}", encoded)
    wrapped = base64.encodebytes(key.encode()).decode()
    cases["base64-encoded private key wrapped at 76 columns"] = (f"key: |\n{wrapped}", wrapped.split("\n")[3])
    cases["aws secret access key url-encoded in a query string"] = (
        f"https://x.example/cb?aws_secret_access_key={quote(secret, safe='')}&region=eu",
        quote(secret, safe=""),
    )
    stripe = "sk_" + "live_" + rnd(ALNUM, 24)
    basic = base64.b64encode(f"{stripe}:".encode()).decode()
    cases["stripe key inside a basic-auth header"] = (f"Authorization: Basic {basic}", basic)
    return cases


@pytest.mark.parametrize("name", sorted(shapes()))
def test_it_detects_and_redacts_each_key_shape(name):
    text, key = shapes()[name]
    assert contains_secret(text), name
    redacted = redact_text(text)
    assert key not in redacted and REDACTED in redacted
    # Every line of a multi-line key is gone, not only its first.
    for line in key.splitlines():
        if len(line) >= 16:
            assert line not in redacted, line


def test_it_keeps_the_words_around_a_redacted_key():
    key = "sk_" + "live_" + rnd(ALNUM, 24)
    assert redact_text(f"STRIPE_KEY = '{key}'  # billing") == f"STRIPE_KEY = '{REDACTED}'  # billing"
    password = rnd(ALNUM, 12)
    assert redact_text(f"postgres://app:{password}@db/app") == f"postgres://app:{REDACTED}@db/app"


def split_cases() -> dict[str, tuple[str, str]]:
    aws_id = "AK" + "IA" + rnd(UPPER_DIGITS, 16)
    stripe = "sk_" + "live_" + rnd(ALNUM, 24)
    secret = aws_secret()
    return {
        "python +": (f'key = "{aws_id[:4]}" + "{aws_id[4:]}"', aws_id),
        "javascript single quotes": (f"const key = '{stripe[:8]}' + '{stripe[8:]}';", stripe),
        "adjacent python literals": (f'KEY = ("{aws_id[:4]}"\n       "{aws_id[4:]}")', aws_id),
        "three pieces": (f'k = "{aws_id[:4]}" + "{aws_id[4:10]}" + "{aws_id[10:]}"', aws_id),
        "lines of a diff": (f'+STRIPE = (\n+    "{stripe[:8]}"\n+    "{stripe[8:20]}"\n+    "{stripe[20:]}"\n+)', stripe),
        "join of a list": (f'key = "".join(["{stripe[:10]}", "{stripe[10:]}"])', stripe),
        "zero-width space inside the key": (f"STRIPE={stripe[:12]}\u200b{stripe[12:]}", stripe),
        "aws secret next to its keyword": (f'aws_secret_access_key = "{secret[:20]}" \\\n    "{secret[20:]}"', secret),
    }


@pytest.mark.parametrize("name", sorted(split_cases()))
def test_it_detects_a_key_split_across_a_string_concatenation(name):
    text, key = split_cases()[name]
    assert contains_secret(text), name
    redacted = redact_text(text)
    # No piece long enough to matter survives: the redaction spans from the first piece to the last.
    for size in (8, 10):
        for start in range(0, len(key) - size + 1):
            assert key[start : start + size] not in redacted, (name, redacted)


def test_it_detects_the_installations_own_secrets_in_every_form(settings):
    own = rnd(ALNUM + "-_", 24) + "+/=" + rnd(ALNUM + "-_", 24)
    settings.AGENTOPS_SECRET_VALUES = [own]
    forms = {
        "as is": f"the key is {own}.",
        "split": f'k = "{own[:20]}" + "{own[20:]}"',
        "base64": base64.b64encode(f"user:{own}".encode()).decode(),
        "base64 at another offset": base64.b64encode(f"ab:{own}!".encode()).decode(),
        "urlsafe base64": base64.urlsafe_b64encode(f"x{own}".encode()).decode(),
        "url-encoded": "https://x.example/?k=" + quote(own, safe=""),
        "in json": json.dumps({"k": own}),
        "hex": f"0x{own.encode().hex()}",
        "reversed": own[::-1],
        "upper-cased": own.upper(),
    }
    for name, text in forms.items():
        assert contains_secret(text), name
    assert own not in redact_text(forms["as is"])


def test_settings_list_every_configured_secret_of_the_installation():
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "AGENTOPS_DATA_DIR": "/tmp/agentops-redaction-test",
        "SECRET_KEY": "s" * 8 + rnd(ALNUM, 30),
        "ANTHROPIC_API_KEY": "sk-" + "ant-" + rnd(ALNUM, 40),
        "GITHUB_TOKEN": "gh" + "p_" + rnd(ALNUM, 36),
        "DATABASE_URL": "postgres://app:dbpass" + rnd(ALNUM, 12) + "@127.0.0.1:5432/app",
        "REDIS_URL": "redis://:redispass" + rnd(ALNUM, 12) + "@127.0.0.1:6379/0",
        "AGENTOPS_SLACK_WEBHOOK_URL": "https://hooks.example.com/services/" + rnd(ALNUM, 30),
        "EMAIL_HOST_PASSWORD": "mailpass" + rnd(ALNUM, 12),
        "AGENTOPS_EXTRA_SECRETS": "extra" + rnd(ALNUM, 20),
    }
    code = "import json, django; django.setup(); from django.conf import settings; print(json.dumps(settings.AGENTOPS_SECRET_VALUES))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    values = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [
        env["SECRET_KEY"],
        env["ANTHROPIC_API_KEY"],
        env["GITHUB_TOKEN"],
        env["DATABASE_URL"].split(":")[2].split("@")[0],
        env["REDIS_URL"].split(":")[2].split("@")[0],
        env["AGENTOPS_SLACK_WEBHOOK_URL"],
        env["EMAIL_HOST_PASSWORD"],
        env["AGENTOPS_EXTRA_SECRETS"],
    ]
    assert [v for v in expected if v not in values] == []


def test_it_redacts_the_webhook_secrets_of_error_projects(db):
    from agentops.triggers.models import ErrorProject

    redact_text("warm the cache of stored secrets: " + "x" * 30)
    project = ErrorProject.objects.create(name="shop", slug="shop")
    assert project.webhook_secret not in redact_text(f"signed with {project.webhook_secret}")


@pytest.mark.parametrize(
    "text",
    [
        "The test failed because the pool size is 5.",
        "commit da39a3ee5e6b4b0d3255bfef95601890afd80709\nAuthor: Alice <alice@example.com>",
        "run 3f2b8c1e-9d4a-4f6b-8e2a-1c3d5e7f9a0b finished in 12.5 s",
        "/work/main/agentops/runs/very_long_module_name_for_testing_purposes.py:120: in test_it_refuses",
        "def test_it_refuses_an_expired_approval_with_a_clear_message(make_agent, start_run):",
        'COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")',
        "data:text/plain;base64," + base64.b64encode(b"hello, this is an ordinary sentence of text").decode(),
        "https://github.com/acme/shop/pull/42 and git@github.com:acme/shop.git",
        "sha256:" + "ab" * 32,
        "Pool size is configured via POOL_SIZE (default 25); see settings.py.",
        'url = f"postgres://app:{password}@db/app"  # or ${DB_PASSWORD}, never ***',
    ],
)
def test_it_leaves_ordinary_text_alone(text):
    assert not contains_secret(text)
    assert redact_text(text) == text


def test_the_source_of_this_project_has_no_false_positive():
    # (settings.py is not among them: in DEBUG its SECRET_KEY literal is the configured secret.)
    for path in [
        "agentops/runs/steps.py",
        "agentops/runs/controller.py",
        "agentops/runs/dispatch.py",
        "agentops/runs/conversation.py",
        "agentops/verification.py",
        "dashboard/views.py",
    ]:
        source = (ROOT / path).read_text()
        assert redact_text(source) == source, path


def test_redact_walks_keys_values_and_lists_and_keeps_other_scalars():
    key = "gh" + "p_" + rnd(ALNUM, 36)
    value = {key: [1, 2.5, None, True, {"nested": f"x {key}"}], "n": 3}
    assert json.dumps(redact(value)).count(key) == 0
    assert redact(value)[REDACTED][:4] == [1, 2.5, None, True]
    assert redact(value)["n"] == 3


def test_a_structure_nested_beyond_reason_is_redacted_whole_rather_than_crashing():
    deep: list = []
    node = deep
    for _ in range(2000):
        node.append([])
        node = node[0]
    assert REDACTED in json.dumps(redact(deep))


def test_redaction_is_idempotent():
    text = shapes()["aws secret access key in an env file"][0] + " " + split_cases()["python +"][0]
    once = redact_text(text)
    assert redact_text(once) == once


def test_log_records_are_redacted_in_message_arguments_and_traceback(caplog):
    key = "sk_" + "live_" + rnd(ALNUM, 24)
    log = logging.getLogger("agentops.test_redaction")
    with caplog.at_level(logging.INFO, logger="agentops.test_redaction"):
        log.info("calling with key %s", key)
        log.warning(f"inline {key}")
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            log.exception("it failed")
    text = "\n".join(caplog.text.splitlines()) + "".join(r.getMessage() for r in caplog.records)
    assert caplog.records and key not in text
    assert key not in "".join(r.exc_text or "" for r in caplog.records)


def test_every_log_handler_writes_redacted_records_even_one_a_library_adds_later(settings):
    import io

    import django_q.conf  # noqa: F401 - django-q2 attaches its own handler on import

    secret = settings.SECRET_KEY
    for name in ("", "django", "django.request", "django-q", "agentops"):
        logger = logging.getLogger(name)
        stream = io.StringIO()
        late = logging.StreamHandler(stream)  # added after start-up, with no filter of its own
        logger.addHandler(late)
        try:
            logger.error("leaking %s in %s", secret, name or "root")
        finally:
            logger.removeHandler(late)
        assert secret not in stream.getvalue() and "[REDACTED]" in stream.getvalue(), name


def test_ordinary_text_costs_microseconds():
    timings = []
    for i in range(300):
        # Distinct texts every round: the cache of short texts must not be what is measured.
        samples = [f"turn {i} of the run", f"The test failed because the pool size is {i}.", f'{{"n": {i}, "text": "ok"}}']
        started = time.perf_counter()
        for sample in samples:
            redact_text(sample)
        timings.append((time.perf_counter() - started) / len(samples))
    # A few microseconds on an idle machine; generous for a loaded CI runner.
    assert statistics.median(timings) < 50e-6
