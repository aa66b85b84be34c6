"""Secrets never reach storage, a page, a notification or a log: the one redaction every write path uses.

What counts as a secret:
- the installation's own configured values (settings.AGENTOPS_SECRET_VALUES, plus the webhook secrets
  of error projects, read from the database), also reversed and in their URL-, HTML-, JSON-, hex-
  and base64-encoded forms;
- the key shapes of detect-secrets' regex plugins (AWS, Stripe, Slack, GitHub, GitLab, private keys,
  JWT, Basic auth in URLs, Twilio, SendGrid, ...), a few shapes it lacks (Anthropic, OpenAI project
  keys, Stripe test/webhook keys, Google API keys, our own API tokens, bearer headers, whole PEM
  blocks, AWS secret access keys beside a keyword without quotes);
- any of the above hidden one level down: inside a base64 blob (a base64-encoded PEM key, a Basic
  auth header), percent-encoded in a URL, or split across a string concatenation (`"AKIA" + "..."`,
  adjacent literals, literals continued over the lines of a diff, a joined list).

Speed: every shape is guarded by what it cannot match without (its literal prefix, a keyword, a run
of token characters of some length, found with bytes.translate + bytes.find rather than a regex), so
ordinary text costs a few microseconds; short texts (keys, names, statuses) are cached per set of
secret values; keyword-led shapes only search the lines that hold a long enough run.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import html
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus, unquote_plus

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction

REDACTED = "[REDACTED]"

# --- the key shapes ---------------------------------------------------------------------------

# detect-secrets' detectors whose capture group 1 is the secret itself (the rest of the match is
# the keyword or URL around it, worth keeping readable). For every other detector the whole match
# is the secret.
_GROUP_IS_SECRET = (AWSKeyDetector, BasicAuthDetector, CloudantDetector, IbmCloudIamDetector, IbmCosHmacDetector, SoftlayerDetector, NpmDetector)
_DETECTORS = (
    AWSKeyDetector,
    AzureStorageKeyDetector,
    BasicAuthDetector,
    CloudantDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    IbmCloudIamDetector,
    IbmCosHmacDetector,
    JwtTokenDetector,
    MailchimpDetector,
    NpmDetector,
    OpenAIDetector,
    PrivateKeyDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SoftlayerDetector,
    SquareOAuthDetector,
    StripeDetector,
    TelegramBotTokenDetector,
    TwilioKeyDetector,
)
# Artifactory's password shape (`AP` + a hex digit + 8 characters) matches ordinary identifiers
# such as "APDUResponse"; its API-key shape (`AKC...`) is kept.
_SKIPPED_PATTERNS = {ArtifactoryDetector.denylist[1].pattern}

# Shapes detect-secrets lacks, (pattern, group that is the secret; 0 = the whole match). Each
# starts with its literal where it can: the regex engine then skips ahead instead of trying every
# position.
_EXTRA: list[tuple[re.Pattern[str], int]] = [
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{10,}"), 0),
    (re.compile(r"sk-(?<![A-Za-z0-9]sk-)(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}"), 0),
    (re.compile(r"sk-(?<![A-Za-z0-9]sk-)[A-Za-z0-9]{32,}"), 0),
    (re.compile(r"k_(?:live|test)_(?<=[rs]k_live_|[rs]k_test_)[0-9A-Za-z]{16,}"), 0),
    (re.compile(r"whsec_[A-Za-z0-9+/=]{24,}"), 0),
    (re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), 0),
    (re.compile(r"github_pat_[A-Za-z0-9_]{30,}"), 0),
    (re.compile(r"xox[abeprs]-[A-Za-z0-9\-]{10,}"), 0),
    (re.compile(r"AIza[0-9A-Za-z_\-]{35}"), 0),
    # detect-secrets' JWT shape stops before the signature; the signature is the secret part.
    (re.compile(r"eyJ[A-Za-z0-9_\-=]+\.[A-Za-z0-9_\-=]+\.[A-Za-z0-9_\-+/=]*"), 0),
    # Our own API tokens (dashboard.services.TOKEN_PREFIX): only their hash is stored, so the shape
    # is how a leaked one is recognised.
    (re.compile(r"aop_(?<![A-Za-z0-9]aop_)[A-Za-z0-9_\-]{20,}"), 0),
    (re.compile(r"(?i)authorization\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+([A-Za-z0-9._~+/\-]{12,}=*)"), 1),
    (re.compile(r"(?i)bearer\s+([A-Za-z0-9._~+/\-]{24,}=*)"), 1),
    # A whole PEM block (detect-secrets flags the header line; the body is what must go), or a
    # header with no footer (a truncated key) up to where the base64 body ends.
    (
        re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-]*)"),
        0,
    ),
    (re.compile(r"PuTTY-User-Key-File-\d[\s\S]*?(?:Private-MAC:\s*\S+|\Z)"), 0),
    # AWS secret access key (40 base64 characters) after an aws/secret keyword, quoted or not:
    # `AWS_SECRET_ACCESS_KEY=...`, `aws_secret_access_key = ...`, `"SecretAccessKey": "..."`.
    # All-hex values of that length are SHA-1 digests, not keys.
    (
        re.compile(r"(?i)(?:aws|secret)[\w\-. ]{0,30}?[\s\"':=>]{1,6}(?![0-9a-f]{40}(?![A-Za-z0-9/+]))([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        1,
    ),
]


# Shapes that can match text without a run of 20 token characters: they are tried on every text
# that has their literal; every other shape only on texts with such a run (most texts have none).
_SHORT_DETECTORS = (
    BasicAuthDetector,
    NpmDetector,
    PrivateKeyDetector,
    SlackDetector,
    JwtTokenDetector,
    ArtifactoryDetector,
    GitLabTokenDetector,
    GitHubTokenDetector,
    DiscordBotTokenDetector,
    TelegramBotTokenDetector,
)
_SHORT_EXTRAS = (
    "sk-ant-",
    "(?:proj",
    "k_(?:live",
    "whsec_",
    "gh[",
    "github_pat_",
    "xox[",
    "AIza",
    "eyJ",
    "aop_",
    "authorization",
    "bearer",
    "-----BEGIN",
    "PuTTY",
)
# The other shapes all contain 20 alphanumeric (base64) characters in a row, or 32 token characters.
_LONG_RUN = 20
_LONG_TOKEN_RUN = 32


class _Guard(NamedTuple):
    """What a text must have before a shape is worth a regex pass (all given parts must hold)."""

    literals: tuple[str, ...] = ()  # any of these, as written
    lowered: tuple[str, ...] = ()  # any of these, in the lower-cased text
    run: int = 0  # a run of token characters at least this long


_KEYWORDS = ("key", "pwd", "pw", "pass", "token", "secret")
# Guards for the shapes without a leading literal (case-insensitive or keyword-led ones), keyed by
# pattern text; a shape without a guard here runs on every text that passes the prefilter.
_GUARDS: dict[str, _Guard] = {}
for _detector, _guard in (
    (CloudantDetector, _Guard(lowered=("cl",), run=24)),
    (IbmCloudIamDetector, _Guard(lowered=_KEYWORDS, run=40)),
    (IbmCosHmacDetector, _Guard(lowered=("secret",), run=32)),
    (SoftlayerDetector, _Guard(lowered=("sl", "softlayer"), run=64)),
    (SlackDetector, _Guard(lowered=("xox", "hooks.slack"))),
    (GitLabTokenDetector, _Guard(literals=("gl", "GR1348941"), run=20)),
    (GitHubTokenDetector, _Guard(literals=("gh",), run=36)),
    (MailchimpDetector, _Guard(literals=("-us",), run=32)),
    (NpmDetector, _Guard(literals=("_authToken",))),
    (StripeDetector, _Guard(literals=("k_live_",))),
    (TelegramBotTokenDetector, _Guard(literals=(":",), run=35)),
    (DiscordBotTokenDetector, _Guard(literals=(".",), run=23)),
    (ArtifactoryDetector, _Guard(literals=("AKC",))),
    (AWSKeyDetector, _Guard(run=16)),
    (JwtTokenDetector, _Guard(literals=("eyJ",))),
    (TwilioKeyDetector, _Guard(run=34)),
):
    for _pattern in _detector.denylist:
        _GUARDS[_pattern.pattern] = _guard
for _pattern, _ in _EXTRA:
    if _pattern.flags & re.IGNORECASE:
        _GUARDS[_pattern.pattern] = _Guard(lowered=("authorization",) if "authorization" in _pattern.pattern else ("bearer",))
_GUARDS[_EXTRA[-1][0].pattern] = _Guard(lowered=("aws", "secret"), run=40)
# detect-secrets' second AWS shape is keyword-led too.
_GUARDS[AWSKeyDetector.denylist[1].pattern] = _Guard(lowered=("aws",), run=40)


class _Shape(NamedTuple):
    pattern: re.Pattern[str]
    group: int
    literals: tuple[str, ...]
    lowered: tuple[str, ...]
    run: int


def _leading_literal(pattern: re.Pattern[str]) -> str:
    """The text every match of pattern starts with ("" when there is none worth checking).

    `literal in text` is a memchr-speed search, several times faster than the regex engine's own
    scan for the same prefix: checked first, it makes the shapes that cannot match nearly free."""
    source = pattern.pattern
    if re.search(r"(?<!\\)\|", source.split("(", 1)[0]) or source.startswith(("(", "[", "\\d", "\\w", "\\s", ".")):
        return ""
    literal = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\" and index + 1 < len(source) and not source[index + 1].isalnum():
            literal.append(source[index + 1])
            index += 2
            continue
        if char.isalnum() or char in "-_=:/ ,":
            literal.append(char)
            index += 1
            continue
        break
    if index < len(source) and source[index] in "?*{" and literal:
        literal.pop()  # the last character is optional or repeated
    text = "".join(literal)
    return text.lower() if pattern.flags & re.IGNORECASE else text


_SHORT_FLAGS: list[bool] = []


def _shape(pattern: re.Pattern[str], group: int, *, short: bool) -> _Shape:
    guard = _GUARDS.get(pattern.pattern, _Guard())
    literals, lowered = guard.literals, guard.lowered
    run = guard.run
    prefix = _leading_literal(pattern)
    if len(prefix) >= 2:
        if pattern.flags & re.IGNORECASE:
            lowered = lowered or (prefix,)
        else:
            literals = literals or (prefix,)
    _SHORT_FLAGS.append(short)
    return _Shape(pattern, group, literals, lowered, run)


def _shapes() -> list[_Shape]:
    shapes: list[_Shape] = []
    for detector in _DETECTORS:
        for pattern in detector.denylist:
            if pattern.pattern in _SKIPPED_PATTERNS:
                continue
            group = 1 if detector in _GROUP_IS_SECRET and pattern.groups else 0
            shapes.append(_shape(pattern, group, short=detector in _SHORT_DETECTORS))
    for pattern, group in _EXTRA:
        shapes.append(_shape(pattern, group, short=any(marker in pattern.pattern for marker in _SHORT_EXTRAS)))
    return shapes


_SHAPES = _shapes()


def _index_shapes(shapes: list[_Shape]) -> tuple[list[tuple[str, bool, list[int]]], list[int]]:
    """Shapes by the literals that guard them, so one `in` per distinct literal skips them all."""
    by_literal: dict[tuple[str, bool], list[int]] = {}
    unguarded = []
    for index, shape in enumerate(shapes):
        keys = [(literal, False) for literal in shape.literals] + [(literal, True) for literal in shape.lowered]
        if not keys:
            unguarded.append(index)
        for key in keys:
            by_literal.setdefault(key, []).append(index)
    return [(literal, lowered, indexes) for (literal, lowered), indexes in by_literal.items()], unguarded


_SHAPES_BY_LITERAL, _UNGUARDED_SHAPES = _index_shapes(_SHAPES)
_SHORT_SHAPES = [shape for shape, short in zip(_SHAPES, _SHORT_FLAGS, strict=True) if short]
_SHORT_SHAPES_BY_LITERAL, _UNGUARDED_SHORT_SHAPES = _index_shapes(_SHORT_SHAPES)
# For a short text one search for all the short shapes' literals beats a loop of `in` checks.
_SHORT_LITERALS = re.compile(
    "|".join(
        f"(?i:{re.escape(literal)})" if lowered else re.escape(literal)
        for literal, lowered, _ in sorted(_SHORT_SHAPES_BY_LITERAL, key=lambda item: -len(item[0]))
    )
)
_SHORT_TEXT = 256

# Token characters (of keys and base64) map to "a", everything else to " ": runs of token
# characters are then found with bytes.find, about ten times faster than a character-class regex.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/")
_TOKEN_MAP = bytes.maketrans(bytes(range(256)), bytes(97 if chr(c) in _TOKEN_CHARS else 32 for c in range(256)))
_ALNUM_MAP = bytes.maketrans(bytes(range(256)), bytes(97 if chr(c) in _TOKEN_CHARS - {"_", "-"} else 32 for c in range(256)))
_RUNS = {n: b"a" * n for n in (16, 20, 23, 24, 32, 35, 36, 40, 64)}
# Words that make a joint of a string concatenation worth a look (checked as written).
_TRIGGERS = ("xox", "XOX", "PRIVATE KEY", "PuTTY", "earer", "EARER", "uthorization", "UTHORIZATION", "_authToken")
# Characters a whole-match redaction strips from its ends (detect-secrets' delimiters) and the
# ones it extends over (a shape that matched a prefix of a longer token takes the whole token).
_DELIMITERS = " \t\r\n=:\"'"
_EXTEND_CHARS = _TOKEN_CHARS | {"="}

# A string seam: a closing quote, operators or whitespace (also the `+` of diff lines), an
# optional literal prefix, an opening quote. Removing seams joins `"AKIA" + "IOSF..."`.
# Invisible characters (zero-width spaces, soft hyphens) inside a key are seams too.
_SEAM = re.compile(r"[\"'`][\s+.&|,~\\]*[rRbBuUfF]{0,2}[\"'`]|[\u200b-\u200d\u2060\ufeff\u00ad]+")
_SEAM_GATE = re.compile(r"[\"'`\u200b-\u200d\u2060\ufeff\u00ad]")
# Text scanned either side of a joint (keywords and prefixes before a key, its tail after).
_SEAM_CONTEXT = 48
# A base64 blob long enough to hide a key, possibly wrapped over lines (and prefixed like a diff).
_B64_MIN = 24
_B64_BLOB = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}(?:[ \t]*\r?\n[+ \t]*[A-Za-z0-9+/_\-]{8,}={0,2})*")
# What stands for a password in a template or the docs, not a password: `{password}`, `${DB_PASS}`,
# `<token>`, `***`, `%(password)s`.
_PLACEHOLDER = re.compile(r"\{[^{}]*\}|\$\{?\w+\}?|<[^<>]*>|\*+|[xX]+|\.\.\.|%s|%\(\w+\)s")
# A run of URL characters with at least one percent-escape in it (keyword and value included).
_PERCENT_TOKEN = re.compile(r"[A-Za-z0-9%+/_\-=.~]*%[0-9A-Fa-f]{2}[A-Za-z0-9%+/_\-=.~]*")
_MAX_DEPTH = 2  # base64 inside a concatenation inside base64 is as deep as anyone goes by accident
_MIN_SECRET_LENGTH = 8


# --- the installation's own secrets ------------------------------------------------------------


def _variants(value: str) -> set[str]:
    """The forms a value takes reversed, in URLs, HTML, JSON, hex and base64 (at each of the three byte offsets
    it can start at inside a longer base64 text: the part of the encoding that does not depend
    on its neighbours)."""
    raw = value.encode()
    forms = {
        value,
        value.lower(),
        value.upper(),
        value[::-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        html.escape(value),
        json.dumps(value)[1:-1],
        raw.hex(),
        raw.hex().upper(),
    }
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        head = 4 if offset else 0  # the first group mixes in the neighbour's bytes
        tail = len(encoded) - (len(encoded) % 4 or 4) if (offset + len(raw)) % 3 else len(encoded)
        stable = encoded[head:tail]
        if len(stable) >= _MIN_SECRET_LENGTH:
            forms |= {stable, stable.replace("+", "-").replace("/", "_")}
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


@functools.lru_cache(maxsize=8)
def _usable_secrets(values: tuple[str, ...]) -> tuple[str, ...]:
    # Short values would redact ordinary words; such a "secret" is a configuration mistake anyway.
    usable = set()
    for value in values:
        if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
            usable |= _variants(value)
    return tuple(sorted(usable, key=len, reverse=True))


class _StoredSecrets:
    """Secrets that live in the database (error projects' webhook keys), re-read every TTL seconds.

    Read through a savepoint so that a failure (no table yet during migrate, an aborted
    transaction, an async context) never disturbs the caller: the last values known are kept."""

    TTL_S = 30.0

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()
        self.expires = 0.0
        self.lock = threading.Lock()

    def get(self, *, refresh: bool = True) -> tuple[str, ...]:
        if refresh and time.monotonic() >= self.expires and self.lock.acquire(blocking=False):
            try:
                # Set first: a query that logs (and so redacts) must not recurse into another read.
                self.expires = time.monotonic() + self.TTL_S
                self.values = self._read()
            except Exception:  # noqa: BLE001 - stale values beat a failed write path
                pass
            finally:
                self.lock.release()
        return self.values

    def forget(self) -> None:
        self.expires = 0.0

    @staticmethod
    def _read() -> tuple[str, ...]:
        if not apps.ready:
            return ()
        rows = apps.get_model("triggers", "ErrorProject").objects.values_list("webhook_secret", flat=True)[:10_000]
        if connection.in_atomic_block:
            # A savepoint: should the read fail, the caller's transaction is left as it was.
            with transaction.atomic():
                return tuple(rows)
        return tuple(rows)


_stored = _StoredSecrets()


def forget_cached_secrets() -> None:
    """Re-read the database's secrets on the next redaction (call after creating or rotating one)."""
    _stored.forget()


def _secret_values(*, refresh: bool = True) -> tuple[str, ...]:
    configured = getattr(settings, "AGENTOPS_SECRET_VALUES", None) or ()
    return _usable_secrets(tuple(configured) + _stored.get(refresh=refresh))


# --- finding and replacing ---------------------------------------------------------------------


class _Text:
    """A text and what the guards ask about it, each computed once and only when asked."""

    __slots__ = ("text", "_mapped", "_lowered", "_runs", "_long", "_windows")

    def __init__(self, text: str) -> None:
        self.text = text
        self._mapped: bytes | None = None
        self._lowered: str | None = None
        self._runs: dict[int, bool] = {}
        self._long: bool | None = None
        self._windows: dict[int, list[tuple[int, int]]] = {}

    @property
    def mapped(self) -> bytes:
        if self._mapped is None:
            # "replace" keeps one byte per character, so indexes match the text's.
            self._mapped = self.text.encode("ascii", "replace").translate(_TOKEN_MAP)
        return self._mapped

    def has_run(self, length: int) -> bool:
        if length not in self._runs:
            self._runs[length] = _RUNS.get(length, b"a" * length) in self.mapped
        return self._runs[length]

    def run_windows(self, length: int) -> list[tuple[int, int]]:
        """The lines holding a token run of at least length characters, each with the line before
        it (a keyword on one line, its value on the next), merged."""
        if length not in self._windows:
            text, mapped, run = self.text, self.mapped, _RUNS.get(length, b"a" * length)
            windows: list[tuple[int, int]] = []
            at = mapped.find(run)
            while at != -1:
                line_start = text.rfind("\n", 0, at) + 1
                start = text.rfind("\n", 0, max(0, line_start - 1)) + 1 if line_start else 0
                end = text.find("\n", at)
                end = len(text) if end == -1 else end
                if windows and start <= windows[-1][1]:
                    windows[-1] = (windows[-1][0], end)
                else:
                    windows.append((start, end))
                at = mapped.find(run, end)
            self._windows[length] = windows
        return self._windows[length]

    def has_long_run(self) -> bool:
        """Whether the shapes outside the short list can match at all."""
        if self._long is None:
            self._long = self.has_run(_LONG_TOKEN_RUN) or (
                self.has_run(_LONG_RUN) and _RUNS[_LONG_RUN] in self.text.encode("ascii", "replace").translate(_ALNUM_MAP)
            )
        return self._long

    @property
    def lowered(self) -> str:
        if self._lowered is None:
            self._lowered = self.text.lower()
        return self._lowered


def _whole_match_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _DELIMITERS:
        start += 1
    while end > start and text[end - 1] in _DELIMITERS:
        end -= 1
    while end < len(text) and text[end] in _EXTEND_CHARS:
        end += 1
    return start, end


@functools.lru_cache(maxsize=8)
def _values_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(map(re.escape, values))) if values else None


