"""Credentials of MCP servers are references, never values: `${AGENTOPS_SECRET_NAME}` in an env or
header value, resolved from the process environment when the server is started.

Only variables named `AGENTOPS_SECRET_*` can be referenced. Whoever may configure an agent must not
be able to send the installation's own secrets (SECRET_KEY, the database password, the model API
key) to a server of their choosing by writing `${DATABASE_URL}` in a header; the operator exposes a
value to MCP configuration on purpose by naming it so (and settings registers every such value with
the redaction, so it never reaches a step, a page or a log).

A literal value that looks like a secret (agentops.redaction's detection), or any literal under a
name that says it holds a credential (Authorization, X-Api-Key, GITHUB_TOKEN, ...), is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agentops.redaction import contains_secret

REFERENCE_PREFIX = "AGENTOPS_SECRET_"
# ${NAME}; NAME as environment variables are conventionally spelled.
REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REFERENCE_START = "${"

# Name parts (split on "_" and "-") that say the value is a credential...
_CREDENTIAL_PARTS = frozenset({"KEY", "APIKEY", "PASS", "PWD", "AUTH", "AUTHORIZATION", "SESSION", "PAT", "DSN", "SIGNATURE", "BEARER", "JWT"})
# ... and words that say so wherever they appear in the name (PGPASSWORD, X-AUTH-TOKEN, MYSECRET).
_CREDENTIAL_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "COOKIE", "APIKEY", "API_KEY", "PRIVATE")


class McpConfigError(ValueError):
    """A server's configuration cannot be turned into a runnable server (a referenced variable is
    not set, a reference is malformed). The message names the variable, never a value."""


def is_credential_name(name: str) -> bool:
    """True when an env variable or header name says its value is a credential."""
    upper = name.upper()
    if any(word in upper for word in _CREDENTIAL_WORDS):
        return True
    return any(part in _CREDENTIAL_PARTS for part in re.split(r"[_\-.]+", upper))


def references_in(value: str) -> list[str]:
    return REFERENCE_RE.findall(value)


def value_errors(name: str, value: str, *, what: str) -> list[str]:
    """Why `value` may not be stored as the env variable / header `name` ([] when it may).

    `what` is "env" or "header", for the messages."""
    errors = []
    refs = references_in(value)
    literal = REFERENCE_RE.sub("", value)
    if _REFERENCE_START in literal:
        errors.append(f"{value[:80]!r} has a malformed reference: write ${{{REFERENCE_PREFIX}NAME}}")
    for ref in refs:
        if not ref.startswith(REFERENCE_PREFIX) or ref == REFERENCE_PREFIX:
            errors.append(
                f"${{{ref}}} cannot be referenced: only environment variables named {REFERENCE_PREFIX}* are handed to MCP servers "
                f"(so the installation's own secrets cannot be sent to one); set {REFERENCE_PREFIX}{ref} instead"
            )
    if literal and contains_secret(literal):
        errors.append(
            f"the value looks like a secret; secrets are never stored: put it in an environment variable {REFERENCE_PREFIX}… and write ${{{REFERENCE_PREFIX}…}}"
        )
    elif not refs and is_credential_name(name) and value:
        errors.append(
            f"{what} {name!r} holds a credential, so its value must be a reference like ${{{REFERENCE_PREFIX}{_suggested(name)}}} (resolved from the environment when the server starts; never stored)"
        )
    if what == "header" and ("\r" in value or "\n" in value):
        errors.append("a header value may not contain a line break")
    return errors


def _suggested(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper()).strip("_") or "VALUE"


def literal_errors(value: str, *, where: str) -> list[str]:
    """For values where no reference is resolved (a command argument, a URL): no secret, no `${`."""
    if _REFERENCE_START in value:
        return [f"{where}: references are resolved only in env and header values; pass a credential through env"]
    if contains_secret(value):
        return [f"{where}: looks like a secret; secrets are never stored: pass it through env as a reference ${{{REFERENCE_PREFIX}…}}"]
    return []


def resolve(value: str, environ: Mapping[str, str]) -> str:
    """The value with every reference replaced by its variable's value; McpConfigError when one is
    unset or not referenceable (fail closed: a server never starts with a credential missing)."""

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if not ref.startswith(REFERENCE_PREFIX):
            raise McpConfigError(f"${{{ref}}} cannot be referenced (only {REFERENCE_PREFIX}* variables are)")
        if ref not in environ or environ[ref] == "":
            raise McpConfigError(f"the environment variable {ref} is not set in the agentops process")
        return environ[ref]

    literal = REFERENCE_RE.sub("", value)
    if _REFERENCE_START in literal:
        raise McpConfigError("a value has a malformed reference")
    return REFERENCE_RE.sub(one, value)
