"""Head-CT preprocessing: gantry-tilt correction, HU, intracranial mask, windows, model grid, the workflow.

The series are written by ``tests.support.ct_phantom``: one synthetic head,
sampled at each pixel's patient position, untilted and with an 18° gantry
tilt in both encodings scanners use. A loader that reads the geometry right
finds the blob and the skull at the same patient coordinates every time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from structlog.testing import capture_logs

from radnode.analyzers.base import InputError
from radnode.analyzers.hemorrhage.ct_volume import (
    AIR_HU,
    CTSourceGeometry,
    dataset_hu,
    labels_to_sources,
    load_ct_series,
    to_hu,
)
from radnode.analyzers.hemorrhage.preprocessing import (
    WINDOWS,
    apply_window,
    intracranial_mask,
    model_grid,
    resample_ct,
    run_ct_preprocessing,
    window_channels,
    window_image,
)
from radnode.analyzers.volumes import load_series
from tests.support.ct_phantom import (
    BLOB,
    BLOB_R,
    BRAIN,
    CENTRE,
    SCALP_MM,
    SKULL_MM,
    Series,
    intracranial_truth,
    voxel_points,
    write_ct_series,
)

TILT = 18.0
KINDS = {"untilted": {}, "tilt_iop": {"tilt_deg": TILT, "encoding": "iop"}, "tilt_ipp": {"tilt_deg": TILT, "encoding": "ipp"}}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Series]:
    root = tmp_path_factory.mktemp("ct")
    return {name: write_ct_series(root / name, seed=i, **kw) for i, (name, kw) in enumerate(KINDS.items())}


@pytest.fixture(scope="module")
def volumes(series: dict[str, Series]) -> dict:
    return {name: load_ct_series(s.files) for name, s in series.items()}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _blob_centroid(img: sitk.Image) -> np.ndarray:
    """Patient position (mm) of the 70 HU blob: voxels above half-way between brain and blob, near it."""
    pts, hu = voxel_points(img), sitk.GetArrayViewFromImage(img)
    sel = (np.linalg.norm(pts - BLOB, axis=-1) < BLOB_R + 8) & (hu > 52.5) & (hu < 200)
    return pts[sel].mean(0)


def _on_axial_grid(img: sitk.Image) -> sitk.Image:
    """``img`` resampled onto one 1.5 mm axial grid around the head (to compare different acquisitions)."""
    grid = sitk.Image([120, 140, 100], sitk.sitkFloat32)
    grid.SetSpacing((1.5, 1.5, 1.5))
    grid.SetOrigin(tuple(CENTRE - np.array([119, 139, 99]) * 1.5 / 2))
    return sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


# ---------------------------------------------------------------------------------------------------------------------
# series → volume


@pytest.mark.parametrize("kind", ["tilt_iop", "tilt_ipp"])
def test_generic_load_series_refuses_a_tilted_series(series: dict[str, Series], kind: str) -> None:
    """What volumes.load_series does with gantry tilt (kept for MR): a clear refusal, not a wrong geometry."""
    with pytest.raises(InputError, match=r"drift .* mm in-plane \(gantry tilt or sheared stack\)"):
        load_series(series[kind].files)


def test_untilted_series_matches_generic_loader(series: dict[str, Series], volumes: dict) -> None:
    ref = load_series(series["untilted"].files)
    vol = volumes["untilted"]
    assert vol.image.GetSize() == ref.GetSize()
    np.testing.assert_allclose(vol.image.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.image.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(vol.image.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    hu, raw = sitk.GetArrayViewFromImage(vol.image), sitk.GetArrayViewFromImage(ref)
    # Same HU except the padding outside the reconstruction circle (−3024 raw) and nothing below air.
    np.testing.assert_array_equal(hu, np.maximum(raw, AIR_HU))
    assert raw.min() == -3024.0 and hu.min() == AIR_HU
    assert vol.geometry.tilt_deg < 1e-3 and not vol.geometry.interpolated and not vol.geometry.excluded


@pytest.mark.parametrize("kind", ["tilt_iop", "tilt_ipp"])
def test_tilt_corrected_volume_has_blob_and_skull_where_the_untilted_one_has(
        series: dict[str, Series], volumes: dict, kind: str) -> None:
    flat, tilted = volumes["untilted"], volumes[kind]
    geo = tilted.geometry
    assert geo.tilt_deg == pytest.approx(TILT, abs=0.05)
    assert geo.gantry_tilt_tag == pytest.approx(TILT)
    # Every volume slice lies in its source slice's plane (slices were only shifted in-plane).
    img = tilted.image
    normal = np.asarray(img.GetDirection()).reshape(3, 3)[:, 2]
    for m, src in enumerate(geo.sources):
        centre = np.asarray(img.TransformIndexToPhysicalPoint((0, 0, m)))
        assert abs(float((np.asarray(src.position) - centre) @ normal)) < 1e-3
    # The blob: same patient coordinates as painted, and as in the untilted series.
    assert np.linalg.norm(_blob_centroid(img) - BLOB) < 1.0
    assert np.linalg.norm(_blob_centroid(img) - _blob_centroid(flat.image)) < 1.0
    # The skull: same place and shape on a common axial grid.
    bone_t = sitk.GetArrayFromImage(_on_axial_grid(img)) > 600
    bone_f = sitk.GetArrayFromImage(_on_axial_grid(flat.image)) > 600
    pts = voxel_points(_on_axial_grid(flat.image))
    assert np.linalg.norm(pts[bone_t].mean(0) - pts[bone_f].mean(0)) < 1.0
    assert _dice(bone_t, bone_f) > 0.8  # 5 mm slices sample a 6 mm shell differently at each angle
    # The field of view grew to hold the shifted slices instead of cutting them.
    assert img.GetSize()[1] > series[kind].rows


def test_slices_are_sorted_by_position_and_mapped_to_their_sop_instances(series: dict[str, Series],
                                                                         volumes: dict) -> None:
    for kind in ("untilted", "tilt_iop"):
        written, geo = series[kind].slices, volumes[kind].geometry  # written: bottom → top
        assert [s.sop_instance_uid for s in geo.sources] == [w.sop_instance_uid for w in written]
        assert [geo.slice_for(m).instance_number for m in range(len(written))] == [w.instance_number for w in written]
        assert written[0].instance_number > written[-1].instance_number  # InstanceNumber runs the other way
        assert geo.slice_source == tuple(range(len(written))) and set(geo.slice_offset_mm) == {0.0}
        assert CTSourceGeometry.from_json(geo.to_json()) == geo


@pytest.mark.parametrize("kind", ["untilted", "tilt_iop", "tilt_ipp"])
def test_labels_go_back_to_the_source_pixels(series: dict[str, Series], volumes: dict, kind: str) -> None:
    """A label painted on the model grid lands on the source pixels where the blob is, even for a sheared stack."""
    vol = volumes[kind]
    grid = model_grid(vol.image, in_plane_mm=1.0, in_plane_size=220, centre=CENTRE)
    label = sitk.GetImageFromArray((np.linalg.norm(voxel_points(grid) - BLOB, axis=-1) < BLOB_R).astype(np.uint8))
    label.CopyInformation(grid)
    back = labels_to_sources(label, vol.geometry)
    s = series[kind]
    assert back.shape == (len(s.slices), s.rows, s.cols) and back.dtype == np.uint8
    truth = np.stack([np.linalg.norm(s.pixel_points(k) - BLOB, axis=-1) < BLOB_R for k in range(len(s.slices))])
    assert _dice(back > 0, truth) > 0.9
    # Outside the label image: 0, not an error.
    small = model_grid(vol.image, in_plane_mm=1.0, in_plane_size=10, centre=CENTRE + 80)
    assert not labels_to_sources(sitk.Image(small) + 1, vol.geometry)[:, :5, :5].any()


def test_missing_slice_is_an_input_error_naming_its_neighbours(series: dict[str, Series]) -> None:
    s = series["untilted"]
    gone = s.slices[12]
    files = [f for f in s.files if f != gone.file]
    below, above = s.slices[11], s.slices[13]
    with pytest.raises(InputError) as err:
        load_ct_series(files)
    msg = str(err.value)
    assert msg.startswith("series 3 (Head 5mm): 1 slice missing between ")
    assert f"instance {below.instance_number} ({below.file.name})" in msg
    assert f"instance {above.instance_number} ({above.file.name})" in msg
    assert "10 mm apart; the series steps 5 mm" in msg
    # Allowed gap: interpolated, and the filled slice says which source slice is nearest and how far.
    vol = load_ct_series(files, max_gap_mm=10.5)
    geo = vol.geometry
    assert geo.interpolated and vol.image.GetSize()[2] == len(s.slices) and vol.image.GetSpacing()[2] == pytest.approx(5.0)
    assert max(geo.slice_offset_mm) == pytest.approx(5.0) and geo.slice_offset_mm[12] == pytest.approx(5.0)
    assert geo.slice_for(11).sop_instance_uid == below.sop_instance_uid


def test_slightly_uneven_spacing_is_interpolated(tmp_path: Path) -> None:
    positions = [(k - 9.5) * 5.0 + (0.7 if k == 8 else 0.0) for k in range(20)]
    s = write_ct_series(tmp_path, positions=positions, rows=64, cols=64, spacing=3.0)
    vol = load_ct_series(s.files)
    geo = vol.geometry
    assert geo.interpolated and vol.image.GetSize()[2] == 20 and vol.image.GetSpacing()[2] == pytest.approx(5.0)
    assert geo.slice_offset_mm[8] == pytest.approx(0.7, abs=1e-3) and max(geo.slice_offset_mm) < 0.71
    assert [geo.slice_for(m).sop_instance_uid for m in range(20)] == [w.sop_instance_uid for w in s.slices]


def test_localizer_screenshot_and_stray_reformat_are_left_out(tmp_path: Path, series: dict[str, Series]) -> None:
    s = series["untilted"]
    first = pydicom.dcmread(s.slices[0].file)

    def variant(name: str, change: Callable[[Dataset], None]) -> Path:
        ds = copy.deepcopy(first)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        change(ds)
        f = tmp_path / name
        ds.save_as(f, enforce_file_format=True)
        return f

    def localizer(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    def coronal(ds: Dataset) -> None:  # an unlabelled reformat that slipped into the series
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    def screenshot(ds: Dataset) -> None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"

    extra = [variant("scout.dcm", localizer), variant("coronal.dcm", coronal), variant("dose.dcm", screenshot)]
    with capture_logs() as logs:
        vol = load_ct_series(extra + s.files)
    reasons = dict(vol.geometry.excluded)
    assert reasons[str(extra[0])].startswith("localizer")
    assert "differs from the series' 30 slices" in reasons[f"instance {first.InstanceNumber} (coronal.dcm)"]
    assert reasons[str(extra[2])] == "not a CT image (SOP class 1.2.840.10008.5.1.4.1.1.7)"
    assert vol.image.GetSize() == (s.cols, s.rows, len(s.slices))
    warning = [e for e in logs if e["event"] == "ct_images_excluded"]
    assert warning and warning[0]["log_level"] == "warning" and warning[0]["count"] == 3


def test_two_stacks_in_one_series_is_an_input_error(tmp_path: Path, series: dict[str, Series]) -> None:
    other = write_ct_series(tmp_path, tilt_deg=10.0, n=12, rows=100, cols=100)
    with pytest.raises(InputError, match=r"mixes stacks of different orientation or matrix \(30 slice\(s\)"):
        load_ct_series(series["untilted"].files + other.files)


def test_enhanced_ct_object_matches_the_classic_series(tmp_path: Path, series: dict[str, Series],
                                                       volumes: dict) -> None:
    s = series["tilt_iop"]
    slices = [pydicom.dcmread(w.file) for w in s.slices]
    ds = copy.deepcopy(slices[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, kw)
    shared, pm, po, pvt = Dataset(), Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, po.ImageOrientationPatient = slices[0].PixelSpacing, slices[0].ImageOrientationPatient
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [pm], [po]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for src in reversed(slices):  # frames top → bottom: order must come from the positions
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = src.ImagePositionPatient
        item.PlanePositionSequence = [pp]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(src.PixelData for src in reversed(slices))
    f = tmp_path / "enhanced.dcm"
    ds.save_as(f, enforce_file_format=True)
    vol = load_ct_series([f])
    ref = volumes["tilt_iop"]
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(vol.image), sitk.GetArrayViewFromImage(ref.image))
    np.testing.assert_allclose(vol.image.GetOrigin(), ref.image.GetOrigin(), atol=1e-4)
    assert [vol.geometry.slice_for(m).frame_number for m in (0, len(slices) - 1)] == [len(slices), 1]
    assert {src.sop_instance_uid for src in vol.geometry.sources} == {ds.SOPInstanceUID}


# ---------------------------------------------------------------------------------------------------------------------
# HU


def test_to_hu_rescale_padding_and_outside_the_circle() -> None:
    stored = np.array([[0, 1024, 2024], [63536, 63537, 65535]], dtype=np.uint16)
    hu = to_hu(stored, 1.0, -1024.0, padding=63536)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, [[-1024, 0, 1000], [-1024, 62513, 64511]])
    hu = to_hu(stored, 1.0, -1024.0, padding=63536, padding_limit=65535)  # a padding range
    np.testing.assert_array_equal(hu[1], [-1024, -1024, -1024])
    signed = np.array([-2000, -1024, -1000, 40, 3071], dtype=np.int16)
    np.testing.assert_array_equal(to_hu(signed, 1.0, 0.0), [-1024, -1024, -1000, 40, 3071])  # −2000 outside FOV
    np.testing.assert_array_equal(to_hu(np.array([0, 100, 4000]), 0.5, -1024.0), [-1024, -974, 976])


def test_padding_value_read_with_the_wrong_sign_still_matches() -> None:
    """PixelPaddingValue is 'US or SS': read as unsigned 63536 on a signed image it still means −2000."""
    ds = Dataset()
    ds.PixelRepresentation, ds.BitsStored, ds.BitsAllocated = 1, 16, 16
    ds.RescaleSlope, ds.RescaleIntercept = 1, 3000  # −2000 + 3000 would look like soft tissue
    ds.add_new(0x00280120, "US", 63536)
    hu = dataset_hu(ds, np.array([-2000, 40], dtype=np.int16))
    np.testing.assert_array_equal(hu, [AIR_HU, 3040])


def test_real_ct_file_hu(tmp_path: Path) -> None:
    """pydicom's CT_small.dcm (a real scanner file): stored − 1024 = HU, and a 3-slice series of it loads."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = dataset_hu(ds)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, np.maximum(ds.pixel_array.astype(np.float32) - 1024.0, AIR_HU))
    assert -1024 <= hu.min() < -800 and 1000 < hu.max() < 1200  # air to bone
    files = []
    for k in range(3):
        copy_ = pydicom.dcmread(path)
        copy_.SOPInstanceUID = copy_.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy_.ImagePositionPatient = [*copy_.ImagePositionPatient[:2], float(copy_.ImagePositionPatient[2]) + 5 * k]
        files.append(tmp_path / f"{k}.dcm")
        copy_.save_as(files[-1])
    vol = load_ct_series(files)
    assert vol.image.GetSize() == (128, 128, 3)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(vol.image)[1], hu)


