"""Synthetic glioma studies: determinism, ground-truth consistency and geometry.

Reduced matrices (``scale``) keep each generation to a couple of seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radnode.synth.glioma import generate_glioma_study


pytestmark = pytest.mark.usefixtures("colin27")

SCALE = 0.3


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return generate_glioma_study(tmp_path_factory.mktemp("g") / "s", seed=3, scale=SCALE, localizer=False)


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_deterministic(study, tmp_path: Path) -> None:
    again = generate_glioma_study(tmp_path / "s", seed=3, scale=SCALE, localizer=False)
    assert again.study.study_instance_uid == study.study.study_instance_uid
    assert again.truth == study.truth
    for a, b in zip(study.study.files, again.study.files):
        assert a.read_bytes() == b.read_bytes()
    other = generate_glioma_study(tmp_path / "o", seed=4, scale=SCALE, localizer=False)
    assert other.study.study_instance_uid != study.study.study_instance_uid
    assert other.truth["centroid_lps_mm"] != study.truth["centroid_lps_mm"]


def test_layout_and_headers(study) -> None:
    assert {s.label for s in study.study.series} == {"t1", "t1c", "t2", "flair"}
    for s in study.study.series:
        assert s.files[0].parent == study.out_dir / "dicom" / str(s.series_number)
        ds = pydicom.dcmread(s.files[0], stop_before_pixels=True)
        assert ds.PatientPosition == "HFS" and ds.BodyPartExamined == "BRAIN"
        assert ds.FrameOfReferenceUID == study.study.frame_of_reference_uid
        assert ds.MRAcquisitionType == ("3D" if s.label in ("t1", "t1c") else "2D")
        assert ("ContrastBolusAgent" in ds) == (s.label == "t1c")


def test_truth_volumes_match_label_map(study) -> None:
    truth = json.loads(study.truth_path.read_text())
    img = nib.load(study.labels_path)
    lab = np.asarray(img.dataobj)
    vox_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    count = {v: int((lab == v).sum()) for v in (1, 2, 3)}
    v = truth["volumes_ml"]
    assert truth["seed"] == 3
    assert v["whole_tumor"] == pytest.approx((count[1] + count[2] + count[3]) * vox_ml, rel=1e-3)
    assert v["tumor_core"] == pytest.approx((count[1] + count[3]) * vox_ml, rel=1e-3)
    assert v["enhancing"] == pytest.approx(count[3] * vox_ml, rel=1e-3)
    assert v["necrotic"] == pytest.approx(count[1] * vox_ml, rel=1e-3)
    assert v["edema"] == pytest.approx(count[2] * vox_ml, rel=1e-3)
    assert 5.0 < v["whole_tumor"] < 120.0
    assert count[3] > 0 and count[2] > 0


def test_label_map_has_t1c_dicom_geometry(study) -> None:
    dcm = _read_series(study.series_dirs["t1c"])
    lab = sitk.ReadImage(str(study.labels_path))
    assert lab.GetSize() == dcm.GetSize()
    np.testing.assert_allclose(lab.GetOrigin(), dcm.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(lab.GetSpacing(), dcm.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(lab.GetDirection(), dcm.GetDirection(), atol=1e-5)
    # nibabel reads the same grid as RAS: flip x and y of the LPS affine.
    aff = nib.load(study.labels_path).affine
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3, 3]
    np.testing.assert_allclose(lps, dcm.GetOrigin(), atol=1e-3)


def test_t2_flair_geometry_differs(study) -> None:
    t1c, t2, flair = (study.geometry[k] for k in ("t1c", "t2", "flair"))
    assert t2.thickness == pytest.approx(5.0) and t2.slice_spacing >= 5.0
    assert t1c.slice_spacing < 2.0 * SCALE**-1
    assert t2.direction != t1c.direction
    for g in (t2, flair):
        img = _read_series(study.series_dirs["t2" if g is t2 else "flair"])
        assert img.GetSize() != _read_series(study.series_dirs["t1c"]).GetSize()
        np.testing.assert_allclose(img.GetDirection(), g.direction, atol=1e-5)
        assert img.GetSpacing()[2] == pytest.approx(g.slice_spacing, abs=1e-3)


def test_centroid_inside_tumour_in_every_series(study) -> None:
    c = study.truth["centroid_lps_mm"]
    for label in ("t1", "t1c", "t2", "flair"):
        img = _read_series(study.series_dirs[label])
        lab = sitk.ReadImage(str(study.out_dir / "ground_truth" / f"labels_{label}.nii.gz"))
        idx = img.TransformPhysicalPointToIndex(c)
        assert all(0 <= i < n for i, n in zip(idx, img.GetSize())), label
        assert lab.TransformPhysicalPointToIndex(c) == idx
        assert lab[idx] > 0, label


def test_healthy_study_has_empty_truth(tmp_path: Path) -> None:
    s = generate_glioma_study(tmp_path / "h", seed=5, tumor=False, scale=0.2, localizer=False,
                              write_all_labels=False)
    assert s.truth["volumes_ml"]["whole_tumor"] == 0.0
    assert s.truth["centroid_lps_mm"] is None
    assert int(sitk.GetArrayFromImage(sitk.ReadImage(str(s.labels_path))).max()) == 0
