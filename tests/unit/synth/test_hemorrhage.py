"""Synthetic head CTs with haemorrhage: DICOM conformance, geometry, HU, ground truth, determinism.

One full study with all five subtypes (Siemens-like, 5 mm) is shared by most
tests; template-space cases at 2 mm check each subtype's shape and place.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from scipy import ndimage

from radnode.analyzers.volumes import load_series
from radnode.synth import hemorrhage as hem
from radnode.synth.commands import synth
from radnode.synth.hemorrhage import (
    LABELS,
    SUBTYPES,
    TISSUES,
    generate_hemorrhage_study,
    synthesize_ct_case,
)
from radnode.sr_writer.validate import dciodvfy
from tests.support.require import unavailable

ALL = set(SUBTYPES)
_T = {name: value for value, name in TISSUES.items()}


pytestmark = pytest.mark.usefixtures("colin27")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return generate_hemorrhage_study(tmp_path_factory.mktemp("h") / "s", seed=11, subtypes=ALL, vendor="siemens",
                                     slice_mm=5.0)


@pytest.fixture(scope="module")
def volume(study) -> sitk.Image:
    return load_series(study.series.files)


@pytest.fixture(scope="module")
def truth_maps(study) -> tuple[np.ndarray, np.ndarray]:
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(study.labels_path)))
    tissues = sitk.GetArrayFromImage(sitk.ReadImage(str(study.tissues_path)))
    return labels, tissues


# --------------------------------------------------------------------------
# DICOM study
# --------------------------------------------------------------------------

def test_layout_and_ct_headers(study) -> None:
    s = study.series
    assert len(s.files) == study.geometry.size[2] >= 25
    assert [f.name for f in s.files] == [f"{k}.dcm" for k in range(1, len(s.files) + 1)]
    assert all(f.parent == study.out_dir / "dicom" / str(s.series_number) for f in s.files)
    assert {p.name for p in (study.out_dir / "ground_truth").iterdir()} == {"labels.nii.gz", "tissues.nii.gz",
                                                                         "truth.json"}
    ds = pydicom.dcmread(s.files[len(s.files) // 2])
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
    assert ds.Manufacturer == "SIEMENS" and ds.ManufacturerModelName.startswith("SOMATOM")
    assert ds.ConvolutionKernel in ("H30s", "Hr38", "H31s")
    assert ds.SeriesDescription == f"Head 5.0 {ds.ConvolutionKernel}"
    assert ds.StudyDescription == "CT HEAD WO CONTRAST"
    assert list(ds.ImageType)[:3] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (ds.Rows, ds.Columns) == (512, 512)
    assert float(ds.SliceThickness) == 5.0
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40, 80)
    assert ds.BodyPartExamined == "HEAD" and ds.PatientPosition == "HFS"
    assert float(ds.KVP) == 120 and int(ds.XRayTubeCurrent) > 0 and int(ds.Exposure) > 0
    assert ds.PatientID == "RNHEM000011" and ds.PatientName == "SYNTH^HEAD11" and ds.AccessionNumber
    assert ds.StudyInstanceUID == study.study.study_instance_uid == study.truth["study_instance_uid"]
    assert ds.SeriesInstanceUID == study.series.series_instance_uid
    assert ds.pixel_array.shape == (512, 512)


def test_gantry_tilt_and_head_rotation(study, volume) -> None:
    ds0, ds1 = (pydicom.dcmread(f, stop_before_pixels=True) for f in study.series.files[:2])
    tilt = float(ds0.GantryDetectorTilt)
    assert 8.0 <= abs(tilt) <= 22.0 and tilt == study.truth["gantry_tilt_deg"]
    iop = np.asarray(ds0.ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    assert np.allclose(row, [1, 0, 0])
    # The column direction is tilted about the x axis by the gantry angle.
    assert math.degrees(math.atan2(-col[2], col[1])) == pytest.approx(abs(tilt), abs=0.1)
    normal = np.cross(row, col)
    step = np.asarray(ds1.ImagePositionPatient, float) - np.asarray(ds0.ImagePositionPatient, float)
    assert np.allclose(step, 5.0 * normal, atol=1e-3)  # stacked along the tilted normal (not sheared)
    rot = study.truth["head_rotation_deg"]
    assert 0.0 < abs(rot["yaw"]) <= 8.0 and 0.0 < abs(rot["roll"]) <= 6.0
    # radnode's own reader rebuilds the tilted volume exactly where the label map lies.
    ref = sitk.ReadImage(str(study.labels_path))
    assert volume.GetSize() == ref.GetSize() == (512, 512, len(study.series.files))
    assert np.allclose(volume.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    assert np.allclose(volume.GetDirection(), ref.GetDirection(), atol=1e-5)
    assert np.allclose(volume.GetSpacing(), ref.GetSpacing(), atol=1e-4)


def test_hu_per_tissue(study, volume, truth_maps) -> None:
    labels, tissues = truth_maps
    hu = sitk.GetArrayFromImage(volume)

    def median(name: str) -> float:
        m = ndimage.binary_erosion((tissues == _T[name]) & (labels == 0), structure=np.ones((1, 5, 5), bool))
        assert m.sum() > 300, name
        return float(np.median(hu[m]))

    assert -1010 <= median("air") <= -985
    assert -110 <= median("fat") <= -60
    assert 30 <= median("soft_tissue") <= 60
    gm, wm = median("grey_matter"), median("white_matter")
    assert 33 <= gm <= 45 and 23 <= wm <= 32 and gm - wm >= 5
    assert 0 <= median("ventricle") <= 15
    assert 300 <= median("diploe") <= 750
    bone = hu[(tissues == _T["cortical_bone"]) & (labels == 0)]
    assert 1000 <= np.percentile(bone, 90) <= 1950 and np.median(bone) > 800  # thick slices: partial volume
    # Quantum noise: high-pass residual in deep white matter.
    wm_core = ndimage.binary_erosion(tissues == _T["white_matter"], structure=np.ones((1, 9, 9), bool))
    residual = hu - ndimage.uniform_filter(hu, (1, 9, 9))
    assert 2.5 <= float(residual[wm_core].std()) <= 7.0
    assert 3.0 <= study.truth["scanner"]["noise_sd_hu"] <= 6.0


def test_each_subtype_present_with_its_density(study, volume, truth_maps) -> None:
    labels, _ = truth_maps
    hu = sitk.GetArrayFromImage(volume)
    assert study.truth["subtypes_present"] == list(SUBTYPES)
    expected = {"epidural": (50, 80), "subdural": (40, 70), "intraparenchymal": (55, 85),
                "intraventricular": (40, 70), "subarachnoid": (40, 60)}
    for value, name in LABELS.items():
        m = labels == value
        assert m.sum() > 50, name
        lo, hi = expected[name]
        assert lo <= float(np.median(hu[m])) <= hi, name


def test_per_slice_truth_matches_the_label_map(study, truth_maps) -> None:
    labels, _ = truth_maps
    slices = study.truth["slices"]
    assert len(slices) == labels.shape[0] == len(study.series.files)
    for k, (entry, path) in enumerate(zip(slices, study.series.files)):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert entry["instance_number"] == ds.InstanceNumber == k + 1
        assert entry["sop_instance_uid"] == ds.SOPInstanceUID
        assert study.truth["per_slice"][ds.SOPInstanceUID]["instance_number"] == k + 1
        for value, name in LABELS.items():
            assert entry[name] == bool((labels[k] == value).any()), (k, name)
        assert entry["any"] == bool(labels[k].any())
    assert any(s["any"] for s in slices) and not all(s["any"] for s in slices)


def test_volumes_are_voxel_counts_times_voxel_volume(study, truth_maps) -> None:
    labels, _ = truth_maps
    g = study.geometry
    voxel_ml = g.pixel * g.pixel * g.slice_spacing / 1000.0
    vols = study.truth["volumes_ml"]
    for value, name in LABELS.items():
        assert vols[name] == pytest.approx(int((labels == value).sum()) * voxel_ml, abs=1e-3)
        assert study.truth["voxel_counts"][name] == int((labels == value).sum())
    assert vols["total"] == pytest.approx(int((labels > 0).sum()) * voxel_ml, abs=1e-3)
    assert json.loads(study.truth_path.read_text()) == study.truth


def test_dciodvfy_reports_no_error(study, ge_none) -> None:
    if shutil.which("dciodvfy") is None and not Path("/usr/bin/dciodvfy").exists():
        unavailable("dciodvfy (dicom3tools) is not installed")
    assert dciodvfy(study.series.files[len(study.series.files) // 2]) == []  # Siemens-like, 12 bits unsigned
    assert dciodvfy(ge_none[len(ge_none) // 2]) == []  # GE-like, 16 bits signed, pixel padding


def test_deterministic(study, tmp_path: Path) -> None:
    again = generate_hemorrhage_study(tmp_path / "s", seed=11, subtypes=ALL, vendor="siemens", slice_mm=5.0)
    assert again.truth == study.truth
    assert again.series.sop_instance_uids == study.series.sop_instance_uids
    for a, b in zip(study.series.files, again.series.files):
        assert a.read_bytes() == b.read_bytes()
    for a, b in ((study.labels_path, again.labels_path), (study.tissues_path, again.tissues_path)):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(b))))


@pytest.fixture(scope="module")
def ge_none(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A normal head written through the CLI (GE dialect); its files in instance order."""
    out = tmp_path_factory.mktemp("none") / "none"
    result = CliRunner().invoke(synth, ["hemorrhage", "--out", str(out), "--seed", "4", "--none",
                                        "--vendor", "ge", "--slice-mm", "5"])
    assert result.exit_code == 0, result.output
    assert "no haemorrhage" in result.output
    return sorted((out / "dicom" / "2").glob("*.dcm"), key=lambda p: int(p.stem))


