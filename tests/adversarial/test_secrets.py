"""Secrets the model puts everywhere it can: tool arguments, tool results, its final text, a loop the
detector quotes, the reason of an approval. None may be stored or served in clear, neither the
installation's own (SECRET_KEY, ANTHROPIC_API_KEY) nor the common key shapes."""

from __future__ import annotations

import base64
import secrets as random_secrets
import string

import pytest

from tests.adversarial.checks import assert_no_secret_served, assert_no_secret_stored, assert_not_crashed
from tests.fakes.anthropic_server import message, tool_use


def _random(alphabet: str, n: int) -> str:
    return "".join(random_secrets.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits


def key_shapes() -> dict[str, str]:
    """Fresh, random keys of well-known shapes (built at run time: no real-looking key in the source)."""
    pem = "-----BEGIN " + "RSA PRIVATE KEY-----\n" + "\n".join(_random(ALNUM + "+/", 64) for _ in range(6)) + "\n-----END " + "RSA PRIVATE KEY-----\n"
    return {
        "stripe-live": "sk_" + "live_" + _random(ALNUM, 32),
        "aws-secret": _random(ALNUM + "+/", 40),
        "github-token": "gh" + "p_" + _random(ALNUM, 36),
        "base64-private-key": base64.b64encode(pem.encode()).decode(),
    }


def secret_sentence(shapes: dict[str, str]) -> str:
    return f"stripe={shapes['stripe-live']} aws_secret_access_key={shapes['aws-secret']} token={shapes['github-token']} key_b64={shapes['base64-private-key']}"


@pytest.fixture
def all_secrets(installation_secrets):
    shapes = key_shapes()
    return shapes, [*installation_secrets, *shapes.values()]


def place(where: str, text: str, effects) -> tuple[list[dict], dict, dict]:
    """(turns, grants, policy) that make the model put ``text`` in ``where``."""
    grants = {"test_echo": {}, "test_append": {"path": str(effects)}, "test_fail": {}, "test_pay": {"path": str(effects)}}
    if where == "tool-arguments":
        return [message("Echo.", [tool_use("test_echo", {"text": text})])], grants, {}
    if where == "ledger":  # a side-effecting call: arguments and result go to the idempotency ledger
        return [message("Write.", [tool_use("test_append", {"text": text})])], grants, {}
    if where == "final-text":
        return [message(f"Done. For the record: {text}")], grants, {}
    if where == "loop-reason":
        return [message("Retry.", [tool_use("test_fail", {"what": text})]) for _ in range(5)], grants, {"max_iterations": 10}
    if where == "approval-reason":
        return [message(f"I must pay now, authorised by {text}", [tool_use("test_pay", {"text": text})])], grants, {}
    if where == "report":  # trust phase 1's result: a report a person reads on the run page
        return (
            [message("Reporting.", [tool_use("submit_report", {"root_cause": f"the pool; credentials seen: {text}", "summary": text})])],
            {**grants, "submit_report": {}},
            {},
        )
    if where == "tool-result":
        return [message("Echo twice.", [tool_use("test_echo", {"text": text[: len(text) // 2] + text[len(text) // 2 :]})])], grants, {}
    raise AssertionError(where)


@pytest.mark.parametrize("where", ["tool-arguments", "tool-result", "ledger", "final-text", "loop-reason", "approval-reason", "report"])
def test_no_secret_the_model_handles_is_stored_or_served_in_clear(attack, hostile, effects, all_secrets, installation_secrets, where):
    shapes, values = all_secrets
    text = f"{installation_secrets.secret_key} {installation_secrets.api_key} {secret_sentence(shapes)}"
    turns, grants, policy = place(where, text, effects)
    run = attack(turns, grants=grants, policy=policy or None)
    assert_not_crashed(run)
    assert_no_secret_stored(*values)
    assert_no_secret_served(run, *values)


@pytest.mark.parametrize("shape", ["stripe-live", "aws-secret", "github-token", "base64-private-key", "secret-key", "anthropic-api-key"])
def test_each_secret_shape_is_redacted_from_the_final_text(attack, hostile, installation_secrets, shape):
    shapes = key_shapes()
    value = {"secret-key": installation_secrets.secret_key, "anthropic-api-key": installation_secrets.api_key}.get(shape) or shapes[shape]
    label = "aws_secret_access_key = " if shape == "aws-secret" else ""
    run = attack([message(f"Here it is: {label}{value}")], grants={"test_echo": {}})
    assert_no_secret_stored(value)
    assert_no_secret_served(run, value)
