"""The API's Swagger UI page works without internet: a real browser, cut off from every host but this one, lists the operations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from browser_support import Browser
from conftest import which
from test_serving_support import Champion, Server, champion, server_env  # noqa: F401 (fixture)

from serving.openapi import SWAGGER_ASSETS

OPERATIONS = "Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.getAttribute('data-path'))"


@pytest.fixture(scope="module")
def server(champion: Champion, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("docs-page")
    running = Server(server_env(champion.settings, auth_enabled=True), log_path=home / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_swagger_ui_lists_every_operation_with_no_request_off_this_server(server: Server, tmp_path: Path) -> None:
    documented = set(httpx.get(f"{server.url}/schema/openapi.json", timeout=10).json()["paths"])
    browser = Browser(which("chromium"), tmp_path)
    try:
        with browser.open(f"{server.url}/schema/swagger") as page:
            page.wait_for(f"{OPERATIONS}.length >= {len(documented)}")
            shown = page.evaluate(OPERATIONS)
            screenshot = page.screenshot(tmp_path / "api-docs.png")
            page.evaluate("1")  # collect the events that came with the screenshot
    finally:
        browser.close()
    print(f"screenshot of the docs page: {screenshot}")
    assert set(shown) == documented and "/predict" in shown
    origin = urlsplit(server.url).netloc
    offsite = [url for url in page.requested if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != origin]
    assert offsite == [], offsite
    assert any(urlsplit(url).path == f"{SWAGGER_ASSETS}/swagger-ui-bundle.js" for url in page.requested), page.requested
    assert page.failed == []
    assert screenshot.stat().st_size > 10_000
