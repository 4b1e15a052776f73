"""Measurement rows of a lesion-by-lesion (metastasis) result: the names the
job store keeps, and the one function that builds them.

Why a neutral module: the metastasis analyzer emits these rows, the worker
stores them, the web job page and the next exam's writers read them back.
Defining the names once, below all of them, keeps the three in step.

Row names (``k`` = the lesion's index in *this* exam, 1 = largest;
``t`` = the track number a lesion keeps across the patient's exams):

=================================  =====  ==========================================================
row                                unit   value (code)
=================================  =====  ==========================================================
``met_lesion_count``               1      lesions detected now
``met_total_volume``               mL     sum of the lesions' volumes
``met_sum_diameters``              mm     sum of longest diameters of measurable lesions (≥ 10 mm)
``met_prior_lesion_count``         1      lesions of the prior exam (with a comparison only)
``met_prior_total_volume``         mL     their total volume (with a comparison only)
``met_<k>_track``                  1      track number ``t``
``met_<k>_diameter``               mm     RANO-BM longest diameter
``met_<k>_volume``                 mL     volume
``met_<k>_confidence``             1      detection confidence 0–1 (absent when the model gives none)
``met_<k>_status``                 1      :data:`STATUS_ORDINAL`; code = :data:`STATUS_CODES` (always)
``met_<k>_location``               1      :data:`HEMISPHERE_ORDINAL`; code = (site code, SCT, location text)
``met_<k>_diameter_change_pct``    %      against the matched prior lesion (matched lesions only)
``met_<k>_volume_change_pct``      %      against the matched prior lesion (matched lesions only)
``met_resolved_<t>_status``        1      resolved (coded like the others)
``met_resolved_<t>_diameter``      mm     the prior exam's longest diameter of the resolved lesion
``met_resolved_<t>_volume``        mL     its prior volume
``met_resolved_<t>_location``      1      like ``met_<k>_location`` (site SCT 12738006 Brain if unknown)
=================================  =====  ==========================================================

Rows carry ``segment="Lesion <k>"`` (current lesions) so the SR and the PDF
never repeat them as loose measurements.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from radnode.model.analysis import Measurement, Segment
from radnode.model.lesions import (
    RANO_BM_MEASURABLE_MM,
    Lesion,
    LesionComparison,
    LesionStatus,
)

PREFIX = "met_"
COUNT = "met_lesion_count"
TOTAL_VOLUME = "met_total_volume"
SUM_DIAMETERS = "met_sum_diameters"
PRIOR_COUNT = "met_prior_lesion_count"
PRIOR_TOTAL_VOLUME = "met_prior_total_volume"
#: Per-lesion suffixes (``met_<k>_<suffix>``).
TRACK, DIAMETER, VOLUME, CONFIDENCE, STATUS, LOCATION = "track", "diameter", "volume", "confidence", "status", "location"
DIAMETER_CHANGE, VOLUME_CHANGE = "diameter_change_pct", "volume_change_pct"

#: What the trend plot follows over the patient's exams (and what ``AnalyzerSpec.prior_rows`` must name).
TREND_KEYS = (COUNT, TOTAL_VOLUME)
TREND_LABELS = {COUNT: "Lesion count", TOTAL_VOLUME: "Total volume (mL)"}

#: Lesion status → (code value, scheme, meaning): SNOMED CT temporal-change values (CID 6002 / 6134) where
#: they exist, SCT 413322009 for resolved (CID 3770), DCM 121079 "Baseline" (rows only: the SR writes no
#: change for a lesion that was not compared with anything).
STATUS_CODES: dict[LesionStatus, tuple[str, str, str]] = {
    LesionStatus.BASELINE: ("121079", "DCM", "Baseline"),
    LesionStatus.NEW: ("129721008", "SCT", "New finding"),
    LesionStatus.ENLARGING: ("15454001", "SCT", "Increase in size"),
    LesionStatus.STABLE: ("129723006", "SCT", "No significant changes in the finding"),
    LesionStatus.SHRINKING: ("19776001", "SCT", "Decrease in size"),
    LesionStatus.RESOLVED: ("413322009", "SCT", "Problem resolved"),
}
STATUS_ORDINAL: dict[LesionStatus, int] = {s: i for i, s in enumerate(LesionStatus)}
HEMISPHERE_ORDINAL = {"left": -1, "midline": 0, "right": 1}

#: Coarse regions (glioma's lobes, metastasis regions) → SNOMED CT body structure (code, meaning).
REGION_SITES: dict[str, tuple[str, str]] = {
    "frontal": ("83251001", "Frontal lobe"),
    "parietal": ("16630005", "Parietal lobe"),
    "temporal": ("78277001", "Temporal lobe"),
    "occipital": ("31065004", "Occipital lobe"),
    "posterior fossa": ("113305005", "Cerebellum"),
    "cerebellum": ("113305005", "Cerebellum"),
    "brainstem": ("119238007", "Brain Stem"),
    # Deep grey matter (basal ganglia and thalami): SCT 389081007 is grey matter of the CNS; no single
    # verified "deep grey nuclei" code is in the offline DICOM tables, so the site is that structure.
    "deep grey matter": ("389081007", "Gray Matter"),
}
BRAIN_SITE = ("12738006", "Brain")
#: SNOMED CT segmented property type of a metastasis segment (SEG) and finding type (SR): the morphology
#: "Neoplasm, metastatic" (94225005 "Metastatic malignant neoplasm to brain" is not in the offline DICOM tables).
METASTASIS_TYPE = ("14799000", "Neoplasm, metastatic")
METASTASIS_CATEGORY = ("49755003", "Morphologically Altered Structure")

_STATUS_BY_CODE = {code[0]: status for status, code in STATUS_CODES.items()}
_ROW = re.compile(r"^met_(\d+)_(.+)$")
_RESOLVED_ROW = re.compile(r"^met_resolved_(\d+)_(.+)$")


def metastasis_segments(count: int) -> tuple[Segment, ...]:
    """The label map's segments for lesion ids 1..*count*: "Lesion <k>", typed as metastases."""
    return tuple(Segment(k, f"Lesion {k}", METASTASIS_TYPE, METASTASIS_CATEGORY) for k in range(1, int(count) + 1))


