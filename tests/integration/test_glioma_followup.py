"""A follow-up exam of the same patient: the worker finds the prior in the
job store (``compare_with_priors``), matches the lesion, keeps its Tracking UID, and the change in
the sum of products and the RANO category reach the PDF, the SR, the job
store and the web job page.

Real components: the SQLite job store with its migrations, the dispatch
stage's result writer, the worker's follow-up step, pdftotext, pydicom read-back and the FastAPI app.
The analyzer itself is not run (two glioma inferences take minutes on two
cores): its results are built as the analyzer builds them, through
``glioma_measurements`` on lesions measured by ``find_lesions``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from radnode.analyzers.base import (
    AnalyzerInputs,
    AnalyzerResult,
    AnalyzerSpec,
    LabelMap,
    ModelInfo,
    NoOptions,
    SeriesInput,
)
from radnode.analyzers.glioma.followup import PRIOR_ROW_NAMES, annotate, tracking_uid
from radnode.analyzers.glioma.lesions import clean_label_map, find_lesions
from radnode.analyzers.glioma.measure import glioma_measurements
from radnode.jobs.worker import compare_with_priors
from radnode.model.jobs import JobState
from radnode.settings import Settings
from radnode.sr_writer.dispatch import DicomResultWriter
from radnode.sr_writer.rano_figures import series_image
from radnode.sr_writer.seg import sort_sources
from radnode.store import jobs as store
from radnode.store.db import open_store
from radnode.web.app import create_app
from radnode.web.auth import add_user
from tests.support.require import unavailable
from tests.unit.sr_writer.synthetic import make_series, write_series

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
MODEL = ModelInfo("glioma-demo-unet", "0.2.0", demo=True)


def _spec() -> AnalyzerSpec:
    return AnalyzerSpec("glioma", "0.1.0", "glioma", ("t1c",), options=NoOptions, model=MODEL,
                        outputs=("seg", "sr", "pdf", "secondary_capture"), prior_rows=PRIOR_ROW_NAMES)


class _Glioma:
    """The glioma analyzer's follow-up without its model (the worker's view of it)."""

    spec = _spec()

    def follow_up(self, result: AnalyzerResult, prior_rows, patient_key: str):  # type: ignore[no-untyped-def]
        return annotate(result, prior_rows, patient_key, self.spec.name)


def _result(sources_paths: list[Path], radius_mm: float) -> AnalyzerResult:
    """A spherical tumour (oedema, enhancing rim, necrosis) in the series, measured as the analyzer does."""
    from radnode.analyzers.base import Segment

    sources = sort_sources([pydicom.dcmread(p) for p in sources_paths])
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    ref = series_image(sources, np.zeros(shape, dtype=np.uint8))
    zz, yy, xx = np.indices(shape)
    sz, sy, sx = ref.GetSpacing()[2], ref.GetSpacing()[1], ref.GetSpacing()[0]
    r = np.sqrt(((zz - 12) * sz) ** 2 + ((yy - 16) * sy) ** 2 + ((xx - 15) * sx) ** 2)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r < radius_mm + 3] = 2
    labels[r < radius_mm] = 3
    labels[r < radius_mm / 2] = 1
    brain = np.ones(shape, dtype=bool)
    clean, lesion_map, _ = clean_label_map(labels, (sz, sy, sx), brain)
    image = sitk.GetImageFromArray(clean)
    image.CopyInformation(ref)
    lesions = find_lesions(image, lesion_map, brain)
    measures, summary = glioma_measurements(image, lesions)
    segments = (Segment(1, "Necrotic tumor core", ("6574001", "Necrosis")), Segment(2, "Peritumoral edema", ("79654002", "Edema")),
                Segment(3, "Enhancing tumor", ("108369006", "Neoplasm")))
    return AnalyzerResult(label_maps=[LabelMap("glioma", clean, "t1c", segments)], measurements=measures,
                          extra={"lesions": lesions, "summary": summary})


def _study(tmp: Path, tag: str, date: str) -> list[Path]:
    series = make_series(tag)
    for ds in series:  # same patient, another study
        ds.StudyDate = date
        ds.PatientAge = "054Y"
        ds.PatientWeight = 70.0
    return write_series(series, tmp / tag)


@pytest.fixture(scope="module")
def followup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("followup")
    settings = Settings(data_dir=tmp / "data", results={"send": False},
                        web={"secure_cookies": False, "session_secret": "test-secret-0123456789"})
    _, sessions = open_store(settings)
    writer = DicomResultWriter(settings, sessions)
    jobs = {}
    for tag, date, radius in (("baseline", "20240110", 7.0), ("followup", "20240410", 9.0)):
        paths = _study(tmp, tag, date)
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        with sessions.begin() as s:
            row, _ = store.create_job(s, store.JobRequest(str(ds.StudyInstanceUID), "glioma", _spec().model_version,
                                                          {"t1c": str(ds.SeriesInstanceUID)}, accession=tag[:8],
                                                          patient_key="patient-1", study_date=date))
            job_id = row.job_id
            store.claim(s, job_id, "w", lease_seconds=60, take_over=False)
            store.transition(s, job_id, JobState.WRITING, actor="w")
        result = _result(paths, radius)
        with sessions() as s:
            message = store.get_job(s, job_id).message()
        compare_with_priors(sessions, _Glioma(), message, result)  # as the worker does after the analyzer
        with sessions.begin() as s:  # what the worker stores before the writers run
            store.add_measurements(s, job_id, [(m.name, m.value, m.unit, "|".join(m.code) if m.code else None) for m in result.measurements])
        inputs = AnalyzerInputs(str(ds.StudyInstanceUID), {"t1c": SeriesInput("t1c", str(ds.SeriesInstanceUID), tuple(paths))},
                                NoOptions(), job_id)
        workdir = settings.work_dir / job_id
        workdir.mkdir(parents=True, exist_ok=True)
        writer(message, _spec(), inputs, result, workdir, lambda stage: None)
        with sessions.begin() as s:
            store.transition(s, job_id, JobState.DONE, actor="w")
        jobs[tag] = (job_id, result)
    return settings, sessions, jobs


def test_the_follow_up_is_computed_against_the_prior(followup) -> None:  # type: ignore[no-untyped-def]
    _, sessions, jobs = followup
    _, base = jobs["baseline"]
    cur_id, cur = jobs["followup"]
    assert base.extra["follow_up"] is None
    fu = cur.extra["follow_up"]
    b_sum = base.extra["summary"]["rano_sum_of_products_mm2"]
    c_sum = cur.extra["summary"]["rano_sum_of_products_mm2"]
    assert b_sum > 100 and c_sum > b_sum * 1.25  # the enhancing rim grew from 7 to 9 mm radius
    assert fu.prior_date == "2024-01-10" and fu.prior_sum_mm2 == pytest.approx(b_sum)
    assert fu.change_vs_prior_pct == pytest.approx(100 * (c_sum - b_sum) / b_sum, abs=0.06)
    assert fu.category.value == "PD"
    # The same lesion keeps its track and its Tracking UID in both exams' SRs.
    assert base.extra["tracking"][1] == cur.extra["tracking"][1] == (1, tracking_uid("patient-1", "glioma", 1))
    with sessions() as s:
        rows = {m.name: m for m in store.job_measurements(s, cur_id)}
    assert rows["rano_category"].code == "PD|99RADNODE|progressive disease"
    assert rows["rano_change_vs_prior_pct"].value == pytest.approx(fu.change_vs_prior_pct)
    assert rows["lesion_1_track"].value == 1


def _sr_items(seq):  # type: ignore[no-untyped-def]
    for item in seq:
        yield item
        if "ContentSequence" in item:
            yield from _sr_items(item.ContentSequence)


def test_sr_and_pdf_of_the_follow_up_carry_the_change_and_category(followup) -> None:  # type: ignore[no-untyped-def]
    settings, _, jobs = followup
    cur_id, cur = jobs["followup"]
    base_id, _ = jobs["baseline"]
    fu = cur.extra["follow_up"]
    results = settings.work_dir / cur_id / "results"
    ds = pydicom.dcmread(results / "sr.dcm")
    items = list(_sr_items(ds.ContentSequence))
    response = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112048"]
    assert [i.ConceptCodeSequence[0].CodeValue for i in response] == ["112043"]  # Target Lesion Progressive Disease
    change = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "125314"]
    assert float(change[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(fu.change_vs_prior_pct)
    uids = {str(i.UID) for i in items if i.ValueType == "UIDREF" and i.ConceptNameCodeSequence[0].CodeValue == "112040"}
    prior_sr = pydicom.dcmread(settings.work_dir / base_id / "results" / "sr.dcm")
    prior_uids = {str(i.UID) for i in _sr_items(prior_sr.ContentSequence) if i.ValueType == "UIDREF" and i.ConceptNameCodeSequence[0].CodeValue == "112040"}
    assert tracking_uid("patient-1", "glioma", 1) in uids & prior_uids
    if shutil.which("pdftotext") is None:
        unavailable("pdftotext not installed")
    text = subprocess.run(["pdftotext", "-layout", str(results / "report.pdf"), "-"], capture_output=True, text=True, check=True).stdout
    assert "PD (progressive disease)" in text and f"{fu.change_vs_prior_pct:+.1f} %" in text
    assert "2024-01-10" in text and "20240110" not in text
    # Sub-regions compare with the prior's (not "—").
    line = next(t for t in text.splitlines() if t.strip().startswith("Enhancing tumor"))
    assert "\u2014" not in line


def test_the_web_job_page_shows_the_rano_block(followup) -> None:  # type: ignore[no-untyped-def]
    settings, sessions, jobs = followup
    cur_id, cur = jobs["followup"]
    fu = cur.extra["follow_up"]
    with sessions.begin() as s:
        add_user(s, "vera", PASSWORD, "viewer", actor="test")
    with TestClient(create_app(settings)) as client:
        page = client.get("/login")
        token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
        r = client.post("/login", data={"username": "vera", "password": PASSWORD, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
        assert r.status_code == 303
        html = client.get(f"/jobs/{cur_id}").text
    assert 'id="rano"' in html
    category = re.search(r'id="rano-category"><strong>(\w+)</strong>', html)
    assert category and category.group(1) == "PD"
    change = re.search(r'id="rano-change">([^<]+)<', html)
    assert change and change.group(1) == f"{fu.change_vs_prior_pct:+.1f} %"
