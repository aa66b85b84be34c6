"""Each kind of human decision, made by a person in a real browser (Debian's chromium) on the Decisions
page, while the run's page stays open and shows the run resume live: edit + approve, a budget
extension, an answer to the agent's question, "continue" after a loop.

Real parts: a live ASGI server (daphne) with websockets, a django-q2 worker cluster that takes the
resumed runs, a fresh PostgreSQL database (SQLite when DATABASE_URL is not PostgreSQL), the scripted
planner over the real controller. The server, the worker and the seeding (this file, run as a
script) are subprocesses; the test process never touches their database.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
FINAL = ("succeeded", "failed", "killed", "budget_exceeded", "rejected")
# A resumed run goes through the worker cluster: claimed, run, and shown by the page's live view.
RESUME_TIMEOUT_MS = 60_000


# --- the seeding, run as a script against the live server's database --------------------------------


def _seed(effects_dir: str) -> dict[str, Any]:
    """Users, four agents and one run of each that waits for a person (run here, to the wait)."""
    from django.contrib.auth.models import User

    from agentops.agents.models import Agent, Policy, ToolGrant
    from agentops.approvals.models import Approval
    from agentops.llm.prices import DEFAULT_MODEL
    from agentops.runs.controller import execute_run
    from agentops.runs.models import Run
    from agentops.runs.services import run_create
    from dashboard.roles import ensure_roles

    groups = ensure_roles()
    for name, group in [("bob", "approver"), ("carol", "viewer")]:
        User.objects.create_user(name, f"{name}@example.com", PASSWORD).groups.add(groups[group])

    def agent(slug: str, script: list[dict], grants: dict[str, dict], policy: dict | None = None, trust_phase: int = 1) -> Agent:
        made = Agent.objects.create(
            name=slug.title(),
            slug=slug,
            objective="Test objective.",
            model=DEFAULT_MODEL,
            trust_phase=trust_phase,
            config={"planner": "scripted", "script": script},
        )
        Policy.objects.create(agent=made, **(policy or {}))
        for tool, scope in grants.items():
            ToolGrant.objects.create(agent=made, tool=tool, scope=scope)
        return made

    def one_step(name: str, arguments: dict, text: str = "working") -> dict:
        return {"text": text, "tool_calls": [{"name": name, "arguments": arguments}]}

    payments = os.path.join(effects_dir, "payments")
    effects = os.path.join(effects_dir, "effects")
    agents = {
        "edit": agent(
            "payer",
            [one_step("test_pay", {"text": "100 EUR to ACME"}, "Paying the invoice."), {"text": "done"}],
            {"test_pay": {"path": payments}},
            trust_phase=3,
        ),
        "budget": agent(
            "writer",
            [one_step("test_append", {"text": f"effect {i}"}) for i in range(3)] + [{"text": "done"}],
            {"test_append": {"path": effects}},
            {"max_tool_calls": 1, "extendable_caps": ["tool_calls"]},
        ),
        "question": agent(
            "asker",
            [one_step("ask_person", {"question": "Which region should I roll back first?", "options": ["eu-1", "us-1"]}), {"text": "Rolling back."}],
            {"ask_person": {}},
        ),
        "loop": agent(
            "looper",
            [one_step("test_fail", {"what": "deploy"}) for _ in range(10)],
            {"test_fail": {}},
            {"loop_escalation": "nudge_ask"},
        ),
    }
    seeded: dict[str, Any] = {"payments": payments, "effects": effects}
    for kind, made in agents.items():
        run = run_create(agent=made, input="do the thing", actor="seed", enqueue=False)
        execute_run(run.pk, owner="seed-worker")
        run.refresh_from_db()
        assert run.status == "waiting_approval", (kind, run.status, run.status_reason)
        seeded[kind] = {"run": run.pk, "decision": Approval.objects.get(run=run, status="pending").pk}
    seeded["runs"] = list(Run.objects.values_list("pk", flat=True))
    return seeded


def _status(run_id: int) -> dict[str, Any]:
    from agentops.runs.models import Run

    run = Run.objects.get(pk=run_id)
    return {"status": run.status, "reason": run.status_reason, "tool_calls": run.tool_calls}


# --- the live server, the worker cluster, the browser ----------------------------------------------


def _need_browser() -> None:
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.processes import stop_cluster

    _need_browser()
    base_env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "REDIS_URL"}}
    database_url = os.environ.get("DATABASE_URL", "")
    dropdb = None
    if database_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        name = f"agentops_decisions_{uuid.uuid4().hex[:8]}"
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database_url = database_url.rsplit("/", 1)[0] + "/" + name

        def dropdb() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        database_url = f"sqlite:///{tmp_path_factory.mktemp('decisions') / 'agentops.sqlite3'}"
    effects_dir = tmp_path_factory.mktemp("effects")
    env = {
        **base_env,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "browser-test-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AGENTOPS_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "AGENTOPS_TOOL_MODULES": "tests.support.tools",
        "AGENTOPS_Q_NAME": f"decisions-{uuid.uuid4().hex[:6]}",
        "AGENTOPS_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    procs: list[subprocess.Popen] = []
    logs = tmp_path_factory.mktemp("logs")
    try:
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)

        def script(*args: str) -> Any:
            out = subprocess.run([python, __file__, *args], cwd=ROOT, env=env, check=True, timeout=180, capture_output=True, text=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        seeded = script("seed", str(effects_dir))
        port = _free_port()
        daphne_log = open(logs / "daphne.log", "w")
        daphne = subprocess.Popen(
            [str(Path(python).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port), "agentops.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=daphne_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(daphne)
        cluster_log = open(logs / "qcluster.log", "w")
        cluster = subprocess.Popen([python, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=cluster_log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/login/", timeout=2).close()
                break
            except Exception:
                if daphne.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start; see {logs / 'daphne.log'}") from None
                time.sleep(0.3)
        yield {"base": base, "seed": seeded, "script": script, "cluster": cluster, "logs": logs}
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if "cluster" in locals():
            stop_cluster(cluster)
        if dropdb:
            dropdb()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


CSP_VIOLATIONS: list[str] = []


@pytest.fixture(autouse=True)
def _no_csp_violation():
    CSP_VIOLATIONS.clear()
    yield
    assert CSP_VIOLATIONS == []


def signed_in(browser, server, username: str = "bob"):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("console", lambda msg: CSP_VIOLATIONS.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None)
    page.goto(server["base"] + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server["base"] + "/")
    return context, page


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def watch_run(context, server, run_id: int):
    """The run's page, open and live, showing the run waiting for a person."""
    page = context.new_page()
    page.on("console", lambda msg: CSP_VIOLATIONS.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None)
    page.goto(f"{server['base']}/runs/{run_id}/")
    page.wait_for_selector("#live-state.live")
    assert page.locator("#run-summary").get_attribute("data-status") == "waiting_approval"
    return page


