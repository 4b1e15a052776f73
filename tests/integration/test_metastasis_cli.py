"""``radnode analyze metastasis DIR --out OUT --json`` on a generated study of a head the demo model never
saw: one JSON object of the documented shape whose lesions are the generator's (centroid, diameter,
volume), and the result objects on disk, each passing dciodvfy (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radnode.sr_writer.validate import dciodvfy
from radnode.synth.metastasis import generate_metastasis_study
from tests.support.env import python_path

SEED = 920_001  # three lesions of 11–18 mm (Colin27)


@pytest.mark.slow
def test_analyze_metastasis_json_and_objects(tmp_path: Path) -> None:
    study = generate_metastasis_study(tmp_path / "study", seed=SEED, lesions=3)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(PYTHONPATH=python_path(), RADNODE_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "radnode.cli", "analyze", "metastasis", str(study.out_dir / "dicom"),
                           "--out", str(out), "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert doc["application"] == "metastasis" and doc["state"] == "done"
    assert doc["model"]["demo"] is True and doc["model"]["name"] == "metastasis-demo"
    assert doc["count"] == len(doc["lesions"]) and doc["resolved"] == []
    assert doc["total_volume_ml"] == pytest.approx(sum(les["volume_ml"] for les in doc["lesions"]), abs=1e-3)
    keys = {"id", "centroid_lps_mm", "longest_diameter_mm", "volume_ml", "location", "confidence", "tracking_uid", "status"}
    for les in doc["lesions"]:
        assert keys <= set(les) and les["status"] == "baseline" and 0.0 < les["confidence"] <= 1.0
        assert len(les["centroid_lps_mm"]) == 3
    diameters = [les["longest_diameter_mm"] for les in doc["lesions"]]
    assert diameters == sorted(diameters, reverse=True) or [les["volume_ml"] for les in doc["lesions"]] == sorted(
        [les["volume_ml"] for les in doc["lesions"]], reverse=True)
    # Every true lesion is found where it is, with its size (a demo model on an unseen head: generous bounds).
    for t in study.truth["lesions"]:
        dist = [float(np.linalg.norm(np.subtract(les["centroid_lps_mm"], t["centroid_lps_mm"]))) for les in doc["lesions"]]
        k = int(np.argmin(dist))
        assert dist[k] <= 3.0, (t, doc["lesions"])
        assert doc["lesions"][k]["volume_ml"] == pytest.approx(t["volume_ml"], rel=0.35)
        assert doc["lesions"][k]["longest_diameter_mm"] == pytest.approx(t["longest_axial_diameter_mm"], abs=4.0)
    assert doc["count"] <= len(study.truth["lesions"]) + 1  # at most one false positive
    for name in ("seg.dcm", "sr.dcm", "report.pdf", "report_pdf.dcm"):
        assert (out / name).is_file(), name
    scs = sorted(out.glob("sc_*.dcm"))
    assert scs
    for path in [out / "seg.dcm", out / "sr.dcm", out / "report_pdf.dcm", *scs]:
        assert dciodvfy(path) == [], path
    seg = pydicom.dcmread(out / "seg.dcm")
    assert len(seg.SegmentSequence) == doc["count"]
    assert {s.SegmentLabel for s in seg.SegmentSequence} == {f"Lesion {les['id']}" for les in doc["lesions"]}
