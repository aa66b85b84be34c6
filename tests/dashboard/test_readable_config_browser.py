"""Configuration a person can read, in a real browser (issue 12): scopes edited as chips, the trust
phase raised with a reason and a confirmation, the audit as field diffs, spend by agent with each
cap line; at 1280 and 390 px, screenshots in test-artifacts/screenshots/ (cfg-*.png)."""

from __future__ import annotations

import pytest
from test_dashboard_browser import SHOTS, _no_csp_violation, browser, new_page, screenshot, server, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def _at(page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(150)


def _no_horizontal_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{page.url} scrolls sideways by {overflow}px"


def test_a_person_edits_scopes_as_chips_and_raises_the_trust_phase_with_a_reason(browser, server):  # noqa: F811
    page = sign_in(browser, server, "alice")
    base = server["base"]
    page.goto(base + "/agents/debugger/edit/")
    # The reason and the confirmation appear only when the phase goes up.
    assert not page.locator("[data-trust-raise]").is_visible()
    page.select_option("#id_trust_phase", "3")
    assert page.locator("[data-trust-raise]").is_visible()
    assert page.locator(".phase-text[data-phase='3']").is_visible() and not page.locator(".phase-text[data-phase='4']").is_visible()
    page.fill("#id_trust_reason", "two weeks of drafts, every one merged unchanged")
    page.check("#id_trust_confirm")
    page.fill("#id_max_tokens", "600000")
    assert page.locator("#id_max_tokens + .unit-hint").inner_text() == "= 600,000 tokens"
    page.fill("#id_max_wall_clock_s", "1800")
    assert page.locator("#id_max_wall_clock_s + .unit-hint").inner_text() == "= 30m"
    page.click("text=Save agent and policy")
    page.wait_for_url(base + "/agents/debugger/")

    # A chip is added with Enter and removed with its ×; the grant posts through GrantForm.
    page.goto(base + "/agents/debugger/edit/")
    chips = page.locator("#grants .grant-form").first.locator("[data-chips]")
    chips.locator(".chip-new").fill("api.python.org")
    chips.locator(".chip-new").press("Enter")
    chips.locator(".chip-new").fill("pypi.org")
    chips.locator(".chip-new").press("Enter")
    chips.locator("button[aria-label='remove docs.python.org']").click()
    assert [t.strip() for t in chips.locator("label.chip span").all_inner_texts()] == ["api.python.org", "pypi.org"]
    # The new grant's form shows only the keys of the tool selected.
    new = page.locator("[data-new-grant]")
    new.locator("select[name='new-tool']").select_option("git_commit")
    assert new.locator(".scope-key[data-tools~='git_commit']").first.is_visible()
    assert not new.locator(".scope-key:has(input[name='new-scope.present'][value='domains'])").is_visible()
    _at(page, 1280)
    screenshot(page, "cfg-edit-1280")
    _at(page, 390)
    screenshot(page, "cfg-edit-390")
    page.locator("#grants").screenshot(path=str(SHOTS / "cfg-edit-390-grants.png"))
    page.locator("form.config-form").screenshot(path=str(SHOTS / "cfg-edit-390-policy.png"))
    _no_horizontal_scroll(page)
    _at(page, 1280)
    page.locator("#grants .grant-form").first.locator("text=Save grant").click()
    page.wait_for_url(base + "/agents/debugger/edit/#grants")
    new = page.locator("[data-new-grant]")
    new.locator("select[name='new-tool']").select_option("git_commit")
    new.locator("input[name='new-scope.branch_prefix']").fill("agent/")
    repos = new.locator(".scope-key:has(input[value='repos']) .chip-new")
    repos.fill("checkout-service")
    repos.press("Enter")
    new.locator("text=Add grant").click()
    page.wait_for_url(base + "/agents/debugger/edit/#grants")

    page.goto(base + "/agents/debugger/")
    grants = page.locator("table.grants").inner_text()
    assert "api.python.org" in grants and "pypi.org" in grants and "docs.python.org" not in grants
    assert "agent/" in grants and "checkout-service" in grants and "{'" not in grants
    assert "at least 1 event" in page.locator("table.triggers").inner_text()
    assert "600,000" in page.locator(".policy-table").inner_text()
    screenshot(page, "cfg-agent-1280")
    _at(page, 390)
    screenshot(page, "cfg-agent-390")
    _no_horizontal_scroll(page)

    _at(page, 1280)
    page.goto(base + "/audit/")
    audit = page.locator("table.audit").inner_text()
    assert "two weeks of drafts, every one merged unchanged" in audit
    assert "scope.domains" in audit and "trust_phase" in audit
    screenshot(page, "cfg-audit-1280")
    _at(page, 390)
    screenshot(page, "cfg-audit-390")
    _no_horizontal_scroll(page)
    page.context.close()


def test_spend_is_stacked_by_agent_with_each_agents_cap_line(browser, server):  # noqa: F811
    page = sign_in(browser, server, "alice")
    page.goto(server["base"] + "/spend/?days=7")
    # A cap far above what was spent is named, not drawn (it would flatten every bar).
    assert "Debugger cap $20.00/day (above the chart)" in page.locator(".legend").inner_text()
    # A cap near what Debugger spends is drawn across the chart in Debugger's colour.
    page.goto(server["base"] + "/agents/debugger/edit/")
    page.fill("#id_daily_max_cost_usd", "0.5")
    page.click("text=Save agent and policy")
    page.wait_for_url(server["base"] + "/agents/debugger/")
    page.goto(server["base"] + "/spend/?days=7")
    assert page.locator(".cap-line.agent-cap[title='Debugger: daily cap $0.50']").count() == 7
    assert page.locator(".seg-bar.over-cap").count() >= 1  # a day Debugger spent over $0.50
    assert "Debugger cap $0.50/day" in page.locator(".legend").inner_text()
    assert "Debugger" in page.locator("table.per-agent").inner_text()
    _at(page, 1280)
    screenshot(page, "cfg-spend-1280")
    _at(page, 390)
    screenshot(page, "cfg-spend-390")
    _no_horizontal_scroll(page)
    page.context.close()