def decision_card(page, server, decision_id: int):
    page.goto(server["base"] + "/approvals/")
    card = page.locator(f"#approval-{decision_id}")
    card.wait_for()
    return card


def resumed_live(run_page, server, run_id: int, text: str, statuses: tuple[str, ...]) -> str:
    """Waits, on the page that stayed open, for the step saying ``text`` and a final status; the
    page is never reloaded. On a timeout the worker's log says why."""
    try:
        run_page.locator("li.step", has_text=text).first.wait_for(timeout=RESUME_TIMEOUT_MS)
        selector = ", ".join(f'#run-summary[data-status="{s}"]' for s in statuses)
        run_page.wait_for_selector(selector, timeout=RESUME_TIMEOUT_MS)
    except Exception:
        log = (server["logs"] / "qcluster.log").read_text()[-3000:]
        raise AssertionError(f"run {run_id} did not resume live: {server['script']('status', str(run_id))}\n{log}") from None
    return str(run_page.locator("#run-summary").get_attribute("data-status"))


def test_an_approver_edits_a_calls_arguments_approves_it_and_watches_the_edited_call_run(browser, server):
    seeded = server["seed"]["edit"]
    context, page = signed_in(browser, server)
    run_page = watch_run(context, server, seeded["run"])
    card = decision_card(page, server, seeded["decision"])
    assert "100 EUR to ACME" in card.locator("pre.args").inner_text()
    card.locator("details.edit-arguments summary").click()
    card.locator(f"#edited-{seeded['decision']}").fill(json.dumps({"text": "90 EUR to ACME"}))
    screenshot(page, "decisions-01-edit-before-approving")
    card.locator("button.approve").click()
    page.wait_for_selector(f"#approval-{seeded['decision']}", state="detached")
    status = resumed_live(run_page, server, seeded["run"], "A person edited this call before approving it", FINAL)
    assert status == "succeeded"
    assert "90 EUR to ACME" in run_page.locator("li.step", has_text="A person edited this call").first.inner_text()
    screenshot(run_page, "decisions-02-edited-call-ran")
    ledger = Path(server["seed"]["payments"]).read_text().splitlines()
    assert len(ledger) == 1 and "90 EUR to ACME" in ledger[0]
    context.close()


