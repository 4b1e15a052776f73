"""Lesion by lesion against the patient's prior exam: matched, new, resolved; each with a Tracking UID.

The job store keeps every finished job's measurement rows; the worker reads
this patient's earlier metastasis rows back (:data:`PRIOR_ROW_NAMES`, oldest
exam first) and the analyzer's ``follow_up`` calls :func:`annotate`.

Matching: each lesion's centroid is kept in the brain frame (MNI152
coordinates after a rigid registration of that exam's brain mask, see
:mod:`radnode.analyzers.metastasis.frame`), so positions of two exams are
comparable whatever the head's position. Current and prior lesions are paired
by a minimum-cost assignment on centroid distance (Hungarian, scipy), a pair
allowed only within :func:`match_radius_mm`; a matched lesion keeps the
prior's track number and therefore its Tracking UID, an unmatched current
lesion is *new* (next free number), an unmatched prior lesion is *resolved*.
A matched lesion is enlarging / stable / shrinking by its longest diameter
(:func:`radnode.model.lesions.lesion_status`: RANO-BM's +20 % / −30 %, with
at least 2 mm of change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from radnode.analyzers.base import AnalyzerResult, Measurement
from radnode.analyzers.metastasis.frame import location
from radnode.analyzers.glioma.followup import fmt_date, tracking_uid
from radnode.model.lesion_rows import COUNT, DIAMETER, TOTAL_VOLUME, TRACK, TREND_KEYS, VOLUME, lesion_row, lesion_rows, status_of
from radnode.model.lesions import (
    Lesion,
    LesionChange,
    LesionComparison,
    LesionStatus,
    ResolvedLesion,
    lesion_status,
    pct_change,
)

#: Most lesions an exam keeps tracking rows for (more are reported, not tracked).
MAX_TRACKED = 30
#: Smallest matching radius (mm): registration error (~2 mm) plus a small lesion's centroid noise.
MATCH_MIN_MM = 7.0
#: Rows of the brain-frame centroid this module adds to :mod:`radnode.model.lesion_rows`' per-lesion rows.
FRAME_KEYS = ("frame_x", "frame_y", "frame_z")
CENTROID_KEYS = ("centroid_x", "centroid_y", "centroid_z")
#: Rows the worker reads back from this patient's earlier exams (``AnalyzerSpec.prior_rows``).
PRIOR_ROW_NAMES: tuple[str, ...] = (
    *TREND_KEYS,
    *(lesion_row(n, k) for n in range(1, MAX_TRACKED + 1) for k in (TRACK, DIAMETER, VOLUME, *FRAME_KEYS)),
)


@dataclass(frozen=True)
class PriorMet:
    """What the job store kept of one lesion of an earlier exam."""

    track: int
    frame_mm: tuple[float, float, float]
    diameter_mm: float
    volume_ml: float


@dataclass(frozen=True)
class PriorMetExam:
    study_date: str  # YYYY-MM-DD
    lesions: tuple[PriorMet, ...]
    count: int
    total_volume_ml: float


def prior_exams(rows: Sequence[tuple[str, Mapping[str, float]]]) -> list[PriorMetExam]:
    """Job-store rows of earlier exams (oldest first) → prior exams with their tracked lesions."""
    out = []
    for date, values in rows:
        lesions = []
        for n in range(1, MAX_TRACKED + 1):
            if lesion_row(n, "frame_x") not in values:
                continue
            lesions.append(PriorMet(
                track=int(values.get(lesion_row(n, TRACK), n)),
                frame_mm=tuple(float(values[lesion_row(n, k)]) for k in FRAME_KEYS),  # type: ignore[arg-type]
                diameter_mm=float(values.get(lesion_row(n, DIAMETER), 0.0)),
                volume_ml=float(values.get(lesion_row(n, VOLUME), 0.0)),
            ))
        out.append(PriorMetExam(fmt_date(date), tuple(lesions), int(values.get(COUNT, len(lesions))),
                                float(values.get(TOTAL_VOLUME, sum(p.volume_ml for p in lesions)))))
    return out


def match_radius_mm(diameter_a: float, diameter_b: float) -> float:
    """How far apart two centroids may be and still be one lesion: a small lesion moves little, a large one's
    centroid can shift by half its size as it grows or shrinks unevenly."""
    return max(MATCH_MIN_MM, 0.5 * max(diameter_a, diameter_b))


def match(lesions: Sequence[Lesion], prior: Sequence[PriorMet]) -> dict[int, PriorMet]:
    """Current lesion index → matched prior lesion (minimum total distance, each within its radius)."""
    cur = [les for les in lesions if les.brain_frame_mm is not None]
    if not cur or not prior:
        return {}
    a = np.asarray([les.brain_frame_mm for les in cur], float)
    b = np.asarray([p.frame_mm for p in prior], float)
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    radius = np.asarray([[match_radius_mm(les.max_axial_diameter_mm, p.diameter_mm) for p in prior] for les in cur])
    big = 1e6
    cost = np.where(dist <= radius, dist, big)
    rows, cols = linear_sum_assignment(cost)
    return {cur[r].index: prior[c] for r, c in zip(rows, cols) if cost[r, c] < big}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def compare(lesions: Sequence[Lesion], priors: Sequence[PriorMetExam], patient_key: str, application: str
            ) -> tuple[dict[int, tuple[int, str]], LesionComparison | None]:
    """Tracks (index → (track, Tracking UID)) and the comparison with the latest prior (None without one)."""
    if not priors:
        return {les.index: (les.index, tracking_uid(patient_key, application, les.index)) for les in lesions}, None
    prior = priors[-1]
    matched = match(lesions, prior.lesions)
    next_track = max([p.track for e in priors for p in e.lesions], default=0) + 1
    tracks: dict[int, tuple[int, str]] = {}
    changes: dict[int, LesionChange] = {}
    for les in lesions:
        p = matched.get(les.index)
        if p is None:
            track, change = next_track, LesionChange(LesionStatus.NEW)
            next_track += 1
        else:
            track = p.track
            change = LesionChange(
                lesion_status(les.max_axial_diameter_mm, p.diameter_mm),
                prior_diameter_mm=p.diameter_mm,
                prior_volume_ml=p.volume_ml,
                diameter_change_pct=_round(pct_change(les.max_axial_diameter_mm, p.diameter_mm)),
                volume_change_pct=_round(pct_change(les.volumes_ml["whole_tumor"], p.volume_ml)),
            )
        tracks[les.index] = (track, tracking_uid(patient_key, application, track))
        changes[les.index] = change
    used = {p.track for p in matched.values()}
    resolved = tuple(
        ResolvedLesion(p.track, tracking_uid(patient_key, application, p.track), p.diameter_mm, p.volume_ml,
                       _location_text(p.frame_mm))
        for p in prior.lesions if p.track not in used
    )
    return tracks, LesionComparison(prior.study_date, prior.count, prior.total_volume_ml, changes, resolved)


def _location_text(frame_mm: tuple[float, float, float]) -> str:
    hemisphere, region = location(np.asarray(frame_mm))
    return region if hemisphere == "midline" else f"{hemisphere} {region}"


def frame_rows(lesions: Sequence[Lesion]) -> list[Measurement]:
    """Each tracked lesion's brain-frame centroid (``met_<k>_frame_x|y|z``, mm: what the next exam matches on)
    and its centroid in this exam's patient coordinates (``met_<k>_centroid_x|y|z``, LPS mm: where to look)."""
    rows = []
    for les in lesions:
        if les.index > MAX_TRACKED:
            continue
        seg = f"Lesion {les.index}"
        rows += [Measurement(lesion_row(les.index, k), float(v), "mm", None, seg) for k, v in zip(CENTROID_KEYS, les.centroid_lps_mm)]
        if les.brain_frame_mm is not None:
            rows += [Measurement(lesion_row(les.index, k), float(v), "mm", None, seg) for k, v in zip(FRAME_KEYS, les.brain_frame_mm)]
    return rows