def _value_spans(text: str, values: tuple[str, ...]) -> list[tuple[int, int]]:
    if len(text) <= _SHORT_TEXT:
        # One search for all the values (longest first) beats a loop of finds on a short text.
        pattern = _values_pattern(values)
        return [match.span() for match in pattern.finditer(text)] if pattern else []
    spans = []
    for value in values:
        at = text.find(value)
        while at != -1:
            spans.append((at, at + len(value)))
            at = text.find(value, at + len(value))
    return spans


def _shape_spans(scan: _Text) -> list[tuple[int, int]]:
    text = scan.text
    if scan.has_long_run():
        shapes, by_literal, unguarded = _SHAPES, _SHAPES_BY_LITERAL, _UNGUARDED_SHAPES
    else:
        shapes, by_literal, unguarded = _SHORT_SHAPES, _SHORT_SHAPES_BY_LITERAL, _UNGUARDED_SHORT_SHAPES
        if not unguarded and len(text) <= _SHORT_TEXT and not _SHORT_LITERALS.search(text):
            return []
    candidates = set(unguarded)
    for literal, in_lowered, indexes in by_literal:
        if literal in (scan.lowered if in_lowered else text):
            candidates.update(indexes)
    spans = []
    for index in sorted(candidates):
        pattern, group, literals, lowered, run = shapes[index]
        # A shape guarded both ways needs both; the loop above found one of them.
        if literals and lowered and not (any(x in text for x in literals) and any(x in scan.lowered for x in lowered)):
            continue
        if run and not scan.has_run(run):
            continue
        matches: Iterator[re.Match[str]]
        if run >= _LONG_RUN and len(text) > _SHORT_TEXT:
            # One-line shapes built around a long run: only the lines that hold one are searched.
            matches = (match for start, end in scan.run_windows(run) for match in pattern.finditer(text, start, end))
        else:
            matches = pattern.finditer(text)
        for match in matches:
            if group and match.group(group):
                if not _PLACEHOLDER.fullmatch(match.group(group)):
                    spans.append(match.span(group))
            else:
                start, end = _whole_match_span(text, *match.span())
                if end > start:
                    spans.append((start, end))
    return spans