# ---------------------------------------------------------------------------------------------------------------------
# intracranial mask


@pytest.mark.parametrize("kind", ["untilted", "tilt_iop", "tilt_ipp"])
def test_intracranial_mask_covers_the_brain_not_skull_or_scalp(volumes: dict, kind: str) -> None:
    img = volumes[kind].image
    mask = sitk.GetArrayFromImage(intracranial_mask(img)) > 0  # a copy: a view of a temporary image reads freed memory
    pts = voxel_points(img)
    truth = intracranial_truth(pts)
    assert _dice(mask, truth) > 0.95
    rel = (pts - CENTRE) / (BRAIN + SKULL_MM + SCALP_MM)
    outside_head = (rel**2).sum(-1) >= 1.0
    scalp = ~outside_head & ((((pts - CENTRE) / (BRAIN + SKULL_MM)) ** 2).sum(-1) >= 1.0)
    assert not (mask & (outside_head | scalp)).any()  # neither scalp nor neck nor air
    assert (mask & (sitk.GetArrayViewFromImage(img) > 600)).sum() < 0.002 * mask.sum()  # no bone
    assert not mask[(pts[..., 2] - CENTRE[2]) < -(BRAIN[2] + SKULL_MM)].any()  # nothing below the skull base


def test_intracranial_mask_bridges_a_craniectomy(tmp_path: Path) -> None:
    s = write_ct_series(tmp_path, craniectomy=True)
    img = load_ct_series(s.files).image
    mask = sitk.GetArrayFromImage(intracranial_mask(img)) > 0  # a copy: a view of a temporary image reads freed memory
    pts = voxel_points(img)
    assert _dice(mask, intracranial_truth(pts)) > 0.95
    beyond = (((pts - CENTRE) / (BRAIN + 2.0)) ** 2).sum(-1) >= 1.0
    assert (mask & beyond).sum() < 0.005 * mask.sum()  # the scalp over the defect stays out


