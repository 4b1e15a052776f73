"""Lesion-level scoring of metastasis candidates against a synthetic case's truth.

Why this exists: the product's acceptance figures are per lesion (found or
not, by size), per study (false positives) and per found lesion (centroid,
volume), not Dice. The same matching serves the training script (choosing
the candidate thresholds on validation studies of a training head) and
``bench/metastasis_model.py`` (held-out head), so both count alike.

A lesion is *detected* when a candidate's voxels overlap it or the
candidate's centroid lies within max(2 mm, its radius) of the lesion's
centroid; a candidate matching no lesion is a false positive. Size classes
use the lesion's nominal (drawn) diameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage

from radnode.analyzers.metastasis.candidates import Candidate


@dataclass(frozen=True)
class TruthLesion:
    id: int
    diameter_mm: float
    voxels: int
    centroid_zyx: tuple[float, float, float]


@dataclass
class ScoredCandidate:
    """A candidate and the truth lesions it matches (with the centroid error to each)."""

    candidate: Candidate
    matches: dict[int, float] = field(default_factory=dict)  # lesion id -> centroid distance (mm)
    overlap: dict[int, int] = field(default_factory=dict)  # lesion id -> shared voxels


@dataclass
class CaseScore:
    seed: int
    lesions: list[TruthLesion]
    candidates: list[ScoredCandidate]
    voxel_mm3: float
    seconds: float = 0.0


def truth_lesions(labels: np.ndarray, diameters: dict[int, float]) -> list[TruthLesion]:
    """Every drawn lesion that has voxels on *labels* (id map)."""
    out = []
    labels = np.asarray(labels)
    for i, d in sorted(diameters.items()):
        n = int((labels == i).sum())
        if n == 0:
            continue
        c = ndimage.center_of_mass(labels == i)
        out.append(TruthLesion(i, d, n, tuple(float(v) for v in c)))  # type: ignore[arg-type]
    return out


def score_case(seed: int, lesion_map: np.ndarray, cands: list[Candidate], labels: np.ndarray,
               diameters: dict[int, float], spacing_zyx: tuple[float, float, float]) -> CaseScore:
    """Match every candidate to the truth lesions it overlaps or whose centroid it is near."""
    sp = np.asarray(spacing_zyx, dtype=np.float64)
    truth = truth_lesions(labels, diameters)
    labels = np.asarray(labels)
    scored = []
    for c in cands:
        sc = ScoredCandidate(c)
        shared = labels[lesion_map == c.id]
        ids, counts = np.unique(shared[shared > 0], return_counts=True)
        sc.overlap = {int(i): int(n) for i, n in zip(ids, counts)}
        for les in truth:
            dist = float(np.linalg.norm((np.asarray(c.centroid_zyx) - np.asarray(les.centroid_zyx)) * sp))
            if les.id in sc.overlap or dist <= max(2.0, les.diameter_mm / 2.0):
                sc.matches[les.id] = dist
        scored.append(sc)
    return CaseScore(seed, truth, scored, float(np.prod(sp)))


Keep = Callable[[Candidate], bool]


def summarize(cases: Iterable[CaseScore], keep: Keep = lambda c: True) -> dict:
    """Sensitivity by size, false positives per study, centroid and volume errors (≥ 5 mm)."""
    cases = list(cases)
    found = {"ge5": [0, 0], "3to5": [0, 0], "lt3": [0, 0]}
    centroid, volume, fps = [], [], []
    for case in cases:
        kept = [s for s in case.candidates if keep(s.candidate)]
        fps.append(sum(1 for s in kept if not s.matches))
        for les in case.lesions:
            cls = "ge5" if les.diameter_mm >= 5.0 else "3to5" if les.diameter_mm >= 3.0 else "lt3"
            hits = [s for s in kept if les.id in s.matches]
            found[cls][1] += 1
            if not hits:
                continue
            found[cls][0] += 1
            if cls == "ge5":  # the candidate sharing most voxels (else the nearest) is its measurement
                best = max(hits, key=lambda s: (s.overlap.get(les.id, 0), -s.matches[les.id]))
                centroid.append(best.matches[les.id])
                volume.append(abs(best.candidate.voxels - les.voxels) / les.voxels)
    def rate(k: str) -> float | None:
        return None if not found[k][1] else round(found[k][0] / found[k][1], 4)
    return {
        "studies": len(cases),
        "lesions": {k: {"found": v[0], "total": v[1]} for k, v in found.items()},
        "sensitivity_ge5mm": rate("ge5"),
        "sensitivity_3to5mm": rate("3to5"),
        "sensitivity_lt3mm": rate("lt3"),
        "false_positives_per_study": round(float(np.mean(fps)), 4) if fps else None,
        "centroid_error_mm_ge5": _stats(centroid),
        "relative_volume_error_ge5": _stats(volume),
        "ge5_within_2mm": None if not centroid else round(float(np.mean(np.asarray(centroid) <= 2.0)), 4),
        "ge5_volume_within_25pct": None if not volume else round(float(np.mean(np.asarray(volume) <= 0.25)), 4),
    }


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values)
    return {"mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "p90": round(float(np.percentile(v, 90)), 4), "max": round(float(v.max()), 4)}
