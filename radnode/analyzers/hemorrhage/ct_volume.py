"""Head-CT series → Hounsfield-unit volume on a regular grid, gantry tilt corrected.

Why not :func:`radnode.analyzers.volumes.load_series`: it refuses a stack whose
slice origins drift in-plane ("gantry tilt or sheared stack"), and head CT is
very often acquired with the gantry tilted along the orbitomeatal line. Such a
series is *sheared*: each slice is a plane of the ImageOrientationPatient, but
successive ImagePositionPatient values step along the table, not along the
plane's normal. Scanners write it in two ways, both handled the same way here
because each slice is placed by its own header, as ITK's non-orthogonal reader,
3D Slicer and dcm2niix (since 2018, issue 253) do:

* IOP tilted (``[1,0,0, 0,cos t,sin t]``) and IPP stepping along z — most scanners;
* IOP axial (``[1,0,0, 0,1,0]``) and IPP stepping in z *and* y.

The GantryDetectorTilt tag is "not intended for mathematical computations"
(PS3.3 C.8.15.3.3) and its sign varies by vendor, so it is only logged next to
the tilt measured from the positions.

Correction (dcm2niix's ``_Tilt`` image): every slice keeps its own plane and is
only shifted within that plane onto one orthonormal grid (row, column, normal),
so output slice *k* still *is* source slice *k* — which the per-slice
haemorrhage classification and the DICOM SEG frames need. The in-plane field of
view grows to hold every shifted slice. :func:`labels_to_sources` maps a label
map back onto the source pixels, slice by slice, from the headers alone.

Also here because head CT needs it: stored values → HU (float32, per slice),
pixel padding and the −2000/−3024 outside the reconstruction circle → −1024
(air), localizers, screenshots and stray reformats excluded with a warning,
slices sorted by position (InstanceNumber is unreliable), a missing slice is an
:class:`InputError` naming its neighbours, slightly uneven spacing is
interpolated onto a regular one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
import structlog
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from scipy import ndimage

from radnode.analyzers.base import InputError
from radnode.analyzers.volumes import _decode, _group, _rescale, _series_label
from radnode.model.geometry import numeric_vector

log = structlog.get_logger(__name__)

#: HU of air; every value below it (padding, outside the reconstruction circle) becomes it.
AIR_HU = -1024.0
#: CT Image, Enhanced CT Image, Legacy Converted Enhanced CT Image storage.
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})
#: Direction cosines that differ by more than this are "different orientations" (as in volumes).
ORIENTATION_TOL = 1e-3
#: Relative spread of slice gaps still treated as one regular spacing (as in volumes).
SPACING_RTOL = 0.05
#: A gap longer than this many median gaps is one or more missing slices.
MISSING_GAP_FACTOR = 1.5
#: Images of another orientation or matrix are stray (excluded) when at most this many …
STRAY_MAX = 2
#: … or at most this fraction of the series; beyond, the series mixes stacks (InputError).
STRAY_FRACTION = 0.1


@dataclass(frozen=True)
class SourceSlice:
    """One slice of the source series: what a SEG frame or a per-slice finding must reference."""

    sop_instance_uid: str
    instance_number: int | None
    #: 1-based frame number in an enhanced (multi-frame) object; None for a classic instance.
    frame_number: int | None
    #: ImagePositionPatient (LPS mm) of the slice's first pixel.
    position: tuple[float, float, float]
    file: str


@dataclass(frozen=True)
class CTSourceGeometry:
    """How the corrected volume relates to the source series (JSON-serialisable, for the work folder).

    ``sources`` are sorted along the slice normal — the order of the label maps
    :func:`radnode.sr_writer.seg.build_segmentation` takes. ``slice_source[m]``
    is the index in ``sources`` of the slice closest to volume slice *m* and
    ``slice_offset_mm[m]`` its distance (0 for a regular stack, where slice *m*
    is source slice *m*).
    """

    series: str
    row: tuple[float, float, float]
    col: tuple[float, float, float]
    #: PixelSpacing: (between rows, between columns), mm.
    pixel_spacing: tuple[float, float]
    #: (Rows, Columns) of every source slice.
    matrix: tuple[int, int]
    sources: tuple[SourceSlice, ...]
    slice_source: tuple[int, ...]
    slice_offset_mm: tuple[float, ...]
    #: Angle (degrees) between the slice normal and the direction the slices step in; 0 when untilted.
    tilt_deg: float
    #: GantryDetectorTilt as written by the scanner (nominal, vendor-dependent sign), if any.
    gantry_tilt_tag: float | None = None
    #: (file or file frame, why) for every image left out of the volume.
    excluded: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: True when slices were interpolated along the normal (uneven spacing or a filled gap).
    interpolated: bool = False

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(np.asarray(self.row), np.asarray(self.col))
        return n / np.linalg.norm(n)

    def slice_for(self, index: int) -> SourceSlice:
        """The source slice behind volume/grid slice ``index``."""
        return self.sources[self.slice_source[index]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> CTSourceGeometry:
        d = json.loads(text)
        d["sources"] = tuple(SourceSlice(**{**s, "position": tuple(s["position"])}) for s in d["sources"])
        for key in ("row", "col", "pixel_spacing", "matrix", "slice_source", "slice_offset_mm"):
            d[key] = tuple(d[key])
        d["excluded"] = tuple(tuple(e) for e in d["excluded"])
        return cls(**d)


@dataclass
class CTVolume:
    """HU volume (float32, orthonormal grid: row, column, normal) and its link to the source slices."""

    image: sitk.Image
    geometry: CTSourceGeometry


# ---------------------------------------------------------------------------------------------------------------------
# pixels → HU


def to_hu(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0, *, padding: int | None = None,
          padding_limit: int | None = None) -> np.ndarray:
    """Stored pixel values → HU (float32); padding and everything below air → −1024.

    ``padding`` / ``padding_limit`` are PixelPaddingValue and PixelPaddingRangeLimit
    in *stored* units (PS3.3 C.7.5.1.1.2): compared before rescaling, because after
    it a padding value can coincide with a real one. Values below −1024 HU (the
    −2000 or −3024 many scanners write outside the reconstruction circle) carry no
    tissue and would dominate any window or smoothing, so they become air.
    """
    hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if padding is not None:
        if padding_limit is not None:
            lo, hi = sorted((int(padding), int(padding_limit)))
            pad = (stored >= lo) & (stored <= hi)
        else:
            pad = stored == int(padding)
        hu[pad] = AIR_HU
    np.maximum(hu, np.float32(AIR_HU), out=hu)
    return hu


def _stored_domain(value: Any, ds: Any) -> int | None:
    """A padding attribute as a stored value: 'US or SS' attributes may come back with the wrong sign."""
    if value is None or value == "":
        return None
    v = int(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    if int(getattr(ds, "PixelRepresentation", 0) or 0) == 1:
        if v >= 2 ** (bits - 1):
            v -= 2**bits
    elif v < 0:
        v += 2 ** int(getattr(ds, "BitsAllocated", 16) or 16)
    return v


def dataset_hu(ds: Any, stored: np.ndarray | None = None, frame_item: Any = None) -> np.ndarray:
    """HU of one classic CT dataset (or one frame of an enhanced one, given its per-frame item)."""
    if stored is None:
        stored = np.asarray(ds.pixel_array)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    trans = _group(frame_item, shared, "PixelValueTransformationSequence") if frame_item is not None else None
    slope, intercept = _rescale(trans) if trans is not None else _rescale(ds)
    return to_hu(stored, slope, intercept, padding=_stored_domain(ds.get("PixelPaddingValue"), ds),
                 padding_limit=_stored_domain(ds.get("PixelPaddingRangeLimit"), ds))


# ---------------------------------------------------------------------------------------------------------------------
# reading


@dataclass
class _Raw:
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    hu: np.ndarray
    meta: SourceSlice
    label: str


def _vector(value: Any, n: int) -> np.ndarray | None:
    try:
        return numeric_vector(value, n)
    except ValueError:
        return None


def _summary(ds: Any) -> Dataset:
    """The few header attributes kept per file (series label, nominal tilt): not the pixels, which are large."""
    out = Dataset()
    for kw in ("SeriesNumber", "SeriesDescription", "SeriesInstanceUID", "GantryDetectorTilt"):
        if kw in ds:
            setattr(out, kw, ds[kw].value)
    return out


def _is_localizer(image_type: Any) -> bool:
    return any(str(v).strip().upper() == "LOCALIZER" for v in (image_type or []))


def _read_file(path: Path) -> tuple[list[_Raw], list[tuple[str, str]], Any]:
    """One file → (its usable slices, (what, why) for every image left out, the header)."""
    source = str(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise InputError(f"{source}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        return [], [(source, "no pixel data")], ds
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class and sop_class not in CT_SOP_CLASSES:
        return [], [(source, f"not a CT image (SOP class {sop_class})")], ds
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        return [], [(source, "colour image (a screenshot?)")], ds
    if "PerFrameFunctionalGroupsSequence" in ds:
        return (*_read_frames(ds, path), ds)
    if _is_localizer(ds.get("ImageType")):
        return [], [(source, f"localizer (ImageType {'/'.join(ds.ImageType)})")], ds
    pos, ori, sp = (_vector(ds.get(k), n) for k, n in
                    (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)))
    if pos is None or ori is None or sp is None:
        return [], [(source, "no patient geometry (ImagePositionPatient/ImageOrientationPatient/PixelSpacing)")], ds
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        raise InputError(f"{source}: multi-frame object without per-frame functional groups is not supported")
    stored = _decode(ds, source)
    if stored.ndim != 2:
        raise InputError(f"{source}: expected a 2-D frame, got shape {stored.shape}")
    meta = SourceSlice(str(ds.get("SOPInstanceUID", "")), _int(ds.get("InstanceNumber")), None,
                       tuple(float(v) for v in pos), source)  # type: ignore[arg-type]
    return [_Raw(pos, ori, (float(sp[0]), float(sp[1])), dataset_hu(ds, stored), meta, _describe(meta))], [], ds


def _read_frames(ds: Any, path: Path) -> tuple[list[_Raw], list[tuple[str, str]]]:
    """The frames of an enhanced / legacy-converted CT object, each placed by its functional groups."""
    source = str(path)
    stored = _decode(ds, source)
    if stored.ndim == 2:
        stored = stored[None]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != stored.shape[0]:
        raise InputError(f"{source}: {len(per_frame)} per-frame groups for {stored.shape[0]} frames")
    kept, excluded = [], []
    for i, item in enumerate(per_frame):
        what = f"{source} frame {i + 1}"
        ftype = _group(item, shared, "CTImageFrameTypeSequence")
        if ftype is not None and _is_localizer(ftype.get("FrameType")):
            excluded.append((what, "localizer frame"))
            continue
        pos, ori, pix = (_group(item, shared, k) for k in
                         ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        p = _vector(pos.get("ImagePositionPatient"), 3) if pos is not None else None
        o = _vector(ori.get("ImageOrientationPatient"), 6) if ori is not None else None
        s = _vector(pix.get("PixelSpacing"), 2) if pix is not None else None
        if p is None or o is None or s is None:
            excluded.append((what, "no plane position/orientation/pixel measures"))
            continue
        meta = SourceSlice(str(ds.get("SOPInstanceUID", "")), _int(ds.get("InstanceNumber")), i + 1,
                           tuple(float(v) for v in p), source)  # type: ignore[arg-type]
        kept.append(_Raw(p, o, (float(s[0]), float(s[1])), dataset_hu(ds, stored[i], item), meta, _describe(meta)))
    return kept, excluded


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _describe(s: SourceSlice) -> str:
    what = f"instance {s.instance_number}" if s.instance_number is not None else "instance ?"
    if s.frame_number is not None:
        what += f" frame {s.frame_number}"
    return f"{what} ({Path(s.file).name})"


# ---------------------------------------------------------------------------------------------------------------------
# one stack


def _select_stack(slices: list[_Raw], series: str) -> tuple[list[_Raw], list[tuple[str, str]]]:
    """The main stack; a few images of another orientation or matrix (unlabelled scouts, reformats) are stray.

    Many stray images mean the series really holds several stacks (e.g. a
    posterior fossa and a cerebrum block with different tilts), which cannot
    be one volume: InputError rather than silently dropping part of the head.
    """
    groups: list[list[_Raw]] = []
    for s in slices:
        for g in groups:
            ref = g[0]
            if (np.abs(s.orientation - ref.orientation).max() <= ORIENTATION_TOL and s.hu.shape == ref.hu.shape
                    and np.abs(np.subtract(s.spacing, ref.spacing)).max() <= SPACING_RTOL * min(ref.spacing)):
                g.append(s)
                break
        else:
            groups.append([s])
    groups.sort(key=len, reverse=True)
    main, others = groups[0], [s for g in groups[1:] for s in g]
    if len(others) > max(STRAY_MAX, STRAY_FRACTION * len(slices)):
        parts = "; ".join(f"{len(g)} slice(s) {_fmt(g[0].orientation)} {g[0].hu.shape[0]}x{g[0].hu.shape[1]}"
                          for g in groups[:4])
        raise InputError(f"series {series} mixes stacks of different orientation or matrix ({parts}); "
                         "it cannot be one volume")
    why = f"differs from the series' {len(main)} slices (a localizer or reformat?)"
    excluded = [(s.label, f"orientation {_fmt(s.orientation)} or matrix {s.hu.shape} {why}") for s in others]
    return main, excluded


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


def _check_gaps(dist: np.ndarray, slices: list[_Raw], series: str, max_gap_mm: float) -> tuple[float, bool]:
    """(regular spacing, whether slices must be interpolated); InputError for missing slices or duplicates."""
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise InputError(f"series {series} has two slices at the same position ({slices[i].label} and "
                         f"{slices[i + 1].label}); it holds several volumes or repeated images")
    dz = float(np.median(gaps))
    if np.abs(gaps - dz).max() <= max(SPACING_RTOL * dz, 1e-2):
        return dz, False
    big = [i for i, g in enumerate(gaps) if g > MISSING_GAP_FACTOR * dz and g > max_gap_mm]
    if big:
        i = big[0]
        n = max(1, round(gaps[i] / dz) - 1)
        more = f" (and {len(big) - 1} more gap{'s' if len(big) > 2 else ''})" if len(big) > 1 else ""
        raise InputError(
            f"series {series}: {n} slice{'s' if n > 1 else ''} missing between {slices[i].label} at "
            f"{dist[i]:.1f} mm and {slices[i + 1].label} at {dist[i + 1]:.1f} mm along the slice normal "
            f"({gaps[i]:.3g} mm apart; the series steps {dz:.3g} mm){more}"
        )
    log.warning("ct_uneven_slice_spacing", series=series, gap_min=round(float(gaps.min()), 3),
                gap_max=round(float(gaps.max()), 3), step=round(dz, 3))
    return dz, True


def _place(hu: np.ndarray, shape: tuple[int, int], shift_rc: tuple[float, float]) -> np.ndarray:
    """``hu`` moved by ``shift_rc`` pixels onto an air canvas of ``shape`` (bilinear for fractional shifts)."""
    out = np.full(shape, AIR_HU, dtype=np.float32)
    whole = [math.floor(v + 1e-3) for v in shift_rc]
    frac = [max(0.0, v - w) if v - w > 1e-3 else 0.0 for v, w in zip(shift_rc, whole)]
    out[whole[0]:whole[0] + hu.shape[0], whole[1]:whole[1] + hu.shape[1]] = hu
    if any(frac):
        out = ndimage.shift(out, frac, order=1, mode="constant", cval=AIR_HU, prefilter=False).astype(np.float32)
    return out


def load_ct_series(files: Sequence[Path | str], *, max_gap_mm: float = 0.0) -> CTVolume:
    """Read one CT series into a tilt-corrected HU volume with patient (LPS) geometry.

    ``max_gap_mm``: a gap between neighbouring slices longer than 1.5 steps is a
    missing slice (InputError naming both neighbours) unless it is at most this
    long, in which case it is interpolated — sensible for thin (≤ 1 mm) slices.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError("the CT series has no files")
    slices: list[_Raw] = []
    excluded: list[tuple[str, str]] = []
    headers: list[Any] = []
    for f in paths:
        kept, left_out, ds = _read_file(f)
        slices.extend(kept)
        excluded.extend(left_out)
        headers.append(_summary(ds))
    series = _series_label(headers, paths)
    if len(slices) < 3:
        why = f" ({len(excluded)} image(s) left out: {excluded[0][1]} …)" if excluded else ""
        raise InputError(f"series {series} has {len(slices)} usable CT slice{'s' if len(slices) != 1 else ''}; "
                         f"a volume needs at least 3{why}")
    slices, stray = _select_stack(slices, series)
    excluded.extend(stray)
    if excluded:
        log.warning("ct_images_excluded", series=series, count=len(excluded),
                    reasons=sorted({why.split(" (")[0] for _, why in excluded}))

    ori = slices[0].orientation
    row, col = ori[:3] / np.linalg.norm(ori[:3]), ori[3:] / np.linalg.norm(ori[3:])
    if abs(float(row @ col)) > 1e-2:
        raise InputError(f"series {series}: ImageOrientationPatient row and column are not orthogonal")
    col = col - (col @ row) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    dist = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    dist = dist[order]
    dz, interpolate = _check_gaps(dist, slices, series, max_gap_mm)

    # In-plane offsets of every slice origin from the first (mm along row / column).
    p0 = slices[0].position
    u = np.array([float((s.position - p0) @ row) for s in slices])
    v = np.array([float((s.position - p0) @ col) for s in slices])
    extent = dist[-1] - dist[0]
    drift = math.hypot(u[-1] - u[0], v[-1] - v[0])
    tilt = math.degrees(math.atan2(drift, extent)) if extent > 0 else 0.0
    dr, dc = slices[0].spacing
    rows, cols = slices[0].hu.shape
    shifts = [((vk - v.min()) / dr, (uk - u.min()) / dc) for uk, vk in zip(u, v)]
    canvas = (rows + math.ceil(max(s[0] for s in shifts) - 1e-3),
              cols + math.ceil(max(s[1] for s in shifts) - 1e-3))
    placed = np.stack([_place(s.hu, canvas, sh) for s, sh in zip(slices, shifts)])

    if interpolate:
        n_out = round(extent / dz) + 1
        targets = dist[0] + np.arange(n_out) * (extent / (n_out - 1))
        vol, nearest, offset = _interpolate_along_normal(placed, dist, targets)
        dz_out = extent / (n_out - 1)
    else:
        vol, nearest, offset, dz_out = placed, list(range(len(slices))), [0.0] * len(slices), dz
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((dc, dr, float(dz_out)))
    img.SetOrigin(tuple(float(x) for x in p0 + u.min() * row + v.min() * col))
    img.SetDirection(tuple(float(x) for x in np.column_stack([row, col, normal]).ravel()))

    header_of = {str(p): h for p, h in zip(paths, headers)}
    tag = header_of[slices[0].meta.file].get("GantryDetectorTilt")
    tag_value = float(tag) if tag not in (None, "") else None
    geometry = CTSourceGeometry(
        series=series,
        row=tuple(float(x) for x in row),  # type: ignore[arg-type]
        col=tuple(float(x) for x in col),  # type: ignore[arg-type]
        pixel_spacing=(dr, dc),
        matrix=(int(rows), int(cols)),
        sources=tuple(s.meta for s in slices),
        slice_source=tuple(int(i) for i in nearest),
        slice_offset_mm=tuple(float(o) for o in offset),
        tilt_deg=tilt,
        gantry_tilt_tag=tag_value,
        excluded=tuple(excluded),
        interpolated=interpolate,
    )
    if tilt > 0.5:
        log.info("ct_gantry_tilt_corrected", series=series, measured_deg=round(tilt, 2), tag_deg=tag_value,
                 shift_mm=round(drift, 1))
    if tag_value is not None and abs(abs(tag_value) - tilt) > 2.0:
        # e.g. a series the scanner already resampled, which keeps the nominal tag: the positions are trusted.
        log.warning("ct_gantry_tilt_tag_disagrees", series=series, measured_deg=round(tilt, 2), tag_deg=tag_value)
    log.debug("ct_series_loaded", series=series, size=img.GetSize(), spacing=img.GetSpacing(), files=len(paths))
    return CTVolume(img, geometry)


