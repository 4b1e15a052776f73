"""Post-processing that follows the anatomy: from a voxel label map to lesions.

A segmentation network labels voxels; a radiologist reads lesions. Between
the two, this module removes islands that cannot be tumour and groups what
remains into lesions, each measured on its own.

The rule (:class:`IslandRule`, defaults in brackets), applied to the
26-connected components of the tumour mask (labels 1, 2, 3):

1. voxels outside the brain mask dilated by ``brain_margin_mm`` [3] are
   cleared (the model sees a brain-masked input; anything outside is an
   interpolation artefact of the native-grid resampling);
2. components smaller than ``min_component_ml`` [0.1] are dropped ("tiny");
3. *seeds* are components with a tumour core (necrotic + enhancing) of at
   least ``min_core_ml`` [0.3] that is at least ``min_core_fraction`` [0.05]
   of the component; a glioma focus, even a small one, enhances or has a
   core. If no component qualifies (a non-enhancing tumour), the largest
   component is the seed;
4. a non-seed component is kept only if it lies within ``attach_mm`` [10]
   of a seed (oedema split from its tumour by a thin bridge); the rest are
   dropped ("no tumour core and far from one");
5. kept components closer than ``attach_mm`` to each other form one lesion;
   lesions farther apart are multifocal disease and reported one by one.

Each lesion gets volumes per sub-region, its centroid (LPS mm), the largest
axial diameter, a coarse location (hemisphere and lobe, below) and, when it
enhances, the RANO bidimensional measurement (:func:`bidimensional`).

Location: no atlas ships inside the Python package, so the lobe is a coarse
map derived from the brain mask's own extent in patient axes: with u the
anterior→posterior and v the inferior→superior fraction of the brain's
bounding box at the lesion centroid, posterior fossa if v < 0.30 and u > 0.60,
else frontal if u < 0.40, occipital if u > 0.78, temporal if v < 0.45,
otherwise parietal. The hemisphere is the side of the brain's mid-sagittal
plane (its centroid's x), "midline" within 5 mm. It is a coarse label for a
report, not an atlas lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from radnode.model.lesions import Bidimensional, Lesion

#: Sub-regions (BraTS label values).
REGIONS: dict[str, tuple[int, ...]] = {
    "whole_tumor": (1, 2, 3),
    "tumor_core": (1, 3),
    "enhancing": (3,),
    "necrotic": (1,),
    "edema": (2,),
}

MIDLINE_MM = 5.0


@dataclass(frozen=True)
class IslandRule:
    """Parameters of the island rule (see the module docstring)."""

    brain_margin_mm: float = 3.0
    min_component_ml: float = 0.1
    min_core_ml: float = 0.3
    min_core_fraction: float = 0.05
    attach_mm: float = 10.0

    def __post_init__(self) -> None:
        for name in ("brain_margin_mm", "min_component_ml", "min_core_ml", "min_core_fraction", "attach_mm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name}: must be a non-negative number")


@dataclass
class CleanReport:
    """What the rule did: component counts and each dropped island with its reason."""

    components_before: int
    components_after: int
    lesions: int
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"components_before": self.components_before, "components_after": self.components_after,
                "lesions": self.lesions, "dropped": self.dropped}


def physical_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (mm) of the voxels in *mask* (array order z, y, x)."""
    idx = np.argwhere(mask)[:, ::-1].astype(np.float64)  # → (x, y, z) index order
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    return origin + (idx * spacing) @ direction.T


def _spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    sx, sy, sz = image.GetSpacing()
    return (sz, sy, sx)


def _distance_to(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to *mask* (0 inside)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)


