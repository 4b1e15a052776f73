"""Measurements from a glioma label map in patient geometry.

Volumes in mL (BraTS regions: whole tumour 1+2+3, tumour core 1+3,
enhancing 3, necrotic 1, oedema 2), the whole-tumour centroid in patient
coordinates (LPS, mm) and the largest diameter in an axial plane (patient
x-y, whatever the series' orientation), so the numbers mean the same for a
sagittal 3D T1c and an axial 2D one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy.spatial import ConvexHull, QhullError

from radnode.analyzers.base import Measurement

VOLUME_CODE = ("118565006", "SCT", "Volume")
DIAMETER_CODE = ("103355008", "SCT", "Width")

REGIONS: dict[str, tuple[int, ...]] = {
    "whole_tumor": (1, 2, 3),
    "tumor_core": (1, 3),
    "enhancing": (3,),
    "necrotic": (1,),
    "edema": (2,),
}


def _physical_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (mm) of the voxels in *mask* (array order z, y, x)."""
    idx = np.argwhere(mask)[:, ::-1].astype(np.float64)  # → (x, y, z) index order
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    return origin + (idx * spacing) @ direction.T


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


def glioma_measurements(label_image: sitk.Image) -> tuple[list[Measurement], dict[str, Any]]:
    labels = sitk.GetArrayFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    volumes = {name: float(np.isin(labels, values).sum()) * voxel_ml for name, values in REGIONS.items()}
    whole = labels > 0
    points = _physical_points(label_image, whole)
    centroid = points.mean(axis=0).tolist() if len(points) else [float("nan")] * 3
    diameter = max_axial_diameter(points)
    segment_of = {"enhancing": "Enhancing tumor", "necrotic": "Necrotic tumor core", "edema": "Peritumoral edema"}
    measures = [Measurement(name, round(v, 3), "mL", VOLUME_CODE, segment_of.get(name)) for name, v in volumes.items()]
    measures.append(Measurement("max_axial_diameter", round(diameter, 1), "mm", DIAMETER_CODE, None))
    summary = {
        "volumes_ml": {k: round(v, 3) for k, v in volumes.items()},
        "centroid_lps_mm": [round(c, 2) for c in centroid],
        "max_axial_diameter_mm": round(diameter, 1),
    }
    return measures, summary
