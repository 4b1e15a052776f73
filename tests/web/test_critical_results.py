"""A positive study is flagged (triage, issue 16): a job whose result has a
present critical finding shows a CRITICAL badge with the finding's name on
the job list and the job page, in the JSON API and in ``radnode jobs``, and
is counted in ``radnode_critical_results_total``.

The jobs run for real — a test analyzer that reports a critical finding,
through the outbox, the embedded queue and the worker pool — and the web app
is read over HTTP like a browser and a Prometheus scraper would.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from radnode.analyzers.registry import Registry
from radnode.cli import main
from radnode.composition import WorkerPool, broker_for, make_outbox
from radnode.routing.setup import DEFAULT_RULES
from radnode.settings import Settings
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.web.app import create_app
from radnode.web.auth import add_user
from tests.integration.jobs_support import spool_study, wait_state
from tests.support.ports import free_port

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PLUGINS = ["tests.support.analyzers:CountingAnalyzer", "tests.support.analyzers:CriticalCountingAnalyzer"]


@pytest.fixture
def finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, str, str]]:
    """A node that ran one job with a critical result and one without; (settings, critical job, plain job)."""
    for key in [k for k in os.environ if k.startswith("RADNODE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADNODE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADNODE_ANALYZERS__PLUGINS", json.dumps(PLUGINS))
    rules = tmp_path / "routing.yaml"
    shutil.copy(DEFAULT_RULES, rules)
    settings = Settings(
        data_dir=tmp_path / "data",
        routing={"rules_file": str(rules)},
        analyzers={"plugins": PLUGINS},
        queue={"outbox_interval": 0.2},
        web={"secure_cookies": False, "session_secret": "test-secret-0123456789"},
    )
    engine, sessions = open_store(settings)
    registry = Registry.from_settings(settings)
    apps = ["count-test", "critical-count-test"]
    broker = broker_for(settings, apps, registry)
    outbox = make_outbox(settings, sessions, broker)
    pool = WorkerPool(settings, sessions, broker, registry, apps, 1)
    outbox.start()
    pool.start()
    try:
        ids = []
        for seed, app in enumerate(apps):
            study = spool_study(settings, tmp_path / f"s{seed}", seed)
            series = {"t1c": study.by_label("t1c").series_instance_uid, "flair": study.by_label("flair").series_instance_uid}
            with sessions.begin() as s:
                row, _ = jobstore.create_job(s, jobstore.JobRequest(study.study_instance_uid, app, "1.0", series, accession=f"ACC{seed}"))
                ids.append(row.job_id)
            outbox.kick()
        for job_id in ids:
            wait_state(sessions, job_id, {"done"}, timeout=90)
    finally:
        pool.stop(deadline=30)
        outbox.stop()
        broker.close()
    with sessions.begin() as s:
        add_user(s, "vera", PASSWORD, "viewer", actor="test")
    engine.dispose()
    plain, critical = ids
    yield settings, critical, plain


def _login(client: TestClient) -> None:
    page = client.get("/login")
    token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": "vera", "password": PASSWORD, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def _row(html: str, job_id: str) -> str:
    match = re.search(rf'<tr data-job="{job_id}".*?</tr>', html, re.S)
    assert match, f"job {job_id} is not on the page"
    return match.group(0)


def test_a_critical_result_is_flagged_on_the_pages_and_in_the_api(finished: tuple[Settings, str, str]) -> None:
    settings, critical, plain = finished
    with TestClient(create_app(settings)) as client:
        _login(client)
        jobs = {j["job_id"]: j for j in client.get("/api/jobs").json()}
        assert (jobs[critical]["critical"], jobs[critical]["critical_findings"]) == (True, ["haemorrhage"])
        assert [(f["name"], f["present"], f["critical"]) for f in jobs[critical]["findings"]] == [
            ("haemorrhage", True, True), ("midline shift", False, True), ("old infarct", True, False)
        ]
        assert (jobs[plain]["critical"], jobs[plain]["critical_findings"], jobs[plain]["findings"]) == (False, [], [])
        assert [j["job_id"] for j in client.get("/api/jobs", params={"critical": "true"}).json()] == [critical]
        detail = client.get(f"/api/jobs/{critical}").json()
        assert detail["critical"] and detail["critical_findings"] == ["haemorrhage"]
        assert any(e["action"] == "critical" and e["detail"] == "haemorrhage" for e in detail["events"])

        listing = client.get("/jobs").text
        assert 'class="critical"' in _row(listing, critical) and "CRITICAL: haemorrhage" in _row(listing, critical)
        assert 'class="is-critical"' in _row(listing, critical)
        assert "CRITICAL" not in _row(listing, plain)
        only = client.get("/jobs", params={"critical": "true"}).text
        assert critical in only and f'data-job="{plain}"' not in only

        page = client.get(f"/jobs/{critical}").text
        assert re.search(r'<p class="critical-banner" id="critical" role="alert">CRITICAL: haemorrhage</p>', page)
        assert "midline shift" in page and "old infarct" in page  # the findings table shows all of them
        assert "critical-banner" not in client.get(f"/jobs/{plain}").text

        # The live list rebuilds rows from /api/jobs; it draws the same badge.
        script = client.get("/static/app.js").text
        assert '"CRITICAL: " + (j.critical_findings' in script


def test_critical_results_are_counted_in_the_metrics(finished: tuple[Settings, str, str]) -> None:
    settings, _, _ = finished
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    assert 'radnode_critical_results_total{application="critical-count-test"} 1.0' in text
    assert 'radnode_critical_results_total{application="count-test"} 0.0' in text


def test_radnode_jobs_says_critical(finished: tuple[Settings, str, str]) -> None:
    _, critical, plain = finished
    runner = CliRunner()
    res = runner.invoke(main, ["jobs", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(critical[:12]))
    assert lines[at + 1].strip() == "CRITICAL: haemorrhage"
    assert not any("CRITICAL" in line for line in lines if line.startswith(plain[:12]))
    res = runner.invoke(main, ["jobs", "list", "--critical", "--json"])
    assert [(j["job_id"], j["critical_findings"]) for j in json.loads(res.output)] == [(critical, ["haemorrhage"])]
    shown = json.loads(runner.invoke(main, ["jobs", "show", critical]).output)
    assert shown["critical"] is True and shown["urgent"] is False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_live_job_list_keeps_the_badge_in_chromium(finished: tuple[Settings, str, str], tmp_path: Path) -> None:
    """The list redraws its rows from /api/jobs every few seconds: the badge must survive that."""
    import threading

    import uvicorn

    from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser, _shot

    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    settings, critical, plain = finished
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{base}/jobs")
                page.fill("input[name=username]", "vera")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]:has-text('Log in')")
                expect(page).to_have_url(f"{base}/jobs")
                expect(page.locator("#live-status")).to_contain_text("updated", timeout=10_000)  # rows redrawn by app.js
                expect(page.locator(f"tr[data-job='{critical}'] .critical")).to_have_text("CRITICAL: haemorrhage")
                expect(page.locator(f"tr[data-job='{critical}']")).to_have_class("is-critical")
                expect(page.locator(f"tr[data-job='{plain}'] .critical")).to_have_count(0)
                _shot(page, tmp_path, "jobs-critical")
                page.click(f"tr[data-job='{critical}'] a")
                expect(page.locator("#critical")).to_have_text("CRITICAL: haemorrhage")
                _shot(page, tmp_path, "job-critical")
                assert errors == []
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
