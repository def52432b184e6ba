"""Real-browser fixtures: Debian's Chromium driven by Playwright against the real server.

- `live_server`: the application on a free port of 127.0.0.1 (this run's database, Redis and
  SMTP), with `BASE_URL` its own address; yields that address.
- `page`: a fresh browser context and page (1280x800) per test, in one Chromium per session.
- `check_page(page, name)`: what every page must pass, at 1280 px and at 375 px: no horizontal
  scrolling, no serious or critical axe-core violation; saves a screenshot at each width when
  `SCREENSHOTS_DIR` is set (`tests/browser/screens/` under `make screenshots`).

They run in `make test` (and `make test-browser` runs only them). Without Chromium or the
`playwright` package they skip, and fail under `CI=true` (`.ci/run` installs Chromium).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from commands.devstack import free_port
from tests.oidc.conftest import browser_port, oidc_provider  # noqa: F401  (test_sso.py's provider)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
BAD_IMPACTS = ("serious", "critical")


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not HAVE_CHROMIUM:
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(20_000)
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
async def live_server(aiohttp_server, settings, pool) -> str:
    """The application on 127.0.0.1:<free port>; its address (also its BASE_URL)."""
    from api.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await aiohttp_server(create_app(settings.replace(base_url=base)), port=port)
    return base


async def horizontal_overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


async def axe_violations(page: Any) -> list[str]:
    """Serious and critical axe-core violations on the page, one line each."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] in BAD_IMPACTS:
            targets = [", ".join(node["target"]) for node in violation["nodes"]][:3]
            found.append(f"{violation['id']} ({violation['impact']}): {targets}")
    return found


@pytest.fixture
def check_page() -> Any:
    """`await check_page(page, "members")`: no sideways scrolling and no serious axe finding at
    1280 and 375 px; screenshots `<SCREENSHOTS_DIR>/<name>-<width>.png` when asked for."""
    shots = os.environ.get("SCREENSHOTS_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)

    async def check(page: Any, name: str) -> None:
        for size in (DESKTOP, PHONE):
            await page.set_viewport_size(size)
            overflow = await horizontal_overflow(page)
            assert overflow <= 0, f"{name} at {size['width']} px scrolls sideways by {overflow} px"
            violations = await axe_violations(page)
            assert violations == [], f"{name} at {size['width']} px: {violations}"
            if shots:
                # A modal dialog is shot as the person sees it: the window, over its backdrop.
                modal = await page.evaluate("!!document.querySelector('dialog:modal')")
                await page.screenshot(
                    path=str(Path(shots) / f"{name}-{size['width']}.png"), full_page=not modal
                )
        await page.set_viewport_size(DESKTOP)

    return check
