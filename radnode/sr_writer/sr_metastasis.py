"""The metastasis part of the TID 1500 report: one group per lesion, one per
resolved lesion, one study-level group (RANO-BM reads lesion by lesion).

Why separate from :mod:`radnode.sr_writer.sr`: glioma's groups follow RANO's
product rule and must not change; metastases follow each lesion's longest
diameter and its status against the prior exam.

Per current lesion, a TID 1411 group that references the lesion's SEG
segment ("Lesion <k>"), Tracking Identifier "Lesion <track>" and the
Tracking UID shared with the same lesion in the patient's other exams:

* finding type SCT 14799000 "Neoplasm, metastatic" (SCT 94225005
  "Metastatic malignant neoplasm to brain" is not in the offline DICOM
  tables this was checked against, so the morphology is named instead),
  category SCT 49755003; finding site the region (SCT cerebellum 113305005,
  brain stem 119238007, grey matter 389081007 with topographical modifier
  SCT 795002 "Deep" for deep grey matter, lobes as for glioma) with
  laterality;
* SCT 118565006 "Volume" (UCUM ml); SCT 103339001 "Long axis" (mm: the
  RANO-BM longest diameter, RECIST's in-plane measure); DCM 111012
  "Certainty of Finding" (UCUM 1, 0–1) for the detection confidence;
* against the prior exam (not for a baseline lesion, which was compared
  with nothing): DCM 111021 "Description of Change" valued SCT 129721008
  "New finding" / 15454001 "Increase in size" / 129723006 "No significant
  changes in the finding" / 19776001 "Decrease in size"; for a matched
  lesion the change of its longest diameter and of its volume (%). DICOM
  has a single "Fractional Change" concept, which cannot tell the two
  apart, so these two are private concepts (``99RADNODE`` DIAMCHG /
  VOLCHG; the scheme is then declared).

Per resolved lesion (in the prior exam, not found now): a TID 1501 group
with the prior exam's Tracking Identifier and UID, finding type and site,
and "Description of Change" = SCT 413322009 "Problem resolved"; no volume
surface and no measurement (there is nothing to measure now).

Study level (TID 1501 "Brain metastases"): SCT 246206008 "Number of
lesions" (UCUM 1), SCT 118565006 "Volume" with derivation SCT 255619001
"Total" (ml), and SCT 103339001 "Long axis" with derivation "Total" (mm):
the sum of the longest diameters of the measurable lesions (≥ 10 mm),
RANO-BM's target sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset

from radnode.model.lesion_rows import (
    METASTASIS_TYPE,
    STATUS_CODES,
    measurable,
    parse_location,
    site_of,
    status_of,
)
from radnode.model.lesions import Lesion, LesionComparison, LesionStatus, ResolvedLesion
from radnode.sr_writer.concepts import (
    BRAIN,
    LATERALITY,
    LOCAL_SCHEME,
    LONG_AXIS,
    MORPHOLOGICALLY_ABNORMAL,
    TOTAL,
    UNITS,
    VOLUME,
)
from radnode.sr_writer.provenance import OutputProvenance

METASTASIS = hd.sr.CodedConcept(METASTASIS_TYPE[0], "SCT", METASTASIS_TYPE[1])
NUMBER_OF_LESIONS = hd.sr.CodedConcept("246206008", "SCT", "Number of lesions")
CERTAINTY = hd.sr.CodedConcept("111012", "DCM", "Certainty of Finding")
DESCRIPTION_OF_CHANGE = hd.sr.CodedConcept("111021", "DCM", "Description of Change")
DEEP = hd.sr.CodedConcept("795002", "SCT", "Deep")
DIAMETER_CHANGE = hd.sr.CodedConcept("DIAMCHG", LOCAL_SCHEME, "Longest diameter change from prior exam")
VOLUME_CHANGE = hd.sr.CodedConcept("VOLCHG", LOCAL_SCHEME, "Volume change from prior exam")


def status_concept(status: LesionStatus) -> hd.sr.CodedConcept:
    value, scheme, meaning = STATUS_CODES[status]
    return hd.sr.CodedConcept(value, scheme, meaning)


def finding_site(hemisphere: str, region: str) -> hd.sr.FindingSite:
    """The region's SNOMED structure, its laterality, and "Deep" for deep grey matter."""
    code, meaning = site_of(region)
    deep = DEEP if region.strip().lower() == "deep grey matter" else None
    return hd.sr.FindingSite(hd.sr.CodedConcept(code, "SCT", meaning), laterality=LATERALITY.get(hemisphere),
                             topographical_modifier=deep)


