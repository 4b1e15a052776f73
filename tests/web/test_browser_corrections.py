"""A radiologist corrects a series label in the browser; the correction is
exported and a site model trained with it answers differently for that series.

Real pieces only: uvicorn serving ``create_app`` on loopback, Debian's
chromium driven by Playwright, a generated study in the node's spool, the
``radnode`` command in a subprocess for the export and the training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from radnode.routing.classifier import SeriesClassifier, load_default
from radnode.routing.series_index import scan_series
from radnode.store import jobs as store
from radnode.store.db import open_store
from radnode.synth.mr_study import generate_mr_study
from tests.support.env import python_path
from tests.web import test_browser as _browser
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, _need_browser, _shot

served = _browser.served  # the same uvicorn fixture as the other browser tests



def _cli(settings_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(RADNODE_DATA_DIR=str(settings_dir), PYTHONPATH=python_path())
    return subprocess.run([sys.executable, "-m", "radnode.cli", *args], capture_output=True, text=True, cwd=settings_dir, env=env, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_browser_correction_is_exported_and_retrains_the_site_model(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    base, settings = served
    # A study in the spool, as the listener would have left it.
    study = generate_mr_study(tmp_path / "gen", seed=4, series=("localizer", "t1", "t2", "flair", "t1c"))
    for series in study.series:
        target = settings.spool_dir / study.study_instance_uid / series.series_instance_uid
        target.mkdir(parents=True, exist_ok=True)
        for f in series.files:
            shutil.copy(f, target / f"{f.stem}.dcm")
    summaries = scan_series(settings.spool_dir / study.study_instance_uid)
    shipped = load_default()
    answers = {s.series_instance_uid: p.label for s, p in zip(summaries, shipped.predict(summaries))}
    # The radiologist says the T2 series is a FLAIR (a site whose "T2" protocol is really its dark-fluid sequence).
    t2 = study.by_label("t2").series_instance_uid
    assert answers[t2] == "t2"
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        job, _ = store.create_job(s, store.JobRequest(study.study_instance_uid, "glioma", "0.1.0+demo",
                                                       {"t1c": study.by_label("t1c").series_instance_uid, "t2": t2}))
        job_id = job.job_id

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/login?next=/jobs/{job_id}")
            page.fill("input[name=username]", "adam")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]:has-text('Log in')")
            expect(page).to_have_url(f"{base}/jobs/{job_id}")
            page.click("#series-labels-link")
            expect(page).to_have_url(f"{base}/jobs/{job_id}/series")
            row = page.locator(f"tr[data-series='{t2}']")
            expect(row.locator("td.label")).to_have_text("t2")
            row.locator("select[name=label]").select_option("flair")
            row.locator("button:has-text('Correct')").click()
            expect(page.locator("body")).to_contain_text("Series corrected: t2 → flair")
            expect(page.locator(f"tr[data-series='{t2}'] td.corrected")).to_contain_text("flair")
            _shot(page, tmp_path, "series-corrected")
            assert not errors, errors
        finally:
            browser.close()

    # Audited.
    with sessions() as s:
        events = [e for e in store.job_events(s, job_id) if e.action == "classifier:correct"]
    assert len(events) == 1 and events[0].actor == "adam" and "t2" in events[0].detail and "flair" in events[0].detail

    # Exported, as JSON (with the features) and as CSV.
    res = _cli(settings.data_dir, "classifier", "corrections", "export", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    [item] = json.loads(res.stdout)
    assert (item["series_instance_uid"], item["predicted_label"], item["corrected_label"], item["author"]) == (t2, "t2", "flair", "adam")
    assert item["header"]["SeriesDescription"] == next(s.series_description for s in summaries if s.series_instance_uid == t2)
    assert "PatientName" not in item["header"] and len(item["features"]) > 100
    res = _cli(settings.data_dir, "classifier", "corrections", "export", "--csv")
    assert res.returncode == 0, res.stderr[-2000:]
    [row_csv] = list(csv.DictReader(io.StringIO(res.stdout)))
    assert (row_csv["series_instance_uid"], row_csv["corrected_label"]) == (t2, "flair")

    # The site model trained with the correction answers "flair" for that series; the other series keep their answers.
    model = tmp_path / "site.json"
    res = _cli(settings.data_dir, "classifier", "train", "--with-corrections", "--out", str(model), "--studies-per-family", "6")
    assert res.returncode == 0, res.stderr[-3000:]
    site = SeriesClassifier.load(model)
    site_answers = {s.series_instance_uid: p.label for s, p in zip(summaries, site.predict(summaries))}
    assert site_answers[t2] == "flair"
    assert {uid: a for uid, a in site_answers.items() if uid != t2} == {uid: a for uid, a in answers.items() if uid != t2}
    assert site.meta is not None and site.meta.extra["site_holdout"]["n_train"] == 1
