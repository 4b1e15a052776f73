"""The slices of a source series, whether it is classic or multi-frame.

Why: a classic MR/CT series is one instance per slice, but scanners from
about 2020 on (e.g. Siemens XA) send one Enhanced MR/CT object holding every
slice as a frame, and archives convert classic series into Legacy Converted
Enhanced objects. In those, position, orientation and pixel spacing do not sit
at the top level but in the Shared and Per-frame Functional Groups
(PS3.3 C.7.6.16: Plane Position (Patient), Plane Orientation (Patient),
Pixel Measures). The writers need one view of both: a list of
:class:`SourceFrame`, sorted along the slice normal — the order in which
radnode label maps are laid out (see :mod:`radnode.sr_writer.seg`) — each
knowing which instance and, for multi-frame objects, which frame
(Referenced Frame Number, 1-based) it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from radnode.model.geometry import numeric_vector

#: Tolerance (mm) for "two slices share a position".
POSITION_TOL = 1e-3


@dataclass(frozen=True)
class SourceFrame:
    """One slice of the source series."""

    dataset: Dataset
    #: 1-based frame number in a multi-frame object; ``None`` for a classic instance.
    frame_number: int | None
    position: np.ndarray  # ImagePositionPatient (3,)
    row: np.ndarray  # row direction cosines (3,)
    col: np.ndarray  # column direction cosines (3,)
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    @property
    def orientation(self) -> list[float]:
        """ImageOrientationPatient of this slice (six values)."""
        return [float(v) for v in (*self.row, *self.col)]

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def is_multiframe(ds: Dataset) -> bool:
    """True for an object whose slices live in per-frame functional groups."""
    return "PerFrameFunctionalGroupsSequence" in ds


def _macro(item: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """Functional-group macro *keyword*: per-frame item first, else the shared one (PS3.3 C.7.6.16)."""
    for container in (item, shared):
        if container is not None and keyword in container:
            seq = container[keyword].value
            if seq is not None and len(seq):
                return seq[0]
    return None


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        return numeric_vector(value, n)
    except ValueError as exc:
        raise ValueError(f"source_images: {what} {exc}") from exc


def _frames_of(ds: Dataset, index: int) -> list[SourceFrame]:
    if is_multiframe(ds):
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence) else None
        per_frame = ds.PerFrameFunctionalGroupsSequence
        n = int(getattr(ds, "NumberOfFrames", len(per_frame)) or len(per_frame))
        if len(per_frame) != n:
            raise ValueError(f"source_images: item {index} has {len(per_frame)} per-frame functional groups for {n} frames")
        out = []
        for k, item in enumerate(per_frame, start=1):
            pos, ori, pix = (_macro(item, shared, kw) for kw in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
            if pos is None or ori is None or pix is None:
                raise ValueError(f"source_images: item {index} frame {k} lacks plane position, plane orientation or pixel measures")
            iop = _floats(ori.ImageOrientationPatient, 6, f"item {index} frame {k} ImageOrientationPatient")
            sp = _floats(pix.PixelSpacing, 2, f"item {index} frame {k} PixelSpacing")
            out.append(SourceFrame(ds, k, _floats(pos.ImagePositionPatient, 3, f"item {index} frame {k} ImagePositionPatient"), iop[:3], iop[3:], (float(sp[0]), float(sp[1]))))
        return out
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        raise ValueError(f"source_images: item {index} is multi-frame without per-frame functional groups (not supported)")
    for kw in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if kw not in ds:
            raise ValueError(f"source_images: item {index} lacks {kw}")
    iop = _floats(ds.ImageOrientationPatient, 6, f"item {index} ImageOrientationPatient")
    sp = _floats(ds.PixelSpacing, 2, f"item {index} PixelSpacing")
    return [SourceFrame(ds, None, _floats(ds.ImagePositionPatient, 3, f"item {index} ImagePositionPatient"), iop[:3], iop[3:], (float(sp[0]), float(sp[1])))]


def source_frames(source_images: Sequence[Dataset]) -> list[SourceFrame]:
    """Every slice of *source_images*, sorted by position along the normal, validated.

    *source_images* is either the single-frame instances of one series or one
    multi-frame object (Enhanced or Legacy Converted Enhanced MR/CT). The
    slices must form one regular stack: one series and frame of reference,
    one orientation and matrix, distinct positions — only then can a SEG
    frame reference a source slice unambiguously.
    """
    if isinstance(source_images, (Dataset, str, bytes)) or not isinstance(source_images, Sequence):
        raise TypeError("source_images: expected a sequence of pydicom Datasets")
    if len(source_images) == 0:
        raise ValueError("source_images: must not be empty")
    for i, ds in enumerate(source_images):
        if not isinstance(ds, Dataset):
            raise TypeError(f"source_images: item {i} is {type(ds).__name__}, not a Dataset")
        for kw in ("SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
            if kw not in ds:
                raise ValueError(f"source_images: item {i} lacks {kw}")
    multi = [i for i, ds in enumerate(source_images) if is_multiframe(ds)]
    if multi and len(source_images) > 1:
        raise ValueError(f"source_images: item {multi[0]} is multi-frame; give one multi-frame object or single-frame instances, not a mixture")
    first = source_images[0]
    frames: list[SourceFrame] = []
    for i, ds in enumerate(source_images):
        if ds.SeriesInstanceUID != first.SeriesInstanceUID:
            raise ValueError("source_images: instances belong to more than one series")
        if ds.FrameOfReferenceUID != first.FrameOfReferenceUID:
            raise ValueError("source_images: instances use more than one frame of reference")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ValueError(f"source_images: item {i} has a different matrix size")
        frames.extend(_frames_of(ds, i))
    f0 = frames[0]
    for k, f in enumerate(frames[1:], start=1):
        if not (np.allclose(f.row, f0.row, atol=1e-4) and np.allclose(f.col, f0.col, atol=1e-4)):
            raise ValueError(f"source_images: slice {k} has a different orientation")
    normal = f0.normal
    frames.sort(key=lambda f: float(np.dot(f.position, normal)))
    positions = np.array([float(np.dot(f.position, normal)) for f in frames])
    if len(positions) > 1 and np.min(np.diff(positions)) < POSITION_TOL:
        raise ValueError("source_images: two slices share a position")
    return frames


def sorted_volume(frames: Sequence[SourceFrame]) -> np.ndarray:
    """Stored pixel values ``(Z, Y, X)`` in the order of *frames* (no rescale)."""
    cache: dict[int, np.ndarray] = {}
    out = []
    for f in frames:
        key = id(f.dataset)
        if key not in cache:
            cache[key] = np.asarray(f.dataset.pixel_array)
        arr = cache[key]
        out.append(arr[f.frame_number - 1] if f.frame_number is not None and arr.ndim == 3 else arr)
    return np.stack(out)


def slice_spacing(frames: Sequence[SourceFrame]) -> tuple[float, float, float]:
    """(slice, row, column) spacing in mm; slices measured between positions, not from SliceThickness."""
    first = frames[0]
    dr, dc = first.spacing
    if len(frames) < 2:
        ds = first.dataset
        return float(getattr(ds, "SliceThickness", 1.0) or 1.0), dr, dc
    normal = first.normal
    pos = [float(np.dot(f.position, normal)) for f in frames]
    return float(np.median(np.diff(pos))), dr, dc


def frames_image(frames: Sequence[SourceFrame], array: np.ndarray) -> Any:
    """*array* (Z, Y, X in the order of *frames*) as a SimpleITK image in the series' patient geometry.

    Built from the frames (classic slices or the frames of one multi-frame object alike), so lesion
    measurements drawn on it land where the source pixels are.
    """
    import SimpleITK as sitk

    first = frames[0]
    dz, dr, dc = slice_spacing(frames)
    img = sitk.GetImageFromArray(array)
    img.SetOrigin(tuple(float(v) for v in first.position))
    img.SetSpacing((dc, dr, dz))
    img.SetDirection(tuple(np.column_stack([first.row, first.col, first.normal]).ravel()))
    return img


def with_top_level_geometry(ds: Dataset) -> Dataset:
    """A pixel-less copy of a multi-frame object with frame 1's geometry also at the top level.

    Why: highdicom's TID 1601 Image Library Entry (the SR's list of source
    images) reads Pixel Spacing, Image Orientation and Image Position from
    the top level, where an enhanced object has none. The SR only needs the
    header; the SOP Instance UID and class stay those of the source, so the
    references are unchanged. Classic instances come back as they are.
    """
    if not is_multiframe(ds):
        return ds
    view = Dataset()
    for elem in ds:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            view.add(elem)
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence) else None
    first = ds.PerFrameFunctionalGroupsSequence[0]
    pos, ori, pix = (_macro(first, shared, kw) for kw in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
    if pos is not None and "ImagePositionPatient" not in view:
        view.ImagePositionPatient = pos.ImagePositionPatient
    if ori is not None and "ImageOrientationPatient" not in view:
        view.ImageOrientationPatient = ori.ImageOrientationPatient
    if pix is not None:
        if "PixelSpacing" not in view and "PixelSpacing" in pix:
            view.PixelSpacing = pix.PixelSpacing
        if "SliceThickness" not in view and "SliceThickness" in pix:
            view.SliceThickness = pix.SliceThickness
    return view
