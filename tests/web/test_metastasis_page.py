"""A brain-metastasis job's page lists every lesion with its thumbnail,
location, longest diameter, volume, confidence and status, and the resolved
lesion of the prior exam.

The job's rows are the ones ``lesion_rows`` builds (what the analyzer
emits and the worker stores), its results folder is what ``write_results``
leaves there; the page is read over HTTP like a browser, and the thumbnails
are served under the job's access rules (a logged-out client gets none).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radnode.settings import Settings
from radnode.sr_writer.writer import write_results
from radnode.store import jobs as jobstore
from radnode.store.db import open_store
from radnode.uids import derive_uid
from radnode.web.app import create_app
from radnode.web.auth import add_user
from radnode.web.results import results_dir
from tests.unit.sr_writer import metastasis_case as case
from tests.unit.sr_writer.synthetic import make_series, write_series

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def metastasis_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, str]]:
    """A node whose job store holds one finished metastasis job and its result files; (settings, job id)."""
    for key in [k for k in os.environ if k.startswith("RADNODE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADNODE_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data", web={"secure_cookies": False, "session_secret": "test-secret-0123456789"})  # type: ignore[arg-type]
    engine, sessions = open_store(settings)
    result = case.result()
    request = jobstore.JobRequest(derive_uid("met-web-study"), "brain-metastases", "0.1.0",
                                  {"t1c": derive_uid("met-web-series")}, accession="ACC-MET")
    with sessions.begin() as s:
        row, _ = jobstore.create_job(s, request)
        job_id = row.job_id
        jobstore.add_measurements(s, job_id, [(m.name, m.value, m.unit, "|".join(m.code) if m.code else None) for m in result.measurements])
        add_user(s, "vera", PASSWORD, "viewer", actor="test")
    paths = write_series(make_series("met-web"), tmp_path / "src")
    write_results(job_id=job_id, result=result, model=case.MODEL, out_dir=results_dir(settings, job_id),
                  application="Brain metastases", source_series={"t1c": paths}, render_pages=False)
    engine.dispose()
    yield settings, job_id


def _login(client: TestClient) -> None:
    token = CSRF_RE.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": "vera", "password": PASSWORD, "csrf_token": token, "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def _row(html: str, attribute: str, value: int) -> str:
    match = re.search(rf'<tr {attribute}="{value}".*?</tr>', html, re.DOTALL)
    assert match, f"{attribute}={value} is not on the page"
    return re.sub(r"\s+", " ", match.group(0))


def test_the_job_page_lists_the_lesions_with_thumbnails(metastasis_job: tuple[Settings, str]) -> None:
    settings, job_id = metastasis_job
    with TestClient(create_app(settings)) as client:
        _login(client)
        page = client.get(f"/jobs/{job_id}").text
        assert 'id="metastases"' in page and "3 lesion(s), total volume 1.24 mL" in page and "Prior exam: 3 lesion(s)" in page
        expected = {1: ("2", "left cerebellum", "14.0", "0.91", "0.97", "enlarging", "+40 % / +128 %"),
                    2: ("8", "right frontal", "8.5", "0.27", "0.88", "new", "— / —"),
                    3: ("5", "right deep grey matter", "5.0", "0.06", "0.61", "stable", "-4 % / +5 %")}
        for index, (track, location, diameter, volume, confidence, status, change) in expected.items():
            row = _row(page, "data-lesion", index)
            cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            assert cells[1:] == [str(index), track, location, diameter, volume, confidence, status, change], cells
            src = re.search(r'<img class="thumb" src="([^"]+)"', row).group(1)  # type: ignore[union-attr]
            assert src == f"/jobs/{job_id}/images/lesion_{index:03d}.png"
            image = client.get(src)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
        resolved = _row(page, "data-resolved", 7)
        assert "brainstem (midline)" in resolved and "resolved" in resolved and "6.0 (prior)" in resolved
        # The thumbnails are in the lesion table, not repeated among the key images (the orthogonal overview is).
        key_images = page.split('id="metastases"')[1]
        assert "Key image: Lesion 2:" not in key_images and "lesion_001.png\" alt=\"lesion_001\"" not in key_images
        detail = client.get(f"/api/jobs/{job_id}").json()
        assert [les["status"] for les in detail["metastases"]["lesions"]] == ["enlarging", "new", "stable"]
    with TestClient(create_app(settings)) as anonymous:  # the job's access rules hold for the thumbnails
        r = anonymous.get(f"/jobs/{job_id}/images/lesion_001.png", follow_redirects=False)
        assert r.status_code in (303, 401, 403)
