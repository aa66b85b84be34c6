"""The README's first command, for real: `./run demo` on the embedded default (SQLite, no Redis,
bubblewrap), then a person in Debian's chromium follows the story from the error to the merge."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.processes import stop_group

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo(tmp_path, require_real):
    if not Path(CHROMIUM).exists():
        require_real("chromium", f"{CHROMIUM} is missing")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY")}
    env.update({"PORT": str(port), "AGENTOPS_DATA_DIR": str(tmp_path / "var"), "AGENTOPS_SANDBOX_SCOPE": f"demo-e2e-{port}"})
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(["./run", "demo"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "agentops is running" not in log.read_text():
            assert proc.poll() is None, f"./run demo exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"./run demo did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        login = re.search(r"sign in as:\s+(\S+) / (\S+)", log.read_text())
        assert login, log.read_text()
        yield f"http://127.0.0.1:{port}", login.group(1), login.group(2), tmp_path / "var"
    finally:
        stop_group(proc, grace_s=20)


def test_the_demo_goes_from_a_real_error_to_a_merged_pull_request_in_the_browser(demo):
    from playwright.sync_api import expect, sync_playwright

    url, username, password, data_dir = demo
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{url}/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        # The error reported by sentry-sdk started one run of the debugging agent; it ends with a PR.
        page.goto(f"{url}/runs/1/")
        expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible(timeout=120_000)
        # The run's header updates live, pull request link included.
        expect(page.locator("#run-summary").get_by_role("link", name="Fix connection pool exhaustion in checkout service")).to_be_visible()
        page.screenshot(path=str(SHOTS / "demo-run.png"))
        # The MCP variant fixes the same error (checked before the first fix is merged), its git work
        # done through mcp-server-git in its sandbox: the trace shows the MCP calls; it opens a PR too.
        page.goto(f"{url}/runs/2/")
        expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible(timeout=180_000)
        expect(page.get_by_text("mcp__git__git_commit").first).to_be_visible()
        page.screenshot(path=str(SHOTS / "demo-mcp-run.png"), full_page=True)
        page.goto(f"{url}/errors/")
        expect(page.get_by_text("ConnectionPoolExhaustedError").first).to_be_visible()
        page.goto(f"{url}/pulls/1/")
        for gate in ("secrets", "diff_limits", "tests_intact", "tests_pass"):
            expect(page.get_by_role("cell", name=gate, exact=True)).to_be_visible()
        # Merging asks for a confirmation that names the target branch (issue 12).
        page.click("#merge summary")
        page.click("text=Confirm: merge into main")
        expect(page.get_by_text("merged", exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(SHOTS / "demo-merged.png"))
        browser.close()
    # The merge is real: the forge's main now has the configurable pool.
    repo = data_dir / "forge" / "checkout-service.git"
    db_py = subprocess.run(["git", "show", "main:checkout/db.py"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "CHECKOUT_DB_POOL_SIZE" in db_py and "DEFAULT_POOL_SIZE = 50" in db_py
