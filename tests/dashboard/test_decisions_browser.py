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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import qcluster
from tests.support.web import (
    chromium,
    daphne,
    migrate,
    need_browser,
    new_page,
    no_csp_violation,  # noqa: F401  autouse: each test leaves no CSP violation
    run_json,
    scratch_database,
    screenshot,
    sign_in,
    site_env,
    watch_csp,
)

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    effects_dir = tmp_path_factory.mktemp("effects")
    logs = tmp_path_factory.mktemp("logs")
    with scratch_database("decisions", tmp_path_factory) as database_url:
        env = site_env(
            database_url,
            tmp_path_factory.mktemp("data"),
            without={"REDIS_URL"},
            AGENTOPS_TOOL_MODULES="tests.support.tools",
            AGENTOPS_Q_NAME=f"decisions-{os.urandom(3).hex()}",
            AGENTOPS_WORKERS="1",
        )
        migrate(env)

        def script(*args: str) -> Any:
            # As a module, so that its imports of tests.support find the repository's root.
            return run_json(env, "-m", "tests.dashboard.test_decisions_browser", *args, timeout=180)

        seeded = script("seed", str(effects_dir))
        with qcluster(env, logs / "qcluster.log") as cluster, daphne(env, logs / "daphne.log") as base:
            yield {"base": base, "seed": seeded, "script": script, "cluster": cluster, "logs": logs}


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as browser:
        yield browser


@dataclass
class Waiting:
    """A decision open on the Decisions page in an approver's browser, its run's page live in another tab."""

    run: int
    decision: int
    page: Any
    run_page: Any
    card: Any

    def decide(self, button: Any) -> None:
        """Clicks `button` on the decision's card and waits for the card to go."""
        button.click()
        self.page.wait_for_selector(f"#approval-{self.decision}", state="detached")

    def close(self) -> None:
        self.page.context.close()


def waiting(browser, server, kind: str, username: str = "bob") -> Waiting:
    """Signs in, opens the waiting run's page (live, showing it waiting for a person), then its decision's card."""
    seeded = server["seed"][kind]
    page = new_page(browser)
    sign_in(page, server["base"], username, PASSWORD)
    run_page = watch_csp(page.context.new_page())
    run_page.goto(f"{server['base']}/runs/{seeded['run']}/")
    run_page.wait_for_selector("#live-state.live")
    assert run_page.locator("#run-summary").get_attribute("data-status") == "waiting_approval"
    page.goto(server["base"] + "/approvals/")
    card = page.locator(f"#approval-{seeded['decision']}")
    card.wait_for()
    return Waiting(run=seeded["run"], decision=seeded["decision"], page=page, run_page=run_page, card=card)


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
    seen = waiting(browser, server, "edit")
    assert "100 EUR to ACME" in seen.card.locator("pre.args").inner_text()
    seen.card.locator("details.edit-arguments summary").click()
    seen.card.locator(f"#edited-{seen.decision}").fill(json.dumps({"text": "90 EUR to ACME"}))
    screenshot(seen.page, "decisions-01-edit-before-approving")
    seen.decide(seen.card.locator("button.approve"))
    status = resumed_live(seen.run_page, server, seen.run, "A person edited this call before approving it", FINAL)
    assert status == "succeeded"
    assert "90 EUR to ACME" in seen.run_page.locator("li.step", has_text="A person edited this call").first.inner_text()
    screenshot(seen.run_page, "decisions-02-edited-call-ran")
    ledger = Path(server["seed"]["payments"]).read_text().splitlines()
    assert len(ledger) == 1 and "90 EUR to ACME" in ledger[0]
    seen.close()


def test_an_approver_extends_a_runs_budget_and_watches_it_go_on_under_the_raised_cap(browser, server):
    seen = waiting(browser, server, "budget")
    assert "1 / 1" in seen.run_page.locator(".bar", has_text="Tool calls").inner_text()
    assert "tool-call cap 1 reached (used 1); extend by 1?" in seen.card.inner_text()
    seen.card.locator("input[name=answer]").fill("2")
    screenshot(seen.page, "decisions-03-budget-extension")
    seen.decide(seen.card.locator("button.approve"))
    status = resumed_live(seen.run_page, server, seen.run, "effect 2", FINAL)
    assert status == "succeeded"
    # The meter on the open page shows this run's raised cap.
    assert "3 / 3" in seen.run_page.locator(".bar", has_text="Tool calls").inner_text()
    screenshot(seen.run_page, "decisions-04-budget-extended")
    seen.close()


def test_a_person_answers_the_agents_question_and_watches_the_answer_reach_the_model(browser, server):
    seen = waiting(browser, server, "question")
    assert "Which region should I roll back first?" in seen.card.locator("blockquote.question").inner_text()
    screenshot(seen.page, "decisions-05-question")
    seen.decide(seen.card.locator(".answer-options button", has_text="eu-1"))
    resumed_live(seen.run_page, server, seen.run, "A person answered: eu-1", FINAL)
    screenshot(seen.run_page, "decisions-06-answered")
    seen.close()


def test_a_person_lets_a_looping_run_continue_and_watches_it_go_on_until_the_next_loop_stops_it(browser, server):
    seen = waiting(browser, server, "loop")
    assert "same_failing_call" in seen.card.inner_text()
    screenshot(seen.page, "decisions-07-loop-escalation")
    seen.decide(seen.card.locator("button.approve", has_text="Continue"))
    status = resumed_live(seen.run_page, server, seen.run, "chose to continue", FINAL)
    assert status == "failed"
    assert server["script"]("status", str(seen.run))["tool_calls"] == 7, "three more tries after continue, then the next detection stopped it"
    screenshot(seen.run_page, "decisions-08-loop-continued-then-stopped")
    seen.close()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

    import django

    django.setup()
    command = sys.argv[1]
    if command == "seed":
        print(json.dumps(_seed(sys.argv[2])))
    elif command == "status":
        print(json.dumps(_status(int(sys.argv[2]))))
    else:
        raise SystemExit(f"unknown command {command}")
