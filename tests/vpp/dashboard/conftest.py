"""Fixtures of the dashboard tests: real `vpp serve --demo` processes and Debian's Chromium driven by Playwright.

The browser is the machine's ``/usr/bin/chromium`` (installed by the project's
set-up; nothing is downloaded), launched headless with Chromium's background
services off: the closed network refuses their connections otherwise.
Playwright's async API runs inside the test's own event loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.test_end_to_end import _parse_banner, _read_banner, _stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SPEED = 20.0  # simulated seconds per wall second
VIEWPORT = {"width": 1400, "height": 900}
DEMO_ENTERPRISES = 8
BIG_PARK_ENTERPRISES = 345  # build_park(seed=7, 345) has 1,009 devices


@dataclass
class Demo:
    """A running demo service: its URL, demo tokens, the enterprise of the enterprise token, data dir."""

    url: str
    tokens: dict[str, str]
    enterprise_id: str
    data_dir: Path
    month: str | None = None  # month with recorded history (settlement and carbon), if any
    process: subprocess.Popen | None = field(default=None, repr=False)


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr[-2000:]}"
    return done.stdout


def _serve(data_dir: Path, enterprises: int, env: dict[str, str] | None = None) -> Demo:
    process = subprocess.Popen(
        [sys.executable, "-m", "vpp.cli", "serve", "--demo", "--port", "0", "--data-dir", str(data_dir),
         "--speed", str(SPEED), "--enterprises", str(enterprises), "--control-interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        url, tokens, enterprise_id = _parse_banner(_read_banner(process))
    except BaseException:
        _stop(process)
        raise
    return Demo(url=url, tokens=tokens, enterprise_id=enterprise_id, data_dir=data_dir, process=process)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    """The 8-enterprise demo park with last month's history (settlement, carbon recorded), served live."""
    data_dir = tmp_path_factory.mktemp("dashboard-demo")
    month = _run("-m", "tests.vpp.dashboard.history", str(data_dir), "--enterprises", str(DEMO_ENTERPRISES)).strip()
    _run("-m", "vpp.cli", "carbon", "run", "--month", month, "--data-dir", str(data_dir))
    running = _serve(data_dir, DEMO_ENTERPRISES, {"VPP_SETTLEMENT_CONFIG": str(data_dir / "programme.toml")})
    running.month = month
    try:
        yield running
    finally:
        _stop(running.process)


@pytest.fixture
def big_park(tmp_path) -> Iterator[Demo]:
    """A demo park of over a thousand devices, served live."""
    running = _serve(tmp_path, BIG_PARK_ENTERPRISES)
    try:
        yield running
    finally:
        _stop(running.process)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshots(request) -> Path:
    """test-output/screenshots/ under the repository root (git-ignored)."""
    folder = request.config.rootpath / "test-output" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Session:
    """A signed-in page and what it did: every request URL and every script error (not failed loads)."""

    page: Page
    requests: list[str]
    errors: list[str]


def _console(session: Session, kind: str, text: str) -> None:
    # A 4xx the page handles (403 probe, 404 month without records) is logged by Chromium too; not a script error.
    if kind == "error" and not text.startswith("Failed to load resource"):
        session.errors.append(f"console error: {text}")


async def open_dashboard(browser: Browser, url: str) -> Session:
    """A fresh browser context on the dashboard's sign-in page."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    session = Session(page=page, requests=[], errors=[])
    page.on("request", lambda r: session.requests.append(r.url))
    page.on("pageerror", lambda e: session.errors.append(f"page error: {e}"))
    page.on("console", lambda m: _console(session, m.type, m.text))
    await page.goto(f"{url}/")
    await page.wait_for_selector("#login-form")
    return session


async def sign_in(browser: Browser, url: str, token: str) -> Session:
    """Open the dashboard and sign in with ``token``; returns once the role's view is drawn."""
    session = await open_dashboard(browser, url)
    await session.page.fill("#token", token)
    await session.page.click("#login-submit")
    await session.page.wait_for_selector("body[data-ready=true]")
    return session


async def data_value(page: Page, selector: str) -> float:
    """The numeric ``data-value`` of an element, once it has one."""
    await page.wait_for_function(
        "(s) => { const el = document.querySelector(s); return el && el.dataset.value !== ''; }", arg=selector
    )
    return float(await page.get_attribute(selector, "data-value"))
