"""The current exam against the patient's earlier exams in radnode.

The job store keeps every finished job's measurement rows (see
:mod:`radnode.analyzers.glioma.measure` for their names); for a new job of
the same patient and application the worker reads the earlier rows
back (:data:`PRIOR_ROW_NAMES`), and this module turns them into
:class:`~radnode.model.lesions.PriorExam` objects, matches lesions, assigns
tracking numbers and applies the RANO product rule.

Lesion matching across exams: two exams of one patient are positioned
differently in the scanner, so centroids in patient coordinates are not
comparable; each lesion's centroid is taken relative to the centroid of the
brain mask of its own exam, and a current lesion matches the nearest prior
lesion within :data:`MATCH_MM` (greedy, closest pairs first). A matched
lesion keeps the prior's track number, and so its SR Tracking UID
(:func:`tracking_uid`); an unmatched one gets the next free number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from radnode.analyzers.base import AnalyzerResult, Measurement
from radnode.model.lesions import (
    FollowUp,
    Lesion,
    PriorExam,
    PriorLesion,
    RanoCategory,
    pct_change,
    rano_category,
)
from radnode.uids import derive_uid

#: How far (mm, brain-relative centroids) a lesion may move between exams and still be the same lesion.
MATCH_MM = 20.0
#: Most lesions a job keeps rows for (more are reported, not tracked).
MAX_TRACKED = 20

_LESION_KEYS = ("whole_tumor", "enhancing", "max_axial_diameter", "offset_x", "offset_y", "offset_z",
                "rano_longest", "rano_perpendicular", "rano_product", "track")
#: Row names the worker and the writers ask the job store for, per prior exam (``AnalyzerSpec.prior_rows``).
PRIOR_ROW_NAMES: tuple[str, ...] = (
    "whole_tumor", "tumor_core", "enhancing", "necrotic", "edema", "max_axial_diameter", "lesion_count",
    "rano_sum_of_products", "rano_measurable_lesions",
    *(f"lesion_{n}_{k}" for n in range(1, MAX_TRACKED + 1) for k in _LESION_KEYS),
)


def fmt_date(value: object) -> str:
    """``YYYYMMDD`` (DICOM DA) or ``YYYY-MM-DD`` → ``YYYY-MM-DD``; one format everywhere."""
    text = str(value or "").strip()
    if re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def prior_exams(rows: Sequence[tuple[str, Mapping[str, float]]]) -> list[PriorExam]:
    """Job-store rows of earlier exams (oldest first) → prior exams with lesions."""
    out = []
    for date, values in rows:
        lesions = []
        for n in range(1, MAX_TRACKED + 1):
            if f"lesion_{n}_offset_x" not in values:
                continue
            lesions.append(PriorLesion(
                track=int(values.get(f"lesion_{n}_track", n)),
                offset_from_brain_mm=tuple(float(values[f"lesion_{n}_offset_{a}"]) for a in "xyz"),  # type: ignore[arg-type]
                product_mm2=float(values.get(f"lesion_{n}_rano_product", 0.0)),
            ))
        volumes = {k: float(values[k]) for k in ("whole_tumor", "tumor_core", "enhancing", "necrotic", "edema") if k in values}
        out.append(PriorExam(fmt_date(date), float(values.get("rano_sum_of_products", 0.0)), tuple(lesions), volumes,
                             has_rano="rano_sum_of_products" in values))
    return out


def match_tracks(lesions: Sequence[Lesion], prior: PriorExam | None, all_priors: Sequence[PriorExam] = ()) -> tuple[dict[int, int], tuple[int, ...]]:
    """Track number per current lesion index, and the indices of new lesions."""
    if prior is None:
        return {les.index: les.index for les in lesions}, ()
    pairs = []
    for les in lesions:
        for p in prior.lesions:
            d = float(np.linalg.norm(np.subtract(les.offset_from_brain_mm, p.offset_from_brain_mm)))
            if d <= MATCH_MM:
                pairs.append((d, les.index, p.track))
    tracks: dict[int, int] = {}
    used: set[int] = set()
    for _, index, track in sorted(pairs):
        if index not in tracks and track not in used:
            tracks[index] = track
            used.add(track)
    next_track = max([p.track for e in all_priors or [prior] for p in e.lesions], default=0) + 1
    new = []
    for les in lesions:
        if les.index not in tracks:
            tracks[les.index] = next_track
            next_track += 1
            new.append(les.index)
    return tracks, tuple(new)


def follow_up(lesions: Sequence[Lesion], current_sum_mm2: float, priors: Sequence[PriorExam]) -> FollowUp | None:
    """The comparison with the latest prior (None without priors that have RANO rows)."""
    priors = [p for p in priors if p.has_rano]  # volume-only exams cannot give a product-rule category
    if not priors:
        return None
    prior = priors[-1]
    tracks, new = match_tracks(lesions, prior, priors)
    new_measurable = any(les.index in new and les.bidimensional is not None and les.bidimensional.measurable
                         for les in lesions) and bool(prior.lesions)
    enhancing = any(les.volumes_ml.get("enhancing", 0.0) > 0 for les in lesions)
    category, reason = rano_category(current_sum_mm2, list(priors), new_measurable, enhancing)
    nadir = min(p.sum_of_products_mm2 for p in priors)
    baseline = priors[0]
    return FollowUp(
        prior_date=prior.study_date,
        prior_sum_mm2=prior.sum_of_products_mm2,
        current_sum_mm2=current_sum_mm2,
        change_vs_prior_pct=_round(pct_change(current_sum_mm2, prior.sum_of_products_mm2)),
        nadir_sum_mm2=nadir,
        change_vs_nadir_pct=_round(pct_change(current_sum_mm2, nadir)),
        baseline_date=baseline.study_date,
        baseline_sum_mm2=baseline.sum_of_products_mm2,
        change_vs_baseline_pct=_round(pct_change(current_sum_mm2, baseline.sum_of_products_mm2)),
        category=category,
        reason=reason,
        tracks=tracks,
        new_lesions=new,
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def tracking_uid(patient_key: str, application: str, track: int) -> str:
    """The Tracking UID of a patient's lesion *track*: the same in every exam's SR."""
    return derive_uid("radnode-lesion-track", patient_key, application, str(int(track)))


#: Ordinal stored in the job store's ``rano_category`` row (its code says which).
CATEGORY_ORDINAL = {RanoCategory.CR: 0.0, RanoCategory.PR: 1.0, RanoCategory.SD: 2.0, RanoCategory.PD: 3.0}
#: Private coding scheme (declared in the SR) for concepts no standard names.
LOCAL_SCHEME = "99RADNODE"


def annotate(result: AnalyzerResult, prior_rows: Sequence[tuple[str, Mapping[str, float]]], patient_key: str,
             application: str) -> list[Measurement]:
    """Add tracking and the follow-up to *result* (``extra`` and new rows); returns the new rows.

    Called through ``GliomaAnalyzer.follow_up`` by the worker, which knows the
    patient's priors; does nothing for a result without lesions.
    """
    lesions = result.extra.get("lesions")
    if lesions is None:
        return []
    from radnode.analyzers.glioma.measure import sum_of_products

    priors = prior_exams(prior_rows)
    fu = follow_up(lesions, sum_of_products(lesions), priors)
    tracks = fu.tracks if fu is not None else {les.index: les.index for les in lesions}
    result.extra["follow_up"] = fu
    result.extra["tracking"] = {i: (t, tracking_uid(patient_key, application, t)) for i, t in tracks.items()}
    rows = [Measurement(f"lesion_{i}_track", float(t), "1", None, f"Lesion {i}") for i, t in sorted(tracks.items())
            if i <= MAX_TRACKED]
    if fu is not None:
        rows.append(Measurement("rano_prior_sum_of_products", fu.prior_sum_mm2, "mm2", None, None))
        if fu.change_vs_prior_pct is not None:
            rows.append(Measurement("rano_change_vs_prior_pct", fu.change_vs_prior_pct, "%", None, None))
        if fu.change_vs_nadir_pct is not None:
            rows.append(Measurement("rano_change_vs_nadir_pct", fu.change_vs_nadir_pct, "%", None, None))
        rows.append(Measurement("rano_category", CATEGORY_ORDINAL[fu.category], "1",
                                (fu.category.value, LOCAL_SCHEME, fu.category.meaning), None))
    result.measurements.extend(rows)
    return rows