def _decoded_blobs(blob: str) -> Iterable[str]:
    lines = blob.split("\n")
    candidates = ["".join(line.strip() for line in lines)]
    if len(lines) > 1 and all(line.lstrip(" \t").startswith("+") for line in lines[1:]):
        # Lines of a diff: the `+` is the diff's, not base64's.
        candidates.append("".join(line.strip().removeprefix("+") for line in lines))
    for candidate in candidates:
        candidate = candidate.rstrip("=")
        if len(candidate) % 4 == 1:  # one stray character past the blob's end: no base64 is that long
            candidate = candidate[:-1]
        padded = candidate + "=" * (-len(candidate) % 4)
        urlsafe = "-" in candidate or "_" in candidate
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/") if urlsafe else padded, validate=True)
        except (binascii.Error, ValueError):
            continue
        yield raw.decode("latin-1")


def _blob_spans(scan: _Text, values: tuple[str, ...], depth: int) -> list[tuple[int, int]]:
    spans = []
    mapped, text = scan.mapped, scan.text
    run = _RUNS[_B64_MIN]
    at = mapped.find(run)
    while at != -1:
        match = _B64_BLOB.match(text, at)
        end = match.end() if match else at + _B64_MIN
        if match and any(_find_spans(decoded, values, depth + 1) for decoded in _decoded_blobs(match.group())):
            spans.append(match.span())
        at = mapped.find(run, max(end, at + 1))
    return spans