def lesion_row(k: int, suffix: str) -> str:
    """``met_<k>_<suffix>``."""
    return f"{PREFIX}{int(k)}_{suffix}"


def resolved_row(track: int, suffix: str) -> str:
    """``met_resolved_<track>_<suffix>``."""
    return f"{PREFIX}resolved_{int(track)}_{suffix}"


def status_of_code(code: str | None) -> LesionStatus | None:
    """A stored row's code ("value|scheme|meaning" or the value alone) → the status; None if not one of ours."""
    return _STATUS_BY_CODE.get(str(code or "").split("|")[0]) if code else None


def parse_location(location: str) -> tuple[str, str]:
    """``Lesion.location`` text ("left cerebellum", "brainstem (midline)") → (hemisphere, region)."""
    text = location.strip()
    if text.endswith("(midline)"):
        return "midline", text[: -len("(midline)")].strip()
    for side in ("left", "right"):
        if text.startswith(side + " "):
            return side, text[len(side) + 1:]
    return "", text


def site_of(region: str) -> tuple[str, str]:
    """SNOMED CT (code, meaning) of a region name; Brain when unknown."""
    return REGION_SITES.get(region.strip().lower(), BRAIN_SITE)


def measurable(lesion: Lesion) -> bool:
    """RANO-BM: measurable when the longest diameter is at least 10 mm."""
    return lesion.max_axial_diameter_mm >= RANO_BM_MEASURABLE_MM


def status_of(lesion: Lesion, comparison: LesionComparison | None) -> LesionStatus:
    """Baseline without a comparison; else the comparison's status (a lesion it misses is new)."""
    if comparison is None:
        return LesionStatus.BASELINE
    change = comparison.changes.get(lesion.index)
    return change.status if change is not None else LesionStatus.NEW


def _location_row(name: str, hemisphere: str, region: str, text: str, segment: str | None) -> Measurement:
    code, _ = site_of(region)
    return Measurement(name, float(HEMISPHERE_ORDINAL.get(hemisphere, 0)), "1", (code, "SCT", text[:64] or region), segment)


