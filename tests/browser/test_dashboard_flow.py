"""The dashboard in a real Chromium, as an operator uses it (issue 12): sign in with
``natchet dev``'s operator credential, add a tenant from the dropdown, generate a token,
start a worker with it and publish an event, watch the run appear and succeed without a
reload, open it (the DAG's four coloured steps, a log line), cancel a running run, revoke
the token and see the worker refused. A screenshot of each page lands in the artifacts."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Screenshot
from tests.conftest import eventually
from tests.support import clean_env, start_natchet_dev, stop
from worker import ClientSettings, Hatchet
from worker.vitals import Exit

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 30_000

WORKER = f"""
import sys, time
sys.path.insert(0, {str(ROOT / "examples")!r})
from demo_worker import UserSignup, hatchet

@hatchet.workflow(name="Slow")
class Slow:
    @hatchet.step(timeout=300)
    def wait(self, context):
        while not context.cancelled:
            time.sleep(0.05)
        return {{}}

worker = hatchet.worker("browser-worker", max_runs=4)
worker.register_workflow(UserSignup())
worker.register_workflow(Slow())
worker.start()
"""


@attrs.frozen
class Dev:
    url: str
    credential: str
    env: dict[str, str]  # the dev stack's worker environment (dev.env)


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Dev]:
    """``natchet dev`` (embedded NATS with auth callout, Postgres, engine, dashboard)."""
    data = tmp_path / "data"
    proc, text = await start_natchet_dev(tmp_path, data)
    try:
        url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+)", text)
        credential = re.search(r"(nco_\S+)", text)
        assert url and credential, text
        env = dict(
            line.split("=", 1)
            for line in (data / "dev.env").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        yield Dev(url.group(1), credential.group(1), env)
    finally:
        await stop(proc)


# In the page: every text node's colour against the background it sits on (WCAG's contrast
# ratio), every form control's and button's accessible name, and what Tab reaches first.
AUDIT = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((c) => { c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.closest("svg")) continue;
    const a = lum(parse(style.color).slice(0, 3)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${ratio.toFixed(2)}: ${n.textContent.trim().slice(0, 40)}`);
  }
  const controls = "input:not([type=hidden]), select, textarea, button";
  const unnamed = [...document.querySelectorAll(controls)]
    .filter((el) => el.getClientRects().length)
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
      && !el.getAttribute("aria-labelledby") && !(el.tagName === "BUTTON" && el.textContent.trim()))
    .map((el) => el.outerHTML.slice(0, 80));
  return {low, unnamed};
}"""


async def accessible(page: Page) -> None:
    """The page's text has 4.5:1 contrast, every control a name, and the keyboard reaches
    the skip link first, then the page's controls."""
    audit = await page.evaluate(AUDIT)
    assert audit == {"low": [], "unnamed": []}, (page.url, audit)
    await page.keyboard.press("Tab")
    first = await page.evaluate("document.activeElement && document.activeElement.outerHTML")
    assert first and "skip" in first.lower(), (page.url, first)


