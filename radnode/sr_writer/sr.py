"""TID 1500 Measurement Report (Comprehensive 3D SR, PS3.3 A.35.13).

Structure (PS3.16 TID 1500):

* observation context (TID 1001/1004): a *device* observer naming the model
  (name, manufacturer, "name version" as model name) — the AI, not radnode
  and not a person, made the observations;
* procedure reported: from the source modality (SCT 113091000 "Magnetic
  resonance imaging", SCT 77477000 "Computerized axial tomography"), else the
  generic SCT 363679005 "Imaging procedure";
* image library (TID 1600) listing the source images;
* one TID 1411 volumetric group per SEG segment, referencing the segment
  (``ReferencedSegment`` built directly: ``from_segmentation`` fails on a
  one-segment SEG in highdicom 0.28) with that segment's measurements;
* one TID 1501 group per other measured region (e.g. "Whole tumor", a
  union of labels that is no single segment, so no TID 1411 can reference
  it), its finding type and finding site named;
* with *lesions*: one TID 1411 group per lesion, its volume surface the
  lesion's equivalent ellipsoid (PCA of its voxels), finding type Neoplasm,
  finding site the coarse lobe with laterality, Tracking Identifier
  "Lesion <track>" and a Tracking UID shared with the same lesion in the
  patient's other exams; its measurements: volume, largest axial diameter,
  RANO Long Axis and Perpendicular Axis (method NCIt C114879 "RANO"); the
  product and "measurable" follow from the two (TID 1411 admits no
  coordinates on its measurements: the end points are drawn on the RANO key
  image);
* with *lesions*: one study-level TID 1501 group "RANO sum of products"
  holding only values that are unambiguous at study level, each with its own
  concept: the sum of products — SCT 42798000 "Area" with derivation
  SCT 255619001 "Total" (CID 7464) by method NCIt C114879 "RANO" (the sum
  of the lesions' bidimensional products is an area; standard codes
  postcoordinated instead of a private concept), and
  with a *follow_up* its DCM 125314 "Fractional Change" against the prior
  exam (%) and DCM 112048 "Current Response" valued with the target-lesion
  response code the product rule implies (an automated measurement, not a
  response assessment);
* one TID 1501 group per qualitative finding (detection apps): the finding
  code (the finding's own, else a local one) present/absent plus a DCM 122157
  "Probability" measurement, which references the images the finding was
  inferred from (TID 300 INFERRED FROM IMAGE: e.g. the slices a classifier
  flagged); the group also carries the measurements of its subject (a
  measurement whose ``segment`` is the finding's name, e.g. a total volume).
  A finding named like a SEG segment is written into that segment's TID 1411
  group instead, so one subject has one group (e.g. "Subdural hemorrhage":
  present, its probability, its volume, the segment).

* with *response_criteria* "RANO-BM" (metastases): one TID 1411 group per
  lesion referencing its SEG segment, one group per resolved lesion and a
  study-level group (count, total volume, sum of longest diameters) — see
  :mod:`radnode.sr_writer.sr_metastasis` — instead of the per-segment, lesion
  and RANO groups above.

Measurements may name a method (TID 300 "Measurement Method"), which tells
two values of one quantity apart, e.g. a haematoma volume by voxel count and
by ABC/2.

Private codes: scheme ``99RADNODE``, used only for an application's own
measurement or finding that comes without a code (:func:`local_code`) and for
a metastasis's diameter and volume change against its prior (DICOM's one
"Fractional Change" cannot tell the two apart); the glioma report uses
none (the per-lesion product is not written: it is Long
Axis × Perpendicular Axis). When one is used the scheme is declared in the
Coding Scheme Identification Sequence (PS3.3 C.12.1.1.3.1); otherwise the
SR carries no private designator at all, so dciodvfy has nothing to warn
about (it warns about any designator it does not know, declared or not).

Measurement codes: volume = SCT 118565006 "Volume" in UCUM ``ml``; largest
diameter = SCT 81827009 "Diameter" with derivation SCT 56851009 "Maximum"
(CID 7464). "Width" (103355008) is an in-plane extent orthogonal to the long
axis and "Long Axis" (103339001) is RECIST's in-plane measure; a 3-D maximal
Feret diameter is literally a maximum of diameters, which the derivation
modifier states without inventing a code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
import structlog
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from radnode.model.analysis import Finding, ImageRef, Measurement, Segment
from radnode.model.lesions import FollowUp, Lesion, LesionComparison
from radnode.sr_writer.concepts import (
    AREA,
    BRAIN,
    DIAMETER,
    FRACTIONAL_CHANGE,
    LATERALITY,
    LESION,
    LOCAL_SCHEME,
    LONG_AXIS,
    MAXIMUM,
    MORPHOLOGICALLY_ABNORMAL,
    NEOPLASM,
    PERPENDICULAR_AXIS,
    PROBABILITY,
    REGION_SITES,
    TOTAL,
    VOLUME,
    unit_code,
)
from radnode.sr_writer.provenance import OutputProvenance
from radnode.sr_writer.seg import check_segments, segment_numbers, sort_sources
from radnode.sr_writer.sr_metastasis import metastasis_groups

log = structlog.get_logger(__name__)

_PROCEDURES = {
    "MR": hd.sr.CodedConcept("113091000", "SCT", "Magnetic resonance imaging"),
    "CT": hd.sr.CodedConcept("77477000", "SCT", "Computerized axial tomography"),
}
#: Segmentation Storage and Label Map Segmentation Storage.
_SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")

IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")



CURRENT_RESPONSE = hd.sr.CodedConcept("112048", "DCM", "Current Response")
RANO_METHOD = hd.sr.CodedConcept("C114879", "NCIt", "RANO")
#: RANO product-rule category → DICOM target-lesion response codes (CID 6144/6145 family).
RESPONSE_CODES: dict[str, hd.sr.CodedConcept] = {
    "CR": hd.sr.CodedConcept("112041", "DCM", "Target Lesion Complete Response"),
    "PR": hd.sr.CodedConcept("112042", "DCM", "Target Lesion Partial Response"),
    "PD": hd.sr.CodedConcept("112043", "DCM", "Target Lesion Progressive Disease"),
    "SD": hd.sr.CodedConcept("112044", "DCM", "Target Lesion Stable Disease"),
}
#: Region unions (no single SEG segment) → finding type.
UNION_FINDINGS: dict[str, hd.sr.CodedConcept] = {"whole tumor": LESION, "whole tumour": LESION,
                                                  "tumor core": NEOPLASM, "tumour core": NEOPLASM}


def local_code(name: str) -> hd.sr.CodedConcept:
    """A code in radnode's private scheme for *name* (value = slug)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").upper()[:16] or "FINDING"
    return hd.sr.CodedConcept(slug, LOCAL_SCHEME, name[:64])


