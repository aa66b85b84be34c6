"""A real ASGI server (daphne) in a subprocess, for tests that need real websockets; the live site
the browser tests drive (its own database and environment), and the browser (Debian's chromium)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, stop_group

SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def daphne(env: dict[str, str], log_path: Path, *, timeout_s: float = 60) -> Iterator[str]:
    """Yields the server's base URL once /login/ answers; its log goes to a file."""
    port = free_port()
    daphne_bin = str(Path(sys.executable).with_name("daphne"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [daphne_bin, "-b", "127.0.0.1", "-p", str(port), "agentops.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(base + "/login/", timeout=2).close()
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"daphne did not start:\n{log_path.read_text()[-3000:]}") from None
                    time.sleep(0.3)
            yield base
        finally:
            stop_group(proc, grace_s=10)


# --- a live site in subprocesses, on a database of its own ------------------------------------------


@contextmanager
def scratch_database(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a database of its own for a live site's processes (the test process never touches
    it): a fresh PostgreSQL database, dropped afterwards, when DATABASE_URL is PostgreSQL, else a
    SQLite file."""
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path_factory.mktemp(name) / 'agentops.sqlite3'}"
        return
    import psycopg

    database = f"agentops_{name}_{uuid.uuid4().hex[:8]}"
    server_url = database_url.rsplit("/", 1)[0]
    with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        yield f"{server_url}/{database}"
    finally:
        with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def site_env(database_url: str, data_dir: Path, *, without: Collection[str] = (), **extra: str) -> dict[str, str]:
    """The environment of a live site's processes: this one's, less DJANGO_SETTINGS_MODULE (they run
    the site's own settings) and `without`, plus `extra`."""
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE" and k not in without}
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "browser-test-secret",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AGENTOPS_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)


def run_json(env: dict[str, str], *args: str, timeout: float) -> Any:
    """Runs a Python script (`args`) against the live site's database; its last line of output is JSON."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, timeout=timeout, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the browser --------------------------------------------------------------------------------------


def need_browser() -> None:
    """Locally a missing browser skips, saying why; in CI it fails."""
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


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Every message the browser logs about the Content-Security-Policy (a blocked inline script or
# style, a refused websocket): each test must leave this empty.
CSP_VIOLATIONS: list[str] = []


@pytest.fixture(autouse=True)
def no_csp_violation() -> Iterator[None]:
    """Autouse in the modules that import it: the test fails on any CSP violation its pages logged."""
    CSP_VIOLATIONS.clear()
    yield
    assert CSP_VIOLATIONS == []


def watch_csp(page: Any) -> Any:
    page.on("console", lambda msg: CSP_VIOLATIONS.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None)
    return page


def new_page(browser: Any) -> Any:
    """A page in a fresh context (cookies of its own), watched for CSP violations."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(15_000)
    return watch_csp(context.new_page())


def sign_in(page: Any, base: str, username: str, password: str, *, shot: str | None = None) -> None:
    """Signs in on the login page (a screenshot of it named `shot` first) and waits for the overview."""
    page.goto(base + "/login/")
    if shot:
        screenshot(page, shot)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def screenshot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
