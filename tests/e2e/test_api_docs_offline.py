"""The API's OpenAPI pages work with no network but the API: `/docs` and `/redoc` in headless Chromium, every
request to anything else refused.

Debian's Chromium (`apt-get install chromium`) through playwright, which downloads no browser; skipped where
there is none. One live API (one uvicorn worker) and one browser for both pages: about 8 s on this machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.processes import live_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
CLAIM = "/jobs/{job_id}:claim"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""ReDoc's makers' logo, which it loads from their CDN and hides when it cannot; the pages' policy forbids it."""


@dataclass
class Browser:
    api: str
    page: Any
    refused: list[str] = field(default_factory=list)
    """Requests the browser sent anywhere but the API (refused as if offline)."""
    errors: list[str] = field(default_factory=list)
    """What the page logged as errors (a script that failed, a load the page's policy blocked)."""

    def open(self, path: str) -> None:
        self.refused.clear()
        self.errors.clear()
        self.page.goto(self.api + path)


@pytest.fixture(scope="module")
def browser(settings, tmp_path_factory) -> Iterator[Browser]:
    """A live API, and a browser page that reaches it and nothing else."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    home = tmp_path_factory.mktemp("docs_offline")
    with live_api(settings, home) as url, sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            state = Browser(url, page)

            def only_the_api(route) -> None:
                if route.request.url.startswith(url + "/"):
                    route.continue_()
                else:
                    state.refused.append(route.request.url)
                    route.abort("internetdisconnected")

            page.route("**/*", only_the_api)
            page.on("console", lambda message: message.type == "error" and state.errors.append(message.text))
            page.on("pageerror", lambda error: state.errors.append(str(error)))
            yield state
        finally:
            chromium.close()


def _operations(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(url + "/openapi.json", timeout=30).json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def test_swagger_ui_renders_every_endpoint_offline(browser: Browser):
    browser.open("/docs")
    paths = browser.page.locator(".opblock-summary-path")
    paths.first.wait_for()
    shown = [text.replace("\u200b", "").strip() for text in paths.all_inner_texts()]
    assert sorted(shown) == sorted(path for _, path in _operations(browser.api))
    assert CLAIM in shown
    assert browser.page.locator(".swagger-ui .info .title").inner_text().startswith("NMDC Runtime API")
    assert browser.refused == []
    assert browser.errors == []


def test_redoc_renders_every_endpoint_offline(browser: Browser):
    browser.open("/redoc")
    # ReDoc lists each operation in its menu (tags folded) with the method as a label, and shows each one's
    # method and path in its own section.
    menu = browser.page.locator("[role=menuitem] .operation-type")
    menu.first.wait_for(state="attached")
    assert menu.count() == len(_operations(browser.api))
    browser.page.get_by_text(CLAIM).first.wait_for(state="attached")
    assert browser.refused == []
    assert all(REDOC_LOGO in error for error in browser.errors), browser.errors
