"""Lesion candidates from a metastasis probability map (hysteresis, size, confidence, shape).

Why this exists: a metastasis report counts lesions, and most metastases are
small (2–10 mm), so the step from voxel probabilities to lesions decides
sensitivity and false positives far more than an arg-max does. A single
threshold either drops small, faint lesions or lets vessel fragments through;
hysteresis keeps a lesion when *some* voxel is confident (seed) and takes its
extent from a lower threshold (grow), so a confident 3 mm lesion keeps its
full volume and a low, smeared response never becomes a candidate. Long thin
components (enhancing vessels) can be rejected by their principal axes.

The numbers are a calibration of one model and come from its manifest's
``lesions:`` block (:class:`~radnode.analyzers.runtime.manifests.LesionCandidateSpec`),
validated at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import structlog
from scipy import ndimage

from radnode.analyzers.metastasis.blobs import find_blobs
from radnode.analyzers.metastasis.shape import elongation, flatness
from radnode.analyzers.runtime import bounding_box
from radnode.analyzers.runtime.manifests import LesionCandidateSpec, ModelError, ModelManifest

log = structlog.get_logger(__name__)

#: The rule the candidate step applies: the manifest's validated ``lesions:`` block.
CandidateRule = LesionCandidateSpec

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Candidate:
    """One lesion candidate; ``id`` is its value in the lesion map (1 = largest)."""

    id: int
    #: Highest P(lesion) inside the candidate.
    confidence: float
    volume_mm3: float
    voxels: int
    #: Probability-weighted centre, array index order (z, y, x), in voxels.
    centroid_zyx: tuple[float, float, float]
    #: Ratio of the two largest principal axes (mm); 1 for a voxel or a sphere.
    elongation: float


def rule_from_manifest(manifest: ModelManifest) -> CandidateRule:
    """The model's candidate rule; ``ModelError`` when its manifest has no ``lesions:`` block."""
    if manifest.lesions is None:
        raise ModelError(f"model {manifest.name} {manifest.version}: manifest.yaml has no 'lesions:' block "
                         "(seed_threshold, grow_threshold, ...); a lesion-detection analyzer needs it")
    return manifest.lesions