def test_no_skull_is_an_input_error() -> None:
    """A CT without a skull (routed as ct_brain by mistake) says so instead of returning an empty mask."""
    img = sitk.GetImageFromArray(np.full((8, 40, 40), 40.0, dtype=np.float32))
    with pytest.raises(InputError, match="no soft tissue enclosed by bone"):
        intracranial_mask(img)


# ---------------------------------------------------------------------------------------------------------------------
# windows and model grid


def test_windows_map_known_hu_to_their_values() -> None:
    hu = np.array([-1024, -20, 0, 40, 80, 180, -800, 600, 2000, 3071], dtype=np.float32)
    ch = window_channels(hu)
    assert [w.name for w in WINDOWS] == ["brain", "subdural", "bone"] and ch.shape == (3, hu.size)
    np.testing.assert_allclose(ch[0], [0, 0, 0, 0.5, 1, 1, 0, 1, 1, 1], atol=1e-6)  # 40/80: 0 … 80 HU
    np.testing.assert_allclose(ch[1], [0, 0, 0.1, 0.3, 0.5, 1, 0, 1, 1, 1], atol=1e-6)  # 80/200: −20 … 180 HU
    np.testing.assert_allclose(ch[2], [0, 0.2785714, 0.2857143, 0.3, 0.3142857, 0.35, 0, 0.5, 1, 1], atol=1e-6)
    with pytest.raises(ValueError, match="width must be positive"):
        apply_window(hu, 40, 0)
    img = sitk.GetImageFromArray(hu.reshape(1, 2, 5))
    img.SetSpacing((0.5, 0.5, 5.0))
    win = window_image(img)
    assert win.GetNumberOfComponentsPerPixel() == 3 and win.GetSpacing() == img.GetSpacing()
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(win).reshape(-1, 3).T, ch)