def _segment_ref(segmentation: Dataset | None, lesion: Lesion, series: hd.sr.SourceSeriesForSegmentation) -> hd.sr.ReferencedSegment | None:
    """The SEG segment labelled "Lesion <index>", when the SEG has one."""
    if segmentation is None:
        return None
    label = f"Lesion {lesion.index}"
    for d in segmentation.SegmentSequence:
        if str(d.SegmentLabel) == label:
            return hd.sr.ReferencedSegment(
                sop_class_uid=str(segmentation.SOPClassUID),
                sop_instance_uid=str(segmentation.SOPInstanceUID),
                segment_number=int(d.SegmentNumber),
                source_series=series,
            )
    return None


def lesion_group(lesion: Lesion, track: tuple[int, str], comparison: LesionComparison | None, segmentation: Dataset | None,
                 series: hd.sr.SourceSeriesForSegmentation, algorithm: hd.sr.AlgorithmIdentification,
                 ) -> hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 (TID 1501 when the SEG has no segment for it) for one current lesion."""
    number, uid = track
    items = [
        hd.sr.Measurement(name=VOLUME, value=float(lesion.volumes_ml["whole_tumor"]), unit=UNITS["ml"]),
        hd.sr.Measurement(name=LONG_AXIS, value=float(lesion.max_axial_diameter_mm), unit=UNITS["mm"]),
    ]
    if lesion.confidence is not None:
        items.append(hd.sr.Measurement(name=CERTAINTY, value=float(lesion.confidence), unit=UNITS["1"]))
    evaluations = None
    status = status_of(lesion, comparison)
    if status is not LesionStatus.BASELINE:
        evaluations = [hd.sr.QualitativeEvaluation(name=DESCRIPTION_OF_CHANGE, value=status_concept(status))]
        change = comparison.changes.get(lesion.index) if comparison is not None else None
        if change is not None and change.diameter_change_pct is not None:
            items.append(hd.sr.Measurement(name=DIAMETER_CHANGE, value=float(change.diameter_change_pct), unit=UNITS["%"]))
        if change is not None and change.volume_change_pct is not None:
            items.append(hd.sr.Measurement(name=VOLUME_CHANGE, value=float(change.volume_change_pct), unit=UNITS["%"]))
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=uid, identifier=f"Lesion {number}"),
        "finding_type": METASTASIS,
        "finding_category": MORPHOLOGICALLY_ABNORMAL,
        "finding_sites": [finding_site(lesion.hemisphere, lesion.region)],
        "algorithm_id": algorithm,
        "measurements": items,
        "qualitative_evaluations": evaluations,
    }
    ref = _segment_ref(segmentation, lesion, series)
    if ref is not None:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=ref, **common)
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)


def resolved_group(resolved: ResolvedLesion, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 for a prior lesion not found now: its prior tracking, status resolved, nothing measured."""
    hemisphere, region = parse_location(resolved.location)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=resolved.tracking_uid, identifier=f"Lesion {resolved.track}"),
        finding_type=METASTASIS,
        finding_category=MORPHOLOGICALLY_ABNORMAL,
        finding_sites=[finding_site(hemisphere, region)],
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=DESCRIPTION_OF_CHANGE, value=status_concept(LesionStatus.RESOLVED))],
    )


def study_group(lesions: Sequence[Lesion], provenance: OutputProvenance,
                algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study-level values: lesion count, total volume, sum of longest diameters of measurable lesions."""
    total_ml = sum(float(les.volumes_ml["whole_tumor"]) for les in lesions)
    sum_mm = sum(float(les.max_axial_diameter_mm) for les in lesions if measurable(les))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("subject", "brain-metastases"), identifier="Brain metastases"),
        finding_type=METASTASIS,
        finding_sites=[hd.sr.FindingSite(BRAIN)],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=NUMBER_OF_LESIONS, value=float(len(lesions)), unit=UNITS["1"]),
            hd.sr.Measurement(name=VOLUME, value=round(total_ml, 3), unit=UNITS["ml"], derivation=TOTAL),
            hd.sr.Measurement(name=LONG_AXIS, value=round(sum_mm, 2), unit=UNITS["mm"], derivation=TOTAL),
        ],
    )


def metastasis_groups(lesions: Sequence[Lesion], tracks: Mapping[int, tuple[int, str]], comparison: LesionComparison | None,
                      segmentation: Dataset | None, series: hd.sr.SourceSeriesForSegmentation, provenance: OutputProvenance,
                      algorithm: hd.sr.AlgorithmIdentification) -> list[Any]:
    """Every metastasis group, in reading order: lesions (largest first), resolved lesions, the study."""
    if comparison is not None and not isinstance(comparison, LesionComparison):
        raise TypeError(f"lesion_comparison: expected LesionComparison, got {type(comparison).__name__}")
    groups = [lesion_group(les, tracks[les.index], comparison, segmentation, series, algorithm)
              for les in sorted(lesions, key=lambda x: x.index)]
    groups += [resolved_group(r, algorithm) for r in (comparison.resolved if comparison is not None else ())]
    groups.append(study_group(lesions, provenance, algorithm))
    return groups
