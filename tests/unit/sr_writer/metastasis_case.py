"""A synthetic brain-metastasis result: three lesions on the small generated
T1c series (one enlarging, one new, one stable) and one resolved lesion.

Shared by the writer test and the web test, so both check the same values.
"""

from __future__ import annotations

import numpy as np

from radnode.model.analysis import AnalyzerResult, LabelMap, ModelInfo
from radnode.model.lesion_rows import lesion_rows, metastasis_segments
from radnode.model.lesions import (
    Lesion,
    LesionChange,
    LesionComparison,
    LesionStatus,
    ResolvedLesion,
)
from radnode.uids import derive_uid
from tests.unit.sr_writer.synthetic import SHAPE, SPACING

MODEL = ModelInfo("brain-met-net", "0.1.0", demo=True, manufacturer="radnode", intended_use="Research only")

#: Lesion index → (voxel centre (z, y, x), radius mm).
CENTRES = {1: ((12, 10, 10), 6.0), 2: ((8, 22, 22), 4.0), 3: ((16, 24, 8), 2.5)}


def tracking() -> dict[int, tuple[int, str]]:
    return {1: (2, derive_uid("met-track", "2")), 2: (8, derive_uid("met-track", "8")), 3: (5, derive_uid("met-track", "5"))}


def lesions() -> list[Lesion]:
    def lesion(k: int, region: str, side: str, diameter: float, volume: float, confidence: float) -> Lesion:
        (z, y, x), _ = CENTRES[k]
        centre = (-20.0 + x * SPACING[2], -16.0 + y * SPACING[1], -24.0 + z * SPACING[0])
        return Lesion(index=k, volumes_ml={"whole_tumor": volume}, centroid_lps_mm=centre, offset_from_brain_mm=centre,
                      hemisphere=side, region=region, max_axial_diameter_mm=diameter, confidence=confidence,
                      brain_frame_mm=centre)

    return [lesion(1, "cerebellum", "left", 14.0, 0.912, 0.97), lesion(2, "frontal", "right", 8.5, 0.268, 0.88),
            lesion(3, "deep grey matter", "right", 5.0, 0.061, 0.61)]


def comparison() -> LesionComparison:
    return LesionComparison(
        prior_date="2024-01-10",
        prior_count=3,
        prior_total_volume_ml=0.55,
        changes={
            1: LesionChange(LesionStatus.ENLARGING, 10.0, 0.40, 40.0, 128.0),
            2: LesionChange(LesionStatus.NEW),
            3: LesionChange(LesionStatus.STABLE, 5.2, 0.058, -3.85, 5.17),
        },
        resolved=(ResolvedLesion(7, derive_uid("met-track", "7"), 6.0, 0.092, "brainstem (midline)"),),
    )


def label_map() -> np.ndarray:
    z, y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    out = np.zeros(SHAPE, dtype=np.uint8)
    for k, ((cz, cy, cx), r) in CENTRES.items():
        d = np.sqrt(((z - cz) * SPACING[0]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((x - cx) * SPACING[2]) ** 2)
        out[d <= r] = k
    return out


def result(with_prior: bool = True) -> AnalyzerResult:
    les, tracks = lesions(), tracking()
    comp = comparison() if with_prior else None
    return AnalyzerResult(
        label_maps=[LabelMap("metastasis", label_map(), "t1c", metastasis_segments(3))],
        measurements=lesion_rows(les, tracks, comp),
        extra={"lesions": les, "tracking": tracks, "lesion_comparison": comp, "response_criteria": "RANO-BM"},
    )


#: The prior exams as the job store keeps their rows (oldest first), for the trend.
PRIOR_ROWS = [("20231005", {"met_lesion_count": 2.0, "met_total_volume": 0.31}),
              ("20240110", {"met_lesion_count": 3.0, "met_total_volume": 0.55})]