def test_model_grid_keeps_the_slices_and_centres_the_head(volumes: dict) -> None:
    img = volumes["tilt_iop"].image
    grid = model_grid(img, in_plane_mm=1.0, in_plane_size=256, centre=CENTRE)
    assert grid.GetSize() == (256, 256, img.GetSize()[2])
    assert grid.GetSpacing() == pytest.approx((1.0, 1.0, img.GetSpacing()[2]))
    np.testing.assert_allclose(grid.GetDirection(), img.GetDirection())
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    for m in (0, 17):  # same slice planes
        a, b = (np.asarray(g.TransformIndexToPhysicalPoint((0, 0, m))) for g in (grid, img))
        assert abs(float((a - b) @ d[:, 2])) < 1e-6
    middle = np.asarray(grid.TransformContinuousIndexToPhysicalPoint((127.5, 127.5, 0)))
    assert abs(float((middle - CENTRE) @ d[:, 0])) < 1e-6 and abs(float((middle - CENTRE) @ d[:, 1])) < 1e-6
    whole = model_grid(img, in_plane_mm=0.5, in_plane_size=None)
    assert whole.GetSize()[:2] == (img.GetSize()[0] * 4, img.GetSize()[1] * 4)
    on = resample_ct(img, grid)
    assert np.linalg.norm(_blob_centroid(on) - BLOB) < 1.0
    assert sitk.GetArrayViewFromImage(on).min() == AIR_HU


