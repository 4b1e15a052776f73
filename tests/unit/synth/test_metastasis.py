"""Synthetic brain-metastasis studies: per-lesion truth against the label map and the pixels,
sites, look-alikes, follow-ups, determinism, CLI and DICOM conformance.

Reduced matrices (``scale=0.5``: ~2 mm voxels) keep each study to a couple of seconds; the
noise-free template case (1 mm) checks what partial volume would blur.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from scipy import ndimage

from radnode.synth.metastasis import (
    _INTENSITY,
    SITES,
    generate_metastasis_study,
    synthesize_metastasis_case,
)
from tests.support.require import unavailable

SCALE = 0.5


pytestmark = pytest.mark.usefixtures("colin27")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return generate_metastasis_study(tmp_path_factory.mktemp("m") / "s", seed=2, lesions=8, scale=SCALE,
                                     vendor="siemens", flair_3d=False)


@pytest.fixture(scope="module")
def case():
    return synthesize_metastasis_case(5, spacing=1.0, lesions=12)


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _index(tpl, p_mm) -> tuple[int, int, int]:
    d_inv = np.linalg.inv(np.asarray(tpl.direction).reshape(3, 3))
    return tuple(int(v) for v in np.rint((d_inv @ (np.asarray(p_mm) - np.asarray(tpl.origin)) / tpl.spacing)[::-1]))


def test_files_readable_and_headers(study) -> None:
    assert {s.label for s in study.study.series} == {"t1c", "flair"}
    for s in study.study.series:
        img = _read_series(study.series_dirs[s.label])
        assert img.GetSize()[2] == s.instance_count
        assert s.files[0].parent == study.out_dir / "dicom" / str(s.series_number)
        ds = pydicom.dcmread(s.files[0])
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert ds.FrameOfReferenceUID == study.study.frame_of_reference_uid
        assert ("ContrastBolusAgent" in ds) == (s.label == "t1c")
        if s.label == "t1c":
            assert ds.MRAcquisitionType == "3D" and ds.SeriesDescription.endswith("POST")
        else:
            assert ds.SeriesDescription == "t2_tirm_tra_dark-fluid" and ds.MRAcquisitionType == "2D"
            assert float(ds.SliceThickness) in (4.0, 5.0)


def test_label_ids_volumes_and_centroids_match_truth(study) -> None:
    truth = json.loads(study.truth_path.read_text())
    assert truth == study.truth
    img = sitk.ReadImage(str(study.labels_path))
    dcm = _read_series(study.series_dirs["t1c"])
    assert img.GetSize() == dcm.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), dcm.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(img.GetDirection(), dcm.GetDirection(), atol=1e-5)
    lab = sitk.GetArrayFromImage(img)
    ids = sorted(int(v) for v in np.unique(lab) if v)
    assert ids == [les["id"] for les in truth["lesions"]] == list(range(1, 9))
    assert truth["lesion_count"] == 8
    vox_ml = float(np.prod(img.GetSpacing())) / 1000.0
    for les in truth["lesions"]:
        n = int((lab == les["id"]).sum())
        assert les["voxels"] == n
        assert les["volume_ml"] == pytest.approx(n * vox_ml, rel=1e-3, abs=1e-5)
        kji = np.argwhere(lab == les["id"]).mean(axis=0)
        c = img.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]])
        assert np.linalg.norm(np.asarray(c) - les["centroid_lps_mm"]) < 1.0
        assert les["longest_diameter_mm"] >= les["longest_axial_diameter_mm"] - 1e-6
        # The drawn size survives voxelisation within a couple of voxels.
        assert abs(les["longest_diameter_mm"] - les["nominal_diameter_mm"]) < 2.5 * img.GetSpacing()[0] + 0.2 * les[
            "nominal_diameter_mm"]
        assert les["site"] in SITES and les["kind"] in ("solid", "ring")
        assert les["hemisphere"] in ("left", "right", "midline")


def test_lesions_enhance_on_t1c(study) -> None:
    t1c = sitk.GetArrayFromImage(_read_series(study.series_dirs["t1c"])).astype(np.float64)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(study.labels_path)))
    checked = 0
    for les in study.truth["lesions"]:
        if les["voxels"] < 15:  # a few voxels at 2 mm: partial volume, not contrast
            continue
        m = lab == les["id"]
        shell = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1) & (lab == 0)
        assert t1c[m].mean() > 1.25 * np.median(t1c[shell]), les["id"]
        checked += 1
    assert checked >= 3


def test_every_labelled_lesion_enhances_even_beside_another_lesions_oedema() -> None:
    """A lesion labelled in the truth must show on the image: a later lesion's oedema once painted over
    an earlier lesion (seed 800101: a 13-mm lesion at white-matter intensity), so a model was scored
    on lesions nobody could see."""
    c = synthesize_metastasis_case(800101, spacing=1.0)
    t1c = c.images["t1c"]
    enh = _INTENSITY["t1c"]["enh"]
    assert len(c.lesions) >= 10 and any(v > 1.0 for v in c.edema_ml.values())
    for les in c.lesions:
        m = c.labels == les.id
        wall = m & ~(t1c < 0.5 * enh) if les.kind == "ring" else m  # necrotic centre excluded
        assert np.percentile(t1c[wall], 75) > 0.8 * enh, (les.id, les.diameter_mm)


def test_ring_lesions_have_dark_centres_and_oedema_scales(case) -> None:
    t1c, flair = case.images["t1c"], case.images["flair"]
    rings = [les for les in case.lesions if les.kind == "ring"]
    assert rings and all(les.diameter_mm > 10 for les in rings)
    for les in rings:
        m = case.labels == les.id
        rim = m & ~ndimage.binary_erosion(m, iterations=2)
        c = _index(case.template, les.centre_mm)
        assert t1c[c] < 0.5 * t1c[rim].mean()
    for les in case.lesions:
        assert case.labels[_index(case.template, les.centre_mm)] == les.id
        if les.diameter_mm < 5:
            assert case.edema_ml[les.id] == 0.0
    big = max(case.lesions, key=lambda x: x.diameter_mm)
    small = [les for les in case.lesions if 5 <= les.diameter_mm < 8]
    assert big.diameter_mm > 15 and case.edema_ml[big.id] > 5 * max([case.edema_ml[s.id] for s in small] + [0.01])
    m = case.labels == big.id
    ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1) & case.template.brain
    wm = (case.template.p_wm > 0.9) & ~ndimage.binary_dilation(case.labels > 0, iterations=25)
    assert flair[ring].mean() > 1.3 * flair[wm].mean()  # oedema is bright on FLAIR


def test_sites_are_where_claimed(case) -> None:
    tpl = case.template
    seen = set()
    for les in case.lesions:
        x, y, z = les.centre_mm  # template LPS = MNI with x and y negated
        seen.add(les.site)
        if les.site == "cerebellum":
            assert z < -18 and y > 42
        elif les.site == "brainstem":
            assert abs(x) <= 9 and 16 < y < 40 and -50 < z < -12
        elif les.site == "deep grey":
            assert 8 <= abs(x) <= 30 and -8 < z < 18 and tpl.p_gm[_index(tpl, les.centre_mm)] > 0.45
        else:
            i = _index(tpl, les.centre_mm)
            assert tpl.p_wm[i] >= 0.25 and tpl.p_gm[i] >= 0.25 and z > -30
        assert les.hemisphere == ("left" if x > 3 else "right" if x < -3 else "midline")
    assert len(seen) >= 2
    # Lesions never overlap: every id keeps its own connected voxels.
    for les in case.lesions:
        assert (case.labels == les.id).any()


def test_study_truth_maps_template_to_patient(study) -> None:
    tp = study.truth["template_to_patient"]
    rot = np.asarray(tp["rotation"])
    assert 2.0 <= study.truth["head_tilt_deg"] <= 10.0
    for les in study.truth["lesions"]:
        p = rot @ (np.asarray(les["centroid_template_mm"]) - tp["template_centre_lps_mm"]) + tp["patient_centre_lps_mm"]
        assert np.linalg.norm(p - les["centroid_lps_mm"]) < 3.0


def test_lookalikes_enhance_and_are_not_lesions(case, study) -> None:
    tpl, t1c = case.template, case.images["t1c"]
    kinds = {la.kind for la in case.lookalikes}
    assert kinds == {"vessel", "dural enhancement"}
    near_lesion = ndimage.binary_dilation(case.labels > 0, iterations=2)
    for la in case.lookalikes:
        vals = [t1c[_index(tpl, p)] for p in la.points_mm]
        assert all(not near_lesion[_index(tpl, p)] for p in la.points_mm)
        if la.kind == "vessel":
            assert np.median(vals) > 1.5 * 840 and 0.5 <= la.size_mm <= 1.5
        else:
            assert np.median(vals) > 1.2 * 840
            assert all(not tpl.brain[_index(tpl, p)] for p in la.points_mm)
    # In the written study: listed as not lesions, and outside the label map.
    img = sitk.ReadImage(str(study.labels_path))
    lab = sitk.GetArrayFromImage(img)
    assert study.truth["lookalikes"] and all(la["is_lesion"] is False for la in study.truth["lookalikes"])
    for la in study.truth["lookalikes"]:
        for p in la["points_lps_mm"]:
            i, j, k = img.TransformPhysicalPointToIndex(p)
            if 0 <= i < lab.shape[2] and 0 <= j < lab.shape[1] and 0 <= k < lab.shape[0]:
                assert lab[k, j, i] == 0


def test_followup_keeps_ids_and_statuses(study, tmp_path: Path) -> None:
    base = study.truth["lesions"]

    def room(x: dict) -> float:  # free space around a lesion before it would touch another
        c = np.asarray(x["centroid_template_mm"])
        return min(np.linalg.norm(c - o["centroid_template_mm"]) - o["nominal_diameter_mm"] / 2
                   for o in base if o["id"] != x["id"]) - x["nominal_diameter_mm"] / 2

    grow = max((x for x in base if room(x) > 0.8 * x["nominal_diameter_mm"] + 3), key=lambda x: x["nominal_diameter_mm"])
    assert grow["nominal_diameter_mm"] >= 5.0
    gone, shrink = sorted((x for x in base if x["id"] != grow["id"]), key=lambda x: -x["nominal_diameter_mm"])[:2]
    fu = generate_metastasis_study(tmp_path / "f", seed=2, lesions=8, scale=SCALE, vendor="siemens", flair_3d=False,
                                   followup_days=120, changes={grow["id"]: 1.7, gone["id"]: 0.0, shrink["id"]: 0.4},
                                   new_lesions=1)
    t = fu.truth
    by_id = {x["id"]: x for x in t["lesions"]}
    assert sorted(by_id) == list(range(1, 10))
    assert by_id[grow["id"]]["status"] == by_id[grow["id"]]["intended_change"] == "enlarging"
    assert by_id[grow["id"]]["baseline_longest_diameter_mm"] == grow["longest_diameter_mm"]
    assert by_id[grow["id"]]["longest_diameter_mm"] >= 1.2 * grow["longest_diameter_mm"]
    assert by_id[gone["id"]]["status"] == "resolved" and by_id[gone["id"]]["voxels"] == 0
    assert by_id[shrink["id"]]["intended_change"] == "shrinking"
    assert by_id[shrink["id"]]["volume_ml"] < shrink["volume_ml"]
    assert by_id[9]["status"] == "new" and by_id[9]["baseline_id"] is None and by_id[9]["voxels"] > 0
    for x in base:  # statuses are what the two label maps measure (RANO-BM-like thresholds)
        now = by_id[x["id"]]
        assert now["baseline_id"] == x["id"]
        if now["voxels"]:
            r = now["longest_diameter_mm"] / x["longest_diameter_mm"]
            assert now["status"] == ("enlarging" if r >= 1.2 else "shrinking" if r <= 0.7 else "stable")
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(fu.labels_path)))
    assert gone["id"] not in np.unique(lab) and t["lesion_count"] == 8
    assert fu.study.patient_id == study.study.patient_id
    assert fu.study.study_instance_uid != study.study.study_instance_uid
    a = pydicom.dcmread(study.study.series[0].files[0], stop_before_pixels=True)
    b = pydicom.dcmread(fu.study.series[0].files[0], stop_before_pixels=True)
    assert (a.PatientBirthDate, a.PatientName) == (b.PatientBirthDate, b.PatientName)
    import datetime as dt
    days = (dt.datetime.strptime(b.StudyDate, "%Y%m%d") - dt.datetime.strptime(a.StudyDate, "%Y%m%d")).days
    assert days == 120
    # Drawn changes (no ``changes``): every baseline id is accounted for with a known status.
    drawn = synthesize_metastasis_case(2, spacing=2.0, lesions=8, followup_days=200)
    statuses = {les.id: les.status for les in drawn.lesions}
    assert set(range(1, 9)) <= set(statuses)
    assert set(statuses.values()) <= {"new", "enlarging", "stable", "shrinking", "resolved"}


def test_deterministic(study, tmp_path: Path) -> None:
    again = generate_metastasis_study(tmp_path / "s", seed=2, lesions=8, scale=SCALE, vendor="siemens",
                                      flair_3d=False)
    assert again.truth == study.truth
    assert again.study.study_instance_uid == study.study.study_instance_uid
    for s_a, s_b in zip(study.study.series, again.study.series):
        for k in (0, len(s_a.files) // 2):
            assert s_a.files[k].read_bytes() == s_b.files[k].read_bytes()
    a, b = (synthesize_metastasis_case(s, spacing=2.0) for s in (11, 12))
    assert [x.centre_mm for x in a.lesions] != [x.centre_mm for x in b.lesions] or len(a.lesions) == 0


def test_counts_and_sizes_over_seeds() -> None:
    counts, sizes = [], []
    for s in range(12):
        c = synthesize_metastasis_case(s, spacing=2.0)
        counts.append(len(c.lesions))
        sizes += [les.diameter_mm for les in c.lesions]
        assert sorted(int(v) for v in np.unique(c.labels) if v) == [les.id for les in c.lesions]
    assert all(0 <= n <= 15 for n in counts) and len(set(counts)) > 3
    assert all(2.0 <= d <= 30.0 for d in sizes)
    assert np.median(sizes) < 12.0  # many small ones
    with pytest.raises(ValueError, match="lesions"):
        synthesize_metastasis_case(0, lesions=16)


def test_cli(tmp_path: Path) -> None:
    from radnode.synth.commands import synth

    res = CliRunner().invoke(synth, ["metastasis", "--out", str(tmp_path / "c"), "--seed", "4", "--lesions", "3",
                                     "--vendor", "ge"])
    assert res.exit_code == 0, res.output
    assert "3 lesion(s)" in res.output and "+C" in res.output
    truth = json.loads((tmp_path / "c" / "ground_truth" / "truth.json").read_text())
    assert truth["anatomy"] == "colin27" and truth["vendor"] == "ge" and truth["lesion_count"] == 3
    for les in truth["lesions"]:
        assert les["site"] in res.output
    bad = CliRunner().invoke(synth, ["metastasis", "--out", str(tmp_path / "x"), "--anatomy", "colin28"])
    assert bad.exit_code != 0 and "anatomy" in bad.output


def test_dciodvfy_reports_no_error(study) -> None:
    from radnode.sr_writer.validate import dciodvfy

    if shutil.which("dciodvfy") is None and not Path("/usr/bin/dciodvfy").exists():
        unavailable("dciodvfy (dicom3tools) is not installed")
    for s in study.study.series:
        assert dciodvfy(s.files[len(s.files) // 2]) == [], s.label


def test_ge_3d_flair_variant(tmp_path: Path) -> None:
    from radnode.sr_writer.validate import dciodvfy

    s = generate_metastasis_study(tmp_path / "g", seed=9, lesions=2, scale=0.3, vendor="ge", flair_3d=True)
    descs = {x.label: x.description for x in s.study.series}
    assert descs["flair"] == "Sag CUBE FLAIR" and descs["t1c"] in ("Sag T1 BRAVO +C", "Ax T1 BRAVO +C")
    for x in s.study.series:
        ds = pydicom.dcmread(x.files[0], stop_before_pixels=True)
        assert ds.MRAcquisitionType == "3D" and ds.Manufacturer.startswith("GE")
        assert float(ds.SliceThickness) < 4.0
    if shutil.which("dciodvfy") is None and not Path("/usr/bin/dciodvfy").exists():
        unavailable("dciodvfy (dicom3tools) is not installed")
    for x in s.study.series:
        assert dciodvfy(x.files[len(x.files) // 2]) == [], x.label