def _interpolate_along_normal(placed: np.ndarray, dist: np.ndarray,
                              targets: np.ndarray) -> tuple[np.ndarray, list[int], list[float]]:
    """Linear interpolation of the (in-plane aligned) slices onto regularly spaced ``targets``."""
    out = np.empty((len(targets), *placed.shape[1:]), dtype=np.float32)
    nearest, offset = [], []
    for m, t in enumerate(targets):
        k = int(np.clip(np.searchsorted(dist, t) - 1, 0, len(dist) - 2))
        w = float(np.clip((t - dist[k]) / (dist[k + 1] - dist[k]), 0.0, 1.0))
        out[m] = placed[k] if w < 1e-6 else placed[k + 1] if w > 1 - 1e-6 else (1 - w) * placed[k] + w * placed[k + 1]
        j = k if w <= 0.5 else k + 1
        nearest.append(j)
        offset.append(float(abs(t - dist[j])))
    return out, nearest, offset


# ---------------------------------------------------------------------------------------------------------------------
# back to the source slices


def labels_to_sources(label_image: sitk.Image, geometry: CTSourceGeometry) -> np.ndarray:
    """Nearest-neighbour values of ``label_image`` at every source pixel: ``(slices, Rows, Columns)``.

    Works from the source headers alone, so a gantry-tilted (sheared) series,
    which no single image grid describes, gets its labels exactly where its
    pixels are. Slices are in ``geometry.sources`` order (sorted along the
    normal) — the label-map order of :func:`radnode.sr_writer.seg.build_segmentation`.
    Pixels outside ``label_image`` get 0.
    """
    arr = sitk.GetArrayViewFromImage(label_image)  # (z, y, x)
    size = np.asarray(label_image.GetSize())
    d = np.asarray(label_image.GetDirection(), float).reshape(3, 3)
    to_index = np.linalg.inv(d * np.asarray(label_image.GetSpacing(), float))  # physical offset → (x, y, z)
    origin = np.asarray(label_image.GetOrigin(), float)
    rows, cols = geometry.matrix
    dr, dc = geometry.pixel_spacing
    row, col = np.asarray(geometry.row), np.asarray(geometry.col)
    rr, cc = np.mgrid[0:rows, 0:cols]
    in_plane = cc[..., None] * (dc * row) + rr[..., None] * (dr * col)  # (rows, cols, 3)
    out = np.zeros((len(geometry.sources), rows, cols), dtype=arr.dtype)
    for k, s in enumerate(geometry.sources):
        pts = in_plane + (np.asarray(s.position) - origin)
        idx = np.rint(pts @ to_index.T).astype(np.int64)  # (rows, cols, 3) as (x, y, z)
        ok = np.all((idx >= 0) & (idx < size), axis=-1)
        out[k][ok] = arr[idx[..., 2][ok], idx[..., 1][ok], idx[..., 0][ok]]
    return out
