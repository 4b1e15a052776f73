"""DICOM series → volume with the patient geometry kept exactly.

Why not ``sitk.ImageSeriesReader``: it trusts file order, knows nothing about
enhanced multi-frame objects and fails with messages a user cannot act on. Here
every slice is placed by its own ImagePositionPatient projected on the slice
normal, so SimpleITK physical coordinates of the result *are* DICOM patient
coordinates (LPS, mm). Every way a series can be unusable becomes an
:class:`~radnode.analyzers.base.InputError` that names the series or the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
import structlog

from radnode.analyzers.base import InputError
from radnode.model.geometry import numeric_vector

log = structlog.get_logger(__name__)

#: Direction cosines that differ by more than this are "different orientations".
ORIENTATION_TOL = 1e-3
#: Relative tolerance on slice spacing / pixel spacing consistency.
SPACING_RTOL = 0.05
#: In-plane drift (mm) of slice origins that still counts as a straight stack.
SHEAR_TOL_MM = 0.5


@dataclass
class _Slice:
    position: np.ndarray  # (3,) LPS mm of the first transmitted pixel
    orientation: np.ndarray  # (6,) row cosines, column cosines
    spacing: tuple[float, float]  # (row spacing, column spacing) = PixelSpacing
    pixels: np.ndarray  # (rows, cols) float32, rescaled
    source: str


def _floats(value: Any, n: int, what: str, source: str) -> np.ndarray:
    try:
        return numeric_vector(value, n)
    except ValueError as exc:
        raise InputError(f"{source}: {what} {exc}") from exc


def _rescale(ds: Any) -> tuple[float, float]:
    slope = getattr(ds, "RescaleSlope", None)
    intercept = getattr(ds, "RescaleIntercept", None)
    return (float(slope) if slope not in (None, "") else 1.0, float(intercept) if intercept not in (None, "") else 0.0)


def _group(item: Any, shared: Any, keyword: str) -> Any:
    """The functional-group macro ``keyword`` from a per-frame item, else the shared one."""
    for container in (item, shared):
        if container is not None and keyword in container and len(container[keyword].value):
            return container[keyword].value[0]
    return None


def _decode(ds: Any, source: str) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad/truncated/undecodable data
        raise InputError(f"{source}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise InputError(f"{source}: colour images (SamplesPerPixel={ds.SamplesPerPixel}) are not supported")
    return np.asarray(arr)


def _slices_from_dataset(ds: Any, source: str) -> list[_Slice]:
    """One dataset → its slices (one for classic objects, one per frame for enhanced ones)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputError(f"{source}: no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds:
        pixels = _decode(ds, source)
        if frames == 1:
            pixels = pixels[None]
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if len(per_frame) != pixels.shape[0]:
            raise InputError(f"{source}: {len(per_frame)} per-frame groups for {pixels.shape[0]} frames")
        out = []
        for i, item in enumerate(per_frame):
            pos = _group(item, shared, "PlanePositionSequence")
            ori = _group(item, shared, "PlaneOrientationSequence")
            pix = _group(item, shared, "PixelMeasuresSequence")
            if pos is None or ori is None or pix is None:
                raise InputError(f"{source}: frame {i + 1} lacks plane position/orientation/pixel measures")
            trans = _group(item, shared, "PixelValueTransformationSequence")
            slope, intercept = _rescale(trans) if trans is not None else _rescale(ds)
            sp = _floats(pix.PixelSpacing, 2, "PixelSpacing", source)
            out.append(
                _Slice(
                    position=_floats(pos.ImagePositionPatient, 3, "ImagePositionPatient", source),
                    orientation=_floats(ori.ImageOrientationPatient, 6, "ImageOrientationPatient", source),
                    spacing=(float(sp[0]), float(sp[1])),
                    pixels=pixels[i].astype(np.float32) * np.float32(slope) + np.float32(intercept),
                    source=f"{source} frame {i + 1}",
                )
            )
        return out
    if frames > 1:
        raise InputError(f"{source}: multi-frame object without per-frame functional groups is not supported")
    pos = _floats(getattr(ds, "ImagePositionPatient", None), 3, "ImagePositionPatient", source)
    ori = _floats(getattr(ds, "ImageOrientationPatient", None), 6, "ImageOrientationPatient", source)
    sp = _floats(getattr(ds, "PixelSpacing", None), 2, "PixelSpacing", source)
    slope, intercept = _rescale(ds)
    pixels = _decode(ds, source).astype(np.float32)
    if pixels.ndim != 2:
        raise InputError(f"{source}: expected a 2-D frame, got shape {pixels.shape}")
    return [_Slice(pos, ori, (float(sp[0]), float(sp[1])), pixels * np.float32(slope) + np.float32(intercept), source)]


def _series_label(datasets: Sequence[Any], files: Sequence[Path]) -> str:
    ds = datasets[0] if datasets else None
    if ds is not None and getattr(ds, "SeriesNumber", None) not in (None, ""):
        desc = str(getattr(ds, "SeriesDescription", "") or "").strip()
        return f"{ds.SeriesNumber}" + (f" ({desc})" if desc else "")
    if ds is not None and getattr(ds, "SeriesInstanceUID", None):
        return str(ds.SeriesInstanceUID)
    return str(Path(files[0]).parent) if files else "<empty>"


def load_series(files: Sequence[Path | str]) -> sitk.Image:
    """Read one DICOM series into a float32 ``sitk.Image`` in DICOM patient (LPS) coordinates.

    Slices are ordered by their position along the slice normal (InstanceNumber is
    unreliable across vendors and reconstructions); oblique planes keep their
    exact direction cosines; enhanced (multi-frame) objects contribute one slice
    per frame from their functional groups; compressed pixel data is decoded by
    pydicom's handlers; RescaleSlope/Intercept are applied per slice.

    Raises :class:`InputError` for fewer than 3 slices, mixed orientations, mixed
    matrix or pixel size, uneven slice spacing, duplicate positions, sheared stacks
    (gantry tilt) and undecodable pixel data (naming the file).
    """
    files = [Path(f) for f in files]
    datasets: list[Any] = []
    slices: list[_Slice] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception as exc:
            raise InputError(f"{f}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
        datasets.append(ds)
        slices.extend(_slices_from_dataset(ds, str(f)))
    series = _series_label(datasets, files)
    if len(slices) < 3:
        raise InputError(f"series {series} has {len(slices)} slice{'s' if len(slices) != 1 else ''}; a volume needs at least 3")

    ori0 = slices[0].orientation
    for s in slices[1:]:
        if np.abs(s.orientation - ori0).max() > ORIENTATION_TOL:
            raise InputError(
                f"series {series} mixes slice orientations ({_fmt(ori0)} vs {_fmt(s.orientation)} in {s.source}); "
                "it is probably a localizer or several stacks"
            )
    shape0, sp0 = slices[0].pixels.shape, np.asarray(slices[0].spacing)
    for s in slices[1:]:
        if s.pixels.shape != shape0:
            raise InputError(f"series {series}: {s.source} has a {s.pixels.shape} matrix, others {shape0}")
        if np.abs(np.asarray(s.spacing) - sp0).max() > SPACING_RTOL * sp0.min():
            raise InputError(f"series {series}: inconsistent pixel spacing ({s.spacing} in {s.source} vs {tuple(sp0)})")

    row, col = ori0[:3], ori0[3:]
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    if abs(float(row @ col)) > 1e-2:
        raise InputError(f"series {series}: ImageOrientationPatient row and column are not orthogonal")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    dist = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise InputError(
            f"series {series} has two slices at the same position ({slices[i].source} and {slices[i + 1].source}); "
            "it holds several volumes (echoes, time points or stacks)"
        )
    dz = float(np.median(gaps))
    if np.abs(gaps - dz).max() > max(SPACING_RTOL * dz, 1e-2):
        raise InputError(
            f"series {series}: inconsistent slice spacing (gaps {gaps.min():.3g}–{gaps.max():.3g} mm); "
            "slices are missing or the series mixes stacks"
        )
    # Straight stack: each origin must lie on the line first + k * normal.
    p0 = slices[0].position
    drift = max(float(np.linalg.norm((s.position - p0) - ((s.position - p0) @ normal) * normal)) for s in slices)
    if drift > SHEAR_TOL_MM:
        raise InputError(
            f"series {series}: slice origins drift {drift:.1f} mm in-plane (gantry tilt or sheared stack); not supported"
        )

    vol = np.stack([s.pixels for s in slices])  # (z, y=rows, x=cols)
    img = sitk.GetImageFromArray(vol.astype(np.float32, copy=False))
    # x follows the row direction (column index), spacing PixelSpacing[1]; y follows the column direction.
    img.SetSpacing((float(sp0[1]), float(sp0[0]), dz))
    img.SetOrigin(tuple(float(v) for v in p0))
    img.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    log.debug("series_loaded", series=series, size=img.GetSize(), spacing=img.GetSpacing(), files=len(files))
    return img


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


def patient_to_index(image: sitk.Image, point_lps: Sequence[float]) -> tuple[float, float, float]:
    """Continuous (x, y, z) voxel index of a DICOM patient-coordinate point (mm, LPS)."""
    return tuple(image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point_lps)))  # type: ignore[return-value]


def index_to_patient(image: sitk.Image, index: Sequence[float]) -> tuple[float, float, float]:
    """DICOM patient coordinates (mm, LPS) of a (possibly fractional) voxel index (x, y, z)."""
    return tuple(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in index)))  # type: ignore[return-value]