def _seam_spans(text: str, values: tuple[str, ...], depth: int) -> list[tuple[int, int]]:
    """Join the literals (remove every seam), scan the joined text around the joints where the
    join made something worth a look (a token run of 20 or more across it, a trigger word, a
    configured value), and map what was found back onto the original (from the first character
    of the first piece to the last of the last, seams included)."""
    pieces: list[str] = []
    joined_starts: list[int] = []
    original_starts: list[int] = []
    joints: list[int] = []
    position = joined_length = 0
    for seam in _SEAM.finditer(text):
        start, end = seam.span()
        if start > position:
            joined_starts.append(joined_length)
            original_starts.append(position)
            pieces.append(text[position:start])
            joined_length += start - position
        joints.append(joined_length)
        position = end
    if not joints:
        return []
    joined_starts.append(joined_length)
    original_starts.append(position)
    pieces.append(text[position:])
    joined = "".join(pieces)
    size = len(joined)
    if "PRIVATE KEY" in joined or "PuTTY" in joined:
        # A key whose lines are separate literals: its body is only recognisable from its header.
        segments = [(0, size)]
    else:
        mapped = joined.encode("ascii", "replace").translate(_TOKEN_MAP)
        segments = []
        # A trigger word (a key header, a bearer, credentials in a URL) near a joint.
        for trigger in _TRIGGERS + ("://",):
            at = joined.find(trigger)
            while at != -1:
                nearest = bisect.bisect_left(joints, at - _SEAM_CONTEXT)
                near = nearest < len(joints) and joints[nearest] <= at + len(trigger) + _SEAM_CONTEXT
                if near and (trigger != "://" or "@" in joined[at : at + 2 * _SEAM_CONTEXT]):
                    segments.append((at - 2 * _SEAM_CONTEXT, at + 2 * _SEAM_CONTEXT))
                at = joined.find(trigger, at + 1)
        # A configured value the join put together: one search of the joined text, then keep the
        # hits that cross a joint.
        for start, end in _value_spans(joined, values):
            first_joint_after = bisect.bisect_right(joints, start)
            if first_joint_after < len(joints) and joints[first_joint_after] < end:
                segments.append((start, end))
        for joint in joints:
            if 0 < joint < size and mapped[joint - 1] == mapped[joint] == 97:
                left = mapped.rfind(b" ", 0, joint) + 1
                right = mapped.find(b" ", joint)
                right = size if right == -1 else right
                if right - left >= _LONG_RUN:
                    segments.append((left - _SEAM_CONTEXT, right + _SEAM_CONTEXT))

    if not segments:
        return []

    def to_original(index: int) -> int:
        at = bisect.bisect_right(joined_starts, index) - 1
        return original_starts[at] + index - joined_starts[at]

    merged: list[list[int]] = []
    for start, end in sorted(segments):
        start, end = max(0, start), min(size, end)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    spans: list[tuple[int, int]] = []
    for window_start, window_end in merged:
        for start, end in _find_spans(joined[window_start:window_end], values, depth + 1, seams=False):
            if end > start:
                spans.append((to_original(window_start + start), to_original(window_start + end - 1) + 1))
    return spans


