"""Preprocessing: DICOM geometry, registration, brain extraction, the nipype workflow.

The geometry tests write their own small DICOM series (sagittal 3D, axial thick
slices, oblique, enhanced multi-frame, RLE-compressed) with a marker at known
patient coordinates and check it comes back at the same coordinates.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from radnode.analyzers.base import InputError
from radnode.analyzers.preprocessing import (
    PreprocessResult,
    cleanup_workdirs,
    reference_grid,
    register_rigid,
    resample_to_grid,
    run_preprocessing,
)
from radnode.analyzers.volumes import index_to_patient, load_series, patient_to_index
from tests.support.require import unavailable

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
MARK = np.array([12.0, -20.0, 25.0])  # LPS mm


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _geometry(size: tuple[int, int, int], spacing: tuple[float, float, float], row: np.ndarray, col: np.ndarray,
              centre: np.ndarray = np.zeros(3)) -> sitk.Image:
    """Empty float image whose centre is at ``centre`` (LPS) with the given row/column directions."""
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    d = np.column_stack([row, col, normal])
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetDirection(tuple(d.ravel()))
    half = d @ ((np.asarray(size) - 1) * np.asarray(spacing) / 2)
    img.SetOrigin(tuple(centre - half))
    return img


def _phantom(geom: sitk.Image, mark: np.ndarray = MARK, radius: float = 6.0) -> sitk.Image:
    """An ellipsoidal 'head' (value 100) with a bright ball (1000) around ``mark``."""
    size = geom.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3).astype(float)
    d = np.asarray(geom.GetDirection()).reshape(3, 3)
    pts = np.asarray(geom.GetOrigin()) + (idx * np.asarray(geom.GetSpacing())) @ d.T
    val = np.where(((pts / [70.0, 90.0, 80.0]) ** 2).sum(1) < 1, 100.0, 0.0)
    val[np.linalg.norm(pts - mark, axis=1) < radius] = 1000.0
    arr = val.reshape(size).transpose(2, 1, 0).astype(np.float32)  # (x,y,z) → (z,y,x)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(geom)
    return img


def _base_ds(img: sitk.Image, series_uid: str, sop_class: str, number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.Modality = "MR"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesNumber = number
    ds.SeriesDescription = f"test {number}"
    ds.Rows, ds.Columns = img.GetSize()[1], img.GetSize()[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_series(img: sitk.Image, out: Path, number: int = 1, *, slope: float = 1.0, intercept: float = 0.0,
                 compress: bool = False) -> list[Path]:
    """One classic single-frame MR file per slice, written in shuffled order with reversed InstanceNumber."""
    out.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayFromImage(img)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    sp = img.GetSpacing()
    series_uid = generate_uid()
    files = []
    order = list(range(arr.shape[0]))
    random.Random(number).shuffle(order)
    for k in order:
        ds = _base_ds(img, series_uid, MR, number)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = arr.shape[0] - k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [sp[1], sp[0]]
        ds.SliceThickness = sp[2]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        pix = np.round((arr[k] - intercept) / slope).astype(np.int16)
        ds.PixelData = pix.tobytes()
        if compress:
            ds.compress(RLELossless, pix)
        f = out / f"{k:04d}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(f)
    return files


def write_enhanced(img: sitk.Image, path: Path, number: int = 7) -> Path:
    """One enhanced MR object: shared pixel measures/orientation, per-frame positions (frames reversed)."""
    arr = sitk.GetArrayFromImage(img)[::-1]
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    sp = img.GetSpacing()
    ds = _base_ds(img, generate_uid(), ENHANCED_MR, number)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.NumberOfFrames = arr.shape[0]
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [sp[1], sp[0]]
    pm.SliceThickness = sp[2]
    po = Dataset()
    po.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, 0, "US"
    shared.PixelMeasuresSequence = [pm]
    shared.PlaneOrientationSequence = [po]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    n = arr.shape[0]
    for i in range(n):
        fr = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = list(img.TransformIndexToPhysicalPoint((0, 0, n - 1 - i)))
        fr.PlanePositionSequence = [pp]
        frames.append(fr)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.round(arr).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _mark_centroid(img: sitk.Image, thr: float = 500.0) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(img)
    zyx = np.argwhere(arr > thr).mean(axis=0)
    return np.asarray(index_to_patient(img, zyx[::-1]))


def _head(spacing: float = 1.0) -> sitk.Image:
    """A realistic head (Colin27 with skull when installed, else nilearn's MNI152 brain), LPS float."""
    if CH2.is_file():
        img = sitk.ReadImage(str(CH2), sitk.sitkFloat32)
    else:
        if os.environ.get("CI"):
            unavailable("mricron-data (Colin27) is not installed")
        import nilearn.datasets

        f = Path(nilearn.datasets.__file__).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        img = sitk.ReadImage(str(f), sitk.sitkFloat32)
    if spacing != 1.0:
        img = sitk.BinShrink(img, [int(spacing)] * 3)
    return img


SAGITTAL = dict(size=(48, 56, 40), spacing=(1.0, 1.0, 1.2), row=np.array([0.0, 1.0, 0.0]), col=np.array([0.0, 0.0, -1.0]))
AXIAL_THICK = dict(size=(96, 96, 12), spacing=(0.5, 0.5, 5.0), row=np.array([1.0, 0.0, 0.0]), col=np.array([0.0, 1.0, 0.0]))
TILTED = dict(size=(40, 40, 30), spacing=(1.3, 1.3, 2.0),
              row=np.array([math.cos(0.3), math.sin(0.3) * 0.6, math.sin(0.3) * 0.8]),
              col=np.array([-math.sin(0.2) * 0.1, math.cos(0.2), -math.sin(0.2)]))


def _tilted() -> dict:
    g = dict(TILTED)
    row = g["row"] / np.linalg.norm(g["row"])
    col = g["col"] - (g["col"] @ row) * row  # Gram-Schmidt: an exact oblique plane
    g["row"], g["col"] = row, col / np.linalg.norm(col)
    return g


GEOMETRIES = {"sagittal": SAGITTAL, "axial_thick": AXIAL_THICK, "tilted": _tilted()}


# ---------------------------------------------------------------------------------------------------------------------
# load_series geometry


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_marker_round_trip_through_load_series(tmp_path: Path, name: str) -> None:
    g = GEOMETRIES[name]
    truth = _phantom(_geometry(g["size"], g["spacing"], g["row"], g["col"], centre=np.array([5.0, -10.0, 20.0])))
    files = write_series(truth, tmp_path / name, slope=2.0, intercept=-10.0, compress=(name == "tilted"))
    vol = load_series(files)
    assert vol.GetSize() == truth.GetSize()
    np.testing.assert_allclose(vol.GetOrigin(), truth.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.GetDirection(), truth.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(vol.GetSpacing(), truth.GetSpacing(), atol=1e-4)
    # rescale applied (slope 2, intercept −10 round trip), pixels in place
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(vol), sitk.GetArrayViewFromImage(truth), atol=2.0)
    found = _mark_centroid(vol)
    assert np.linalg.norm(found - _mark_centroid(truth)) < 1e-3
    assert np.linalg.norm(found - MARK) < max(g["spacing"])  # within one voxel of where it was painted
    idx = patient_to_index(vol, MARK)
    assert sitk.GetArrayViewFromImage(vol)[tuple(int(round(i)) for i in idx[::-1])] > 500


def test_enhanced_multiframe_matches_classic(tmp_path: Path) -> None:
    g = GEOMETRIES["tilted"]
    truth = _phantom(_geometry(g["size"], g["spacing"], g["row"], g["col"]))
    vol = load_series([write_enhanced(truth, tmp_path / "enh.dcm")])
    np.testing.assert_allclose(vol.GetOrigin(), truth.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.GetDirection(), truth.GetDirection(), atol=1e-5)
    assert np.linalg.norm(_mark_centroid(vol) - _mark_centroid(truth)) < 1e-3


@pytest.mark.parametrize("name", ["sagittal", "axial_thick", "tilted"])
def test_grid_and_to_reference_round_trip(tmp_path: Path, name: str) -> None:
    """A label at known patient coordinates survives native → 1 mm grid → native."""
    g = GEOMETRIES[name]
    geom = _geometry(g["size"], g["spacing"], g["row"], g["col"], centre=np.array([5.0, -10.0, 20.0]))
    ref = load_series(write_series(_phantom(geom), tmp_path))
    native = _mark_centroid(ref)
    assert np.linalg.norm(native - MARK) < max(g["spacing"])
    grid = reference_grid(ref, 1.0)
    np.testing.assert_allclose(grid.GetDirection(), ref.GetDirection())
    on_grid = resample_to_grid(ref, grid)
    assert np.linalg.norm(_mark_centroid(on_grid) - native) < 1.0
    label = sitk.Cast(on_grid > 500, sitk.sitkUInt8)
    sitk.WriteImage(ref, str(tmp_path / "ref.nii"))
    res = PreprocessResult({}, tmp_path / "m.nii", tmp_path / "g.nii", tmp_path / "ref.nii", {}, {}, tmp_path)
    back = res.to_reference(label)
    assert back.GetSize() == ref.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), ref.GetOrigin())
    assert np.linalg.norm(_mark_centroid(back, 0.5) - native) < max(g["spacing"])