def measurement_item(m: Measurement, provenance: OutputProvenance) -> hd.sr.Measurement:
    """One TID 300 measurement for a radnode :class:`Measurement`.

    The concept comes from ``m.code`` when the analyzer gave one; otherwise a
    volume unit means SCT Volume, a name mentioning "diameter" means SCT
    Diameter (+ Maximum when the name says largest/maximum), anything else
    gets a local code.
    """
    unit = unit_code(m.unit)
    derivation = None
    lowered = m.name.lower()
    if m.code is not None:
        name = hd.sr.CodedConcept(m.code[0], m.code[1], m.code[2])
    elif unit.value in ("ml", "mm3", "cm3") or "volume" in lowered:
        name = VOLUME
    elif "diameter" in lowered:
        name = DIAMETER
        if any(w in lowered for w in ("largest", "maximum", "max")):
            derivation = MAXIMUM
    else:
        name = local_code(m.name)
    return hd.sr.Measurement(
        name=name,
        value=float(m.value),
        unit=unit,
        derivation=derivation,
        method=hd.sr.CodedConcept(m.method[0], m.method[1], m.method[2]) if m.method is not None else None,
    )


def _coded(code: tuple[str, str, str]) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code[0], code[1], code[2])


def _finding_concept(f: Finding) -> hd.sr.CodedConcept:
    """The finding's own code, else a local one for its name."""
    return _coded(f.code) if f.code is not None else local_code(f.name)


def _evidence(f: Finding, by_uid: Mapping[str, Dataset]) -> list[hd.sr.SourceImageForMeasurement]:
    """TID 300 INFERRED FROM image references for a finding's evidence (source images only)."""
    refs = []
    for i, ref in enumerate(f.evidence):
        if not isinstance(ref, ImageRef):
            raise TypeError(f"findings: {f.name!r} evidence item {i} is {type(ref).__name__}, not ImageRef")
        ds = by_uid.get(ref.sop_instance_uid)
        if ds is None:
            raise ValueError(f"findings: {f.name!r} evidence {ref.sop_instance_uid} is not one of the source images")
        frames = [int(ref.frame_number)] if ref.frame_number is not None else None
        refs.append(hd.sr.SourceImageForMeasurement.from_source_image(ds, frames))
    return refs


