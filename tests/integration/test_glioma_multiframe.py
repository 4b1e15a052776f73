"""Glioma on multi-frame MR: the same generated study as classic instances,
as Legacy Converted Enhanced MR and as Enhanced MR (TR/TE/TI only in the
functional groups). Both multi-frame kinds must classify like the classic
original, run through ``radnode analyze`` and through the node (Orthanc →
listener → router → worker → dispatch → Orthanc), and every object written
must pass dciodvfy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from radnode.routing.classifier import load_default
from radnode.routing.series_index import scan_series
from radnode.sr_writer.validate import dciodvfy
from radnode.store import jobs as store
from radnode.store.db import open_store
from radnode.synth.enhanced import convert_study
from radnode.synth.glioma import GliomaStudy, generate_glioma_study
from tests.conftest import wait_for_port
from tests.integration.jobs_support import REPO, pacs_node_env, settings_from_env, start_radnode, wait_first_job_finished
from tests.support.env import python_path
from tests.support.require import unavailable

KINDS = ("legacy", "enhanced")


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[GliomaStudy, dict[str, Path]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("mf-glioma")
    study = generate_glioma_study(root / "study", seed=900230, scale=0.5, localizer=False, write_all_labels=False)
    dirs = {"classic": root / "study" / "dicom"}
    for kind in KINDS:
        convert_study(dirs["classic"], root / kind, kind)
        dirs[kind] = root / kind
    return study, dirs


def _require_dciodvfy() -> None:
    if shutil.which("dciodvfy") is None:
        unavailable("dciodvfy (dicom3tools) is not installed")


def test_multiframe_series_classify_like_their_classic_originals(studies) -> None:  # type: ignore[no-untyped-def]
    _, dirs = studies
    clf = load_default()
    answers = {}
    for kind, folder in dirs.items():
        summaries = scan_series(folder)
        assert len(summaries) == 4, kind
        if kind != "classic":
            assert all("PerFrameFunctionalGroupsSequence" in s.header for s in summaries)
        answers[kind] = {s.series_description: p.label for s, p in zip(summaries, clf.predict(summaries))}
    assert sorted(answers["classic"].values()) == ["flair", "t1", "t1c", "t2"], answers["classic"]
    for kind in KINDS:
        assert answers[kind] == answers["classic"], kind


def _analyze(study: Path, out: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "radnode.cli", "analyze", "glioma", str(study), "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=REPO, env={**base, "PYTHONPATH": python_path()}, timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_analyze_glioma_on_multiframe_mr_writes_valid_objects(studies, kind: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _require_dciodvfy()
    study, dirs = studies
    res = _analyze(dirs[kind], tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert set(out["series"]) == {"t1c", "flair", "t2", "t1"}
    assert out["volumes_ml"]["whole_tumor"] == pytest.approx(study.truth["volumes_ml"]["whole_tumor"], rel=0.35)
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert {p.name for p in written} >= {"seg.dcm", "sr.dcm", "report_pdf.dcm", "sc_001.dcm"}
    for path in written:
        assert dciodvfy(path) == [], path.name
    # The SEG references the chosen T1c multi-frame object, frame by frame.
    t1c = out["series"]["t1c"]["series_instance_uid"]
    [source] = [s for s in scan_series(dirs[kind]) if s.series_instance_uid == t1c]
    mf = pydicom.dcmread(source.paths[0], stop_before_pixels=True)
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm", stop_before_pixels=True)
    refs = [f.DerivationImageSequence[0].SourceImageSequence[0] for f in seg.PerFrameFunctionalGroupsSequence]
    assert {str(r.ReferencedSOPInstanceUID) for r in refs} == {str(mf.SOPInstanceUID)}
    assert all(1 <= int(r.ReferencedFrameNumber) <= int(mf.NumberOfFrames) for r in refs)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_multiframe_mr_study_through_the_node(studies, orthanc_factory, kind: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Orthanc sends the Legacy Converted / Enhanced MR study to `radnode serve` (listener → router → worker →
    dispatch); the four roles are the multi-frame objects, and SEG, SR, PDF and SC come back into the study."""
    _require_dciodvfy()
    study, dirs = studies
    pacs = orthanc_factory(aet="HOSPITALPACS")
    env = pacs_node_env(tmp_path, pacs.dicom_port)
    log = tmp_path / "serve.log"
    proc = start_radnode(["serve"], env, log)
    try:
        wait_for_port(int(env["RADNODE_PORT"]), proc=proc, log=log, timeout=60)
        settings = settings_from_env(env)
        pacs.add_modality("radnode", settings.ae_title, "127.0.0.1", settings.port)
        pacs.upload_dir(dirs[kind])
        [orthanc_study] = pacs.studies()
        assert pacs.store_to_modality("radnode", [orthanc_study]).get("FailedInstancesCount", 0) == 0
        _, sessions = open_store(settings)
        job = wait_first_job_finished(sessions, [log], timeout=600)
        assert job.state == "done", job.error
        # The router chose the multi-frame objects for all four roles, each labelled as the classic original.
        multiframe = {s.series_instance_uid: s for s in scan_series(dirs[kind])}
        assert set(job.series) == {"t1c", "flair", "t2", "t1"}
        assert set(job.series.values()) <= set(multiframe), job.series
        assert all(len(multiframe[uid].paths) == 1 for uid in job.series.values())
        selection = json.loads(job.selection_json)
        assert {role: selection[role]["label"] for role in job.series} == {role: role for role in job.series}, selection
        series = [pacs.get(f"/series/{sid}") for sid in pacs.get(f"/studies/{orthanc_study}")["Series"]]
        modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
        for wanted in ("SEG", "SR", "DOC", "OT"):
            assert wanted in modalities, modalities
        assert json.loads(job.sends_json)["return_to_sender"]["confirmed"] is True
        # What Orthanc stored is valid DICOM: SEG, SR, Encapsulated PDF and the secondary captures.
        for s in series:
            if s["MainDicomTags"].get("Modality") in ("SEG", "SR", "DOC", "OT"):
                path = tmp_path / f"{s['ID']}.dcm"
                path.write_bytes(pacs.instance_file(s["Instances"][0]))
                assert dciodvfy(path) == [], s["MainDicomTags"].get("Modality")
        with sessions() as s:
            measurements = {m.name: m.value for m in store.job_measurements(s, job.job_id)}
        assert measurements["whole_tumor"] == pytest.approx(study.truth["volumes_ml"]["whole_tumor"], rel=0.35)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
