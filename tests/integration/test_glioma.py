"""Glioma end to end on generated studies: the offline command, the DICOM
objects it writes, and bad input that must end with a clear reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml

import radnode
from radnode.analyzers.glioma.lesions import max_axial_diameter, physical_points
from radnode.sr_writer.seg import segmentation_to_label_map, sort_sources
from radnode.sr_writer.validate import dcentvfy, dciodvfy_report, dsrdump
from radnode.synth.glioma import generate_glioma_study

REPO = Path(__file__).resolve().parents[2]


def _analyze(study: Path, out: Path, *extra: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``radnode analyze glioma STUDY --out OUT --json``; STUDY and OUT may be relative to *cwd*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    return subprocess.run(
        [sys.executable, "-m", "radnode.cli", "analyze", "glioma", str(study), "--out", str(out), "--json", *extra],
        capture_output=True, text=True, cwd=cwd, env={**base, **(env or {})}, timeout=600,
    )


def _document(res: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    """stdout of a ``--json`` run is exactly one JSON document, whatever the outcome."""
    return json.loads(res.stdout)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / max(int(a.sum()) + int(b.sum()), 1)


@pytest.mark.slow
def test_full_run_matches_the_ground_truth_and_writes_valid_dicom(tmp_path: Path) -> None:
    study = generate_glioma_study(tmp_path / "study", seed=900200)
    # Relative paths, resolved once at the command's edge (nipype runs each node in a folder of its own).
    res = _analyze(Path("study") / "dicom", Path("out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = _document(res)
    assert out["state"] == "done"
    truth = study.truth

    # The label map lives in the T1c series' geometry and matches the truth.
    predicted = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    expected = sitk.ReadImage(str(study.labels_path))
    assert predicted.GetSize() == expected.GetSize()
    assert np.allclose(predicted.GetOrigin(), expected.GetOrigin(), atol=1e-3)
    assert np.allclose(predicted.GetDirection(), expected.GetDirection(), atol=1e-5)
    p, t = sitk.GetArrayFromImage(predicted), sitk.GetArrayFromImage(expected)
    assert _dice(p > 0, t > 0) >= 0.8
    assert _dice(np.isin(p, (1, 3)), np.isin(t, (1, 3))) >= 0.75
    for key in ("whole_tumor", "tumor_core"):
        assert out["volumes_ml"][key] == pytest.approx(truth["volumes_ml"][key], rel=0.3)
    # What a radiologist reads: one lesion, where the tumour is, as wide as it is.
    assert out["lesion_count"] == 1, out["postprocessing"]
    assert np.linalg.norm(np.subtract(out["centroid_lps_mm"], truth["centroid_lps_mm"])) < 3.0
    true_diameter = max_axial_diameter(physical_points(expected, t > 0))
    assert abs(out["max_axial_diameter_mm"] - true_diameter) <= 0.2 * true_diameter
    lesion = out["lesions"][0]
    assert lesion["hemisphere"] in ("left", "right", "midline") and lesion["rano"] is not None
    assert out["model"] == {"name": "glioma-demo-unet", "version": "0.2.0", "demo": True}
    assert set(out["series"]) == {"t1c", "flair", "t2", "t1"}

    # The DICOM objects: valid, and the SEG reads back to the same voxels.
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert {p.name for p in written} >= {"seg.dcm", "sr.dcm", "report_pdf.dcm", "sc_001.dcm"}
    for path in written:
        errors, warnings = dciodvfy_report(path)
        assert errors == [] and warnings == [], (path.name, errors + warnings)
    sources_all = list(study.study.files)
    problems = dcentvfy([*sources_all, *written])
    assert problems is not None and [x for x in problems if "atient" in x] == [], problems[:5]
    assert "Volume" in (dsrdump(tmp_path / "out" / "sr.dcm") or "")
    sources = sort_sources([pydicom.dcmread(f) for f in study.study.by_label("t1c").files])
    from radnode.sr_writer.seg import label_map_for_sources

    assert np.array_equal(
        segmentation_to_label_map(tmp_path / "out" / "seg.dcm", sources),
        label_map_for_sources(predicted, sources),
    )
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF")


def _small_study(tmp_path: Path, seed: int) -> Path:
    generate_glioma_study(tmp_path / "study", seed=seed, scale=0.5, localizer=False, write_all_labels=False)
    return tmp_path / "study" / "dicom"


def _series_dir(dicom: Path, description_part: str) -> Path:
    for folder in sorted(p for p in dicom.iterdir() if p.is_dir()):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        if description_part in str(ds.SeriesDescription).lower():
            return folder
    raise AssertionError(f"no series like {description_part!r}")


def _flair_dir(dicom: Path) -> Path:
    """Siemens calls FLAIR 't2_tirm_tra_dark-fluid', GE 'Ax T2 FLAIR'."""
    try:
        return _series_dir(dicom, "flair")
    except AssertionError:
        return _series_dir(dicom, "dark-fluid")


def test_missing_flair_names_the_role_and_the_candidates(tmp_path: Path) -> None:
    dicom = _small_study(tmp_path, 900300)
    shutil.rmtree(_flair_dir(dicom))
    res = _analyze(dicom.relative_to(tmp_path), Path("out"), cwd=tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr  # needs input
    doc = _document(res)
    assert doc["state"] == "needs-input" and doc["application"] == "glioma"
    assert "missing role 'flair'" in doc["error"] and "closest candidates" in doc["error"]
    [missing] = doc["missing"]
    assert missing["role"] == "flair" and missing["candidates"], missing
    assert all(set(c) == {"series_instance_uid", "description", "probability"} for c in missing["candidates"])


def test_a_two_slice_series_ends_with_a_clear_reason(tmp_path: Path) -> None:
    dicom = _small_study(tmp_path, 900301)
    t2 = _series_dir(dicom, "t2")
    for f in sorted(t2.glob("*.dcm"), key=lambda p: int(p.stem))[2:]:
        f.unlink()
    res = _analyze(dicom, tmp_path / "out")
    assert res.returncode == 1
    doc = _document(res)
    assert doc["state"] == "failed" and "has 2 slices; a volume needs at least 3" in doc["error"]


def test_corrupt_pixel_data_names_the_file(tmp_path: Path) -> None:
    dicom = _small_study(tmp_path, 900302)
    victim = sorted(_flair_dir(dicom).glob("*.dcm"))[3]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated pixel data
    ds.save_as(victim)
    res = _analyze(dicom, tmp_path / "out")
    assert res.returncode == 1
    doc = _document(res)
    assert doc["state"] == "failed" and victim.name in doc["error"] and "pixel" in doc["error"].lower()


def test_a_model_whose_manifest_names_other_inputs_is_refused(tmp_path: Path) -> None:
    dicom = _small_study(tmp_path, 900303)
    models = tmp_path / "models"
    broken = models / "glioma-three-inputs"
    shutil.copytree(Path(radnode.__file__).parent / "models" / "glioma-demo-unet", broken)  # the installed model
    manifest = yaml.safe_load((broken / "manifest.yaml").read_text())
    manifest.update(name="glioma-three-inputs", inputs=["flair", "t1c", "t2"])
    (broken / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    res = _analyze(dicom, tmp_path / "out", "--option", "model=glioma-three-inputs",
                   env={"RADNODE_ANALYZERS__MODEL_DIRS": json.dumps([str(models)])})
    assert res.returncode == 1
    error = _document(res)["error"]
    assert "glioma-three-inputs" in error and "4 input channels" in error and "3 inputs" in error
