"""The review room in a real browser (issue 12): the trace, the diff, the overview, at 1280 and
390 px, with screenshots kept in test-artifacts/screenshots/ (rr-*.png)."""

from __future__ import annotations

import pytest
from test_dashboard_browser import _no_csp_violation, browser, new_page, screenshot, server, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def traced(server):  # noqa: F811 - the imported fixture
    return server["run_seed"]("trace")


def _element_shot(locator, name: str) -> None:
    from test_dashboard_browser import SHOTS

    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SHOTS / f"{name}.png"))


def _at(page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(150)


def test_the_trace_nests_filters_jumps_and_fits_a_phone(browser, server, traced):  # noqa: F811
    page = sign_in(browser, server, "alice")
    _at(page, 1280)
    page.goto(f"{server['base']}/runs/{traced['run']}/")
    assert page.locator("#steps > li.turn").count() == 4
    first_turn = page.locator("#steps > li.turn").first
    assert first_turn.locator("li.tool").count() == 2 and first_turn.locator("li.tool ol.result li.obs").count() == 2
    assert page.locator(".failures").first.is_visible()
    assert "stopped" not in page.locator(".status-line").inner_text() and "PR opened" in page.locator(".status-line").inner_text()
    screenshot(page, "rr-run-1280")
    _element_shot(page.locator(".page-head"), "rr-run-1280-head")
    _element_shot(page.locator("#run-summary"), "rr-run-1280-summary")
    _element_shot(page.locator("#steps > li.turn").nth(1), "rr-run-1280-turn")
    _element_shot(page.locator("li.gate").first, "rr-run-1280-gate")
    # filter a kind out and back
    page.uncheck("[data-kind-filter=observation]")
    assert not page.locator("li.obs").first.is_visible()
    page.check("[data-kind-filter=observation]")
    # collapse everything, then a jump opens the way to its step
    page.click("[data-spans=close]")
    assert not page.locator("li.tool").first.is_visible()
    page.click("text=First error")
    failing = page.locator("li.obs.is-error, li.obs:has(.s-failed)").first
    assert failing.is_visible()
    # absolute local time on hover
    assert "UTC" in page.locator(".span-head time").first.get_attribute("title")
    page.click("[data-spans=open]")
    _at(page, 390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
    screenshot(page, "rr-run-390")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(__import__("test_dashboard_browser").SHOTS / "rr-run-390-top.png"))
    _element_shot(page.locator("#steps > li.turn").nth(1), "rr-run-390-turn")
    page.context.close()


def test_the_pull_request_diff_has_a_tree_two_layouts_and_a_named_confirmation(browser, server, traced):  # noqa: F811
    page = sign_in(browser, server, "bob")
    _at(page, 1280)
    page.goto(f"{server['base']}/pulls/{traced['pull_request']}/")
    assert page.locator(".file-tree a").count() == 2
    assert page.locator(".markdown h2", has_text="Root cause").is_visible()
    page.click("[data-diff-view=unified]")
    assert page.locator("table.code.unified").first.is_visible() and not page.locator("table.code.split").first.is_visible()
    page.click("[data-diff-view=split]")
    assert page.locator("table.code.split").first.is_visible()
    page.click("#merge > summary")
    assert "merge into main" in page.locator("#merge .confirm-panel").inner_text()
    screenshot(page, "rr-pull-request-1280")
    _element_shot(page.locator(".pr-layout"), "rr-pull-request-1280-diff")
    page.click("#merge > summary")
    page.click("[data-diff-view=unified]")
    _at(page, 390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
    screenshot(page, "rr-pull-request-390")
    page.context.close()


def test_the_overview_shows_what_waits_and_counts_live(browser, server, traced):  # noqa: F811
    page = sign_in(browser, server, "bob")
    _at(page, 1280)
    page.goto(server["base"] + "/")
    page.wait_for_selector("[data-count=approvals][data-n]")
    assert page.locator("[data-count=pulls]").inner_text() == "1"
    assert page.locator(".inline-approval .btn.approve").count() >= 1
    assert "to merge" in page.locator(".tile.attention").inner_text().lower()
    screenshot(page, "rr-overview-1280")
    _at(page, 390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
    screenshot(page, "rr-overview-390")
    page.screenshot(path=str(__import__("test_dashboard_browser").SHOTS / "rr-overview-390-top.png"))
    _at(page, 1280)
    page.keyboard.press("?")
    assert page.locator("dialog#keys-help").is_visible()
    screenshot(page, "rr-shortcuts")
    page.keyboard.press("Escape")
    page.keyboard.press("g")
    page.keyboard.press("r")
    page.wait_for_url(server["base"] + "/runs/")
    page.keyboard.press("/")
    page.keyboard.type("TypeError")
    page.keyboard.press("Enter")
    page.wait_for_url("**/runs/?q=TypeError**")
    assert page.locator("table.list tbody tr").count() >= 1
    page.context.close()