def _percent_spans(text: str, values: tuple[str, ...], depth: int) -> list[tuple[int, int]]:
    # A key in a URL or a form body: `aws_secret_access_key=abc%2Fdef...`.
    spans = []
    for match in _PERCENT_TOKEN.finditer(text):
        if _find_spans(unquote_plus(match.group()), values, depth + 1):
            spans.append(match.span())
    return spans


def _find_spans(text: str, values: tuple[str, ...], depth: int = 0, *, seams: bool = True) -> list[tuple[int, int]]:
    spans = _value_spans(text, values)
    if len(text) < _MIN_SECRET_LENGTH:
        return spans
    scan = _Text(text)
    spans += _shape_spans(scan)
    if depth < _MAX_DEPTH:
        if scan.has_run(_B64_MIN):
            spans += _blob_spans(scan, values, depth)
        if "%" in text:
            spans += _percent_spans(text, values, depth)
        if seams and _SEAM_GATE.search(text):
            spans += _seam_spans(text, values, depth)
    return spans


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    position = 0
    for start, end in merged:
        out.append(text[position:start])
        out.append(REDACTED)
        position = end
    out.append(text[position:])
    return "".join(out)


# Short texts recur all the time (payload keys, tool names, statuses): their redaction is kept,
# per set of secret values (a new set starts a new cache, so a newly configured secret is never
# missed by a stale entry).
_CACHE_TEXT_MAX = 256
_CACHE_ITEMS_MAX = 20_000
_cache: tuple[tuple[str, ...], dict[str, str]] = ((), {})