def test_cli_none_ge(ge_none) -> None:
    gt = ge_none[0].parents[2] / "ground_truth"
    truth = json.loads((gt / "truth.json").read_text())
    assert truth["hemorrhage"] is False and truth["subtypes_present"] == []
    assert truth["volumes_ml"]["total"] == 0 and not any(s["any"] for s in truth["slices"])
    assert len(truth["slices"]) == len(ge_none)
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(gt / "labels.nii.gz"))).any()
    ds = pydicom.dcmread(ge_none[0])
    assert ds.Manufacturer == "GE MEDICAL SYSTEMS" and ds.ManufacturerModelName.startswith("Revolution")
    assert ds.SeriesDescription in ("HEAD 5mm STND", "HEAD 5mm SOFT")
    assert (ds.BitsStored, ds.PixelRepresentation, ds.PixelPaddingValue) == (16, 1, -2000)
    assert ds.pixel_array[0, 0] == -2000  # outside the reconstruction circle
    assert float(ds.GantryDetectorTilt) == truth["gantry_tilt_deg"] != 0


def test_cli_rejects_bad_anatomy(tmp_path: Path) -> None:
    result = CliRunner().invoke(synth, ["hemorrhage", "--out", str(tmp_path / "x"), "--anatomy", "nohead"])
    assert result.exit_code == 2 and "--anatomy" in result.output
    assert not (tmp_path / "x").exists()