async def start_worker(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    script = tmp_path / "browser_worker.py"
    script.write_text(WORKER)
    log = (tmp_path / "worker.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=clean_env(**env), stdout=log, stderr=log
    )
    log.close()
    return proc


async def sign_in_and_add_a_tenant(dev: Dev, page: Page, screenshot: Screenshot) -> str:
    """Sign in with the operator credential natchet dev printed; add a tenant from the
    dropdown in the bottom-left corner."""
    await page.goto(f"{dev.url}/signin")
    await screenshot(page, "signin")
    await accessible(page)
    await page.fill("#token", dev.credential)
    await page.click('button:has-text("Sign in")')
    await expect(page.locator("details#tenant-menu")).to_be_visible(timeout=WAIT_MS)
    tenant = f"b{uuid.uuid4().hex[:10]}"
    await page.click("details#tenant-menu > summary")
    await page.fill("#new-tenant", tenant)
    await screenshot(page, "tenant-menu")
    await page.click('form.add-tenant button:has-text("Create")')
    await expect(page.locator("details#tenant-menu")).to_contain_text(tenant, timeout=WAIT_MS)
    return tenant


async def generate_a_token(dev: Dev, page: Page, screenshot: Screenshot, tenant: str) -> str:
    """On the tenant's settings page: shown once, with its .env block."""
    await page.goto(f"{dev.url}/t/{tenant}/settings")
    await page.fill("#tok-name", "browser")
    await page.click('button:has-text("Generate token")')
    token = await page.input_value("#issued-token")
    assert token.startswith("nct_")
    assert f"HATCHET_CLIENT_TOKEN={token}" in await page.input_value("#issued-env")
    await screenshot(page, "token")
    await accessible(page)
    await page.goto(f"{dev.url}/t/{tenant}/settings")
    assert token not in await page.content()  # never shown again
    return token


async def wait_started(worker: asyncio.subprocess.Process, log: Path) -> None:
    def started() -> bool:
        assert worker.returncode is None, log.read_text()
        return "started:" in log.read_text()

    await eventually(started, timeout_s=60)


async def watch_a_run_succeed(
    dev: Dev, page: Page, screenshot: Screenshot, tenant: str, hatchet: Hatchet
) -> None:
    """The runs page is open before the event: its run appears and turns SUCCEEDED with no
    reload; its page shows the DAG's four steps coloured by status and the step's log."""
    await page.goto(f"{dev.url}/t/{tenant}/runs")
    await expect(page.locator("tr[data-run]")).to_have_count(0)
    await hatchet.event.aio_push("user:create", {"id": 1, "email": "One@Example.com"})
    done = page.locator('tr[data-run][data-status="SUCCEEDED"]')
    await expect(done).to_have_count(1, timeout=WAIT_MS)
    await screenshot(page, "runs")
    await accessible(page)
    await done.locator("a").click()
    steps = page.locator('g.step[data-status="SUCCEEDED"]')
    await expect(steps).to_have_count(4, timeout=WAIT_MS)
    await expect(page.get_by_text("validating user 1").first).to_be_visible()
    await screenshot(page, "run")
    await accessible(page)


async def cancel_a_running_run(
    dev: Dev, page: Page, screenshot: Screenshot, tenant: str, hatchet: Hatchet
) -> None:
    ref = await hatchet.admin.aio_run_workflow("Slow", {})
    await page.goto(f"{dev.url}/t/{tenant}/runs")
    row = page.locator(f'tr[data-run="{ref.workflow_run_id}"][data-status="RUNNING"]')
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await row.locator("a").click()
    await expect(page.locator("h1 .status")).to_have_text("RUNNING", timeout=WAIT_MS)
    await page.click('button:has-text("Cancel")')
    await expect(page.locator("h1 .status")).to_have_text("CANCELLED", timeout=WAIT_MS)
    await screenshot(page, "cancelled")


async def revoke_and_see_the_worker_refused(
    dev: Dev,
    page: Page,
    screenshot: Screenshot,
    tenant: str,
    worker: asyncio.subprocess.Process,
    log: Path,
) -> None:
    await page.goto(f"{dev.url}/t/{tenant}/workers")
    await expect(page.get_by_text("browser-worker").first).to_be_visible(timeout=WAIT_MS)
    await screenshot(page, "workers")
    await accessible(page)
    await page.goto(f"{dev.url}/t/{tenant}/settings")
    await page.locator('button[aria-label^="Revoke token"]').first.click()
    await expect(page.locator('button[aria-label^="Revoke token"]')).to_have_count(0)
    code = await asyncio.wait_for(worker.wait(), 60)
    said = log.read_text()
    assert code == Exit.NO_PERMISSION, said[-2000:]
    last = said.strip().splitlines()[-1]
    assert "refuses this worker's token" in last and "revoked" in last, last
    await page.goto(f"{dev.url}/t/{tenant}/workers")
    await screenshot(page, "worker-refused")


async def test_an_operator_runs_natchet_from_the_dashboard(
    dev: Dev, page: Page, screenshot: Screenshot, tmp_path: Path
) -> None:
    tenant = await sign_in_and_add_a_tenant(dev, page, screenshot)
    token = await generate_a_token(dev, page, screenshot, tenant)
    env = {
        "HATCHET_CLIENT_TOKEN": token,
        "HATCHET_CLIENT_HOST_PORT": dev.env["HATCHET_CLIENT_HOST_PORT"],
        "HATCHET_CLIENT_NAMESPACE": "default",
        **{k: v for k, v in dev.env.items() if k.startswith("HATCHET_CLIENT_TLS")},
    }
    worker = await start_worker(tmp_path, env)
    log = tmp_path / "worker.log"
    try:
        await wait_started(worker, log)
        hatchet = Hatchet(settings=ClientSettings.from_env(env))
        try:
            await watch_a_run_succeed(dev, page, screenshot, tenant, hatchet)
            await cancel_a_running_run(dev, page, screenshot, tenant, hatchet)
        finally:
            hatchet.close()  # before the token it holds is revoked
        await revoke_and_see_the_worker_refused(dev, page, screenshot, tenant, worker, log)
    finally:
        await stop(worker)