def _redact_text(text: str, values: tuple[str, ...]) -> str:
    global _cache
    if len(text) < _MIN_SECRET_LENGTH:
        return text
    cache = None
    if len(text) <= _CACHE_TEXT_MAX:
        cached_values, cache = _cache
        if cached_values is not values:
            cache = {}
            _cache = (values, cache)
        hit = cache.get(text)
        if hit is not None:
            return hit
    spans = _find_spans(text, values)
    redacted = _replace(text, spans) if spans else text
    if cache is not None:
        if len(cache) >= _CACHE_ITEMS_MAX:
            cache.clear()
        cache[text] = redacted
    return redacted


def redact_text(text: str, *, refresh: bool = True) -> str:
    if len(text) < _MIN_SECRET_LENGTH:
        return text
    return _redact_text(text, _secret_values(refresh=refresh))


def contains_secret(text: str) -> bool:
    """True when text carries a configured secret or a key shape (also base64-encoded or split)."""
    return len(text) >= _MIN_SECRET_LENGTH and bool(_find_spans(text, _secret_values()))


class Redacted:
    """Marks a value as already redacted, so a redacting model field does not scan it twice."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_MAX_NESTING = 200


def redact(value: Any) -> Any:
    """Return a copy of value (str / list / dict / scalars) with secrets replaced, keys included."""
    if isinstance(value, Redacted):
        return value.value
    return _redact(value, _secret_values(), 0)


def _redact(value: Any, values: tuple[str, ...], depth: int) -> Any:
    if isinstance(value, str):
        return _redact_text(value, values)
    if isinstance(value, (dict, list, tuple)) and depth >= _MAX_NESTING:
        # Deeper than any real payload: fail closed rather than recurse without end.
        return REDACTED
    if isinstance(value, dict):
        return {(_redact_text(k, values) if isinstance(k, str) else k): _redact(v, values, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, values, depth + 1) for v in value]
    if isinstance(value, Redacted):
        return value.value
    return value


# --- logs --------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments and traceback before any handler formats it.

    The message is merged with its arguments first (a secret may be an argument, or be split
    between the template and an argument), so a redacted record has no arguments left."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_agentops_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it stands
            message = str(record.msg)
        # No database read from inside logging: the database logs its own queries.
        redacted = redact_text(message, refresh=False)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, refresh=False)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, refresh=False)
        record._agentops_redacted = True
        return True


_filter = RedactingFilter()


def install_log_redaction() -> None:
    """Put the redacting filter on every handler configured so far, and on every record made from
    now on (handlers added later, e.g. by a library at import, are covered by the record factory)."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if _filter not in handler.filters and not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(_filter)
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_agentops_redacting", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _filter.filter(record)
        return record

    redacting_factory._agentops_redacting = True  # type: ignore[attr-defined]  # a marker on the function (read back by getattr above)
    logging.setLogRecordFactory(redacting_factory)
