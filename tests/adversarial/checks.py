"""The three assertions every attack makes: stopped, explained, and without effect."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

EXPLAINING_KINDS = ("guardrail", "gate", "error")


def steps(run: Any, *kinds: str) -> list[dict[str, Any]]:
    from agentops.runs.models import Step

    rows = Step.objects.filter(run_id=run.pk).order_by("seq")
    if kinds:
        rows = rows.filter(kind__in=kinds)
    # The step's kind wins over a payload field of the same name (an error step's payload names its own kind).
    return [{**(s.payload or {}), "kind": s.kind, "seq": s.seq} for s in rows]


def _text(value: Any) -> str:
    return json.dumps(value, default=str).lower()


def explaining_step(run: Any, *words: str, kinds: tuple[str, ...] = EXPLAINING_KINDS) -> dict[str, Any]:
    """The first guardrail / gate / error step whose payload mentions any of ``words`` (case-insensitive);
    fails, listing what was recorded, when there is none. A step that explains must give a reason."""
    found = steps(run, *kinds)
    for step in found:
        text = _text(step)
        if not words or any(w.lower() in text for w in words):
            assert any(step.get(k) for k in ("reason", "detail", "error", "guard", "gate")), f"a step without a reason: {step}"
            return step
    raise AssertionError(
        f"no {'/'.join(kinds)} step mentions any of {words}; run {run.pk} ended {run.status}: {run.status_reason!r}\n"
        + "\n".join(f"  #{s['seq']} {s['kind']}: {_text(s)[:300]}" for s in steps(run))
    )


def failed_gate(run: Any, gate: str | None = None) -> dict[str, Any]:
    """A gate step that did not pass cleanly (failed, or flagged for a person)."""
    for step in steps(run, "gate"):
        if gate is not None and step.get("gate") != gate:
            continue
        if not step.get("passed") or step.get("flagged") or step.get("needs_person"):
            return step
    raise AssertionError(
        f"no gate {gate or ''} failed or flagged: {[(s.get('gate'), s.get('passed'), str(s.get('detail'))[:200]) for s in steps(run, 'gate')]}"
    )


def outcome_text(run: Any) -> str:
    run.refresh_from_db()
    parts = [run.status, run.status_reason, json.dumps((run.result or {}).get("outcome", ""), default=str)]
    parts += [str(getattr(run, "outcome", "") or ""), str(getattr(run, "outcome_detail", "") or "")]
    return " ".join(parts).lower()


def assert_not_reported_as_finished(run: Any) -> None:
    """A run whose actions were refused (or whose last turn was not a finish) must not read as if the
    agent did its work."""
    text = outcome_text(run)
    assert not (run.status == "succeeded" and "the agent finished" in text), f"reported as finished: {run.status}: {run.status_reason!r}"


def assert_not_crashed(run: Any) -> None:
    run.refresh_from_db()
    assert "internal error" not in (run.status_reason or ""), f"a crash, not a check: {run.status_reason!r} {run.final_error!r}"


# --- the database ------------------------------------------------------------------------------


def rows_containing(*needles: str) -> list[str]:
    """Every row of every table (every model of every installed app) that holds one of ``needles``."""
    from django.apps import apps

    needles = tuple(n for n in needles if n)
    hits: list[str] = []
    for model in apps.get_models():
        try:
            rows = list(model.objects.all().values())
        except Exception:  # noqa: BLE001 - an unmigrated or abstract table holds nothing of ours
            continue
        for row in rows:
            text = json.dumps(row, default=str)
            for needle in needles:
                if needle in text:
                    hits.append(f"{model._meta.label} #{row.get('id', row.get('pk'))}: {needle[:12]}…")
    return hits


def assert_no_secret_stored(*secrets: str) -> None:
    hits = rows_containing(*secrets)
    assert not hits, "secrets stored in clear:\n" + "\n".join(hits)


def assert_no_secret_served(run: Any, *secrets: str) -> None:
    """The run's page and its API answer hold none of ``secrets``."""
    from django.contrib.auth.models import User
    from django.test import Client

    from dashboard.roles import ensure_roles

    admin = User.objects.create_user(f"adv-admin-{run.pk}", "a@example.com", "x")
    admin.groups.add(ensure_roles()["admin"])
    client = Client()
    client.force_login(admin)
    bodies = {"run page": client.get(f"/runs/{run.pk}/", HTTP_HOST="localhost")}
    token = _api_token(admin)
    if token:
        bodies["api"] = client.get(f"/api/v1/runs/{run.pk}/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="localhost")
        bodies["api steps"] = client.get(f"/api/v1/runs/{run.pk}/steps/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="localhost")
    for name, response in bodies.items():
        assert response.status_code == 200, f"{name}: {response.status_code}"
        body = response.content.decode("utf-8", "replace")
        leaked = [s[:12] + "…" for s in secrets if s and s in body]
        assert not leaked, f"{name} serves secrets in clear: {leaked}"


def _api_token(user: Any) -> str | None:
    """A read token for ``user``, whatever the signature of api_token_create is today (scopes and
    expiry are being added)."""
    import inspect

    from dashboard.services import api_token_create

    params = inspect.signature(api_token_create).parameters
    kwargs: dict[str, Any] = {"user": user, "name": "adversarial"}
    if "scope" in params:
        kwargs["scope"] = "read"
    if "scopes" in params:
        kwargs["scopes"] = ["read"]
    try:
        _, raw = api_token_create(**kwargs)
    except TypeError:
        return None
    return raw


# --- the forge ---------------------------------------------------------------------------------


def refs(repo: Path) -> dict[str, str]:
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def everything_published(repo: Path) -> str:
    """Every commit message and every change on every ref of the bare repository."""
    return subprocess.run(["git", "log", "--all", "-p", "--format=commit %H%n%B"], cwd=repo, capture_output=True, text=True, check=True).stdout


def assert_forge_untouched(repo: Path, before: dict[str, str]) -> None:
    from agentops.forges.models import PullRequest

    assert refs(repo) == before, f"the forge changed: {before} -> {refs(repo)}"
    assert not PullRequest.objects.exists(), list(PullRequest.objects.values("number", "branch", "status", "draft"))


def files_on(repo: Path, ref: str) -> set[str]:
    return set(subprocess.run(["git", "ls-tree", "-r", "--name-only", ref], cwd=repo, capture_output=True, text=True, check=True).stdout.split())


def assert_nothing_bad_published(
    repo: Path, main_before: str | None, *, absent: tuple[str, ...] = (), present: tuple[str, ...] = (), never: tuple[str, ...] = ()
) -> None:
    """`main` is unchanged (unless ``main_before`` is None: a clean part of the change may merge); on no
    ref of the forge is a file of ``absent``, is a file of ``present`` missing, or does any text of
    ``never`` appear (in content or commit message)."""
    if main_before is not None:
        assert refs(repo).get("refs/heads/main") == main_before, "main moved"
    for ref in refs(repo):
        if not ref.startswith("refs/heads/"):
            continue
        names = files_on(repo, ref)
        assert not (names & set(absent)), f"{ref} publishes {sorted(names & set(absent))}"
        assert set(present) <= names, f"{ref} lost {sorted(set(present) - names)}"
    published = everything_published(repo)
    for text in never:
        assert text not in published, f"published on the forge: {text[:40]!r}"
