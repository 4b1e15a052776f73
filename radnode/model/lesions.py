"""Value types for per-lesion results: what an analyzer measured on each
lesion, RANO bidimensional measurements, and the comparison with a prior exam.

Why a module of its own: the analyzer computes lesions, the writers (SR, PDF,
web) present them and the job store keeps them for the next exam, so the
types sit below all of them and import nothing from radnode.

RANO (Wen et al., J Clin Oncol 2010; RANO 2.0, 2023) reads a contrast-
enhancing lesion by its longest in-plane diameter and the longest diameter
perpendicular to it on the same slice; the product of the two, summed over
measurable lesions (both diameters ≥ 10 mm), is followed over time.
What radnode computes is an **automated measurement**, not a response
assessment: RANO also weighs the clinical status, corticosteroid dose,
non-enhancing (T2/FLAIR) disease and confirmation scans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

#: RANO: both perpendicular diameters at least this long (mm) make a lesion measurable.
MEASURABLE_MIN_MM = 10.0
#: RANO product rule thresholds (fractions of the reference sum of products).
PR_DECREASE = 0.50
PD_INCREASE = 0.25


@dataclass(frozen=True)
class Bidimensional:
    """RANO bidimensional measurement of one enhancing lesion on one axial slab.

    Endpoints are LPS (mm): ``long_axis`` and ``perpendicular`` are each two
    points, so the line can be drawn on a key image and written as SR
    coordinates.
    """

    longest_mm: float
    perpendicular_mm: float
    slab_z_mm: float
    long_axis: tuple[tuple[float, float, float], tuple[float, float, float]]
    perpendicular: tuple[tuple[float, float, float], tuple[float, float, float]]

    def __post_init__(self) -> None:
        for name in ("longest_mm", "perpendicular_mm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: must be a finite non-negative number of mm")
        if self.perpendicular_mm > self.longest_mm + 1e-6:
            raise ValueError("perpendicular_mm: cannot exceed longest_mm")

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm

    @property
    def measurable(self) -> bool:
        return self.longest_mm >= MEASURABLE_MIN_MM and self.perpendicular_mm >= MEASURABLE_MIN_MM


@dataclass(frozen=True)
class Lesion:
    """One lesion after post-processing (a kept connected group of tumour voxels)."""

    index: int
    #: mL per sub-region: whole_tumor, tumor_core, enhancing, necrotic, edema.
    volumes_ml: dict[str, float]
    centroid_lps_mm: tuple[float, float, float]
    #: Centroid minus the brain mask's centroid (matches lesions across exams).
    offset_from_brain_mm: tuple[float, float, float]
    hemisphere: str  # "left" | "right" | "midline"
    region: str  # coarse lobe: frontal, parietal, temporal, occipital, posterior fossa
    max_axial_diameter_mm: float
    bidimensional: Bidimensional | None = None
    #: Principal semi-axes (3 × LPS endpoint pairs) of the lesion's equivalent ellipsoid.
    ellipsoid_lps_mm: tuple[tuple[float, float, float], ...] = ()
    #: Detection confidence in [0, 1] (metastasis candidates); None where the analyzer gives none.
    confidence: float | None = None
    #: Centroid in the brain's own frame (mm; origin at the brain mask's centroid, axes its principal
    #: axes — see ``radnode.analyzers.metastasis.frame``): comparable between exams of one patient
    #: whatever the head's position and rotation in the scanner. None where not computed.
    brain_frame_mm: tuple[float, float, float] | None = None

    @property
    def location(self) -> str:
        side = "" if self.hemisphere == "midline" else f"{self.hemisphere} "
        return f"{side}{self.region}" + (" (midline)" if self.hemisphere == "midline" else "")


class RanoCategory(str, Enum):
    """The imaging category the product rule implies (not a response assessment)."""

    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"

    @property
    def meaning(self) -> str:
        return {"CR": "complete response", "PR": "partial response", "SD": "stable disease",
                "PD": "progressive disease"}[self.value]


@dataclass(frozen=True)
class PriorLesion:
    """What the job store kept of a prior exam's lesion."""

    track: int
    offset_from_brain_mm: tuple[float, float, float]
    product_mm2: float


@dataclass(frozen=True)
class PriorExam:
    """One earlier exam of the same patient with the same application."""

    study_date: str  # YYYY-MM-DD
    sum_of_products_mm2: float
    lesions: tuple[PriorLesion, ...] = ()
    volumes_ml: dict[str, float] = field(default_factory=dict)
    #: False for exams measured before radnode computed RANO (volumes only).
    has_rano: bool = True


