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
* one TID 1501 group per other measurement subject (e.g. "Whole tumour", a
  union of labels that is no single segment, or study-level values);
* one TID 1501 group per qualitative finding (detection apps): the finding
  code present/absent plus a DCM 122157 "Probability" measurement.

Measurement codes: volume = SCT 118565006 "Volume" in UCUM ``ml``; largest
diameter = SCT 81827009 "Diameter" with derivation SCT 56851009 "Maximum"
(CID 7464). "Width" (103355008) is an in-plane extent orthogonal to the long
axis and "Long Axis" (103339001) is RECIST's in-plane measure; a 3-D maximal
Feret diameter is literally a maximum of diameters, which the derivation
modifier states without inventing a code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import highdicom as hd
import structlog
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from radnode.model.analysis import Finding, Measurement, Segment
from radnode.sr_writer.provenance import OutputProvenance
from radnode.sr_writer.seg import check_segments, segment_numbers, sort_sources

log = structlog.get_logger(__name__)

#: Private coding scheme for finding names that have no standard code
#: ("99" prefix: PS3.3 8.2 local schemes).
LOCAL_SCHEME = "99RADNODE"

VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
DIAMETER = hd.sr.CodedConcept("81827009", "SCT", "Diameter")
MAXIMUM = hd.sr.CodedConcept("56851009", "SCT", "Maximum")
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")

_UNITS: dict[str, hd.sr.CodedConcept] = {
    "ml": hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
    "mm": hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
    "mm3": hd.sr.CodedConcept("mm3", "UCUM", "cubic millimeter"),
    "cm3": hd.sr.CodedConcept("cm3", "UCUM", "cubic centimeter"),
    "%": hd.sr.CodedConcept("%", "UCUM", "percent"),
    "1": hd.sr.CodedConcept("1", "UCUM", "no units"),
    "{probability}": hd.sr.CodedConcept("{probability}", "UCUM", "probability"),
}

_PROCEDURES = {
    "MR": hd.sr.CodedConcept("113091000", "SCT", "Magnetic resonance imaging"),
    "CT": hd.sr.CodedConcept("77477000", "SCT", "Computerized axial tomography"),
}
#: Segmentation Storage and Label Map Segmentation Storage.
_SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")

IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")


def unit_code(unit: str) -> hd.sr.CodedConcept:
    """UCUM code for a radnode unit string ("mL" → ``ml``)."""
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError("unit: must be a non-empty UCUM string")
    key = unit.strip()
    return _UNITS.get(key.lower() if key.lower() in ("ml", "mm", "mm3", "cm3") else key, hd.sr.CodedConcept(key, "UCUM", key))


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
    )


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
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report; see the module docstring for its structure.

    *segmentation* is the SEG the segment groups reference (required when
    *segments* is non-empty); *measurements* whose ``segment`` names one of
    *segments* go into that segment's group.
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
    if not segs and not meas and not finds:
        raise ValueError("measurements: nothing to report (no segments, measurements or findings)")

    algorithm = _algorithm_id(provenance)
    numbers = segment_numbers(segs)
    groups: list = []
    for s in segs:
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=str(segmentation.SOPClassUID),
            sop_instance_uid=str(segmentation.SOPInstanceUID),
            segment_number=numbers[s.name],
            source_series=hd.sr.SourceSeriesForSegmentation(str(ordered[0].SeriesInstanceUID)),
        )
        items = [measurement_item(m, provenance) for m in meas if m.segment == s.name]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("segment", s.name), identifier=s.name[:64]),
                referenced_segment=ref,
                finding_type=_finding_type(s),
                finding_category=hd.sr.CodedConcept(s.property_category[0], "SCT", s.property_category[1]),
                algorithm_id=algorithm,
                measurements=items or None,
            )
        )
    # Measurements of things that are not one segment (unions, study level).
    seg_names = {s.name for s in segs}
    others: dict[str, list[Measurement]] = {}
    for m in meas:
        if m.segment not in seg_names:
            others.setdefault(m.segment or "Study", []).append(m)
    for subject, items in others.items():
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("subject", subject), identifier=subject[:64]),
                finding_type=local_code(subject) if subject != "Study" else None,
                algorithm_id=algorithm,
                measurements=[measurement_item(m, provenance) for m in items],
            )
        )
    for f in finds:
        code = local_code(f.name)
        evaluation = hd.sr.QualitativeEvaluation(
            name=code,
            value=codes.SCT.Present if f.present else codes.SCT.Absent,
        )
        probability = (
            [hd.sr.Measurement(name=PROBABILITY, value=float(f.probability), unit=unit_code("{probability}"))]
            if f.probability is not None
            else None
        )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=provenance.uid("finding", f.name), identifier=f.name[:64]),
                finding_type=code,
                algorithm_id=algorithm,
                qualitative_evaluations=[evaluation],
                measurements=probability,
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
    # Declare the private scheme (PS3.3 C.12.1.1.3.1) for codes that use it.
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "radnode local finding names"
    scheme.CodingSchemeResponsibleOrganization = "radnode"
    sr.CodingSchemeIdentificationSequence = [scheme]
    log.info("sr built", job_id=provenance.job_id, groups=len(groups))
    return sr


def _finding_type(s: Segment) -> hd.sr.CodedConcept:
    value, meaning = s.property_type or ("108369006", "Neoplasm")
    return hd.sr.CodedConcept(value, "SCT", meaning)
