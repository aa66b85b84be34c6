"""The flows a person uses, in a real browser (Debian's chromium) against a live ASGI server
(daphne) with websockets. The server and the seed script run in subprocesses on their own
database (a fresh PostgreSQL database when DATABASE_URL is PostgreSQL, else a SQLite file)."""

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

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEED = Path(__file__).with_name("browser_seed.py")


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
        print(f"skipping browser tests: {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need_browser()
    base_env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    database_url = os.environ.get("DATABASE_URL", "")
    dropdb = None
    if database_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        name = f"agentops_browser_{uuid.uuid4().hex[:8]}"
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database_url = database_url.rsplit("/", 1)[0] + "/" + name

        def dropdb() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        database_url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'agentops.sqlite3'}"
    env = {
        **base_env,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "browser-test-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AGENTOPS_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    seeded = json.loads(
        subprocess.run([python, str(SEED), "seed"], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    )
    port = _free_port()
    log = open(tmp_path_factory.mktemp("daphne") / "daphne.log", "w")
    proc = subprocess.Popen(
        [str(Path(python).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port), "agentops.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/login/", timeout=2).close()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"daphne did not start; see {log.name}") from None
            time.sleep(0.3)

    def run_seed(*args: str) -> dict:
        out = subprocess.run([python, str(SEED), *args], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True)

    yield {"base": base, "seed": seeded, "run_seed": run_seed, "manage": manage}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    if dropdb:
        dropdb()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Every message the browser logs about the Content-Security-Policy (a blocked inline script or
# style, a refused websocket): each test must leave this empty.
CSP_VIOLATIONS: list[str] = []


@pytest.fixture(autouse=True)
def _no_csp_violation():
    CSP_VIOLATIONS.clear()
    yield
    assert CSP_VIOLATIONS == []


def new_page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("console", lambda msg: CSP_VIOLATIONS.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None)
    return page


def sign_in(browser, server, username: str, *, shot: str | None = None):
    page = new_page(browser)
    page.goto(server["base"] + "/login/")
    if shot:
        screenshot(page, shot)
    page.fill("#id_username", username)
    page.fill("#id_password", server["seed"]["password"])
    page.click("button[type=submit]")
    page.wait_for_url(server["base"] + "/")
    return page


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_person_signs_in_and_sees_the_overview(browser, server):
    page = sign_in(browser, server, "carol", shot="01-sign-in")
    assert page.locator(".tile-l", has_text="active runs").is_visible()
    assert page.locator("h2", has_text="Waiting for a person").is_visible()
    assert page.locator(".ks-button").is_visible()
    screenshot(page, "02-overview")
    page.context.close()


def test_a_runs_steps_appear_live_while_the_page_is_open(browser, server):
    page = sign_in(browser, server, "carol")
    run_id = server["seed"]["live_run"]
    page.goto(f"{server['base']}/runs/{run_id}/")
    page.wait_for_selector("#live-state.live")
    assert page.locator("li.step").count() == 4
    seqs = server["run_seed"]("steps", str(run_id), "3", "0.3")["seqs"]
    for seq in seqs:
        page.wait_for_selector(f"#step-{seq}")
    assert [int(s) for s in page.locator("li.step").evaluate_all("els => els.map(e => e.dataset.seq)")] == list(range(1, seqs[-1] + 1))
    assert "live step 2" in page.locator(f"#step-{seqs[-1]}").inner_text()
    screenshot(page, "03-run-live")
    page.context.close()


def test_an_approver_approves_one_action_and_rejects_another(browser, server):
    page = sign_in(browser, server, "bob")
    first, second = server["seed"]["approvals"]
    page.goto(server["base"] + "/approvals/")
    assert page.locator(f"#approval-{first} pre.args").inner_text().count("oncall@example.com") == 1
    screenshot(page, "04-approvals")
    page.locator(f"#approval-{first} button.approve").dblclick()  # a double click still decides once
    page.wait_for_selector(".msg.success")
    page.fill(f"#approval-{second} .reject-form input[name=comment]", "do not email customers from an agent")
    page.click(f"#approval-{second} .reject-form button")
    page.wait_for_selector(".msg.success >> text=Rejected")
    decided = page.locator("table.list").last.inner_text()
    assert "approved" in decided and "rejected" in decided and "do not email customers" in decided
    assert page.locator("article.approval").count() == 0
    screenshot(page, "05-approvals-decided")
    page.goto(f"{server['base']}/runs/{server['seed']['waiting_run']}/")
    screenshot(page, "06-run-after-decisions")
    page.context.close()


def test_an_admin_changes_an_agents_trust_phase(browser, server):
    page = sign_in(browser, server, "alice")
    page.goto(server["base"] + "/agents/debugger/edit/")
    screenshot(page, "07-agent-edit")
    page.select_option("#id_trust_phase", "3")
    # Raising the trust phase asks why and for a confirmation (issue 12).
    page.fill("#id_trust_reason", "a month of drafts merged unchanged")
    page.check("#id_trust_confirm")
    page.click("text=Save agent and policy")
    page.wait_for_url(server["base"] + "/agents/debugger/")
    assert "3 · ready pull request" in page.locator(".kv").first.inner_text()
    screenshot(page, "08-agent-detail")
    page.goto(server["base"] + "/agents/debugger/edit/")
    # A scope is edited as chips and fields; one the tool refuses is shown beside the grant.
    page.select_option("#id_new-tool", "git_commit")
    page.click("text=Add grant")
    assert page.locator("#grants .field-error").first.is_visible()
    screenshot(page, "09-grant-scope-error")
    page.goto(server["base"] + "/audit/")
    assert "agent.update" in page.locator("table.audit").inner_text()
    screenshot(page, "10-audit")
    page.context.close()


def test_an_admin_engages_and_releases_the_kill_switch(browser, server):
    page = sign_in(browser, server, "alice")
    viewer = sign_in(browser, server, "carol")
    viewer.wait_for_timeout(300)
    page.click(".ks-button")
    screenshot(page, "11-kill-switch-confirm")
    page.fill("#engage-reason", "agents are emailing customers")
    page.click("text=Engage — stop every agent")
    page.wait_for_selector(".controlbar.engaged")
    assert "agents are emailing customers" in page.locator(".banner").inner_text()
    # Another person's open page learns it over the overview socket.
    viewer.wait_for_selector(".controlbar.engaged", timeout=15_000)
    screenshot(page, "12-kill-switch-engaged")
    page.goto(f"{server['base']}/runs/{server['seed']['live_run']}/")
    page.wait_for_selector(".run-summary[data-status=killed]", timeout=15_000)
    screenshot(page, "13-run-killed")
    page.click("text=Release…")
    page.fill("#release-reason", "root cause fixed")
    page.click("text=Release the kill switch")
    page.wait_for_selector(".controlbar.clear")
    viewer.wait_for_selector(".controlbar.clear", timeout=15_000)
    viewer.context.close()
    page.context.close()


def test_every_other_page_renders(browser, server):
    page = sign_in(browser, server, "alice")
    seed = server["seed"]
    for name, path in [
        ("14-runs", "/runs/"),
        ("15-agents", "/agents/"),
        ("16-spend", "/spend/?days=7"),
        ("17-drills", "/drills/"),
        ("18-tokens", "/tokens/"),
        ("19-overview-after", "/"),
        ("20-pull-requests", "/pulls/?state=all"),
        ("21-pull-request", f"/pulls/{seed['pull_request']}/"),
        ("22-errors", "/errors/"),
        ("23-error", f"/errors/{seed['error_group']}/"),
    ]:
        response = page.goto(server["base"] + path)
        assert response.status == 200, path
        screenshot(page, name)
    page.context.close()


def test_a_person_creates_a_scoped_token_and_sees_it_once(browser, server):
    page = sign_in(browser, server, "bob")
    page.goto(server["base"] + "/tokens/")
    assert page.locator("#id_expires_in_days").input_value() == "90"
    assert page.locator("#id_scope option[value=admin]").count() == 0
    page.fill("#id_name", "chatops bot")
    page.select_option("#id_scope", "operate")
    page.click(".token-form button[type=submit]")
    token = page.locator("#new-token").inner_text()
    assert token.startswith("aop_")
    assert "operate" in page.locator("table.list").inner_text()
    screenshot(page, "25-tokens-created")
    page.goto(server["base"] + "/tokens/")
    assert page.locator("#new-token").count() == 0 and token not in page.content()
    page.context.close()


def test_sign_in_locks_after_five_failures_even_with_the_right_password(browser, server):
    try:
        for _ in range(5):
            page = new_page(browser)
            page.goto(server["base"] + "/login/")
            page.fill("#id_username", "carol")
            page.fill("#id_password", "not the password")
            page.click("button[type=submit]")
            page.wait_for_selector("form .errors, #locked-out")
            page.context.close()
        # A fresh browser with the right password is refused while the lock lasts.
        page = new_page(browser)
        page.goto(server["base"] + "/login/")
        page.fill("#id_username", "carol")
        page.fill("#id_password", server["seed"]["password"])
        page.click("button[type=submit]")
        page.wait_for_selector("#locked-out")
        assert "Sign-in locked" in page.locator("h1").inner_text()
        assert page.url.endswith("/login/")
        screenshot(page, "24-login-locked-out")
        page.context.close()
    finally:
        # The lock also holds this address: lift it so later tests can sign in.
        server["manage"]("axes_reset")