def test_bad_arguments_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="subtypes"):
        synthesize_ct_case(0, subtypes={"chronic"})
    with pytest.raises(ValueError, match="anatomy"):
        synthesize_ct_case(0, anatomy="nohead")
    with pytest.raises(ValueError, match="spacing"):
        synthesize_ct_case(0, spacing=3.0)
    with pytest.raises(ValueError, match="vendor"):
        generate_hemorrhage_study(tmp_path, vendor="philips")
    with pytest.raises(ValueError, match="slice_mm"):
        generate_hemorrhage_study(tmp_path, slice_mm=0.3)


# --------------------------------------------------------------------------
# Template space (what training slices)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cases() -> dict[str, hem.CTCase]:
    return {s: synthesize_ct_case(5, spacing=2.0, subtypes={s}) for s in SUBTYPES}


def test_case_each_subtype_alone(cases) -> None:
    for name, case in cases.items():
        value = SUBTYPES.index(name) + 1
        assert case.subtypes == (name,)
        assert set(np.unique(case.labels)) == {0, value}
        assert case.volumes_ml[name] == pytest.approx((case.labels == value).sum() * 8 / 1000.0, abs=1e-6)
        assert case.hu.shape == case.labels.shape == case.tissue.shape and case.hu.dtype == np.float32
        assert len(case.slice_truth) == case.labels.shape[0]
        for z, entry in enumerate(case.slice_truth):
            assert entry[name] == entry["any"] == bool(case.labels[z].any())
        lo, hi = hem._BLOOD_HU[name]
        assert lo - 25 <= float(np.median(case.clean_hu[case.labels == value])) <= hi + 5, name


def _ras(case: hem.CTCase, mask: np.ndarray) -> np.ndarray:
    anat = hem._ct_anatomy(case.spacing[0], case.anatomy)
    return hem._ras_of(anat, np.argwhere(mask))


def test_epidural_is_a_lens_on_the_inner_table_inside_one_bone(cases) -> None:
    case = cases["epidural"]
    anat = hem._ct_anatomy(2.0, "colin27")
    m = case.labels == 1
    assert float(anat.depth[m].min()) <= 2.0  # against the inner table
    ras = _ras(case, m)
    regions = np.unique(hem._bone_region(ras[:, 0], ras[:, 1], ras[:, 2], anat.midline))
    assert len(regions) == 1  # does not cross a suture (nor the midline)
    assert 50 <= float(np.median(case.clean_hu[m])) <= 80


