"""The operator dashboard in headless Chromium (Playwright driving the system browser): the pages load and
show the jobs this test created, the cancel and retry buttons work, and a job's page shows its log lines.

The browser is Debian's ``chromium`` (`.ci/run` installs it when missing); XENIOS_TEST_CHROMIUM names
another binary. Without one the test fails and says so: it is never skipped. Screenshots of the pages
are kept in $XENIOS_SCREENSHOT_DIR (default /tmp): ops-overview.png and ops-job.png.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.chromium import CHROMIUM_ARGS, chromium_path
from tests.support.jobs import accepted_id, submit_analysis, wait_for_job
from tests.support.processes import ApiServer, wait_until

pytestmark = pytest.mark.usefixtures("job_worker")

OPS_PASSWORD = f"ops-{uuid.uuid4().hex}"
SCREENSHOTS = Path(os.environ.get("XENIOS_SCREENSHOT_DIR", tempfile.gettempdir()))


@pytest.fixture(scope="module")
def ops_url(test_env: dict[str, str]) -> Iterator[str]:
    """The API with the dashboard on, sharing the database, Redis and worker of the other job tests."""
    server = ApiServer(
        {
            **test_env,
            "OPS_DASHBOARD_ENABLED": "true",
            "OPS_PASSWORD": OPS_PASSWORD,
            "OPS_REFRESH_SECONDS": "1",
        }
    )
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh profile: no first-run, no sync
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS,
            http_credentials={"username": "ops", "password": OPS_PASSWORD},
            viewport={"width": 1440, "height": 900},
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel job ...?"
    yield page
    page.close()


def submit(base_url: str, text: str) -> str:
    body = {"task": "session_summary", "text": f"{text} ({uuid.uuid4()})"}
    return accepted_id(submit_analysis(base_url, body, "ops-test-user"))


def job(base_url: str, job_id: str, **kwargs: Any) -> dict[str, Any]:
    return wait_for_job(base_url, job_id, sub="ops-test-user", **kwargs)


def test_the_dashboard_shows_jobs_and_its_buttons_retry_and_cancel(
    ops_url: str, page: Page, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(
        Reply(status=400, error_message="refused by the test"), model="anthropic/claude-opus-4.5"
    )
    failing = submit(ops_url, "Coach: a session the provider refuses.")
    first_run = job(ops_url, failing)
    assert first_run["status"] == "failed"
    slow = submit(ops_url, 'Coach: a long one. [[fake:{"hang": 60}]]')
    assert job(ops_url, slow, statuses=("running",))["status"] == "running"

    page.goto(f"{ops_url}/ops/")
    expect(page).to_have_title(re.compile("Overview"))
    expect(page.locator("#queues tbody tr")).to_have_count(4)
    expect(page.locator("#queues tr[data-queue=llm]")).to_be_visible()
    expect(page.locator("#workers tbody")).to_contain_text("llm")
    failed_row = page.locator(f"#recent tr[data-job='{failing}']")
    expect(failed_row).to_contain_text("failed")
    expect(failed_row).to_contain_text("upstream_rejected")
    expect(page.locator(f"#failed tr[data-job='{failing}']")).to_contain_text("refused by the test")
    slow_row = page.locator(f"#recent tr[data-job='{slow}']")
    expect(slow_row).to_have_attribute("data-status", "running")
    expect(page.locator("#workers tbody")).to_contain_text(slow[:8])  # the worker's current job
    page.screenshot(path=str(SCREENSHOTS / "ops-overview.png"), full_page=True)

    slow_row.locator("button.cancel").click()
    expect(page.locator(".notice")).to_contain_text("cancel")
    expect(page.locator(f"#recent tr[data-job='{slow}']")).to_have_attribute("data-status", "cancelled")
    cancelled = job(ops_url, slow)
    assert (cancelled["status"], cancelled["error"]["code"]) == ("cancelled", "cancelled")

    page.locator(f"#recent tr[data-job='{failing}'] button.retry").click()
    expect(page.locator(".notice")).to_contain_text("retry")
    # it really runs again: the page refreshes itself until the second attempt has succeeded
    row = page.locator(f"#recent tr[data-job='{failing}']")
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row).to_contain_text("2/4")
    retried = job(ops_url, failing)
    assert (retried["status"], retried["attempts"], retried["error"]) == ("succeeded", 2, None)
    # the operator's retry is a new run: its start is not the failed run's
    assert datetime.fromisoformat(retried["started_at"]) >= datetime.fromisoformat(first_run["finished_at"])

    page.locator(f"#recent tr[data-job='{failing}'] a").first.click()
    expect(page).to_have_url(re.compile(f"/ops/jobs/{failing}"))
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    log = page.locator("#log")
    expect(log).to_contain_text("upstream_rejected")  # the first attempt's outcome
    expect(log).to_contain_text("operator ops: retry")
    expect(log).to_contain_text("succeeded")
    page.screenshot(path=str(SCREENSHOTS / "ops-job.png"), full_page=True)


def test_actions_need_the_login_the_form_token_and_the_same_site(ops_url: str) -> None:
    failing = submit(ops_url, 'Refused. [[fake:{"status": 400}]]')
    assert job(ops_url, failing)["status"] == "failed"
    auth = ("ops", OPS_PASSWORD)
    assert httpx.get(f"{ops_url}/ops/").status_code == 401
    assert httpx.get(f"{ops_url}/ops/", auth=("ops", "wrong")).status_code == 401
    assert httpx.get(f"{ops_url}/ops/", auth=("anyone", tokens.API_KEY)).status_code == 200
    assert httpx.get(f"{ops_url}/ops/", headers={"X-API-Key": tokens.API_KEY}).status_code == 200
    page = httpx.get(f"{ops_url}/ops/jobs/{failing}", auth=auth)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert token is not None
    retry = f"{ops_url}/ops/jobs/{failing}/retry"

    assert httpx.post(retry, auth=auth, data={}).status_code == 403
    assert httpx.post(retry, auth=auth, data={"csrf": "0" * 64}).status_code == 403
    cross_site = {"Origin": "https://evil.example"}
    assert httpx.post(retry, auth=auth, data={"csrf": token[1]}, headers=cross_site).status_code == 403
    assert (
        httpx.post(
            retry, auth=auth, data={"csrf": token[1]}, headers={"Sec-Fetch-Site": "cross-site"}
        ).status_code
        == 403
    )
    assert job(ops_url, failing)["status"] == "failed", "refused actions change nothing"

    done = httpx.post(retry, auth=auth, data={"csrf": token[1], "next": "//evil.example/"})
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/ops/jobs/{failing}?notice=")
    wait_until(lambda: job(ops_url, failing)["attempts"] == 2, 20, "the retried job's second attempt")
    assert job(ops_url, failing)["status"] == "failed"  # the same input is refused again
    again = httpx.post(f"{ops_url}/ops/jobs/{uuid.uuid4()}/cancel", auth=auth, data={"csrf": token[1]})
    assert again.status_code == 404


def test_the_dashboard_is_off_unless_enabled(api_server_url: str) -> None:
    response = httpx.get(f"{api_server_url}/ops/", headers={"X-API-Key": tokens.API_KEY})
    assert response.status_code == 404