def _finding_items(f: Finding, by_uid: Mapping[str, Dataset]) -> tuple[list[hd.sr.QualitativeEvaluation], list[hd.sr.Measurement]]:
    """A finding's present/absent evaluation and its probability (with the images it came from)."""
    evaluation = hd.sr.QualitativeEvaluation(name=_finding_concept(f), value=codes.SCT.Present if f.present else codes.SCT.Absent)
    if f.probability is None:
        return [evaluation], []
    probability = hd.sr.Measurement(name=PROBABILITY, value=float(f.probability), unit=unit_code("{probability}"),
                                    referenced_images=_evidence(f, by_uid) or None)
    return [evaluation], [probability]


def _algorithm_id(provenance: OutputProvenance) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=provenance.model.name[:64],
        version=provenance.model.version[:64],
        family=codes.cid7162.ArtificialIntelligence,
        manufacturer=provenance.model.manufacturer[:64] or None,
    )


def _check_list(value: object, item_type: type, argument: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{argument}: expected a sequence of {item_type.__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, item_type):
            raise TypeError(f"{argument}: item {i} is {type(item).__name__}, not {item_type.__name__}")
    return list(value)


def build_measurement_report(
    source_images: Sequence[Dataset],
    provenance: OutputProvenance,
    *,
    segmentation: Dataset | None = None,
    segments: Sequence[Segment] = (),
    measurements: Sequence[Measurement] = (),
    findings: Sequence[Finding] = (),
    procedure_reported: Code | hd.sr.CodedConcept | None = None,
    lesions: Sequence[Lesion] = (),
    tracking: Mapping[int, tuple[int, str]] | None = None,
    follow_up: FollowUp | None = None,
    lesion_comparison: LesionComparison | None = None,
    response_criteria: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report; see the module docstring for its structure.

    *segmentation* is the SEG the segment groups reference (required when
    *segments* is non-empty); *measurements* whose ``segment`` names one of
    *segments* go into that segment's group. With *lesions*, measurements
    without a segment or with a "Lesion <n>" segment are not repeated: the
    lesion and RANO groups carry them. *tracking* maps a lesion index to
    (track number, Tracking UID); default: the index and a job-derived UID.
    With *response_criteria* "RANO-BM" (metastases) the lesions are written
    lesion by lesion (:mod:`radnode.sr_writer.sr_metastasis`): each lesion
    group references its "Lesion <k>" segment instead of a group per
    segment, *lesion_comparison* gives each lesion's status against the
    prior exam and the resolved lesions, and there is no RANO group.
    """
    if not isinstance(provenance, OutputProvenance):
        raise TypeError(f"provenance: expected OutputProvenance, got {type(provenance).__name__}")
    ordered = sort_sources(source_images)
    segs = check_segments(segments) if len(segments) else ()
    meas = _check_list(measurements, Measurement, "measurements")
    finds = _check_list(findings, Finding, "findings")
    if segs and segmentation is None:
        raise ValueError("segmentation: required when segments are given")
    if segmentation is not None:
        if not isinstance(segmentation, Dataset):
            raise TypeError(f"segmentation: expected a SEG Dataset, got {type(segmentation).__name__}")
        if str(getattr(segmentation, "SOPClassUID", "")) not in _SEG_CLASSES:
            raise ValueError("segmentation: is not a Segmentation Storage instance")
        labels = {str(d.SegmentLabel) for d in segmentation.SegmentSequence}
        missing = [s.name for s in segs if s.name[:64] not in labels]
        if missing:
            raise ValueError(f"segmentation: has no segment labelled {missing}")
    for i, m in enumerate(meas):
        if not isinstance(m.value, (int, float)) or m.value != m.value:
            raise ValueError(f"measurements: item {i} ({m.name!r}) has a non-numeric value")
    for i, f in enumerate(finds):
        if f.probability is not None and not 0.0 <= float(f.probability) <= 1.0:
            raise ValueError(f"findings: item {i} ({f.name!r}) probability must be in [0, 1]")
    les = _check_list(lesions, Lesion, "lesions")
    if follow_up is not None and not isinstance(follow_up, FollowUp):
        raise TypeError(f"follow_up: expected FollowUp, got {type(follow_up).__name__}")
    metastases = response_criteria == "RANO-BM"
    if not segs and not meas and not finds and not les and not metastases:
        raise ValueError("measurements: nothing to report (no segments, measurements or findings)")
    tracks = dict(tracking) if tracking is not None else {}
    for lesion in les:
        tracks.setdefault(lesion.index, (lesion.index, provenance.uid("lesion-track", str(lesion.index))))

    algorithm = _algorithm_id(provenance)
    numbers = segment_numbers(segs)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in ordered}
    finding_of = {f.name: f for f in finds}
    groups: list = []
    for s in segs:
        if metastases and s.name.startswith("Lesion "):
            continue  # the lesion's own group references it
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=str(segmentation.SOPClassUID),
            sop_instance_uid=str(segmentation.SOPInstanceUID),
            segment_number=numbers[s.name],
            source_series=hd.sr.SourceSeriesForSegmentation(str(ordered[0].SeriesInstanceUID)),
        )
        items = [measurement_item(m, provenance) for m in meas if m.segment == s.name]
        found = finding_of.get(s.name)  # the same subject's qualitative finding joins its segment group
        evaluations, probability = _finding_items(found, by_uid) if found is not None else (None, [])
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("segment", s.name), identifier=s.name[:64]),
                referenced_segment=ref,
                finding_type=_finding_concept(found) if found is not None and found.code is not None else _finding_type(s),
                finding_category=hd.sr.CodedConcept(s.property_category[0], "SCT", s.property_category[1]),
                finding_sites=[hd.sr.FindingSite(BRAIN)] if les else None,
                algorithm_id=algorithm,
                measurements=(items + probability) or None,
                qualitative_evaluations=evaluations,
            )
        )
    # Measurements of things that are not one segment (unions, study level).
    seg_names = {s.name for s in segs}
    others: dict[str, list[Measurement]] = {}
    for m in meas:
        if m.segment in seg_names or m.segment in finding_of:
            continue  # in the segment's group, or in the finding's group below
        if (les or metastases) and (m.segment is None or m.segment.startswith("Lesion ") or m.name.startswith("met_")):
            continue  # carried by the lesion and RANO groups
        others.setdefault(m.segment or "Study", []).append(m)
    for subject, items in others.items():
        union = UNION_FINDINGS.get(subject.lower())
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("subject", subject), identifier=subject[:64]),
                finding_type=union or (local_code(subject) if subject != "Study" else None),
                finding_sites=[hd.sr.FindingSite(BRAIN)] if union is not None else None,
                algorithm_id=algorithm,
                measurements=[measurement_item(m, provenance) for m in items],
            )
        )
    if metastases:
        series = hd.sr.SourceSeriesForSegmentation(str(ordered[0].SeriesInstanceUID))
        groups += metastasis_groups(les, tracks, lesion_comparison, segmentation, series, provenance, algorithm)
    elif les:
        frame = str(ordered[0].FrameOfReferenceUID)
        series = hd.sr.SourceSeriesForSegmentation(str(ordered[0].SeriesInstanceUID))
        groups += [_lesion_group(lesion, tracks[lesion.index], frame, series, algorithm) for lesion in les]
        groups.append(_rano_group(les, follow_up, provenance, algorithm))
    for f in finds:
        if f.name in seg_names:
            continue  # written into its segment's group
        evaluations, probability = _finding_items(f, by_uid)
        subject = [measurement_item(m, provenance) for m in meas if m.segment == f.name]
        group_images = None
        if f.probability is None and f.evidence:  # no probability to carry them: the group's source images
            group_images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(
                by_uid[r.sop_instance_uid], [int(r.frame_number)] if r.frame_number is not None else None)
                for r in f.evidence if r.sop_instance_uid in by_uid]
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("finding", f.name), identifier=f.name[:64]),
                finding_type=_finding_concept(f),
                algorithm_id=algorithm,
                qualitative_evaluations=evaluations,
                measurements=(probability + subject) or None,
                source_images=group_images or None,
            )
        )

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=provenance.device_uid,
            name=provenance.model.name[:64],
            manufacturer_name=provenance.model.manufacturer[:64] or None,
            model_name=f"{provenance.model.name} {provenance.model.version}"[:64],
            serial_number=provenance.device_serial_number,
        ),
    )
    procedure = procedure_reported or _PROCEDURES.get(str(getattr(ordered[0], "Modality", "")), IMAGING_PROCEDURE)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure,
        imaging_measurements=groups,
        referenced_images=ordered,
    )
    spec = provenance.series("sr")
    evidence = list(ordered) + ([segmentation] if segmentation is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=provenance.series_uid("sr"),
        series_number=spec.number,
        sop_instance_uid=provenance.instance_uid("sr"),
        instance_number=1,
        manufacturer=provenance.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=provenance.institution_name,
        contributing_equipment=[provenance.contributing_equipment()],
        series_description=spec.description,
    )
    sr.ManufacturerModelName = provenance.manufacturer_model_name
    sr.SoftwareVersions = provenance.software_versions
    sr.DeviceSerialNumber = provenance.device_serial_number
    if _uses_scheme(sr.ContentSequence, LOCAL_SCHEME):
        # Declare the private scheme (PS3.3 C.12.1.1.3.1) only where a code uses it.
        scheme = Dataset()
        scheme.CodingSchemeDesignator = LOCAL_SCHEME
        scheme.CodingSchemeName = "radnode local concepts (an application's uncoded measurements and findings)"
        scheme.CodingSchemeResponsibleOrganization = "radnode"
        sr.CodingSchemeIdentificationSequence = [scheme]
    log.info("sr built", job_id=provenance.job_id, groups=len(groups))
    return sr


def _lesion_group(lesion: Lesion, track: tuple[int, str], frame: str, series: hd.sr.SourceSeriesForSegmentation,
                  algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 for one lesion (see the module docstring)."""
    number, uid = track
    items = [
        hd.sr.Measurement(name=VOLUME, value=float(lesion.volumes_ml["whole_tumor"]), unit=unit_code("ml")),
        hd.sr.Measurement(name=DIAMETER, value=float(lesion.max_axial_diameter_mm), unit=unit_code("mm"), derivation=MAXIMUM),
    ]
    bi = lesion.bidimensional
    if bi is not None:
        # TID 1411 admits no coordinates on its measurements (TID 1419); the
        # end points are drawn on the RANO key image instead. Measurable and
        # the product follow from the two values (RANO: both ≥ 10 mm).
        items += [
            hd.sr.Measurement(name=LONG_AXIS, value=float(bi.longest_mm), unit=unit_code("mm"), method=RANO_METHOD),
            hd.sr.Measurement(name=PERPENDICULAR_AXIS, value=float(bi.perpendicular_mm), unit=unit_code("mm"), method=RANO_METHOD),
        ]
    site = hd.sr.FindingSite(REGION_SITES.get(lesion.region, BRAIN), laterality=LATERALITY.get(lesion.hemisphere))
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=uid, identifier=f"Lesion {number}"),
        "finding_type": NEOPLASM,
        "finding_category": MORPHOLOGICALLY_ABNORMAL,
        "finding_sites": [site],
        "algorithm_id": algorithm,
        "measurements": items,
    }
    if len(lesion.ellipsoid_lps_mm) == 6:
        surface = hd.sr.VolumeSurface(graphic_type=hd.sr.GraphicTypeValues3D.ELLIPSOID,
                                      graphic_data=np.asarray(lesion.ellipsoid_lps_mm, dtype=float),
                                      frame_of_reference_uid=frame, source_series=series)
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_volume_surface=surface, **common)
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)  # type: ignore[return-value,arg-type]