# ---------------------------------------------------------------------------------------------------------------------
# bad input


def test_two_slices_is_input_error(tmp_path: Path) -> None:
    g = SAGITTAL
    img = _phantom(_geometry((16, 16, 2), g["spacing"], g["row"], g["col"]))
    with pytest.raises(InputError, match=r"series 5 \(test 5\) has 2 slices; a volume needs at least 3"):
        load_series(write_series(img, tmp_path, number=5))


def test_corrupt_pixel_data_names_the_file(tmp_path: Path) -> None:
    g = SAGITTAL
    files = write_series(_phantom(_geometry((16, 16, 4), g["spacing"], g["row"], g["col"])), tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(InputError, match=rf"{files[2].name}.*pixel data"):
        load_series(files)


def test_mixed_orientations_is_input_error(tmp_path: Path) -> None:
    sag = _phantom(_geometry((16, 16, 4), (1, 1, 1), np.array([0.0, 1, 0]), np.array([0.0, 0, -1])))
    ax = _phantom(_geometry((16, 16, 4), (1, 1, 1), np.array([1.0, 0, 0]), np.array([0.0, 1, 0])))
    files = write_series(sag, tmp_path / "a") + write_series(ax, tmp_path / "b")
    with pytest.raises(InputError, match="mixes slice orientations"):
        load_series(files)


def test_missing_slice_is_input_error(tmp_path: Path) -> None:
    g = SAGITTAL
    files = write_series(_phantom(_geometry((16, 16, 6), g["spacing"], g["row"], g["col"])), tmp_path)
    files = sorted(files)
    with pytest.raises(InputError, match="inconsistent slice spacing"):
        load_series(files[:3] + files[4:])


# ---------------------------------------------------------------------------------------------------------------------
# registration and brain extraction on a realistic head


def test_registration_recovers_known_rigid_motion() -> None:
    fixed = _head(2.0)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()])
    true = sitk.Euler3DTransform(centre, math.radians(3.0), math.radians(-2.0), math.radians(3.0), (4.0, -2.0, 1.5))
    moving = sitk.Resample(fixed, fixed, true, sitk.sitkLinear, 0.0)  # moving(x) = fixed(true(x))
    found, _ = register_rigid(fixed, moving)
    # found maps fixed → moving points, so true∘found ≈ identity
    comp = sitk.CompositeTransform([found, true])
    rot = np.asarray(found.GetMatrix()).reshape(3, 3) @ np.asarray(true.GetMatrix()).reshape(3, 3)
    angle = math.degrees(math.acos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
    errs = [np.linalg.norm(np.subtract(comp.TransformPoint(p), p))
            for p in (centre, np.add(centre, (50, 0, 0)), np.add(centre, (0, 60, 0)), np.add(centre, (0, 0, 50)))]
    assert angle < 1.0, angle
    assert max(errs) < 1.0, errs


def test_deepbet_brain_mask_is_plausible() -> None:
    from radnode.analyzers.brain_extraction import deepbet_available, extract_brain

    assert deepbet_available(), "deepbet's ONNX files ship with radnode (radnode/models/deepbet)"
    head = _head()
    mask = extract_brain(head, "deepbet")
    assert mask.GetSize() == head.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    ml = float(sitk.GetArrayViewFromImage(mask).sum()) * np.prod(mask.GetSpacing()) / 1000
    # Colin27 lives in MNI space (~10 % larger than a real head): its intracranial volume is ~1950 mL.
    assert 1000 < ml < 2100, ml
    if CH2.is_file():
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(CH2.with_name("ch2bet.nii.gz")))) > 0
        got = sitk.GetArrayViewFromImage(mask) > 0
        assert 2 * (ref & got).sum() / (ref.sum() + got.sum()) > 0.9


