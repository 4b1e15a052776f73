"""Small metastases as bright round blobs on the T1c: a second detector beside the model.

Why this exists: the demo models (0.1.0–0.3.0) find lesions of 5 mm and more
but give lesions of ~3 mm, 15–25 voxels at 1 mm, P(lesion) near 0, even on the
cases they were trained on: look-alike vessels (small, bright) outnumber them
and a tiny network does not learn the difference. What tells them apart is
shape in three dimensions: a metastasis is a ball, a vessel a tube, dura a
plate. The Hessian of the smoothed image says that directly (the classical
blob filters of small-lesion CAD): at a bright ball all three eigenvalues are
strongly negative; along a tube one is near zero, across a plate two are. So
the blobness here is −σ²·λ₃ (λ₃ the eigenvalue nearest zero, scale-normalised)
where all three are negative, at the scales of 2–5 mm lesions.

A blob becomes a candidate when its peak reaches ``min_blobness`` and its
smoothed intensity ``min_intensity`` (z-score in the brain), lies at least
``min_depth_mm`` inside the brain mask (the rule's depth test: dura and
surface vessels) and away from every model candidate (``exclusion_mm``).
Its extent is the half-maximum region around the peak (between the peak's
smoothed intensity and the local background), at most ``max_radius_mm``;
that region must be round (``max_elongation``: a vessel's bend passes the
Hessian test but stretches along the vessel) and small (``max_volume_mm3``).
Its confidence is ``min(0.99, 0.5 · blobness / min_blobness)``: 0.5 at the
threshold — a blob is reported as a lesion on weaker evidence than the
model's, and the number says so.

The thresholds are a calibration chosen on end-to-end studies of the
training heads (``bench/metastasis_rule.py``) and live in the manifest's
``lesions.small`` block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import structlog
from scipy import ndimage

from radnode.analyzers.metastasis.shape import elongation
from radnode.analyzers.runtime import bounding_box
from radnode.analyzers.runtime.manifests import SmallLesionSpec

log = structlog.get_logger(__name__)

#: Gaussian (mm) of the image a blob's extent is read on.
EXTENT_SIGMA_MM = 0.5


@dataclass(frozen=True)
class Blob:
    """One small-lesion candidate found on the image."""

    #: Peak position (z, y, x) in voxels.
    peak_zyx: tuple[int, int, int]
    blobness: float
    #: Smoothed intensity at the peak (z-score).
    intensity: float
    #: Voxels of its half-maximum region, (n, 3) indices (z, y, x).
    voxels: np.ndarray

    def confidence(self, spec: SmallLesionSpec) -> float:
        return float(min(0.99, 0.5 * self.blobness / spec.min_blobness))


def blobness(image: np.ndarray, sigma_mm: float, spacing_zyx: tuple[float, float, float],
             where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed image, blobness) at one scale; blobness is computed only at *where* (0 elsewhere)."""
    sig = [sigma_mm / s for s in spacing_zyx]
    g = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sig)
    out = np.zeros(g.shape, dtype=np.float32)
    idx = np.flatnonzero(where)
    if not len(idx):
        return g, out
    first = np.gradient(g, *spacing_zyx)
    hess = np.empty((len(idx), 3, 3), dtype=np.float32)
    for a in range(3):
        second = np.gradient(first[a], *spacing_zyx)
        for b in range(a, 3):
            v = second[b].ravel()[idx]
            hess[:, a, b] = v
            hess[:, b, a] = v
        del second
    ev = np.linalg.eigvalsh(hess)  # ascending: ev[:, 2] is the one nearest zero when all are negative
    out.ravel()[idx] = np.where(ev[:, 2] < 0, -ev[:, 2] * sigma_mm * sigma_mm, 0.0)
    return g, out