def test_subdural_stays_on_one_side_of_the_falx(cases) -> None:
    case = cases["subdural"]
    anat = hem._ct_anatomy(2.0, "colin27")
    ras = _ras(case, case.labels == 2)
    side = np.sign(ras[:, 0] - anat.midline)
    assert abs(side.sum()) >= 0.98 * len(side)
    assert 40 <= float(np.median(case.clean_hu[case.labels == 2])) <= 70


def test_intraparenchymal_has_an_oedema_rim(cases) -> None:
    case = cases["intraparenchymal"]
    clot = case.labels == 3
    rim = case.tissue == _T["oedema"]
    assert rim.sum() > 0 and not (rim & clot).any()
    assert (ndimage.binary_dilation(clot, iterations=3) & rim).sum() >= 0.8 * rim.sum()
    assert 15 <= float(np.median(case.clean_hu[rim])) <= 25
    assert 55 <= float(np.median(case.clean_hu[clot])) <= 85


def test_intraventricular_blood_layers_posteriorly(cases) -> None:
    case = cases["intraventricular"]
    anat = hem._ct_anatomy(2.0, "colin27")
    blood = _ras(case, case.labels == 4)
    vent = _ras(case, anat.ventricles)
    assert blood[:, 1].mean() < vent[:, 1].mean() - 10  # occipital horns, dependent (posterior, RAS y)
    assert not (case.labels == 4)[~ndimage.binary_dilation(anat.ventricles)].any()


def test_subarachnoid_replaces_csf(cases) -> None:
    case = cases["subarachnoid"]
    anat = hem._ct_anatomy(2.0, "colin27")
    m = case.labels == 5
    assert float(anat.space[m].min()) >= 0.35  # only where there was CSF
    assert not (m & anat.ventricles).any()


def test_case_none_and_determinism() -> None:
    none = synthesize_ct_case(3, spacing=2.0, hemorrhage=False)
    assert none.subtypes == () and not none.labels.any() and none.volumes_ml["total"] == 0
    assert not any(s["any"] for s in none.slice_truth)
    a = synthesize_ct_case(9, spacing=2.0)
    b = synthesize_ct_case(9, spacing=2.0)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels) and a.bleeds == b.bleeds
    assert 1 <= len(a.subtypes) <= 3


def test_case_hu_per_tissue_template_space() -> None:
    case = synthesize_ct_case(2, spacing=2.0, hemorrhage=False)

    def median(name: str) -> float:
        return float(np.median(case.clean_hu[case.tissue == _T[name]]))

    assert median("air") == -1000
    assert -110 <= median("fat") <= -80 and 35 <= median("soft_tissue") <= 50
    assert 1000 <= median("cortical_bone") <= 1900 and 300 <= median("diploe") <= 700
    assert 0 <= median("csf") <= 15 and 0 <= median("ventricle") <= 15
    assert 35 <= median("grey_matter") <= 45 and 25 <= median("white_matter") <= 32
    brain = ndimage.binary_erosion(case.tissue == _T["white_matter"], iterations=1)
    assert 2.0 <= float((case.hu - case.clean_hu)[brain].std()) <= 12.0  # noise plus beam hardening


def test_other_anatomy(cases) -> None:
    warped = synthesize_ct_case(5, spacing=2.0, subtypes={"intraparenchymal"}, anatomy="colin27-warp1")
    assert warped.anatomy == "colin27-warp1" and warped.subtypes == ("intraparenchymal",)
    assert warped.labels.shape == cases["intraparenchymal"].labels.shape
    assert not np.array_equal(warped.tissue, cases["intraparenchymal"].tissue)


def test_beam_hardening_cups_and_streaks() -> None:
    n = 128
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    head = np.where(np.hypot(xx, yy) < 55, 30.0, -1000.0)[None]  # ~16 cm of water-like tissue, 1.5 mm pixels
    cup = hem._beam_hardening(head, 1.5, water=0.0008, bone=0.0)[0]
    inside = np.hypot(xx, yy)
    assert cup[inside < 10].mean() < cup[(inside > 40) & (inside < 50)].mean() - 2.0  # darker centre
    bones = head.copy()
    for cx in (-30, 30):
        bones[0][np.hypot(xx - cx, yy) < 6] = 1800.0
    err = hem._beam_hardening(bones, 1.5, water=0.0, bone=0.02)[0]
    between = err[np.abs(yy) < 2][np.abs(xx[np.abs(yy) < 2]) < 15].mean()
    beside = err[(np.abs(yy - 25) < 2) & (np.abs(xx) < 15)].mean()
    assert between < beside - 5.0  # a dark streak joins the two dense bones