# ---------------------------------------------------------------------------------------------------------------------
# workflow


def test_cleanup_workdirs_only_removes_old_marked_folders(tmp_path: Path) -> None:
    old, new, other = tmp_path / "old", tmp_path / "new", tmp_path / "other"
    for d in (old, new, other):
        d.mkdir()
        (d / "f.txt").write_text("x")
    (old / ".radnode-preprocessing").touch()
    (new / ".radnode-preprocessing").touch()
    past = time.time() - 10 * 86400
    for p in (old / "f.txt", old / ".radnode-preprocessing", other / "f.txt"):
        os.utime(p, (past, past))
    assert cleanup_workdirs(tmp_path, 7) == [old]
    assert not old.exists() and new.exists() and other.exists()


def test_full_workflow_on_synthetic_glioma_study(tmp_path: Path) -> None:
    from radnode.synth.glioma import generate_glioma_study

    study = generate_glioma_study(tmp_path / "study", seed=3)
    inputs = {r: sorted(study.series_dirs[r].iterdir()) for r in ("t1c", "t1", "t2", "flair")}
    res = run_preprocessing(inputs, tmp_path / "work")
    print({k: round(v, 2) for k, v in res.timings.items()})
    grid = sitk.ReadImage(str(res.grid))
    assert grid.GetSpacing() == (1.0, 1.0, 1.0)
    ref = sitk.ReadImage(str(res.reference))
    np.testing.assert_allclose(grid.GetDirection(), ref.GetDirection(), atol=1e-6)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(res.brain_mask))) > 0
    assert 1000 < res.brain_volume_ml < 2100
    for role, p in res.images.items():
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        assert arr.shape == mask.shape
        assert abs(arr[mask].mean()) < 1e-3 and abs(arr[mask].std() - 1) < 1e-2 and not arr[~mask].any(), role
    # Series of the synthetic study share one frame of reference and no motion: transforms ≈ identity.
    for role in ("t1", "t2", "flair"):
        tx = sitk.ReadTransform(str(res.transforms[role]))
        c = ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ref.GetSize()])
        assert np.linalg.norm(np.subtract(tx.TransformPoint(c), c)) < 2.5, role
    # Ground-truth tumour (in T1c geometry) → grid → back to T1c: same voxels (grid is 1 mm, T1c 0.94 mm).
    truth = sitk.ReadImage(str(study.labels_path))
    on_grid = sitk.Resample(truth, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    back = sitk.GetArrayFromImage(res.to_reference(on_grid)) > 0
    t = sitk.GetArrayFromImage(truth) > 0
    assert 2 * (back & t).sum() / (back.sum() + t.sum()) > 0.9
    # provenance kept in the work folder
    work = tmp_path / "work" / "preprocessing"
    assert (work / "brain_extraction" / "_report" / "report.rst").is_file()
    assert list((work / "brain_extraction").glob("result_*.pklz"))
    assert set(res.timings) >= {"load", "register", "brain_extraction", "bias_correction", "normalise"}


def test_workflow_reports_input_error(tmp_path: Path) -> None:
    g = SAGITTAL
    good = write_series(_phantom(_geometry(g["size"], g["spacing"], g["row"], g["col"])), tmp_path / "a", number=2)
    bad = write_series(_phantom(_geometry((16, 16, 2), g["spacing"], g["row"], g["col"])), tmp_path / "b", number=9)
    with pytest.raises(InputError, match="series 9 .*has 2 slices"):
        run_preprocessing({"t1c": good, "t2": bad}, tmp_path / "work")
    assert list((tmp_path / "work" / "crash").iterdir())


def test_bias_correction_flattens_a_smooth_field() -> None:
    from radnode.analyzers.preprocessing import bias_correct

    head = _head(2.0)
    arr = sitk.GetArrayFromImage(head)
    z = np.linspace(-1, 1, arr.shape[0])[:, None, None]
    biased = sitk.GetImageFromArray((arr * np.exp(0.3 * z)).astype(np.float32))
    biased.CopyInformation(head)
    mask = sitk.Cast(head > float(np.percentile(arr, 60)), sitk.sitkUInt8)
    out = sitk.GetArrayFromImage(bias_correct(biased, mask))
    m = sitk.GetArrayViewFromImage(mask) > 0
    ratio = lambda a: np.median(a[m & (z > 0.3)]) / np.median(a[m & (z < -0.3)])  # noqa: E731
    before = ratio(sitk.GetArrayFromImage(biased)) / ratio(arr)
    after = ratio(out) / ratio(arr)
    assert abs(math.log(after)) < 0.5 * abs(math.log(before))
