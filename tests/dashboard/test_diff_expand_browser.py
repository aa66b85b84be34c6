"""Expand context on the pull request page in a real browser: htmx inserts the hidden lines in
place under the CSP, in both layouts (issue 12). Screenshot: rr-pull-request-expanded.png."""

from __future__ import annotations

import pytest
from test_dashboard_browser import _no_csp_violation, browser, new_page, screenshot, server, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_expanding_a_gap_inserts_the_hidden_lines_without_a_reload(browser, server):  # noqa: F811
    pk = server["run_seed"]("expand")["pull_request"]
    page = sign_in(browser, server, "bob")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server['base']}/pulls/{pk}/")
    page.click("[data-diff-view=unified]")
    page.evaluate("window.__same_page = true")
    unified = page.locator("table.code.unified").first
    before = unified.locator("tr.ctx, tr.expanded").count()
    unified.locator(".expand-btn").first.click()
    page.wait_for_selector("table.code.unified tr.expanded")
    assert unified.locator("tr.expanded").count() == 25  # lines 1..25 were hidden above the hunk
    assert unified.locator("tr.expanded td.ln").first.inner_text() == "1"
    assert page.evaluate("window.__same_page") is True  # no reload
    # the split view expanded the same gap too, its left side read from the base
    page.click("[data-diff-view=split]")
    page.wait_for_selector("table.code.split tr.expanded")
    assert page.locator("table.code.split").first.locator("tr.expanded").count() == 25
    page.click("[data-diff-view=unified]")
    assert unified.locator("tr.ctx").count() > before
    screenshot(page, "rr-pull-request-expanded")
    page.context.close()
