"""Per-lesion measurements of brain metastases, as RANO-BM reads them.

RANO-BM (Lin et al., Lancet Oncol 2015) follows each lesion by its longest
diameter; a lesion is measurable from 10 mm. The longest diameter here is
the longest axial (in-plane) diameter over the lesion's slabs, the way it is
measured on the axial images a radiologist reads; the volume is the voxel
count on the native T1c grid; the centroid is in patient LPS mm; the location
comes from the brain frame (:mod:`radnode.analyzers.metastasis.frame`).
Lesions are numbered 1..n by size, largest first (the order of the report).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from radnode.analyzers.glioma.lesions import _ellipsoid, max_axial_diameter, physical_points
from radnode.analyzers.metastasis.frame import BrainFrame, location
from radnode.model.lesions import Lesion


def measure_lesions(label_image: sitk.Image, confidences: Mapping[int, float], frame: BrainFrame | None) -> list[Lesion]:
    """One :class:`Lesion` per id of *label_image* (ids 1..n, numbered by size), with *confidences* by id."""
    labels = sitk.GetArrayViewFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    out = []
    for lid in range(1, int(labels.max(initial=0)) + 1):
        here = labels == lid
        if not here.any():
            continue
        pts = physical_points(label_image, here)
        centroid = pts.mean(axis=0)
        ref = frame.to_frame(centroid) if frame is not None else None
        hemisphere, region = location(ref) if ref is not None else ("unknown", "brain")
        volume = float(here.sum()) * voxel_ml
        out.append(Lesion(
            index=lid,
            volumes_ml={"whole_tumor": round(volume, 4)},
            centroid_lps_mm=tuple(round(float(c), 2) for c in centroid),  # type: ignore[arg-type]
            offset_from_brain_mm=tuple(round(float(c), 2) for c in ref) if ref is not None else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
            hemisphere=hemisphere,
            region=region,
            max_axial_diameter_mm=round(max_axial_diameter(pts), 1),
            ellipsoid_lps_mm=_ellipsoid(pts) if len(pts) >= 4 else (),
            confidence=round(float(confidences.get(lid, 0.0)), 3),
            brain_frame_mm=tuple(round(float(c), 2) for c in ref) if ref is not None else None,  # type: ignore[arg-type]
        ))
    return out


def renumber_by_size(lesion_map: np.ndarray, confidences: Mapping[int, float]) -> tuple[np.ndarray, dict[int, float]]:
    """Relabel ids 1..n by voxel count, largest first (ties: lower old id first); confidences follow."""
    ids, counts = np.unique(lesion_map[lesion_map > 0], return_counts=True)
    order = sorted(zip(ids.tolist(), counts.tolist()), key=lambda ic: (-ic[1], ic[0]))
    lut = np.zeros(int(lesion_map.max(initial=0)) + 1, dtype=np.int32)
    new_conf = {}
    for new, (old, _) in enumerate(order, start=1):
        lut[old] = new
        new_conf[new] = float(confidences.get(old, 0.0))
    return lut[lesion_map], new_conf