def clean_label_map(
    labels: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    brain_mask: np.ndarray | None = None,
    rule: IslandRule | None = None,
) -> tuple[np.ndarray, np.ndarray, CleanReport]:
    """Apply the island rule; returns (clean labels, lesion id map 1..n, report).

    Lesion ids are ordered by whole-tumour volume, largest first.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 3:
        raise ValueError("labels: must be a 3-D integer array (z, y, x)")
    if brain_mask is not None and brain_mask.shape != labels.shape:
        raise ValueError("brain_mask: must have the label map's shape")
    rule = rule or IslandRule()
    fg = np.argwhere(labels > 0)
    if len(fg) == 0:
        return labels.astype(np.uint8), np.zeros(labels.shape, dtype=np.int32), CleanReport(0, 0, 0)
    # Work in the tumour's bounding box plus every distance the rule looks at.
    pad = [int(np.ceil((rule.attach_mm + rule.brain_margin_mm) / s)) + 2 for s in spacing_zyx]
    box = tuple(slice(max(0, lo - p), min(n, hi + p + 1)) for lo, hi, p, n in zip(fg.min(0), fg.max(0), pad, labels.shape))
    clean, lesion_box, report = _clean_box(labels[box], spacing_zyx, None if brain_mask is None else brain_mask[box], rule)
    out = np.zeros(labels.shape, dtype=np.uint8)
    lesion_map = np.zeros(labels.shape, dtype=np.int32)
    out[box] = clean
    lesion_map[box] = lesion_box
    return out, lesion_map, report


def _clean_box(labels: np.ndarray, spacing_zyx: tuple[float, float, float], brain_mask: np.ndarray | None,
               rule: IslandRule) -> tuple[np.ndarray, np.ndarray, CleanReport]:
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    out = labels.astype(np.uint8, copy=True)
    dropped: list[dict[str, Any]] = []
    if brain_mask is not None and brain_mask.any():
        near_brain = _distance_to(brain_mask.astype(bool), spacing_zyx) <= rule.brain_margin_mm
        outside = (out > 0) & ~near_brain
        if outside.any():
            dropped.append({"reason": "outside the brain", "volume_ml": round(float(outside.sum()) * voxel_ml, 3)})
            out[outside] = 0
    structure = np.ones((3, 3, 3), dtype=bool)
    comp, n = ndimage.label(labels > 0, structure=structure)
    components_before = n
    comp, n = ndimage.label(out > 0, structure=structure)
    if n == 0:
        return out, np.zeros(out.shape, dtype=np.int32), CleanReport(components_before, 0, 0, dropped)
    ids = np.arange(1, n + 1)
    size = ndimage.sum_labels(np.ones_like(comp), comp, ids) * voxel_ml
    core = ndimage.sum_labels(np.isin(out, (1, 3)), comp, ids) * voxel_ml
    keep = np.zeros(n + 1, dtype=bool)
    alive = size >= rule.min_component_ml
    for i in ids[~alive]:
        dropped.append({"reason": "tiny", "volume_ml": round(float(size[i - 1]), 3)})
    seeds = alive & (core >= rule.min_core_ml) & (core >= rule.min_core_fraction * size)
    if not seeds.any() and alive.any():
        seeds[int(np.argmax(np.where(alive, size, -1)))] = True
    keep[1:] = seeds
    seed_mask = keep[comp]
    candidates = [i for i in ids if alive[i - 1] and not seeds[i - 1]]
    if candidates:
        dist = _distance_to(seed_mask, spacing_zyx)
        nearest = ndimage.minimum(dist, comp, candidates)
        for i, d in zip(candidates, np.atleast_1d(nearest)):
            if d <= rule.attach_mm:
                keep[i] = True
            else:
                dropped.append({"reason": "no tumour core and far from one", "volume_ml": round(float(size[i - 1]), 3),
                                "distance_mm": round(float(d), 1)})
    kept = keep[comp]
    out[~kept] = 0
    components_after = int(keep[1:].sum())
    # Group kept components closer than attach_mm into lesions.
    near = _distance_to(kept, spacing_zyx) <= rule.attach_mm / 2.0
    groups, n_groups = ndimage.label(near, structure=structure)
    lesion_map = np.where(kept, groups, 0).astype(np.int32)
    if n_groups:
        vols = ndimage.sum_labels(np.ones_like(lesion_map), lesion_map, np.arange(1, n_groups + 1))
        order = [int(g) + 1 for g in np.argsort(-vols) if vols[g] > 0]
        remap = np.zeros(n_groups + 1, dtype=np.int32)
        for new, old in enumerate(order, start=1):
            remap[old] = new
        lesion_map = remap[lesion_map]
        n_lesions = len(order)
    else:
        n_lesions = 0
    return out, lesion_map, CleanReport(components_before, components_after, n_lesions, dropped)


def max_axial_diameter(points: np.ndarray, slab_mm: float = 1.0) -> float:
    """Largest in-plane distance among points sharing an axial slab (patient z)."""
    if len(points) < 2:
        return 0.0
    best = 0.0
    slabs = np.round(points[:, 2] / slab_mm).astype(np.int64)
    for z in np.unique(slabs):
        xy = points[slabs == z, :2]
        if len(xy) < 2:
            continue
        if len(xy) > 3:
            try:
                xy = xy[ConvexHull(xy).vertices]
            except QhullError:  # collinear points
                pass
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d))
    return best


def bidimensional(points: np.ndarray, slab_mm: float = 1.0, bin_mm: float = 1.0) -> Bidimensional | None:
    """RANO longest diameter × longest perpendicular diameter on one axial slab.

    *points* are the LPS voxel centres of one contrast-enhancing lesion (the
    enhancing rim and the necrosis it encloses, as a reader outlines it).
    Per axial slab (patient z, *slab_mm* thick): the longest diameter is the
    longest chord between convex-hull vertices; the perpendicular diameter is
    the longest chord perpendicular to it, found by binning the slab's
    points along the long axis (*bin_mm*) and taking the largest extent
    across it. The slab with the longest diameter wins (ties: the larger
    product). Distances run between voxel centres.
    """
    if len(points) < 2:
        return None
    slabs = np.round(points[:, 2] / slab_mm).astype(np.int64)
    best: tuple[float, float, Bidimensional] | None = None
    for z in np.unique(slabs):
        sel = points[slabs == z]
        xy = sel[:, :2]
        if len(xy) < 2:
            continue
        hull = xy
        if len(xy) > 3:
            try:
                hull = xy[ConvexHull(xy).vertices]
            except QhullError:
                pass
        d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
        longest = float(np.sqrt(d2[i, j]))
        if longest <= 0:
            continue
        u = (hull[j] - hull[i]) / longest
        v = np.array([-u[1], u[0]])
        along = (xy - hull[i]) @ u
        across = (xy - hull[i]) @ v
        bins = np.floor(along / bin_mm).astype(np.int64)
        perp, pa, pb = 0.0, None, None
        for b in np.unique(bins):
            m = bins == b
            lo, hi = int(np.argmin(np.where(m, across, np.inf))), int(np.argmax(np.where(m, across, -np.inf)))
            ext = float(across[hi] - across[lo])
            if ext > perp:
                t = float(along[m].mean())
                perp = ext
                pa = hull[i] + t * u + across[lo] * v
                pb = hull[i] + t * u + across[hi] * v
        perp = min(perp, longest)
        zc = float(sel[:, 2].mean())
        key = (round(longest, 6), longest * perp)
        if best is None or key > (round(best[0], 6), best[1]):
            a, b = hull[i], hull[j]
            pa = pa if pa is not None else a
            pb = pb if pb is not None else a
            best = (longest, longest * perp, Bidimensional(
                longest_mm=round(longest, 2),
                perpendicular_mm=round(perp, 2),
                slab_z_mm=round(zc, 2),
                long_axis=((float(a[0]), float(a[1]), zc), (float(b[0]), float(b[1]), zc)),
                perpendicular=((float(pa[0]), float(pa[1]), zc), (float(pb[0]), float(pb[1]), zc)),
            ))
    return best[2] if best else None


def _ellipsoid(points: np.ndarray) -> tuple[tuple[float, float, float], ...]:
    """Endpoints of the three principal semi-axes of the equivalent ellipsoid
    (a solid ellipsoid's variance along an axis is a²/5)."""
    if len(points) < 4:
        return ()
    c = points.mean(axis=0)
    w, vecs = np.linalg.eigh(np.cov((points - c).T))
    out: list[tuple[float, float, float]] = []
    for k in (2, 1, 0):  # major first
        a = float(np.sqrt(max(w[k], 0.0) * 5.0)) or 0.5
        out += [tuple(float(x) for x in c - a * vecs[:, k]), tuple(float(x) for x in c + a * vecs[:, k])]  # type: ignore[misc,list-item]
    return tuple(out)


def brain_frame(image: sitk.Image, brain_mask: np.ndarray) -> dict[str, Any]:
    """Centroid and bounding box (LPS mm) of the brain mask: the frame lesions are located in."""
    pts = physical_points(image, brain_mask)[::7]  # a sample is plenty for a centroid and a box (and 7× faster)
    if len(pts) == 0:
        return {}
    return {"centroid": pts.mean(axis=0), "lo": np.percentile(pts, 0.5, axis=0), "hi": np.percentile(pts, 99.5, axis=0)}


def coarse_location(centroid: np.ndarray, frame: dict[str, Any]) -> tuple[str, str]:
    """(hemisphere, lobe) by the rule in the module docstring."""
    if not frame:
        return "unknown", "brain"
    dx = float(centroid[0] - frame["centroid"][0])
    hemisphere = "midline" if abs(dx) < MIDLINE_MM else ("left" if dx > 0 else "right")  # LPS: +x is left
    lo, hi = frame["lo"], frame["hi"]
    u = float((centroid[1] - lo[1]) / max(hi[1] - lo[1], 1e-6))  # anterior (0) → posterior (1)
    v = float((centroid[2] - lo[2]) / max(hi[2] - lo[2], 1e-6))  # inferior (0) → superior (1)
    if v < 0.30 and u > 0.60:
        region = "posterior fossa"
    elif u < 0.40:
        region = "frontal"
    elif u > 0.78:
        region = "occipital"
    elif v < 0.45:
        region = "temporal"
    else:
        region = "parietal"
    return hemisphere, region


def find_lesions(label_image: sitk.Image, lesion_map: np.ndarray, brain_mask: np.ndarray | None) -> list[Lesion]:
    """Measure every lesion of *lesion_map* (ids 1..n) on the clean *label_image*."""
    labels = sitk.GetArrayFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    frame = brain_frame(label_image, brain_mask) if brain_mask is not None and brain_mask.any() else {}
    lesions = []
    for lid in range(1, int(lesion_map.max()) + 1):
        here = lesion_map == lid
        if not here.any():
            continue
        vols = {name: round(float((here & np.isin(labels, values)).sum()) * voxel_ml, 3) for name, values in REGIONS.items()}
        pts = physical_points(label_image, here)
        centroid = pts.mean(axis=0)
        offset = centroid - frame["centroid"] if frame else np.zeros(3)
        hemisphere, region = coarse_location(centroid, frame)
        core_pts = physical_points(label_image, here & np.isin(labels, (1, 3)))
        bi = bidimensional(core_pts) if (here & (labels == 3)).any() else None
        lesions.append(Lesion(
            index=lid,
            volumes_ml=vols,
            centroid_lps_mm=tuple(round(float(c), 2) for c in centroid),  # type: ignore[arg-type]
            offset_from_brain_mm=tuple(round(float(c), 2) for c in offset),  # type: ignore[arg-type]
            hemisphere=hemisphere,
            region=region,
            max_axial_diameter_mm=round(max_axial_diameter(pts), 1),
            bidimensional=bi,
            ellipsoid_lps_mm=_ellipsoid(pts),
        ))
    return lesions