def lesion_rows(lesions: Sequence[Lesion], tracking: Mapping[int, tuple[int, str]] | None,
                comparison: LesionComparison | None) -> list[Measurement]:
    """The study and per-lesion rows (see the module docstring) of one metastasis result.

    *tracking* maps a lesion index to (track number, tracking UID); a lesion
    it misses is its own track. Rows are deterministic for one input, so a
    retried job stores the same set.
    """
    for i, les in enumerate(lesions):
        if not isinstance(les, Lesion):
            raise TypeError(f"lesions: item {i} is {type(les).__name__}, not Lesion")
    if comparison is not None and not isinstance(comparison, LesionComparison):
        raise TypeError(f"comparison: expected LesionComparison, got {type(comparison).__name__}")
    tracks = dict(tracking or {})
    rows = [
        Measurement(COUNT, float(len(lesions)), "1"),
        Measurement(TOTAL_VOLUME, round(sum(float(les.volumes_ml.get("whole_tumor", 0.0)) for les in lesions), 3), "mL"),
        Measurement(SUM_DIAMETERS, round(sum(les.max_axial_diameter_mm for les in lesions if measurable(les)), 2), "mm"),
    ]
    if comparison is not None:
        rows += [Measurement(PRIOR_COUNT, float(comparison.prior_count), "1"),
                 Measurement(PRIOR_TOTAL_VOLUME, float(comparison.prior_total_volume_ml), "mL")]
    for les in sorted(lesions, key=lambda x: x.index):
        k, seg = les.index, f"Lesion {les.index}"
        status = status_of(les, comparison)
        rows += [
            Measurement(lesion_row(k, TRACK), float(tracks.get(k, (k, ""))[0]), "1", segment=seg),
            Measurement(lesion_row(k, DIAMETER), round(float(les.max_axial_diameter_mm), 2), "mm", segment=seg),
            Measurement(lesion_row(k, VOLUME), round(float(les.volumes_ml.get("whole_tumor", 0.0)), 3), "mL", segment=seg),
        ]
        if les.confidence is not None:
            rows.append(Measurement(lesion_row(k, CONFIDENCE), round(float(les.confidence), 4), "1", segment=seg))
        rows.append(Measurement(lesion_row(k, STATUS), float(STATUS_ORDINAL[status]), "1", STATUS_CODES[status], seg))
        rows.append(_location_row(lesion_row(k, LOCATION), les.hemisphere, les.region, les.location, seg))
        change = comparison.changes.get(k) if comparison is not None else None
        if change is not None and change.diameter_change_pct is not None:
            rows.append(Measurement(lesion_row(k, DIAMETER_CHANGE), round(change.diameter_change_pct, 2), "%", segment=seg))
        if change is not None and change.volume_change_pct is not None:
            rows.append(Measurement(lesion_row(k, VOLUME_CHANGE), round(change.volume_change_pct, 2), "%", segment=seg))
    for r in comparison.resolved if comparison is not None else ():
        hemisphere, region = parse_location(r.location)
        rows += [
            Measurement(resolved_row(r.track, STATUS), float(STATUS_ORDINAL[LesionStatus.RESOLVED]), "1",
                        STATUS_CODES[LesionStatus.RESOLVED]),
            Measurement(resolved_row(r.track, DIAMETER), round(float(r.prior_diameter_mm), 2), "mm"),
            Measurement(resolved_row(r.track, VOLUME), round(float(r.prior_volume_ml), 3), "mL"),
            _location_row(resolved_row(r.track, LOCATION), hemisphere, region, r.location, None),
        ]
    return rows


def read_lesion_rows(measurements: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The stored rows (dicts with name, value, unit, code) back as lesions; None without metastasis rows.

    Returns ``{"count", "total_volume_ml", "sum_diameters_mm", "prior_count", "prior_total_volume_ml",
    "lesions": [...], "resolved": [...]}``; each lesion a dict with index, track, diameter_mm, volume_ml,
    confidence, status (word), location, diameter_change_pct, volume_change_pct.
    """
    by_name = {str(m["name"]): m for m in measurements}
    if COUNT not in by_name:
        return None
    current: dict[int, dict[str, Mapping[str, object]]] = {}
    resolved: dict[int, dict[str, Mapping[str, object]]] = {}
    for name, m in by_name.items():
        hit = _RESOLVED_ROW.match(name)
        if hit:
            resolved.setdefault(int(hit.group(1)), {})[hit.group(2)] = m
            continue
        hit = _ROW.match(name)
        if hit:
            current.setdefault(int(hit.group(1)), {})[hit.group(2)] = m

    def value(rows: Mapping[str, Mapping[str, object]], key: str) -> float | None:
        return float(rows[key]["value"]) if key in rows else None  # type: ignore[arg-type]

    def status(rows: Mapping[str, Mapping[str, object]]) -> str:
        row = rows.get(STATUS)
        if row is None:
            return ""
        by_code = status_of_code(row.get("code"))  # type: ignore[arg-type]
        if by_code is not None:
            return by_code.value
        ordinal = int(float(row["value"]))  # type: ignore[arg-type]
        return next((s.value for s, i in STATUS_ORDINAL.items() if i == ordinal), "")

    def location(rows: Mapping[str, Mapping[str, object]]) -> str:
        code = str(rows.get(LOCATION, {}).get("code") or "")
        return code.split("|", 2)[2] if code.count("|") >= 2 else ""

    def total(name: str) -> float | None:
        return float(by_name[name]["value"]) if name in by_name else None  # type: ignore[arg-type]

    lesions = []
    for k in sorted(current):
        rows = current[k]
        track = value(rows, TRACK)
        lesions.append({
            "index": k, "track": int(track) if track is not None else k,
            "diameter_mm": value(rows, DIAMETER), "volume_ml": value(rows, VOLUME), "confidence": value(rows, CONFIDENCE),
            "status": status(rows), "location": location(rows),
            "diameter_change_pct": value(rows, DIAMETER_CHANGE), "volume_change_pct": value(rows, VOLUME_CHANGE),
        })
    gone = [{"track": t, "status": status(resolved[t]) or LesionStatus.RESOLVED.value, "location": location(resolved[t]),
             "prior_diameter_mm": value(resolved[t], DIAMETER), "prior_volume_ml": value(resolved[t], VOLUME)}
            for t in sorted(resolved)]
    return {"count": int(total(COUNT) or 0), "total_volume_ml": total(TOTAL_VOLUME), "sum_diameters_mm": total(SUM_DIAMETERS),
            "prior_count": total(PRIOR_COUNT), "prior_total_volume_ml": total(PRIOR_TOTAL_VOLUME),
            "lesions": lesions, "resolved": gone}
