"""Browser tests: Playwright for Python driving Debian's Chromium.

``make browser`` (a prerequisite of ``make test``) installs Chromium and
axe-core where they are missing; Playwright's own browser download is not
used. Each test gets a fresh browser context against pytest-django's live
server (the real PostgreSQL test database, with the static files), and saves a
screenshot of every page it visits under ``var/test/screenshots/<test>/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

# Playwright's sync API runs an event loop in this thread; the ORM calls the
# tests make between page actions are synchronous and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CIVITAS_CHROMIUM", "/usr/bin/chromium")
AXE = ROOT / "tests" / "e2e" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"
# The WCAG 2.1 A and AA rules; a serious or critical violation fails the test.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PASSWORD = "correct-horse-battery-staple-42"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module; its driver and browser end with the module.

    Playwright's sync API runs an event loop in this thread, so Django is told
    that the ORM calls the tests make between page actions are safe here, for
    as long as the browser lives and not a moment longer (the rest of the suite,
    and the processes it starts, must not inherit it).
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-background-networking"],
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


class Screenshots:
    """Numbered full-page screenshots of one test, in the order it took them."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, page: Page, name: str) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.folder / f"{len(self.taken) + 1:02d}-{slug}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def shot(request) -> Screenshots:
    """``shot(page, "name")`` saves the page under var/test/screenshots/<test>/."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    return Screenshots(SCREENSHOTS / test)


def new_page(
    browser: Browser, base_url: str, *, width: int = 1280, locale: str = "en-GB"
) -> Page:
    """A page in a fresh context (its own cookies) against the live server."""
    context = browser.new_context(
        base_url=base_url,
        locale=locale,
        viewport={"width": width, "height": 900},
    )
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def page(browser, live_server) -> Iterator[Page]:
    """A desktop-width page on the live server, English first."""
    page = new_page(browser, live_server.url)
    yield page
    page.context.close()


@pytest.fixture
def phone(browser, live_server) -> Iterator[Page]:
    """A phone-width page (360 CSS pixels) on the live server."""
    page = new_page(browser, live_server.url, width=360)
    yield page
    page.context.close()


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Sign in through the portal's own form."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").last.click()
    page.wait_for_load_state()


def switch_language(page: Page, code: str) -> None:
    """Choose a language with the switcher every page carries."""
    page.locator("#lang-select").select_option(code)
    page.locator(".lang-switch button").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == code


def axe_violations(page: Page) -> list[dict]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page.

    The script is evaluated through the DevTools protocol, so the page's CSP
    (which allows no injected script) stays in force for everything else.
    """
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `make browser` (npm ci in tests/e2e)")
    page.evaluate(AXE.read_text())
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def assert_accessible(page: Page) -> None:
    """Fail with axe-core's findings when the page has a serious violation."""
    violations = axe_violations(page)
    assert violations == [], f"{page.url}: {violations}"


def accessible_in_both_languages(page: Page, shot, name: str) -> None:
    """Axe-check and screenshot the page in English, then in French, then back."""
    assert_accessible(page)
    shot(page, f"{name}-en")
    switch_language(page, "fr")
    assert_accessible(page)
    shot(page, f"{name}-fr")
    switch_language(page, "en")
