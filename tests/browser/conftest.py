"""Browser tests: Playwright (async API) driving the system's Chromium (Debian's
``chromium``, which ``scripts/test`` installs when missing), headless.

Fixtures:

- ``browser``: one Chromium for the session (``--no-sandbox`` when running as root, which
  Chromium's sandbox refuses);
- ``page``: a fresh context and page for each test; when the test ends, a screenshot of the
  page (full page) is saved as ``<artifacts>/screenshots/<test>.png``;
- ``screenshot``: ``await screenshot(page, "label")`` saves one now, as
  ``<artifacts>/screenshots/<test>--<label>.png``, and returns its path;
- ``artifacts_dir``: ``$NATCHET_ARTIFACTS_DIR``, else ``.natchet/artifacts`` in the repo
  (ignored by git; CI keeps it).

Chromium is ``$NATCHET_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH.
Not found, the tests skip, saying why, except with ``CI=true``, where they fail: CI never
skips them silently.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

REPO = Path(__file__).resolve().parents[2]
DEBIAN_BINARY = Path("/usr/lib/chromium/chromium")  # behind the /usr/bin/chromium shell wrapper

Screenshot = Callable[[Page, str], Awaitable[Path]]


def chromium_path() -> str | None:
    """The system Chromium to launch, or None."""
    given = os.environ.get("NATCHET_CHROMIUM")
    found = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        return None
    if found == "/usr/bin/chromium" and DEBIAN_BINARY.exists():
        # Debian's launcher is a shell script whose checks only print noise headless.
        return str(DEBIAN_BINARY)
    return found


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("NATCHET_ARTIFACTS_DIR") or REPO / ".natchet" / "artifacts")
    (path / "screenshots").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        why = (
            "chromium not found: install Debian's chromium (scripts/test does, as root)"
            " or set NATCHET_CHROMIUM"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI must run the browser tests", pytrace=False)
        pytest.skip(why)
    args = ["--disable-dev-shm-usage", "--disable-gpu"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=path, headless=True, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


def _file_name(nodeid: str) -> str:
    """A test's id as a file name: ``tests/browser/test_x.py::test_y[a]`` ->
    ``test_x.test_y-a``."""
    name = nodeid.rpartition("/")[2].replace(".py::", ".")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, artifacts_dir: Path) -> Screenshot:
    async def save(page: Page, label: str) -> Path:
        suffix = f"--{re.sub(r'[^A-Za-z0-9_.-]+', '-', label)}" if label else ""
        path = artifacts_dir / "screenshots" / f"{_file_name(request.node.nodeid)}{suffix}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture
async def page(browser: Browser, screenshot: Screenshot) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tab = await context.new_page()
        yield tab
        if not tab.is_closed():
            await screenshot(tab, "")
    finally:
        await context.close()
