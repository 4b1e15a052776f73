"""Whether a series is whole: contiguous slice positions, enough slices, the frames of an enhanced object."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from radnode.routing.completeness import MIN_SLICES, series_wholeness
from radnode.synth.mr_study import generate_mr_study


def _series(tmp_path: Path, slices: int = 8) -> tuple[list[Path], Dataset]:
    study = generate_mr_study(tmp_path, seed=1, series=("t1c",), rows=16, columns=16, slices=slices)
    files = sorted(study.by_label("t1c").files, key=lambda p: float(dcmread(p).ImagePositionPatient[2]))
    return files, dcmread(files[0], stop_before_pixels=True)


def test_a_whole_series_is_whole_in_any_order(tmp_path: Path) -> None:
    files, header = _series(tmp_path)
    verdict = series_wholeness(list(reversed(files)), header)
    assert verdict.whole and verdict.detail == "8 contiguous slices"


def test_a_missing_middle_slice_is_a_gap(tmp_path: Path) -> None:
    files, header = _series(tmp_path)
    verdict = series_wholeness(files[:3] + files[4:], header)
    assert not verdict.whole and verdict.detail.startswith("gap of ")


def test_too_few_slices_or_fewer_than_the_acquisition_announces(tmp_path: Path) -> None:
    files, header = _series(tmp_path)
    assert not series_wholeness(files[: MIN_SLICES - 1], header).whole
    header.ImagesInAcquisition = 12
    verdict = series_wholeness(files, header)
    assert not verdict.whole and verdict.detail == "8 of 12 images in acquisition"


def test_files_without_geometry_are_not_slices(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    assert not series_wholeness([tmp_path / "junk.dcm"] * 5, Dataset()).whole


def test_an_enhanced_object_is_whole_by_its_frames(tmp_path: Path) -> None:
    header = Dataset()
    header.NumberOfFrames = 24
    verdict = series_wholeness([tmp_path / "one.dcm"], header)
    assert verdict.whole and verdict.detail == "24 frames in 1 object(s)"