def find_blobs(image: np.ndarray, brain: np.ndarray, spacing_zyx: tuple[float, float, float],
               spec: SmallLesionSpec, *, min_depth_mm: float | None = None, depth_mm: np.ndarray | None = None,
               exclude: np.ndarray | None = None) -> list[Blob]:
    """Small bright round blobs of the z-scored *image* inside *brain*, strongest first, not overlapping.

    *exclude* (bool, same shape) marks the model's candidates; a blob must
    lie ``spec.exclusion_mm`` away from them. *depth_mm* is the brain mask's
    distance map when the caller has it.
    """
    brain_full = np.asarray(brain, dtype=bool)
    if not brain_full.any():
        return []
    # Work in the brain's bounding box (plus room for the smoothing and the background shell).
    margin = int(np.ceil((max(spec.scales_mm) * 3 + spec.max_radius_mm + 4.0) / min(spacing_zyx)))
    crop = bounding_box(brain_full, margin)
    origin = np.array([s.start for s in crop])
    img = np.asarray(image, dtype=np.float32)[crop]
    brain = brain_full[crop]
    allowed = brain.copy()
    if min_depth_mm is not None:
        depth = (np.asarray(depth_mm)[crop] if depth_mm is not None
                 else ndimage.distance_transform_edt(brain, sampling=spacing_zyx))
        allowed &= depth >= min_depth_mm
    ex = np.asarray(exclude, dtype=bool)[crop] if exclude is not None and np.any(exclude) else None
    # The Hessian is needed only where the image is bright enough to pass (smoothing at the smallest
    # scale lowers a small blob's peak the least, so that scale decides where to look).
    smooth_min = ndimage.gaussian_filter(img, [min(spec.scales_mm) / s for s in spacing_zyx])
    #: The extent is read on a lightly smoothed image (noise) rather than at the detection scale (which
    #: would widen a 3-mm ball's half-maximum region by its own blur).
    fine = ndimage.gaussian_filter(img, [EXTENT_SIGMA_MM / s for s in spacing_zyx])
    where = allowed & (smooth_min >= spec.min_intensity - 0.5)
    best = np.zeros(img.shape, dtype=np.float32)
    for sigma in spec.scales_mm:
        _, b = blobness(img, sigma, spacing_zyx, where)
        np.maximum(best, b, out=best)
    peaks = (best >= spec.min_blobness) & (best == ndimage.maximum_filter(best, size=3)) & where \
        & (smooth_min >= spec.min_intensity)
    order = np.argwhere(peaks)
    order = order[np.argsort(-best[tuple(order.T)], kind="stable")]
    sp = np.asarray(spacing_zyx, dtype=np.float64)
    voxel_mm3 = float(np.prod(sp))
    reach = np.ceil((spec.max_radius_mm + 3.0) / sp).astype(int)
    taken = np.zeros(img.shape, dtype=bool)
    blobs: list[Blob] = []
    for pk in order:
        pk_t = tuple(int(v) for v in pk)
        if taken[pk_t]:
            continue
        box = tuple(slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(pk, reach, img.shape))
        off = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) - c for s, c in zip(box, pk)], indexing="ij"), -1)
        dist = np.linalg.norm(off * sp, axis=-1)
        if ex is not None and (ex[box] & (dist <= spec.exclusion_mm)).any():
            continue  # on or beside a model candidate (its rim, a fragment of it)
        inner = dist <= spec.max_radius_mm
        shell = (dist > spec.max_radius_mm + 1.0) & brain[box]
        near_peak = dist <= 1.0 + 1e-6
        peak_val = float(fine[box][near_peak].max())
        bg = float(np.median(fine[box][shell])) if shell.any() else 0.0
        level = bg + 0.5 * (peak_val - bg)
        region = inner & (fine[box] >= level) & brain[box] & ~taken[box]
        comps, _ = ndimage.label(region)
        centre = tuple(int(c - s.start) for c, s in zip(pk, box))
        lab = comps[centre]
        if lab == 0:  # the smoothed peak sits beside the brightest voxel: take the component nearest it
            labs = comps[near_peak & (comps > 0)]
            if not len(labs):
                continue
            lab = int(np.bincount(labs).argmax())
        local = comps == lab
        vox = np.argwhere(local) + np.array([s.start for s in box])
        taken[tuple(vox.T)] = True
        if spec.max_volume_mm3 is not None and len(vox) * voxel_mm3 > spec.max_volume_mm3:
            continue
        if spec.max_elongation is not None and elongation(vox, spacing_zyx) > spec.max_elongation:
            continue
        blobs.append(Blob(tuple(int(v) for v in pk + origin), float(best[pk_t]),  # type: ignore[arg-type]
                          float(smooth_min[pk_t]), vox + origin))
    log.debug("metastasis.blobs", peaks=len(order), kept=len(blobs))
    return blobs
