"""The browser harness works: the system Chromium renders a page served over HTTP (layout,
CSS, script), and a screenshot of it lands in the artifacts directory."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Screenshot

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>natchet smoke</title>
<style>#box { width: 200px; height: 100px; background: rgb(0, 128, 0); }</style></head>
<body><h1>Runs</h1><div id="box"></div><p id="js">no script</p>
<script>document.getElementById("js").textContent = "script ran";</script></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """``tmp_path`` served over HTTP on a free port: its base URL."""
    (tmp_path / "index.html").write_text(HTML, "utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_chromium_renders_a_served_page_and_it_is_screenshotted(
    page: Page, site: str, screenshot: Screenshot
) -> None:
    response = await page.goto(site)
    assert response is not None and response.ok
    assert await page.title() == "natchet smoke"
    assert await page.locator("h1").inner_text() == "Runs"
    assert await page.locator("#js").inner_text() == "script ran"
    box = await page.locator("#box").bounding_box()
    assert box is not None and (box["width"], box["height"]) == (200, 100)
    colour = await page.locator("#box").evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(0, 128, 0)"

    shot = await screenshot(page, "rendered")
    assert shot.parent.name == "screenshots" and shot.name.endswith("--rendered.png")
    width, height = png_size(shot)
    assert width == 1280 and height >= 100
