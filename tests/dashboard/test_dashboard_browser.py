"""The flows a person uses, in a real browser (Debian's chromium) against a live ASGI server
(daphne) with websockets. The server and the seed script run in subprocesses on their own
database (a fresh PostgreSQL database when DATABASE_URL is PostgreSQL, else a SQLite file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import web
from tests.support.processes import ROOT

# The other browser tests of the dashboard import these from here, with this module's fixtures.
from tests.support.web import CHROMIUM, CHROMIUM_ARGS, SHOTS, new_page, screenshot  # noqa: F401
from tests.support.web import need_browser as _need_browser  # noqa: F401
from tests.support.web import no_csp_violation as _no_csp_violation  # noqa: F401  autouse: each test leaves no CSP violation

pytestmark = pytest.mark.slow

SEED = Path(__file__).with_name("browser_seed.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    web.need_browser()
    with web.scratch_database("browser", tmp_path_factory) as database_url:
        env = web.site_env(database_url, tmp_path_factory.mktemp("data"))
        web.migrate(env)

        def run_seed(*args: str) -> dict:
            return web.run_json(env, str(SEED), *args, timeout=120)

        def manage(*args: str) -> None:
            subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True)

        seeded = run_seed("seed")
        with web.daphne(env, tmp_path_factory.mktemp("daphne") / "daphne.log") as base:
            yield {"base": base, "seed": seeded, "run_seed": run_seed, "manage": manage}


@pytest.fixture(scope="module")
def browser(server):
    with web.chromium() as browser:
        yield browser


def sign_in(browser, server, username: str, *, shot: str | None = None):
    page = new_page(browser)
    web.sign_in(page, server["base"], username, server["seed"]["password"], shot=shot)
    return page


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