def test_an_approver_extends_a_runs_budget_and_watches_it_go_on_under_the_raised_cap(browser, server):
    seeded = server["seed"]["budget"]
    context, page = signed_in(browser, server)
    run_page = watch_run(context, server, seeded["run"])
    assert "1 / 1" in run_page.locator(".bar", has_text="Tool calls").inner_text()
    card = decision_card(page, server, seeded["decision"])
    assert "tool-call cap 1 reached (used 1); extend by 1?" in card.inner_text()
    card.locator("input[name=answer]").fill("2")
    screenshot(page, "decisions-03-budget-extension")
    card.locator("button.approve").click()
    page.wait_for_selector(f"#approval-{seeded['decision']}", state="detached")
    status = resumed_live(run_page, server, seeded["run"], "effect 2", FINAL)
    assert status == "succeeded"
    # The meter on the open page shows this run's raised cap.
    assert "3 / 3" in run_page.locator(".bar", has_text="Tool calls").inner_text()
    screenshot(run_page, "decisions-04-budget-extended")
    context.close()


def test_a_person_answers_the_agents_question_and_watches_the_answer_reach_the_model(browser, server):
    seeded = server["seed"]["question"]
    context, page = signed_in(browser, server)
    run_page = watch_run(context, server, seeded["run"])
    card = decision_card(page, server, seeded["decision"])
    assert "Which region should I roll back first?" in card.locator("blockquote.question").inner_text()
    screenshot(page, "decisions-05-question")
    card.locator(".answer-options button", has_text="eu-1").click()
    page.wait_for_selector(f"#approval-{seeded['decision']}", state="detached")
    resumed_live(run_page, server, seeded["run"], "A person answered: eu-1", FINAL)
    screenshot(run_page, "decisions-06-answered")
    context.close()


def test_a_person_lets_a_looping_run_continue_and_watches_it_go_on_until_the_next_loop_stops_it(browser, server):
    seeded = server["seed"]["loop"]
    context, page = signed_in(browser, server)
    run_page = watch_run(context, server, seeded["run"])
    card = decision_card(page, server, seeded["decision"])
    assert "same_failing_call" in card.inner_text()
    screenshot(page, "decisions-07-loop-escalation")
    card.locator("button.approve", has_text="Continue").click()
    page.wait_for_selector(f"#approval-{seeded['decision']}", state="detached")
    status = resumed_live(run_page, server, seeded["run"], "chose to continue", FINAL)
    assert status == "failed"
    assert server["script"]("status", str(seeded["run"]))["tool_calls"] == 7, "three more tries after continue, then the next detection stopped it"
    screenshot(run_page, "decisions-08-loop-continued-then-stopped")
    context.close()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    command = sys.argv[1]
    if command == "seed":
        print(json.dumps(_seed(sys.argv[2])))
    elif command == "status":
        print(json.dumps(_status(int(sys.argv[2]))))
    else:
        raise SystemExit(f"unknown command {command}")
