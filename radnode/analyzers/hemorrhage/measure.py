"""Haemorrhage volumes: voxel counts per subtype and the ABC/2 estimate radiologists use at the bedside.

Voxel volume: voxels of a label × voxel volume on the model grid (in-plane
``ct.in_plane_mm``, the source's slice spacing along the slice normal; a
sheared, gantry-tilted stack has the same volume per voxel, so tilt does not
change it).

ABC/2 (Kothari et al., Stroke 1996;27:1304) estimates an intracerebral
haematoma as an ellipsoid: A = the longest diameter on the slice with the
largest haematoma area, B = the longest diameter perpendicular to A on that
slice, C = slices with haematoma × slice spacing, where a slice counts 1 when
its area is ≥ 75 % of the largest, 0.5 when 25–75 %, 0 below; volume = A·B·C/2.
It is computed for the largest connected intraparenchymal haematoma only:
that is what the method was validated for (ICH volume for the ICH score and
surgical thresholds), not for the crescents of subdural or the sheets of
subarachnoid blood. The weighting makes C shorter than the full extent, so on a
sphere ABC/2 gives about 2/3 of the true volume — a known property of the
method, shown beside the voxel count so a reader sees both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError


@dataclass(frozen=True)
class ABC2:
    """One ABC/2 estimate (lengths in mm, volume in mL) and where it was measured."""

    a_mm: float
    b_mm: float
    c_mm: float
    volume_ml: float
    #: Grid slice with the largest area (where A and B were measured).
    slice_index: int
    #: Kothari weight (1, 0.5 or 0) of each grid slice the haematoma touches, by slice index.
    slice_weights: dict[int, float]

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["slice_weights"] = {str(k): v for k, v in self.slice_weights.items()}
        return d


def voxel_ml(spacing_zyx: tuple[float, float, float]) -> float:
    """Volume of one voxel in mL."""
    dz, dy, dx = spacing_zyx
    return float(dz * dy * dx) / 1000.0


def label_volumes(labels: np.ndarray, values: list[int], spacing_zyx: tuple[float, float, float]) -> dict[int, float]:
    """Volume (mL) of each label value in *values*."""
    counts = np.bincount(labels.ravel(), minlength=max(values, default=0) + 1)
    return {v: float(counts[v]) * voxel_ml(spacing_zyx) for v in values}


def largest_component(mask: np.ndarray, connectivity: int = 3) -> np.ndarray:
    """The largest 3-D connected component of a boolean mask; empty stays empty.

    *connectivity* as :func:`scipy.ndimage.generate_binary_structure`: 3 joins
    voxels that share a corner (26-connected), 1 only those that share a face.
    """
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, connectivity))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _points_mm(region: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    yy, xx = np.nonzero(region)
    return np.column_stack([yy * spacing_yx[0], xx * spacing_yx[1]]).astype(float)


def _extent(direction: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """One pixel's size along *direction*: turns a distance between pixel centres into one edge to edge.

    The pixel pitch along the line, not the corner-to-corner width: a region's
    boundary lies about half a pitch beyond its outermost pixel centres.
    """
    return float(np.hypot(direction[0] * spacing_yx[0], direction[1] * spacing_yx[1]))


def longest_diameter(region: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[float, np.ndarray]:
    """(length mm, unit direction (y, x)) of the longest diameter of a 2-D region, edge to edge."""
    pts = _points_mm(region, spacing_yx)
    if len(pts) == 0:
        return 0.0, np.array([0.0, 1.0])
    cand = pts
    if len(pts) >= 4:
        try:
            cand = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear pixels: every point is a candidate
            cand = pts
    d = np.linalg.norm(cand[:, None, :] - cand[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    if d[i, j] == 0:
        direction = np.array([0.0, 1.0])
    else:
        direction = (cand[j] - cand[i]) / d[i, j]
    return float(d[i, j]) + _extent(direction, spacing_yx), direction


def longest_perpendicular(region: np.ndarray, spacing_yx: tuple[float, float], direction: np.ndarray) -> float:
    """Longest chord of the region perpendicular to *direction* (mm), edge to edge.

    Pixels are grouped in strips one pixel wide along *direction*; in each strip
    the region's extent across is a chord perpendicular to A; B is the longest.
    """
    pts = _points_mm(region, spacing_yx)
    if len(pts) == 0:
        return 0.0
    perp = np.array([-direction[1], direction[0]])
    along, across = pts @ direction, pts @ perp
    width = min(spacing_yx)
    strips = np.floor((along - along.min()) / width + 0.5).astype(int)
    best = 0.0
    for s in np.unique(strips):
        sel = across[strips == s]
        best = max(best, float(sel.max() - sel.min()))
    return best + _extent(perp, spacing_yx)


def kothari_weight(area: float, largest: float) -> float:
    """1 for ≥ 75 % of the largest slice area, 0.5 for 25–75 %, 0 below."""
    if largest <= 0:
        return 0.0
    ratio = area / largest
    return 1.0 if ratio >= 0.75 else 0.5 if ratio >= 0.25 else 0.0


def abc2(region: np.ndarray, spacing_zyx: tuple[float, float, float]) -> ABC2 | None:
    """ABC/2 of a 3-D region ``(Z, Y, X)`` (one haematoma); None when it is empty."""
    if not region.any():
        return None
    dz, dy, dx = spacing_zyx
    areas = region.reshape(region.shape[0], -1).sum(axis=1).astype(float) * dy * dx
    k = int(np.argmax(areas))
    a, direction = longest_diameter(region[k], (dy, dx))
    b = longest_perpendicular(region[k], (dy, dx), direction)
    weights = {int(i): kothari_weight(float(areas[i]), float(areas[k])) for i in np.nonzero(areas)[0]}
    c = sum(weights.values()) * dz
    volume = a * b * c / 2.0 / 1000.0
    if not math.isfinite(volume):
        return None
    return ABC2(a_mm=a, b_mm=b, c_mm=c, volume_ml=volume, slice_index=k, slice_weights=weights)
