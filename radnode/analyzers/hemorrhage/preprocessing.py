"""Head-CT preprocessing for the haemorrhage application as a nipype Workflow (radnode issue 16, item 2).

Same conventions as the MR workflow (:mod:`radnode.analyzers.preprocessing`):
each stage is a nipype node whose inputs, outputs, timing and crash report stay
in the job's work folder (marked for retention clean-up), failures come back as
:class:`InputError` / :class:`AnalyzerError`, nipype's logging stays out of the
process output.

Stages:

1. ``load`` — the ``ct_brain`` series → HU volume, gantry tilt corrected, with
   the link from every volume slice to its source SOP instance
   (:func:`~radnode.analyzers.hemorrhage.ct_volume.load_ct_series`);
2. ``mask`` — intracranial mask from HU alone (:func:`intracranial_mask`): the
   haemorrhage models must not look at scalp haematomas or bone;
3. ``resample`` — onto the model grid (:func:`model_grid`): in-plane spacing and
   matrix from the model's manifest, the slice axis kept, so grid slice *m* is
   the source slice the per-slice classification reports on;
4. ``windows`` — brain, subdural and bone windows as three [0, 1] channels
   (:func:`window_image`), the input of models trained on windowed slices.

:class:`CTPreprocessResult` maps label maps back: onto the source pixels
(:meth:`~CTPreprocessResult.to_source`, right even for a sheared series, in the
order DICOM SEG frames are written) or onto the corrected native volume
(:meth:`~CTPreprocessResult.to_reference`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk
import structlog
from nipype import Node, Workflow
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    traits,
)
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from radnode.analyzers.base import InputError
from radnode.analyzers.hemorrhage.ct_volume import (
    AIR_HU,
    CTSourceGeometry,
    SourceSlice,
    labels_to_sources,
    load_ct_series,
)
from radnode.analyzers.hemorrhage.measure import largest_component

# Importing the MR workflow module also quietens nipype's loggers (done there once for both workflows).
from radnode.analyzers.preprocessing import (
    _out,
    _TimedOutputs,
    _translate,
    new_workflow,
    resample_labels_onto,
)

log = structlog.get_logger(__name__)

STAGES = ("load", "mask", "resample", "windows")
_STAGE_OF_NODE = {"load_ct": "load", "intracranial_mask": "mask", "resample_grid": "resample", "windows": "windows"}


class Window(NamedTuple):
    """A display window (centre/width, HU) as radiologists read head CT."""

    name: str
    centre: float
    width: float


#: Brain 40/80, subdural 80/200, bone 600/2800: the three channels the haemorrhage models take.
WINDOWS: tuple[Window, ...] = (Window("brain", 40.0, 80.0), Window("subdural", 80.0, 200.0), Window("bone", 600.0, 2800.0))


# ---------------------------------------------------------------------------------------------------------------------
# windows


def apply_window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """HU → [0, 1]: 0 at ``centre − width/2`` and below, 1 at ``centre + width/2`` and above (float32)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    lo = centre - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - np.float32(lo)) / np.float32(width), 0.0, 1.0).astype(np.float32)


def window_channels(hu: np.ndarray, windows: Sequence[Window] = WINDOWS) -> np.ndarray:
    """One [0, 1] channel per window, stacked first: ``(len(windows), *hu.shape)``."""
    return np.stack([apply_window(hu, w.centre, w.width) for w in windows])


def window_image(ct: sitk.Image, windows: Sequence[Window] = WINDOWS) -> sitk.Image:
    """The windows of a HU image as one vector image (component *i* = ``windows[i]``), same geometry."""
    channels = window_channels(sitk.GetArrayViewFromImage(ct), windows)
    img = sitk.GetImageFromArray(np.moveaxis(channels, 0, -1), isVector=True)
    img.CopyInformation(ct)
    return img


# ---------------------------------------------------------------------------------------------------------------------
# intracranial mask


