"""The radiologist's path in a real browser (Debian chromium, Playwright):
log in, submit an accession that exists in a test Orthanc, follow the pull
until it becomes a job, watch the job reach done, open its PDF report.
A real node (listener, router, embedded queue, worker, web app) serves it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from radnode.composition import Node
from radnode.settings import Settings
from radnode.synth.mr_study import generate_mr_study
from radnode.web.auth import add_user
from tests.conftest import wait_for_port
from tests.support.ports import free_port
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, _need_browser, _shot

ACCESSION = "ACC7001"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_submit_an_accession_and_open_the_report(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    pacs = orthanc_factory(aet="HOSPITALPACS")
    rules = tmp_path / "routing.yaml"
    rules.write_text("version: 1\nrules: []\n")  # nothing runs unless someone asks
    web_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        quiet_seconds=1.0,
        peers=[{"name": "hospital", "ae_title": "HOSPITALPACS", "host": "127.0.0.1", "port": pacs.dicom_port}],
        listener={"assembly_interval": 0.2},
        routing={"rules_file": rules},
        analyzers={"plugins": ["tests.support.analyzers:ThresholdAnalyzer"]},
        queue={"outbox_interval": 0.3},
        web={"port": web_port, "host": "127.0.0.1", "secure_cookies": False},
    )
    node = Node(settings, with_web=True)
    node.start()
    try:
        wait_for_port(web_port, timeout=30)
        pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
        generate_mr_study(tmp_path / "study", seed=31, series=("t1", "t2", "flair", "t1c"), rows=48, columns=48, slices=8, accession=ACCESSION)
        pacs.upload_dir(tmp_path / "study")
        with node.sessions.begin() as s:
            add_user(s, "rita", PASSWORD, "radiologist")
        base = f"http://127.0.0.1:{web_port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.goto(f"{base}/submit?accession={ACCESSION}&app=threshold-test")
                page.fill("input[name=username]", "rita")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]:has-text('Log in')")
                expect(page.locator("input[name=accession]")).to_have_value(ACCESSION)
                _shot(page, tmp_path, "submit")
                page.click("#submit-form button[type=submit]")
                expect(page.locator("#pull-state")).to_have_text("routed", timeout=90_000)
                page.click("#pull-job a")
                deadline = time.monotonic() + 120
                while page.locator("#job-state").inner_text() != "done":
                    assert page.locator("#job-state").inner_text() not in ("failed", "cancelled", "needs-input"), page.content()[:2000]
                    assert time.monotonic() < deadline, "the job did not finish"
                    time.sleep(1)
                    page.reload()
                expect(page.locator("iframe.pdf")).to_be_visible()
                _shot(page, tmp_path, "job")
                pdf = page.request.get(base + (page.locator("iframe.pdf").get_attribute("src") or ""))
                assert pdf.ok and pdf.headers["content-type"].startswith("application/pdf")
                assert pdf.body().startswith(b"%PDF")
                job_text = page.locator("body").inner_text()
                assert "pull" in job_text and "threshold-test" in job_text
            finally:
                browser.close()
    finally:
        node.stop()
    # The results went back to the PACS the study was pulled from.
    modalities = {pacs.get(f"/series/{sid}")["MainDicomTags"].get("Modality") for sid in pacs.series()}
    assert {"SEG", "SR", "DOC"} <= modalities