def result_rows(lesions: Sequence[Lesion], tracks: Mapping[int, tuple[int, str]],
                comparison: LesionComparison | None) -> list[Measurement]:
    """Every row a metastasis result stores: the shared lesion rows and the frame rows."""
    return lesion_rows(lesions, tracks, comparison) + frame_rows(lesions)


def lesion_json(les: Lesion, tracks: Mapping[int, tuple[int, str]], comparison: LesionComparison | None) -> dict:
    """One lesion as ``radnode analyze metastasis --json`` prints it."""
    status = status_of(les, comparison)
    item = {
        "id": les.index,
        "track": tracks[les.index][0],
        "centroid_lps_mm": list(les.centroid_lps_mm),
        "longest_diameter_mm": les.max_axial_diameter_mm,
        "volume_ml": round(les.volumes_ml["whole_tumor"], 4),
        "location": les.location,
        "confidence": les.confidence,
        "tracking_uid": tracks[les.index][1],
        "status": status.value,
    }
    if comparison is not None and les.index in comparison.changes:
        ch = comparison.changes[les.index]
        if ch.prior_diameter_mm is not None:
            item.update(prior_diameter_mm=ch.prior_diameter_mm, prior_volume_ml=ch.prior_volume_ml,
                        diameter_change_pct=ch.diameter_change_pct, volume_change_pct=ch.volume_change_pct)
    return item


def summary(lesions: Sequence[Lesion], tracks: Mapping[int, tuple[int, str]], comparison: LesionComparison | None) -> dict:
    """The application's JSON summary (``extra['summary']``)."""
    return {
        "application": "metastasis",
        "count": len(lesions),
        "total_volume_ml": round(sum(les.volumes_ml["whole_tumor"] for les in lesions), 4),
        "lesions": [lesion_json(les, tracks, comparison) for les in lesions],
        "resolved": [
            {"track": r.track, "tracking_uid": r.tracking_uid, "prior_diameter_mm": r.prior_diameter_mm,
             "prior_volume_ml": r.prior_volume_ml, "location": r.location, "status": "resolved"}
            for r in (comparison.resolved if comparison is not None else ())
        ],
        "prior": None if comparison is None else {"study_date": comparison.prior_date, "count": comparison.prior_count,
                                                  "total_volume_ml": comparison.prior_total_volume_ml},
    }


def annotate(result: AnalyzerResult, prior_rows: Sequence[tuple[str, Mapping[str, float]]], patient_key: str,
             application: str) -> list[Measurement]:
    """Replace the exam-only tracking in *result* with the comparison against the priors; returns rows added/replaced."""
    lesions = result.extra.get("lesions")
    if lesions is None:
        return []
    tracks, comparison = compare(lesions, prior_exams(prior_rows), patient_key, application)
    result.extra["tracking"] = tracks
    result.extra["lesion_comparison"] = comparison
    result.extra["summary"] = {**result.extra.get("summary", {}), **summary(lesions, tracks, comparison)}
    keep = [m for m in result.measurements if not m.name.startswith("met_")]
    rows = result_rows(lesions, tracks, comparison)
    result.measurements[:] = keep + rows
    if comparison is not None:
        new = sum(c.status is LesionStatus.NEW for c in comparison.changes.values())
        if new:
            result.flags.append(f"{new} new lesion{'s' if new > 1 else ''} since {comparison.prior_date}")
    return rows
