"""The brain's own frame: where a lesion is, the same way in every exam of a patient.

Why: matching a 3-mm metastasis between two exams needs positions that do not
depend on how the head lay in the scanner. Patient coordinates move with the
head (a 10° tilt shifts a cortical point by 10–15 mm); positions relative to
the brain's centroid still rotate with it. So each exam's brain mask is
registered rigidly onto one fixed reference — the MNI152 2009a brain mask that
nilearn ships (always the same one, whatever template the site installed) —
and lesion centroids are expressed in that template's coordinates. Two exams
of one patient then agree to the registration error (~1–2 mm), and the same
coordinates give a coarse anatomical location (:func:`location`).

Mask-to-mask registration (mean squares on smoothed masks, initialised by
the masks' moments, i.e. their centroids and principal axes) is used rather
than intensity registration because the masks are what every exam has in
common whatever the contrast, bias field or lesion load; at 3 mm it takes
~1 s. Rigid, not affine: a patient's brain does not change shape between
exams, and a rigid map keeps distances (diameters, the matching radius) in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from radnode.analyzers.base import AnalyzerError
from radnode.analyzers.brain_extraction import mni152_brain_mask

#: The reference brain (nilearn's copy of MNI152 2009a; grey + white matter probability > 0.2).
#: Working resolution of the registration (mm).
FRAME_MM = 3.0
#: Within this distance (mm) of the mid-sagittal plane a lesion is "midline".
MIDLINE_MM = 4.0


@lru_cache(maxsize=1)
def reference_mask() -> sitk.Image:
    """MNI152 2009a brain mask at :data:`FRAME_MM` (float, smoothed), LPS physical space."""
    return _smooth_at(mni152_brain_mask(), FRAME_MM)


def _smooth_at(mask: sitk.Image, mm: float) -> sitk.Image:
    """A binary mask resampled to *mm* and smoothed: a soft edge that gives the metric a gradient."""
    size = [max(8, int(round(n * s / mm))) for n, s in zip(mask.GetSize(), mask.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((mm, mm, mm))
    grid.SetOrigin(mask.GetOrigin())
    grid.SetDirection(mask.GetDirection())
    coarse = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(coarse, mm)


@dataclass(frozen=True)
class BrainFrame:
    """Rigid map from this exam's patient coordinates (LPS mm) to the reference brain's."""

    matrix: tuple[float, ...]  # 3×3, row-major
    offset: tuple[float, float, float]
    #: Mean squares between the registered masks (0 perfect, ~0.1 poor): a plausibility number for the job record.
    metric: float

    def to_frame(self, lps: np.ndarray) -> np.ndarray:
        """Points (…, 3) in patient LPS mm → reference LPS mm."""
        m = np.asarray(self.matrix, float).reshape(3, 3)
        return np.asarray(lps, float) @ m.T + np.asarray(self.offset, float)

    def from_frame(self, ref: np.ndarray) -> np.ndarray:
        """Reference LPS mm → this exam's patient LPS mm."""
        m = np.asarray(self.matrix, float).reshape(3, 3)
        return (np.asarray(ref, float) - np.asarray(self.offset, float)) @ np.linalg.inv(m).T


def brain_frame(brain_mask: sitk.Image) -> BrainFrame:
    """Register *brain_mask* (any grid, non-zero = brain) rigidly onto the reference brain."""
    moving = _smooth_at(sitk.Cast(brain_mask > 0, sitk.sitkFloat32), FRAME_MM)
    if not np.any(sitk.GetArrayViewFromImage(moving) > 0.5):
        raise AnalyzerError("the brain mask is empty: no frame to locate lesions in")
    fixed = reference_mask()
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=150,
                                                 relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(fixed, moving)
    # ``init`` maps reference points → exam points; lesions go the other way.
    inverse = init.GetInverse()
    m = np.asarray(inverse.GetMatrix(), float).reshape(3, 3)
    origin = np.asarray(inverse.TransformPoint((0.0, 0.0, 0.0)), float)
    return BrainFrame(tuple(float(v) for v in m.ravel()), tuple(float(v) for v in origin),  # type: ignore[arg-type]
                      float(reg.GetMetricValue()))


def location(ref_lps: np.ndarray) -> tuple[str, str]:
    """(hemisphere, region) of a point in the reference brain (LPS mm of MNI152).

    Boxes in MNI coordinates (x right→left is −x_LPS…; MNI x = −LPS x, y = −LPS y,
    z = z) — the same boxes :mod:`radnode.synth.metastasis` paints its sites
    in: cerebellum (z < −18, y < −42, |x| > 8), brainstem (|x| ≤ 9,
    −40 < y < −16, −50 < z < −12), deep grey matter (8 ≤ |x| ≤ 30,
    −30 < y < 20, −8 < z < 18); otherwise a lobe: occipital (y < −70),
    frontal (y > −20 + 0.3·z… approximated as y > −15), temporal (z < 0),
    parietal. A coarse label for the report, not an atlas lookup.
    """
    x, y, z = -float(ref_lps[0]), -float(ref_lps[1]), float(ref_lps[2])
    hemisphere = "midline" if abs(x) < MIDLINE_MM else ("right" if x > 0 else "left")
    if abs(x) <= 9 and -40 < y < -16 and -50 < z < -12:
        region = "brainstem"
    elif z < -18 and y < -42:
        region = "cerebellum"
    elif 8 <= abs(x) <= 30 and -30 < y < 20 and -8 < z < 18:
        region = "deep grey matter"
    elif y < -70:
        region = "occipital"
    elif y > -15:
        region = "frontal"
    elif z < 0:
        region = "temporal"
    else:
        region = "parietal"
    return hemisphere, region