@dataclass(frozen=True)
class FollowUp:
    """The current exam against the patient's priors in radnode."""

    prior_date: str
    prior_sum_mm2: float
    current_sum_mm2: float
    change_vs_prior_pct: float | None
    nadir_sum_mm2: float
    change_vs_nadir_pct: float | None
    baseline_date: str
    baseline_sum_mm2: float
    change_vs_baseline_pct: float | None
    category: RanoCategory
    reason: str
    #: lesion index (current) → track number (shared with the matched prior lesion, or new).
    tracks: dict[int, int]
    new_lesions: tuple[int, ...] = ()


def pct_change(now: float, before: float) -> float | None:
    """Percent change, None where the reference is zero."""
    return None if before <= 0 else 100.0 * (now - before) / before


def rano_category(current_sum: float, priors: list[PriorExam], new_measurable: bool,
                  enhancing_present: bool | None = None) -> tuple[RanoCategory, str]:
    """The product rule on sums of products (oldest prior = baseline).

    * CR: no enhancing disease now (none measurable, and none at all when
      *enhancing_present* is given), where the baseline had some;
    * PD: ≥ 25 % increase over the smallest sum so far (nadir), or a new
      measurable enhancing lesion;
    * PR: ≥ 50 % decrease against the baseline;
    * SD: otherwise.
    """
    if not priors:
        raise ValueError("priors: at least one prior exam is needed for a category")
    baseline = priors[0].sum_of_products_mm2
    nadir = min([p.sum_of_products_mm2 for p in priors])
    if current_sum <= 0 and baseline > 0 and not new_measurable and not enhancing_present:
        return RanoCategory.CR, "no enhancing disease (baseline had measurable disease)"
    if new_measurable:
        return RanoCategory.PD, "new measurable enhancing lesion"
    if nadir > 0 and current_sum >= nadir * (1 + PD_INCREASE):
        return RanoCategory.PD, f"sum of products ≥ {PD_INCREASE:.0%} above the nadir"
    if nadir <= 0 and current_sum > 0:
        return RanoCategory.PD, "measurable enhancing disease where there was none"
    if baseline > 0 and current_sum <= baseline * (1 - PR_DECREASE):
        return RanoCategory.PR, f"sum of products ≥ {PR_DECREASE:.0%} below the baseline"
    return RanoCategory.SD, "neither the PR nor the PD threshold is reached"


# ---------------------------------------------------------------------------------------------------------------------
# lesion-by-lesion follow-up (metastases: RANO-BM reads each lesion's longest diameter)

#: RANO-BM: a lesion is measurable when its longest diameter is at least this (mm); smaller ones are reported.
RANO_BM_MEASURABLE_MM = 10.0
#: Relative change of the longest diameter that makes a lesion enlarging / shrinking (RANO-BM: +20 % / −30 %),
#: and the smallest absolute change (mm) that counts — a 3 mm lesion measured at 4 mm has not grown by 33 %.
ENLARGING_FRACTION = 0.20
SHRINKING_FRACTION = 0.30
MIN_CHANGE_MM = 2.0


class LesionStatus(str, Enum):
    """A lesion against the patient's prior exam."""

    BASELINE = "baseline"  # no prior exam in radnode
    NEW = "new"
    ENLARGING = "enlarging"
    STABLE = "stable"
    SHRINKING = "shrinking"
    RESOLVED = "resolved"  # in the prior exam, not found now


def lesion_status(diameter_mm: float, prior_diameter_mm: float) -> LesionStatus:
    """Enlarging / stable / shrinking by the relative and absolute change of the longest diameter."""
    change = diameter_mm - prior_diameter_mm
    if change >= MIN_CHANGE_MM and change >= ENLARGING_FRACTION * prior_diameter_mm:
        return LesionStatus.ENLARGING
    if -change >= MIN_CHANGE_MM and -change >= SHRINKING_FRACTION * prior_diameter_mm:
        return LesionStatus.SHRINKING
    return LesionStatus.STABLE


@dataclass(frozen=True)
class LesionChange:
    """One current lesion against the prior exam (matched or new)."""

    status: LesionStatus
    prior_diameter_mm: float | None = None
    prior_volume_ml: float | None = None
    diameter_change_pct: float | None = None
    volume_change_pct: float | None = None


@dataclass(frozen=True)
class ResolvedLesion:
    """A lesion of the prior exam that has no match now."""

    track: int
    tracking_uid: str
    prior_diameter_mm: float
    prior_volume_ml: float
    location: str = ""


@dataclass(frozen=True)
class LesionComparison:
    """The current exam's lesions against the patient's latest prior exam in radnode."""

    prior_date: str  # YYYY-MM-DD
    prior_count: int
    prior_total_volume_ml: float
    #: current lesion index → its change
    changes: dict[int, LesionChange]
    resolved: tuple[ResolvedLesion, ...] = ()