# ---------------------------------------------------------------------------------------------------------------------
# the workflow


def test_workflow_on_a_tilted_series(tmp_path: Path, series: dict[str, Series], capfd: pytest.CaptureFixture) -> None:
    s = series["tilt_iop"]
    res = run_ct_preprocessing(s.files, tmp_path / "work", in_plane_mm=1.5, in_plane_size=128)
    out = capfd.readouterr().out
    assert "nipype" not in out and "Workflow" not in out and "[Node]" not in out  # nipype's chatter stays quiet
    n = len(s.slices)
    grid = sitk.ReadImage(str(res.ct_grid))
    assert grid.GetSize() == (128, 128, n) and grid.GetSpacing()[:2] == (1.5, 1.5)
    windows = res.windows_array()
    assert windows.shape == (n, 3, 128, 128) and windows.dtype == np.float32
    assert 0.0 <= windows.min() and windows.max() <= 1.0
    hu = sitk.GetArrayViewFromImage(grid)
    np.testing.assert_allclose(windows[:, 0], np.clip(hu / 80.0, 0, 1), atol=1e-6)
    assert res.slice_sop_instance_uids == [w.sop_instance_uid for w in s.slices]
    assert res.slice_source(0).instance_number == s.slices[0].instance_number
    truth_ml = 4 / 3 * math.pi * float(np.prod(BRAIN)) / 1000
    assert abs(res.intracranial_volume_ml - truth_ml) < 0.05 * truth_ml
    mask_grid = sitk.ReadImage(str(res.mask_grid))
    assert _dice(sitk.GetArrayViewFromImage(mask_grid) > 0, intracranial_truth(voxel_points(mask_grid))) > 0.95
    # Label maps back: onto the sheared source pixels, and onto the corrected native volume.
    near = sitk.GetImageFromArray((np.linalg.norm(voxel_points(grid) - BLOB, axis=-1) < 25.0).astype(np.uint8))
    near.CopyInformation(grid)
    blob = sitk.BinaryThreshold(grid, 52.5, 200.0) & mask_grid & near  # what a segmentation would find
    src = res.to_source(blob)
    truth = np.stack([np.linalg.norm(s.pixel_points(k) - BLOB, axis=-1) < BLOB_R for k in range(n)])
    assert src.shape == (n, s.rows, s.cols) and _dice(src > 0, truth) > 0.8
    native = res.to_reference(blob)
    assert native.GetSize() == sitk.ReadImage(str(res.ct)).GetSize()
    # Work folder: marker for retention clean-up, node reports, timings per stage.
    assert (tmp_path / "work" / ".radnode-preprocessing").is_file()
    assert (tmp_path / "work" / "ct_preprocessing" / "load_ct" / "_report" / "report.rst").is_file()
    assert set(res.timings) == {"load", "mask", "resample", "windows", "total"}
    assert all(v > 0 for v in res.timings.values())


def test_workflow_reports_a_missing_slice_as_input_error(tmp_path: Path, series: dict[str, Series]) -> None:
    s = series["untilted"]
    files = [f for f in s.files if f != s.slices[5].file]
    with pytest.raises(InputError, match=r"series 3 \(Head 5mm\): 1 slice missing between instance 26"):
        run_ct_preprocessing(files, tmp_path / "work")
    assert list((tmp_path / "work" / "crash").iterdir())
