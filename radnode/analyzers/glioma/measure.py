"""Measurements from a clean glioma label map and its lesions (patient geometry).

Volumes in mL (BraTS regions: whole tumour 1+2+3, tumour core 1+3,
enhancing 3, necrotic 1, oedema 2), per lesion its volumes, centroid (LPS
mm), largest axial diameter (patient x-y, whatever the series' orientation)
and RANO bidimensional product, and the sum of products over measurable
lesions. Names are stable: they are the job store's rows, read back for the
next exam's comparison (see :mod:`radnode.analyzers.glioma.followup`).

Row naming: region volumes carry ``segment`` (the SEG segment or the union
they measure); per-lesion rows are ``lesion_<n>_*`` with ``segment`` "Lesion
<n>"; study-level rows (``lesion_count``, ``rano_*``, ``max_axial_diameter``)
have no segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from radnode.analyzers.base import Measurement
from radnode.analyzers.glioma.lesions import (
    REGIONS,
    max_axial_diameter,
    physical_points,
)
from radnode.model.lesions import Lesion

VOLUME_CODE = ("118565006", "SCT", "Volume")
DIAMETER_CODE = ("81827009", "SCT", "Diameter")
LONG_AXIS_CODE = ("103339001", "SCT", "Long Axis")
SHORT_AXIS_CODE = ("103340004", "SCT", "Short Axis")

#: Segment (or union) each region volume belongs to.
SEGMENT_OF = {
    "whole_tumor": "Whole tumor",
    "tumor_core": "Tumor core",
    "enhancing": "Enhancing tumor",
    "necrotic": "Necrotic tumor core",
    "edema": "Peritumoral edema",
}


def lesion_rows(lesion: Lesion) -> list[Measurement]:
    """The job-store rows of one lesion (what a later exam reads back)."""
    n = lesion.index
    seg = f"Lesion {n}"
    rows = [
        Measurement(f"lesion_{n}_whole_tumor", lesion.volumes_ml["whole_tumor"], "mL", VOLUME_CODE, seg),
        Measurement(f"lesion_{n}_enhancing", lesion.volumes_ml["enhancing"], "mL", VOLUME_CODE, seg),
        Measurement(f"lesion_{n}_max_axial_diameter", lesion.max_axial_diameter_mm, "mm", DIAMETER_CODE, seg),
    ]
    rows += [Measurement(f"lesion_{n}_offset_{ax}", v, "mm", None, seg) for ax, v in zip("xyz", lesion.offset_from_brain_mm)]
    bi = lesion.bidimensional
    if bi is not None:
        rows += [
            Measurement(f"lesion_{n}_rano_longest", bi.longest_mm, "mm", LONG_AXIS_CODE, seg),
            Measurement(f"lesion_{n}_rano_perpendicular", bi.perpendicular_mm, "mm", SHORT_AXIS_CODE, seg),
            Measurement(f"lesion_{n}_rano_product", round(bi.product_mm2, 1), "mm2", None, seg),
        ]
    return rows


def sum_of_products(lesions: Sequence[Lesion]) -> float:
    """RANO sum of products over measurable enhancing lesions (mm²)."""
    return round(sum(les.bidimensional.product_mm2 for les in lesions if les.bidimensional and les.bidimensional.measurable), 1)


def glioma_measurements(label_image: sitk.Image, lesions: Sequence[Lesion] = ()) -> tuple[list[Measurement], dict[str, Any]]:
    """Rows for the job store and the report, and a JSON-able summary."""
    labels = sitk.GetArrayFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    volumes = {name: float(np.isin(labels, values).sum()) * voxel_ml for name, values in REGIONS.items()}
    points = physical_points(label_image, labels > 0)
    centroid = points.mean(axis=0).tolist() if len(points) else [float("nan")] * 3
    diameter = max((les.max_axial_diameter_mm for les in lesions), default=None)
    if diameter is None:
        diameter = max_axial_diameter(points)
    measures = [Measurement(name, round(v, 3), "mL", VOLUME_CODE, SEGMENT_OF[name]) for name, v in volumes.items()]
    measures.append(Measurement("max_axial_diameter", round(diameter, 1), "mm", DIAMETER_CODE, None))
    sop = sum_of_products(lesions)
    measurable = sum(1 for les in lesions if les.bidimensional and les.bidimensional.measurable)
    measures += [
        Measurement("lesion_count", float(len(lesions)), "1", None, None),
        Measurement("rano_sum_of_products", sop, "mm2", None, None),
        Measurement("rano_measurable_lesions", float(measurable), "1", None, None),
    ]
    for les in lesions:
        measures += lesion_rows(les)
    summary = {
        "volumes_ml": {k: round(v, 3) for k, v in volumes.items()},
        "centroid_lps_mm": [round(c, 2) for c in centroid],
        "max_axial_diameter_mm": round(diameter, 1),
        "lesion_count": len(lesions),
        "rano_sum_of_products_mm2": sop,
        "lesions": [lesion_summary(les) for les in lesions],
    }
    return measures, summary


def lesion_summary(les: Lesion) -> dict[str, Any]:
    bi = les.bidimensional
    return {
        "index": les.index,
        "volumes_ml": les.volumes_ml,
        "centroid_lps_mm": list(les.centroid_lps_mm),
        "location": les.location,
        "hemisphere": les.hemisphere,
        "region": les.region,
        "max_axial_diameter_mm": les.max_axial_diameter_mm,
        "rano": None if bi is None else {
            "longest_mm": bi.longest_mm, "perpendicular_mm": bi.perpendicular_mm,
            "product_mm2": round(bi.product_mm2, 1), "measurable": bi.measurable, "slab_z_mm": bi.slab_z_mm,
        },
    }