def _uses_scheme(items: Sequence[Dataset], designator: str) -> bool:
    """Whether any coded entry anywhere below *items* (concept names, values, units, modifiers) is in *designator*."""
    for item in items:
        if item.get("CodingSchemeDesignator") == designator:
            return True
        for element in item:
            if element.VR == "SQ" and _uses_scheme(element.value, designator):
                return True
    return False


def _rano_group(lesions: Sequence[Lesion], follow_up: FollowUp | None, provenance: OutputProvenance,
                algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study-level TID 1501 group: only values that are unambiguous at study level."""
    total = sum(les.bidimensional.product_mm2 for les in lesions if les.bidimensional and les.bidimensional.measurable)
    # The sum of products: an area (mm²), the total over the measurable lesions, by RANO.
    items = [hd.sr.Measurement(name=AREA, value=round(float(total), 1), unit=unit_code("mm2"), method=RANO_METHOD, derivation=TOTAL)]
    evaluations = None
    if follow_up is not None:
        if follow_up.change_vs_prior_pct is not None:  # of the sum of products, against the prior exam
            items.append(hd.sr.Measurement(name=FRACTIONAL_CHANGE, value=float(follow_up.change_vs_prior_pct), unit=unit_code("%"),
                                           method=RANO_METHOD))
        evaluations = [hd.sr.QualitativeEvaluation(name=CURRENT_RESPONSE, value=RESPONSE_CODES[follow_up.category.value])]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("subject", "RANO"), identifier="RANO sum of products"),
        finding_type=NEOPLASM,
        method=RANO_METHOD,
        finding_sites=[hd.sr.FindingSite(BRAIN)],
        algorithm_id=algorithm,
        measurements=items,
        qualitative_evaluations=evaluations,
    )


def _finding_type(s: Segment) -> hd.sr.CodedConcept:
    value, meaning = s.property_type or ("108369006", "Neoplasm")
    return hd.sr.CodedConcept(value, "SCT", meaning)
