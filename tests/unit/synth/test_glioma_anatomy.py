"""Generated glioma studies on more than one head, and follow-up exams of one patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radnode.synth.glioma import check_anatomy, generate_glioma_study, load_template


pytestmark = pytest.mark.usefixtures("colin27")


def test_anatomy_names_are_checked() -> None:
    assert check_anatomy("colin27") == ("colin27", 0)
    assert check_anatomy("mni152-warp7") == ("mni152", 7)
    for bad in ("colin28", "mni152-warp", "mni152-warpX", "warp1"):
        with pytest.raises(ValueError, match="anatomy"):
            check_anatomy(bad)


def test_heads_differ_and_warps_are_new_heads() -> None:
    colin, mni, warp = (load_template(2.0, a) for a in ("colin27", "mni152", "mni152-warp1"))
    for t in (colin, mni, warp):
        ml = float(t.brain.sum()) * 8 / 1000
        assert 1300 < ml < 2100 and t.candidates.any()
        assert (t.nonbrain > 0.3).sum() > 5000  # a scalp around the brain (drawn for MNI152)
    assert mni.brain.shape == warp.brain.shape and (mni.brain != warp.brain).mean() > 0.01
    assert load_template(2.0, "mni152-warp1") is warp  # cached, deterministic


@pytest.mark.usefixtures("oasis")
def test_the_oasis_head_is_a_smaller_brain_placed_and_oriented_like_mni152() -> None:
    """OASIS is stored with its axes permuted; the loader must reorient and centre it, or tumours
    would be drawn in the wrong lobe and the model would see a rotated head."""
    mni, oasis = load_template(1.0, "mni152"), load_template(1.0, "oasis")
    ml = float(oasis.brain.sum()) / 1000
    assert 1200 < ml < 0.8 * float(mni.brain.sum()) / 1000  # a real-sized brain, not MNI152's enlarged one
    assert oasis.candidates.any() and (oasis.nonbrain > 0.3).sum() > 5000  # a real skull and scalp
    assert np.allclose(oasis.index_to_lps(np.argwhere(oasis.brain).mean(0)),
                       mni.index_to_lps(np.argwhere(mni.brain).mean(0)), atol=0.5)
    on_mni = sitk.GetArrayFromImage(sitk.Resample(oasis.image(oasis.brain.astype(np.uint8)), mni.image(mni.brain.astype(np.uint8)),
                                                  sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
    inside = (on_mni & mni.brain).sum() / on_mni.sum()
    assert inside > 0.98, inside  # the smaller brain fits inside MNI152's (flipped head to foot: 0.79, front to back: 0.92)
    wm, gm = float(oasis.p_wm[oasis.brain].mean()), float(oasis.p_gm[oasis.brain].mean())
    assert 0.3 < wm < 0.5 and 0.35 < gm < 0.6


@pytest.mark.usefixtures("oasis")
def test_a_study_on_oasis_keeps_the_tumour_in_the_brain(tmp_path: Path) -> None:
    s = generate_glioma_study(tmp_path / "o", seed=12, scale=0.25, localizer=False, write_all_labels=False, anatomy="oasis")
    assert s.truth["anatomy"] == "oasis"
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(s.labels_path.parent / "brain_t1c.nii.gz"))) > 0
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(s.labels_path))) > 0
    assert lab.any() and (lab & ~b).sum() <= 0.02 * lab.sum()


def test_a_study_on_mni152_with_its_brain_mask(tmp_path: Path) -> None:
    s = generate_glioma_study(tmp_path / "m", seed=11, scale=0.25, localizer=False, write_all_labels=False, anatomy="mni152")
    assert s.truth["anatomy"] == "mni152"
    brain = sitk.ReadImage(str(s.labels_path.parent / "brain_t1c.nii.gz"))
    labels = sitk.ReadImage(str(s.labels_path))
    assert brain.GetSize() == labels.GetSize()
    b, lab = sitk.GetArrayFromImage(brain) > 0, sitk.GetArrayFromImage(labels) > 0
    assert lab.any() and (lab & ~b).sum() <= 0.02 * lab.sum()  # the tumour lies in the brain
    colin = generate_glioma_study(tmp_path / "c", seed=11, scale=0.25, localizer=False, write_all_labels=False)
    assert colin.study.study_instance_uid != s.study.study_instance_uid


def test_a_follow_up_exam_is_the_same_patient_later_with_a_changed_tumour(tmp_path: Path) -> None:
    kw = {"scale": 0.25, "localizer": False, "write_all_labels": False}
    first = generate_glioma_study(tmp_path / "a", seed=21, **kw)
    later = generate_glioma_study(tmp_path / "b", seed=21, followup_days=91, tumor_scale=1.6, **kw)
    a = pydicom.dcmread(first.study.files[0], stop_before_pixels=True)
    b = pydicom.dcmread(later.study.files[0], stop_before_pixels=True)
    assert (a.PatientID, a.PatientName, a.PatientBirthDate, a.PatientSex) == (b.PatientID, b.PatientName, b.PatientBirthDate, b.PatientSex)
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.AccessionNumber != b.AccessionNumber
    assert (np.datetime64(f"{b.StudyDate[:4]}-{b.StudyDate[4:6]}-{b.StudyDate[6:]}")
            - np.datetime64(f"{a.StudyDate[:4]}-{a.StudyDate[4:6]}-{a.StudyDate[6:]}")) == np.timedelta64(91, "D")
    assert later.truth["volumes_ml"]["whole_tumor"] > 1.3 * first.truth["volumes_ml"]["whole_tumor"]
