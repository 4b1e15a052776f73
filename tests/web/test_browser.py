"""The pages in a real browser: Debian's chromium driven by Playwright for Python.

uvicorn serves ``create_app(settings)`` on a free loopback port in a thread,
over a real SQLite store. No browser is downloaded: Playwright launches
``/usr/bin/chromium`` (``scripts/install.sh`` installs it). Without chromium
the test is skipped on a workstation, and fails on CI (``$CI`` set).
Screenshots go to ``tmp_path`` (and to ``$RADNODE_WEB_SCREENSHOTS`` if set,
to look at them).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from radnode.store import jobs as jobstore
from radnode.model.jobs import JobState
from radnode.routing.setup import DEFAULT_RULES
from radnode.store.db import open_store
from radnode.settings import Settings
from radnode.store.pulls import PullRequestRow
from radnode.web.auth import add_user
from tests.support.ports import free_port
from tests.support.require import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright; no 'playwright install')")
    if missing:
        unavailable("browser test needs " + " and ".join(missing))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    """uvicorn serving the app on a free loopback port, in a thread of this process."""
    import uvicorn

    from radnode.web.app import create_app

    rules = tmp_path / "routing.yaml"
    shutil.copy(DEFAULT_RULES, rules)
    settings = Settings(
        data_dir=tmp_path / "data",
        routing={"rules_file": str(rules)},
        web={"secure_cookies": False},  # plain http on loopback
        peers=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}],
    )
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "adam", PASSWORD, "admin")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", settings
    server.should_exit = True
    thread.join(10)


def _shot(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("RADNODE_WEB_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pages_in_chromium(served: tuple[str, Settings], tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    base, settings = served
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        job, _ = jobstore.create_job(
            s,
            jobstore.JobRequest("1.2.826.0.1.3", "glioma", "0.1.0+demo", {"t1c": "1.2.826.0.1.3.1", "flair": "1.2.826.0.1.3.2"}, accession="ACC0001",
                             selection={"t1c": {"label": "T1c", "probability": 0.97}, "flair": {"label": "FLAIR", "probability": 0.88}}),
        )
        job_id = job.job_id
        other, _ = jobstore.create_job(s, jobstore.JobRequest("1.2.826.0.1.4", "glioma", "0.1.0+demo", {"t1c": "1.2.826.0.1.4.1"}, accession="ACC0002"))
        jobstore.transition(s, other.job_id, JobState.FAILED, actor="worker-1", error="t1c: series has 3 slices; at least 16 are needed")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Script errors only: a 422 page (the refused routing edit) is logged as a failed load too.
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Failed to load resource" not in msg.text else None)
            failed_loads: list[str] = []
            page.on("response", lambda r: failed_loads.append(r.url) if r.status == 404 else None)

            # Log in (an anonymous visit lands on the login page).
            page.goto(f"{base}/jobs")
            expect(page).to_have_url(f"{base}/login?next=%2Fjobs")
            page.fill("input[name=username]", "adam")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]:has-text('Log in')")
            expect(page).to_have_url(f"{base}/jobs")

            # The list follows the store live, without a reload.
            row = page.locator(f"tr[data-job='{job_id}']")
            expect(row.locator(".state")).to_have_text("queued")
            page.evaluate("window.__noReload = true")
            with sessions.begin() as s:
                jobstore.claim(s, job_id, "worker-1", lease_seconds=60, take_over=False)
                jobstore.transition(s, job_id, JobState.INFERRING, actor="worker-1")
            expect(row.locator(".state")).to_have_text("inferring", timeout=10_000)
            assert page.evaluate("window.__noReload") is True
            expect(page.locator("#live-status")).to_contain_text("updated")
            _shot(page, tmp_path, "jobs")

            # The job page: stages, series with probabilities, log.
            row.locator("a").click()
            expect(page).to_have_url(f"{base}/jobs/{job_id}")
            expect(page.locator("ol.timeline")).to_contain_text("preprocessing")
            expect(page.get_by_text("0.97")).to_be_visible()
            expect(page.locator("table.log")).to_contain_text("worker-1")
            _shot(page, tmp_path, "job")

            # The pre-filled submit form does nothing until it is clicked.
            page.goto(f"{base}/submit?accession=ACC0099&app=glioma")
            expect(page.locator("input[name=accession]")).to_have_value("ACC0099")
            expect(page.locator("select[name=application]")).to_have_value("glioma")
            expect(page.locator("select[name=opt_brain_extraction]")).to_have_value("deepbet")
            time.sleep(1.0)
            with sessions() as s:
                assert s.query(PullRequestRow).count() == 0, "the pre-filled form submitted itself"
            page.check("input[name=opt_bias_field_correct]")
            _shot(page, tmp_path, "submit")
            page.click("button[type=submit]:has-text('Submit')")
            expect(page).to_have_url(re.compile(re.escape(f"{base}/pulls/1") + r"(\?.*)?$"))
            with sessions() as s:
                pull = s.query(PullRequestRow).one()
                assert (pull.accession, pull.application, pull.requested_by) == ("ACC0099", "glioma", "adam")
                assert '"bias_field_correct": true' in pull.options_json
            # The PACS of this test is down: the page follows the pull to its diagnosis.
            expect(page.locator("#pull-state")).to_have_text("failed", timeout=30_000)

            # A routing edit with an error: refused with its line number, file unchanged.
            rules = Path(str(settings.routing.rules_file))
            before = rules.read_text()
            page.goto(f"{base}/routing")
            bad = before.replace("applications: [glioma]", "applications: [glioma, nonexistent]")
            line = bad.splitlines().index("    applications: [glioma, nonexistent]") + 1
            page.fill("#routing-text", bad)
            page.click("button:has-text('Validate and save')")
            issues = page.locator("#routing-issues")
            expect(issues).to_contain_text(f"line {line}, column")
            expect(issues).to_contain_text("nonexistent")
            assert rules.read_text() == before
            expect(page.locator("#routing-text")).to_have_value(bad)  # the draft is kept for fixing
            page.click("#theme-toggle")
            expect(page.locator("html")).to_have_attribute("data-theme", "dark")
            _shot(page, tmp_path, "routing-error-dark")
            page.reload()
            expect(page.locator("html")).to_have_attribute("data-theme", "dark")  # remembered
            assert not errors, errors
            assert not failed_loads, failed_loads  # every script, style and icon is served locally
        finally:
            browser.close()
    for name in ("jobs", "job", "submit", "routing-error-dark"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
