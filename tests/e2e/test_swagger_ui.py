"""Swagger UI at /schema in headless Chromium, offline: the page renders every operation of the document
and the browser asks nothing of any host but the server (issue 20).

Requests to any other origin are aborted and recorded: a CDN asset, the swagger.io validator badge or a
font would be one. The browser is Debian's Chromium (tests/support/chromium.py). A screenshot is kept in
$XENIOS_SCREENSHOT_DIR (default /tmp): swagger-ui.png.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Route, expect, sync_playwright

from tests.support.chromium import CHROMIUM_ARGS, chromium_path

SCREENSHOTS = Path(os.environ.get("XENIOS_SCREENSHOT_DIR", tempfile.gettempdir()))
METHODS = {"get", "post", "put", "patch", "delete"}


def test_swagger_ui_renders_every_operation_offline(api_server_url: str, tmp_path_factory: Any) -> None:
    document = httpx.get(f"{api_server_url}/schema/openapi.json", timeout=30).json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]
    assert len(operations) > 20
    local: list[str] = []
    outside: list[str] = []

    def only_the_server(route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{api_server_url}/") or url.startswith(("data:", "blob:")):
            local.append(url)
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-swagger")),
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            context.set_default_timeout(20_000)
            context.route("**/*", only_the_server)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{api_server_url}/schema", wait_until="networkidle")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(document["info"]["title"])
            blocks = page.locator(".opblock")
            expect(blocks).to_have_count(len(operations))
            shown = {
                (
                    block.locator(".opblock-summary-method").inner_text().strip(),
                    block.locator("[data-path]").first.get_attribute("data-path"),  # also a deprecated one's
                )
                for block in blocks.all()
            }
            assert shown == set(operations)
            # One operation opened: its parameters and its problem responses render from the document.
            job = page.locator(".opblock-get", has=page.locator('[data-path="/api/v1/jobs/{job_id}"]')).first
            job.locator(".opblock-summary").click()
            expect(job.locator(".responses-table")).to_contain_text("404")
            expect(job.locator(".parameters")).to_contain_text("job_id")
            page.screenshot(path=str(SCREENSHOTS / "swagger-ui.png"), full_page=False)
        finally:
            context.close()
    assert outside == []
    assert errors == []
    assert any(url.endswith("/schema/assets/swagger-ui-bundle.js") for url in local)