def brain_depth(brain: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) of each brain voxel to the mask's outside, 0 outside; computed on the brain's bounding
    box (the same numbers as the whole grid: outside the box is all outside) — about half the time."""
    brain = np.asarray(brain, dtype=bool)
    out = np.zeros(brain.shape, dtype=np.float64)
    if brain.any():
        box = bounding_box(brain, 1)
        out[box] = ndimage.distance_transform_edt(brain[box], sampling=spacing_zyx)
    return out


def find_candidates(
    probability: np.ndarray,
    brain: np.ndarray | None,
    spacing_zyx: tuple[float, float, float],
    rule: CandidateRule,
    depth_mm: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Candidate]]:
    """Lesion map (int32, ids 1..n by volume, largest first; 0 elsewhere) and the candidates.

    *probability* is P(lesion) on a (z, y, x) grid of *spacing_zyx* mm;
    voxels outside *brain* (same shape; ``None`` = everywhere) never belong
    to a candidate. A candidate is a 26-connected component of voxels with
    P ≥ ``grow_threshold`` holding at least one voxel with P ≥
    ``seed_threshold``; it is kept when its volume reaches ``min_volume_mm3``,
    its confidence (max P) reaches ``min_confidence`` and, when
    ``max_elongation`` is set and it has at least ``elongation_min_volume_mm3``,
    its elongation does not exceed that (and likewise its flatness
    ``max_flatness``); with ``min_depth_mm`` it must reach that depth inside
    *brain* (distance to the mask's outside; *depth_mm*, when given, is that
    distance map already computed — a search over many rules on one study
    would otherwise compute it per rule). Equal volumes sort by confidence.

    With ``rule.small`` and the z-scored T1c *image* (same grid), small
    lesions the model missed are added from the image itself
    (:mod:`radnode.analyzers.metastasis.blobs`), away from the model's
    candidates and subject to the same depth test.
    """
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim != 3:
        raise ValueError(f"probability must be a (z, y, x) volume, got shape {list(prob.shape)}")
    if len(spacing_zyx) != 3 or not all(s > 0 for s in spacing_zyx):
        raise ValueError(f"spacing_zyx must be three positive numbers of mm, got {spacing_zyx}")
    if brain is not None:
        brain = np.asarray(brain, dtype=bool)
        if brain.shape != prob.shape:
            raise ValueError(f"brain mask {list(brain.shape)} and probability {list(prob.shape)} differ in shape")
        prob = np.where(brain, prob, np.float32(0.0))
    voxel_mm3 = float(np.prod(spacing_zyx))
    grow = prob >= rule.grow_threshold
    comps, n = ndimage.label(grow, structure=_STRUCTURE_26)
    out_map = np.zeros(prob.shape, dtype=np.int32)
    small = rule.small if image is not None else None
    if n == 0 and small is None:
        return out_map, []
    ids = np.arange(1, n + 1)
    peak = np.asarray(ndimage.maximum(prob, comps, ids), dtype=np.float64)
    size = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    keep = (peak >= rule.seed_threshold) & (peak >= rule.min_confidence) & (size * voxel_mm3 >= rule.min_volume_mm3)
    objects = ndimage.find_objects(comps)
    depth = None
    if rule.min_depth_mm is not None and brain is not None and (keep.any() or small is not None):
        depth = depth_mm if depth_mm is not None else brain_depth(brain, spacing_zyx)
    kept: list[tuple[int, float, int, tuple[float, float, float], float]] = []
    dropped_shape = 0
    for i in np.flatnonzero(keep):
        label = int(i) + 1
        sl = objects[i]
        local = comps[sl] == label
        pts = np.argwhere(local) + np.array([s.start for s in sl])
        elong = elongation(pts, spacing_zyx)
        vol = float(size[i]) * voxel_mm3
        if (rule.max_elongation is not None and vol >= rule.elongation_min_volume_mm3
                and elong > rule.max_elongation):
            dropped_shape += 1
            continue
        if (rule.max_flatness is not None and vol >= rule.elongation_min_volume_mm3
                and flatness(pts, spacing_zyx) > rule.max_flatness):
            dropped_shape += 1
            continue
        if depth is not None and float(depth[sl][local].max()) < rule.min_depth_mm:  # type: ignore[operator]
            dropped_shape += 1
            continue
        w = prob[sl][local].astype(np.float64)
        centre = tuple(float(c) for c in (pts * w[:, None]).sum(axis=0) / w.sum())
        kept.append((label, float(peak[i]), int(size[i]), centre, elong))  # type: ignore[arg-type]
    blob_voxels: dict[int, np.ndarray] = {}
    if small is not None:
        lut0 = np.zeros(n + 1, dtype=bool)
        lut0[[k[0] for k in kept]] = True
        blobs = find_blobs(np.asarray(image), brain if brain is not None else np.ones(prob.shape, bool), spacing_zyx,
                           small, min_depth_mm=rule.min_depth_mm, depth_mm=depth, exclude=lut0[comps])
        for k, b in enumerate(blobs, start=n + 1):
            blob_voxels[k] = b.voxels
            centre = tuple(float(c) for c in b.voxels.mean(axis=0))
            kept.append((k, b.confidence(small), len(b.voxels), centre,  # type: ignore[arg-type]
                         elongation(b.voxels, spacing_zyx)))
    kept.sort(key=lambda k: (-k[2], -k[1]))
    lut = np.zeros(n + 1, dtype=np.int32)
    cands: list[Candidate] = []
    for new_id, (label, conf, vox, centre, elong) in enumerate(kept, start=1):
        if label <= n:
            lut[label] = new_id
        cands.append(Candidate(new_id, conf, vox * voxel_mm3, vox, centre, elong))
    if kept:
        out_map = lut[comps]
        for new_id, (label, *_rest) in enumerate(kept, start=1):
            if label in blob_voxels:
                out_map[tuple(blob_voxels[label].T)] = new_id
    log.debug("metastasis.candidates", components=n, kept=len(cands), dropped_shape=dropped_shape,
              small=len(blob_voxels))
    return out_map, cands
