"""A metastasis patient's two exams through Orthanc and ``radnode serve`` (embedded queue, web app):
the follow-up is matched to the prior lesion by lesion — the enlarged, the stable, the new and the
resolved lesion are named so in the job's JSON (``radnode jobs show``), the SR (Tracking UIDs shared
with the baseline's SR), the PDF and the web job page, and every object in the PACS passes dciodvfy
(issue 17). The demo model runs for real; the truth comes from the generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radnode.settings import Settings
from radnode.sr_writer.sr_reader import read_groups
from radnode.sr_writer.validate import dciodvfy
from radnode.store.db import open_store
from radnode.synth.metastasis import generate_metastasis_study
from radnode.web.auth import add_user
from tests.conftest import wait_for_port
from tests.integration.jobs_support import result_files, pacs_node_env, settings_from_env, start_radnode, wait_first_job_finished
from tests.support.require import unavailable

#: A patient (Colin27, never seen by the demo model) with lesions of 20, 8.5 and 7.5 mm; at follow-up
#: lesion 1 is unchanged, lesion 2 grows ×1.6 (to ~13 mm), lesion 3 resolves and a new ~9 mm lesion appears.
SEED = 920_000
CHANGES = {1: 1.0, 2: 1.6, 3: 0.0}
PASSWORD = "correct horse battery"
STATUS_SCT = {"129721008": "new", "15454001": "enlarging", "129723006": "stable", "19776001": "shrinking",
              "413322009": "resolved"}
DESCRIPTION_OF_CHANGE = ("111021", "DCM")


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "version: 1\n"
        "rules:\n"
        "  - name: brain-mr-metastases\n"
        "    match: {modalities: [MR]}\n"
        "    applications: [metastasis]\n"
        "    destinations: [return_to_sender]\n"
    )
    return path


def _jobs_show(env: dict[str, str], job_id: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "radnode.cli", "jobs", "show", job_id], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def _login(base: str) -> urllib.request.OpenerDirector:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    data = urllib.parse.urlencode({"username": "vera", "password": PASSWORD, "csrf_token": token, "next": "/jobs"}).encode()
    opener.open(f"{base}/login", data=data, timeout=10).read()
    return opener


@pytest.mark.slow
def test_follow_up_exam_is_matched_lesion_by_lesion_through_orthanc(orthanc_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pacs = orthanc_factory(aet="HOSPITALPACS")
    env = pacs_node_env(tmp_path, pacs.dicom_port, RADNODE_ROUTING__RULES_FILE=str(_rules(tmp_path)),
                        RADNODE_WEB__SECURE_COOKIES="false")
    settings: Settings = settings_from_env(env)
    _, sessions = open_store(settings)
    with sessions.begin() as s:
        add_user(s, "vera", PASSWORD, "viewer", actor="test")
    log = tmp_path / "serve.log"
    proc = start_radnode(["serve"], env, log)
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=proc, log=log, timeout=60)
        wait_for_port(int(env["RADNODE_WEB_PORT"]), proc=proc, log=log, timeout=60)
        pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
        exams = {
            "baseline": generate_metastasis_study(tmp_path / "baseline", seed=SEED, lesions=3),
            "followup": generate_metastasis_study(tmp_path / "followup", seed=SEED, lesions=3, followup_days=91,
                                                  changes=CHANGES, new_lesions=1),
        }
        done = {}
        for name, study in exams.items():
            before = set(pacs.studies())
            pacs.upload_dir(study.out_dir / "dicom")
            [orthanc_study] = set(pacs.studies()) - before
            assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
            job = wait_first_job_finished(sessions, [log], 400, study_uid=study.study.study_instance_uid)
            assert job.state == "done", job.error
            assert job.application == "metastasis"
            done[name] = (job, orthanc_study, result_files(pacs, orthanc_study, tmp_path / f"{name}-results"))

        for name, (_, _, files) in done.items():
            assert set(files) == {"SEG", "SR", "DOC", "OT"}, (name, files)
            for path in files.values():
                assert dciodvfy(path) == [], (name, path)

        truth = exams["followup"].truth
        expected = {t["id"]: t["status"] for t in truth["lesions"] if t["voxels"] > 0}
        assert sorted(expected.values()) == ["enlarging", "new", "stable"], expected  # what the generator made
        job, orthanc_study, files = done["followup"]
        shown = _jobs_show(env, job.job_id)
        rows = {m["name"]: m for m in shown["measurements"]}

        # The JSON: each true lesion's nearest found lesion (by the SR's centroids, below) has the true status.
        groups = {g.tracking_id: g for g in read_groups(files["SR"])}
        seg = pydicom.dcmread(files["SEG"])
        assert seg.StudyInstanceUID == exams["followup"].study.study_instance_uid
        assert len(seg.SegmentSequence) == int(rows["met_lesion_count"]["value"])
        found = _found_lesions(rows)
        by_truth = _nearest(found, truth)
        for tid, status in expected.items():
            assert tid in by_truth, (tid, found)
            assert by_truth[tid]["status"] == status, (tid, by_truth[tid], status)
        # The lesion that resolved is the baseline job's lesion at the truth's place.
        base_rows = {m["name"]: m for m in _jobs_show(env, done["baseline"][0].job_id)["measurements"]}
        base_by_truth = _nearest(_found_lesions(base_rows), exams["baseline"].truth)
        gone = [t["id"] for t in truth["lesions"] if t["voxels"] == 0]
        assert len(gone) == 1 and gone[0] in base_by_truth, (gone, base_by_truth)
        resolved_track = base_by_truth[gone[0]]["track"]
        resolved = {int(re.search(r"\d+", name).group(0)) for name in rows if re.fullmatch(r"met_resolved_\d+_status", name)}  # type: ignore[union-attr]
        assert resolved_track in resolved, (resolved_track, resolved)
        # Any other "resolved" lesion is one the demo model found at baseline where the truth has none (a false
        # positive not found again): never a true lesion that is still there.
        true_tracks = {base_by_truth[tid]["track"] for tid in base_by_truth}
        assert not (resolved - {resolved_track}) & true_tracks, (resolved, true_tracks)
        for tid in expected:
            if expected[tid] != "new":  # a matched lesion keeps its baseline track
                assert by_truth[tid]["track"] == base_by_truth[tid]["track"], tid

        # The SR: the same statuses, and the Tracking UIDs of the matched lesions are the baseline SR's.
        base_groups = {g.tracking_id: g for g in read_groups(done["baseline"][2]["SR"])}
        for tid, status in expected.items():
            track = by_truth[tid]["track"]
            group = groups[f"Lesion {track}"]
            assert STATUS_SCT[group.evaluations[DESCRIPTION_OF_CHANGE][0]] == status
            if status != "new":
                assert group.tracking_uid == base_groups[f"Lesion {track}"].tracking_uid
        assert STATUS_SCT[groups[f"Lesion {resolved_track}"].evaluations[DESCRIPTION_OF_CHANGE][0]] == "resolved"
        assert groups[f"Lesion {resolved_track}"].tracking_uid == base_groups[f"Lesion {resolved_track}"].tracking_uid

        # The PDF (from the PACS's Encapsulated PDF) and the web job page name each status.
        pdf = tmp_path / "followup.pdf"
        pdf.write_bytes(pydicom.dcmread(files["DOC"]).EncapsulatedDocument)
        text = _pdftotext(pdf)
        for word in ("new", "enlarging", "stable", "resolved"):
            assert re.search(rf"\b{word}\b", text, re.I), word
        opener = _login(f"http://127.0.0.1:{env['RADNODE_WEB_PORT']}")
        html = opener.open(f"http://127.0.0.1:{env['RADNODE_WEB_PORT']}/jobs/{job.job_id}", timeout=30).read().decode()
        assert 'id="metastases"' in html
        for word in ("new", "enlarging", "stable", "resolved"):
            assert f"status-{word}" in html, word
        assert html.count("/images/lesion_") >= len(expected)  # a thumbnail per lesion
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def _found_lesions(rows: dict[str, dict]) -> list[dict]:
    count = int(rows["met_lesion_count"]["value"])
    out = []
    for k in range(1, count + 1):
        code = str(rows[f"met_{k}_status"]["code"] or "")
        out.append({"index": k, "track": int(rows[f"met_{k}_track"]["value"]), "status": STATUS_SCT.get(code.split("|")[0], "baseline"),
                    "diameter_mm": rows[f"met_{k}_diameter"]["value"], "volume_ml": rows[f"met_{k}_volume"]["value"],
                    "centroid": [rows[f"met_{k}_centroid_{a}"]["value"] for a in "xyz"]})
    return out


def _nearest(found: list[dict], truth: dict) -> dict[int, dict]:
    """Truth id → the found lesion whose centroid is nearest the truth's (LPS mm), within the truth's radius + 3 mm."""
    out = {}
    for t in truth["lesions"]:
        if t["voxels"] == 0:
            continue
        dist = [float(np.linalg.norm(np.subtract(f["centroid"], t["centroid_lps_mm"]))) for f in found]
        k = int(np.argmin(dist))
        if dist[k] <= t["longest_diameter_mm"] / 2 + 3.0:
            out[t["id"]] = found[k]
    return out


def _pdftotext(path: Path) -> str:
    import shutil

    if shutil.which("pdftotext") is None:
        unavailable("pdftotext (poppler-utils) is not installed")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