def _disk(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """An in-plane elliptical footprint of ``radius_mm`` as a (1, h, w) structure (slices can be 5 mm thick)."""
    ry, rx = (max(1, round(radius_mm / s)) for s in spacing_yx)
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    return ((yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0)[None]


def _close_in_plane(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Binary closing per slice, padded so that bone at the field-of-view edge is not eroded away."""
    st = _disk(radius_mm, spacing_yx)
    py, px = st.shape[1] // 2 + 1, st.shape[2] // 2 + 1
    padded = np.pad(mask, ((0, 0), (py, py), (px, px)))
    return ndimage.binary_closing(padded, st)[:, py:-py, px:-px]


def _hull_inside(bone: np.ndarray) -> np.ndarray | None:
    """Pixels inside the 2-D convex hull of ``bone`` (None when the hull is degenerate)."""
    pts = np.argwhere(bone & ~ndimage.binary_erosion(bone)).astype(float)
    if len(pts) < 4:
        return None
    try:
        eq = ConvexHull(pts).equations  # rows (a, b, c): a*y + b*x + c <= 0 inside
    except QhullError:
        return None
    (y0, x0), (y1, x1) = pts.min(0).astype(int), pts.max(0).astype(int)
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    inside = np.zeros_like(bone)
    inside[y0:y1 + 1, x0:x1 + 1] = np.all(yy[..., None] * eq[:, 0] + xx[..., None] * eq[:, 1] + eq[:, 2] <= 1e-6, -1)
    return inside


def _inside_skull(bone: np.ndarray, min_area_px: int) -> np.ndarray:
    """Per slice, what the skull ring encloses; a broken ring (craniectomy, fracture) is bridged.

    A broken ring encloses nothing, so its convex hull stands in — trusted only
    when the bone is one dominant piece (a broken ring, not the fragmented skull
    base or the mandible) and the hull agrees with the enclosed region of a
    neighbouring slice, so that it is the same skull and not the face or the
    neck. Brain bulging past the hull's chord (under a craniectomy) is recovered
    from the smaller of the nearest intact slices above and below, whose section
    a convex head contains.
    """
    inside = np.zeros_like(bone)
    hulls: dict[int, np.ndarray] = {}
    for k in range(bone.shape[0]):
        b = bone[k]
        if b.sum() < min_area_px:
            continue
        inside[k] = ndimage.binary_fill_holes(b) & ~b
        lab, _ = ndimage.label(b)
        sizes = np.bincount(lab.ravel())[1:]
        if sizes.max() < 0.7 * sizes.sum():
            continue
        ys, xs = np.nonzero(lab == (int(np.argmax(sizes)) + 1))
        if inside[k].sum() < 0.3 * (np.ptp(ys) + 1) * (np.ptp(xs) + 1):
            hull = _hull_inside(lab == (int(np.argmax(sizes)) + 1))
            if hull is not None:
                hulls[k] = hull & ~b
    intact = [k for k in range(bone.shape[0]) if k not in hulls and inside[k].any()]
    bridged = []
    changed = True
    while changed and hulls:
        changed = False
        for k in sorted(hulls):
            area = hulls[k].sum()
            if any(0 <= j < bone.shape[0] and j not in hulls and (hulls[k] & inside[j]).sum() >= 0.5 * area
                   for j in (k - 1, k + 1)):
                inside[k] = hulls.pop(k)
                bridged.append(k)
                changed = True
    for k in bridged:
        below, above = [j for j in intact if j < k], [j for j in intact if j > k]
        if below and above:
            prior = min((inside[below[-1]], inside[above[0]]), key=lambda m: int(m.sum()))
            inside[k] |= prior & ~bone[k]
    return inside


def intracranial_mask(ct: sitk.Image, *, bone_hu: float = 300.0, soft_hu: tuple[float, float] = (-20.0, 100.0),
                      closing_mm: float = 3.0, opening_mm: float = 2.0) -> sitk.Image:
    """The intracranial space of a head CT (uint8, same grid), from HU alone.

    Why thresholds and morphology rather than a network: they are exact on what
    matters here (bone is > 300 HU on every scanner, the brain is inside it),
    fast, and transparent. Steps: bone = in-plane smoothed HU > ``bone_hu``,
    closed to seal sutures and foramina; per slice, what the bone ring encloses
    (:func:`_inside_skull`); the largest 3-D component of soft tissue
    (``soft_hu``) inside, opened to cut bridges through foramina into the orbits
    or neck; then every enclosed region that component reaches is taken whole,
    up to the inner table of the skull, so extra-axial blood (subdural,
    epidural) and calcifications stay inside while the scalp (outside the ring)
    and the neck (below it) stay out. Per-slice work in the slice plane makes
    it indifferent to gantry tilt and head rotation.
    """
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)  # (z, y, x)
    sx, sy, _ = ct.GetSpacing()
    smooth = ndimage.gaussian_filter(hu, sigma=(0.0, 1.0 / sy, 1.0 / sx))
    bone = _close_in_plane(smooth > bone_hu, closing_mm, (sy, sx))
    inside = _inside_skull(bone, min_area_px=int(100.0 / (sx * sy)))  # ≥ 1 cm² of bone
    candidate = inside & (smooth >= soft_hu[0]) & (smooth <= soft_hu[1])
    core = ndimage.binary_opening(candidate, _disk(opening_mm, (sy, sx)))
    brain = largest_component(core, connectivity=1)
    if not brain.any():
        raise InputError("no soft tissue enclosed by bone was found: is this a head CT?")
    near = brain.copy()
    near[1:] |= brain[:-1]
    near[:-1] |= brain[1:]
    seeds = candidate & near
    mask = np.zeros_like(inside)
    for k in range(inside.shape[0]):
        if not seeds[k].any():
            continue
        lab, _ = ndimage.label(inside[k])
        keep = np.unique(lab[seeds[k]])
        region = np.isin(lab, keep[keep > 0]) & (smooth[k] > -200.0)  # no sinus / mastoid air
        mask[k] = ndimage.binary_fill_holes(region)
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(ct)
    return out


def mask_volume_ml(mask: sitk.Image) -> float:
    """Volume (mL) of a binary mask: a plausibility number for logs and the job record (adult ≈ 1200–1700)."""
    return float(sitk.GetArrayViewFromImage(mask).astype(bool).sum() * np.prod(mask.GetSpacing()) / 1000.0)


# ---------------------------------------------------------------------------------------------------------------------
# model grid


def model_grid(ct: sitk.Image, *, in_plane_mm: float = 1.0, in_plane_size: int | None = 256,
               centre: Sequence[float] | None = None) -> sitk.Image:
    """An empty grid with the CT's slices and direction, ``in_plane_mm`` pixels, ``in_plane_size``² matrix.

    The slice axis is kept as it is (same positions, same count): grid slice *m*
    is volume slice *m*, so per-slice results refer to known source images.
    The matrix is centred in-plane on ``centre`` (LPS; the head's, so an
    off-centre head is not cut), default the volume's centre; ``in_plane_size``
    None covers the whole field of view (voxel edges aligned with the volume's).
    """
    if in_plane_mm <= 0:
        raise ValueError(f"in_plane_mm must be positive, got {in_plane_mm}")
    if in_plane_size is not None and in_plane_size < 1:
        raise ValueError(f"in_plane_size must be at least 1, got {in_plane_size}")
    size = np.asarray(ct.GetSize())
    sp = np.asarray(ct.GetSpacing(), float)
    d = np.asarray(ct.GetDirection(), float).reshape(3, 3)
    o = np.asarray(ct.GetOrigin(), float)
    if in_plane_size is None:
        n = [max(1, math.ceil(round(float(size[i] * sp[i] / in_plane_mm), 6))) for i in (0, 1)]
        first = [(in_plane_mm - sp[i]) / 2.0 for i in (0, 1)]  # first centre: half a new voxel from the old edge
    else:
        c = np.asarray(centre, float) if centre is not None else o + d @ ((size - 1) * sp / 2.0)
        n = [in_plane_size, in_plane_size]
        first = [float((c - o) @ d[:, i]) - (in_plane_size - 1) * in_plane_mm / 2.0 for i in (0, 1)]
    grid = sitk.Image([n[0], n[1], int(size[2])], sitk.sitkUInt8)
    grid.SetSpacing((in_plane_mm, in_plane_mm, float(sp[2])))
    grid.SetDirection(ct.GetDirection())
    grid.SetOrigin(tuple(float(v) for v in o + d[:, 0] * first[0] + d[:, 1] * first[1]))
    return grid


def resample_ct(ct: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """HU onto ``grid`` (linear, air outside), smoothed in-plane first when shrinking, against aliasing."""
    factor = [grid.GetSpacing()[i] / ct.GetSpacing()[i] for i in (0, 1)]
    src = sitk.Cast(ct, sitk.sitkFloat32)
    if max(factor) > 1.25:
        arr = sitk.GetArrayFromImage(src)
        sigma = (0.0, max(0.0, (factor[1] - 1) / 2.0), max(0.0, (factor[0] - 1) / 2.0))  # in source pixels
        smoothed = sitk.GetImageFromArray(ndimage.gaussian_filter(arr, sigma).astype(np.float32))
        smoothed.CopyInformation(src)
        src = smoothed
    return sitk.Resample(src, grid, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def resample_mask(mask: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """A binary mask onto ``grid``: linear on 0/1, then ≥ 0.5 (smoother than nearest neighbour when shrinking)."""
    f = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), grid, sitk.Transform(3, sitk.sitkIdentity),
                      sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.Cast(f >= 0.5, sitk.sitkUInt8)


def mask_centre(mask: sitk.Image) -> tuple[float, float, float] | None:
    """Centre of mass (LPS mm) of a binary mask; None when it is empty."""
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if not len(idx):
        return None
    return tuple(mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx.mean(0)[::-1]]))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# nipype interfaces


class _LoadCTInput(BaseInterfaceInputSpec):
    files = InputMultiObject(File(exists=True), mandatory=True, desc="DICOM files of the ct_brain series")
    max_gap_mm = traits.Float(0.0, usedefault=True, desc="gaps up to this are interpolated, longer ones are errors")


class _LoadCTOutput(_TimedOutputs):
    out_file = File(exists=True, desc="HU volume, tilt corrected (NIfTI)")
    geometry_file = File(exists=True, desc="source slices and the volume→source slice map (JSON)")
    tilt_deg = traits.Float()
    excluded = traits.Int(desc="images of the series left out")


class LoadCT(SimpleInterface):
    """CT series → tilt-corrected HU volume plus its source-slice map."""

    input_spec = _LoadCTInput
    output_spec = _LoadCTOutput

    def _run_interface(self, runtime: Any) -> Any:
        t = time.perf_counter()
        vol = load_ct_series([Path(f) for f in self.inputs.files], max_gap_mm=self.inputs.max_gap_mm)
        out, geo = _out("ct.nii"), _out("ct_geometry.json")
        sitk.WriteImage(vol.image, out)
        Path(geo).write_text(vol.geometry.to_json())
        self._results.update(out_file=out, geometry_file=geo, tilt_deg=vol.geometry.tilt_deg,
                             excluded=len(vol.geometry.excluded), seconds=time.perf_counter() - t)
        return runtime


class _MaskInput(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    bone_hu = traits.Float(300.0, usedefault=True)


class _MaskOutput(_TimedOutputs):
    mask_file = File(exists=True)
    volume_ml = traits.Float()


class IntracranialMask(SimpleInterface):
    """Intracranial mask of the HU volume."""

    input_spec = _MaskInput
    output_spec = _MaskOutput

    def _run_interface(self, runtime: Any) -> Any:
        t = time.perf_counter()
        mask = intracranial_mask(sitk.ReadImage(self.inputs.in_file, sitk.sitkFloat32), bone_hu=self.inputs.bone_hu)
        out = _out("intracranial_mask.nii.gz")
        sitk.WriteImage(mask, out, useCompression=True)
        self._results.update(mask_file=out, volume_ml=mask_volume_ml(mask), seconds=time.perf_counter() - t)
        return runtime


class _GridInput(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    in_plane_mm = traits.Float(1.0, usedefault=True)
    in_plane_size = traits.Either(None, traits.Int, default=256, usedefault=True, desc="None: whole field of view")


class _GridOutput(_TimedOutputs):
    out_file = File(exists=True)
    mask_file = File(exists=True)


class ResampleToModelGrid(SimpleInterface):
    """HU volume and mask onto the model grid, centred on the intracranial space."""

    input_spec = _GridInput
    output_spec = _GridOutput

    def _run_interface(self, runtime: Any) -> Any:
        t = time.perf_counter()
        ct = sitk.ReadImage(self.inputs.in_file, sitk.sitkFloat32)
        mask = sitk.ReadImage(self.inputs.mask_file, sitk.sitkUInt8)
        grid = model_grid(ct, in_plane_mm=self.inputs.in_plane_mm, in_plane_size=self.inputs.in_plane_size,
                          centre=mask_centre(mask))
        out, mout = _out("ct_grid.nii"), _out("intracranial_mask_grid.nii.gz")
        sitk.WriteImage(resample_ct(ct, grid), out)
        sitk.WriteImage(resample_mask(mask, grid), mout, useCompression=True)
        self._results.update(out_file=out, mask_file=mout, seconds=time.perf_counter() - t)
        return runtime


class _WindowsInput(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)


class _WindowsOutput(_TimedOutputs):
    out_file = File(exists=True, desc="vector image: brain, subdural, bone windows in [0, 1]")


class Windows(SimpleInterface):
    """Brain / subdural / bone windows of the model-grid HU volume as three channels."""

    input_spec = _WindowsInput
    output_spec = _WindowsOutput

    def _run_interface(self, runtime: Any) -> Any:
        t = time.perf_counter()
        out = _out("windows.nii")
        sitk.WriteImage(window_image(sitk.ReadImage(self.inputs.in_file, sitk.sitkFloat32)), out)
        self._results.update(out_file=out, seconds=time.perf_counter() - t)
        return runtime


# ---------------------------------------------------------------------------------------------------------------------
# workflow


def build_ct_workflow(series_files: Sequence[Path], workdir: Path, *, in_plane_mm: float = 1.0,
                      in_plane_size: int | None = 256, max_gap_mm: float = 0.0, bone_hu: float = 300.0,
                      write_provenance: bool = False) -> Workflow:
    """The head-CT preprocessing graph for one series; nothing runs yet."""
    if not series_files:
        raise InputError("the ct_brain series has no files")
    workdir = Path(workdir).resolve()
    wf = new_workflow("ct_preprocessing", workdir, write_provenance=write_provenance)
    load = Node(LoadCT(files=[str(f) for f in series_files], max_gap_mm=max_gap_mm), name="load_ct")
    mask = Node(IntracranialMask(bone_hu=bone_hu), name="intracranial_mask")
    grid = Node(ResampleToModelGrid(in_plane_mm=in_plane_mm, in_plane_size=in_plane_size), name="resample_grid")
    windows = Node(Windows(), name="windows")
    wf.connect([
        (load, mask, [("out_file", "in_file")]),
        (load, grid, [("out_file", "in_file")]),
        (mask, grid, [("mask_file", "mask_file")]),
        (grid, windows, [("out_file", "in_file")]),
    ])
    return wf


@dataclass
class CTPreprocessResult:
    """Where the preprocessed head CT is, and how grid slices and label maps relate to the source series."""

    ct: Path  #: HU, tilt corrected, native resolution
    intracranial_mask: Path  #: on ``ct``'s grid
    ct_grid: Path  #: HU on the model grid
    mask_grid: Path
    windows: Path  #: vector image on the model grid, one component per :data:`WINDOWS` entry
    geometry: CTSourceGeometry
    timings: dict[str, float]
    workdir: Path
    intracranial_volume_ml: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def slice_source(self, index: int) -> SourceSlice:
        """The source image behind grid slice ``index`` (SOPInstanceUID, InstanceNumber, frame)."""
        return self.geometry.slice_for(index)

    @property
    def slice_sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID per grid slice, in grid order."""
        return [self.geometry.slice_for(m).sop_instance_uid for m in range(len(self.geometry.slice_source))]

    def windows_array(self) -> np.ndarray:
        """The model input: ``(slices, channels, y, x)`` float32 in [0, 1]."""
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(self.windows)))  # (z, y, x, c)
        return np.ascontiguousarray(np.moveaxis(arr, -1, 1)).astype(np.float32, copy=False)

    def to_source(self, label_image: sitk.Image) -> np.ndarray:
        """A label map on the grid → ``(source slices, Rows, Columns)``, in SEG label-map order (see ``geometry``)."""
        return labels_to_sources(label_image, self.geometry)

    def to_reference(self, label_image: sitk.Image) -> sitk.Image:
        """Nearest-neighbour resample of a grid label map onto the tilt-corrected native volume."""
        return resample_labels_onto(label_image, self.ct)


def run_ct_preprocessing(
    series_files: Sequence[Path],
    workdir: Path,
    *,
    in_plane_mm: float = 1.0,
    in_plane_size: int | None = 256,
    max_gap_mm: float = 0.0,
    bone_hu: float = 300.0,
    write_provenance: bool = False,
) -> CTPreprocessResult:
    """Build and run the head-CT workflow on one series; returns the outputs and seconds per stage.

    ``in_plane_mm`` / ``in_plane_size`` come from the model's manifest (e.g. 1 mm
    and 256, or 0.5 mm and 512); ``max_gap_mm`` lets short gaps between slices be
    interpolated instead of failing (see :func:`load_ct_series`).
    """
    t0 = time.perf_counter()
    workdir = Path(workdir).resolve()
    wf = build_ct_workflow(series_files, workdir, in_plane_mm=in_plane_mm, in_plane_size=in_plane_size,
                           max_gap_mm=max_gap_mm, bone_hu=bone_hu, write_provenance=write_provenance)
    try:
        graph = wf.run(plugin="Linear")
    except Exception as exc:
        raise _translate(exc) from exc
    nodes = {n.name: n.result.outputs for n in graph.nodes()}
    timings = {s: 0.0 for s in STAGES}
    for name, outputs in nodes.items():
        timings[_STAGE_OF_NODE[name]] += float(outputs.seconds or 0.0)
    timings["total"] = time.perf_counter() - t0
    load, mask, grid = nodes["load_ct"], nodes["intracranial_mask"], nodes["resample_grid"]
    result = CTPreprocessResult(
        ct=Path(load.out_file),
        intracranial_mask=Path(mask.mask_file),
        ct_grid=Path(grid.out_file),
        mask_grid=Path(grid.mask_file),
        windows=Path(nodes["windows"].out_file),
        geometry=CTSourceGeometry.from_json(Path(load.geometry_file).read_text()),
        timings=timings,
        workdir=workdir,
        intracranial_volume_ml=float(mask.volume_ml),
    )
    log.info("ct_preprocessed", series=result.geometry.series, workdir=str(workdir),
             slices=len(result.geometry.slice_source), tilt_deg=round(result.geometry.tilt_deg, 1),
             excluded=len(result.geometry.excluded), intracranial_ml=round(result.intracranial_volume_ml),
             **{k: round(v, 2) for k, v in timings.items()})
    return result


__all__ = [
    "WINDOWS",
    "CTPreprocessResult",
    "IntracranialMask",
    "LoadCT",
    "ResampleToModelGrid",
    "Window",
    "Windows",
    "apply_window",
    "build_ct_workflow",
    "intracranial_mask",
    "load_ct_series",
    "mask_centre",
    "mask_volume_ml",
    "model_grid",
    "resample_ct",
    "resample_mask",
    "run_ct_preprocessing",
    "window_channels",
    "window_image",
]
