"""Read a TID 1500 measurement report back into plain values (pydicom only).

Why independent of highdicom's parser: tests (and anyone checking what went
to the PACS) compare what a written SR *says* with what the job measured;
reading it with the library that wrote it would hide the writer's mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

#: (code value, scheme designator)
Concept = tuple[str, str]

IMAGING_MEASUREMENTS = ("126010", "DCM")
MEASUREMENT_GROUP = ("125007", "DCM")
TRACKING_IDENTIFIER = ("112039", "DCM")
TRACKING_UID = ("112040", "DCM")
FINDING_TYPE = ("121071", "DCM")
FINDING_CATEGORY = ("276214006", "SCT")
FINDING_SITE = ("363698007", "SCT")
LATERALITY = ("272741003", "SCT")
TOPOGRAPHICAL_MODIFIER = ("106233006", "SCT")
DERIVATION = ("121401", "DCM")
METHOD = ("370129005", "SCT")
REFERENCED_SEGMENT = ("121191", "DCM")
ALGORITHM_FAMILY = ("111000", "DCM")


@dataclass(frozen=True)
class NumValue:
    """One NUM item: value, UCUM unit, and its derivation / method modifiers (code values) if any."""

    value: float
    unit: str
    derivation: Concept | None = None
    method: Concept | None = None


@dataclass
class Group:
    """One measurement group as written."""

    tracking_id: str
    tracking_uid: str
    finding_type: Concept | None = None
    finding_category: Concept | None = None
    #: (site, laterality, topographical modifier) per finding site.
    sites: list[tuple[Concept, Concept | None, Concept | None]] = field(default_factory=list)
    #: concept → every NUM with that concept name (a concept may repeat with different modifiers).
    measurements: dict[Concept, list[NumValue]] = field(default_factory=dict)
    #: concept name → coded value of each qualitative evaluation.
    evaluations: dict[Concept, Concept] = field(default_factory=dict)
    #: (SEG SOP Instance UID, segment number) when the group references a segment.
    segment: tuple[str, int] | None = None

    def value(self, concept: Concept, derivation: Concept | None = None) -> NumValue:
        """The one NUM of *concept* (with that derivation); KeyError when absent, ValueError when ambiguous."""
        hits = [m for m in self.measurements.get(concept, []) if m.derivation == derivation]
        if not hits:
            raise KeyError(f"{self.tracking_id}: no {concept} with derivation {derivation}")
        if len(hits) > 1:
            raise ValueError(f"{self.tracking_id}: {len(hits)} values of {concept}")
        return hits[0]


def _name(item: Dataset) -> Concept | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _code(item: Dataset) -> Concept:
    c = item.ConceptCodeSequence[0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def _num(item: Dataset) -> NumValue:
    mv = item.MeasuredValueSequence[0]
    mods = {_name(m): _code(m) for m in item.get("ContentSequence", []) if m.ValueType == "CODE"}
    return NumValue(float(mv.NumericValue), str(mv.MeasurementUnitsCodeSequence[0].CodeValue), mods.get(DERIVATION), mods.get(METHOD))


def _group(item: Dataset) -> Group:
    g = Group(tracking_id="", tracking_uid="")
    for child in item.get("ContentSequence", []):
        name = _name(child)
        if name == TRACKING_IDENTIFIER:
            g.tracking_id = str(child.TextValue)
        elif name == TRACKING_UID:
            g.tracking_uid = str(child.UID)
        elif name == FINDING_TYPE:
            g.finding_type = _code(child)
        elif name == FINDING_CATEGORY:
            g.finding_category = _code(child)
        elif name == FINDING_SITE:
            mods = {_name(m): _code(m) for m in child.get("ContentSequence", []) if m.ValueType == "CODE"}
            g.sites.append((_code(child), mods.get(LATERALITY), mods.get(TOPOGRAPHICAL_MODIFIER)))
        elif child.ValueType == "NUM" and name is not None:
            g.measurements.setdefault(name, []).append(_num(child))
        elif child.ValueType == "CODE" and name is not None and name not in (FINDING_TYPE, FINDING_CATEGORY, METHOD, ALGORITHM_FAMILY):
            g.evaluations[name] = _code(child)
        elif name == REFERENCED_SEGMENT:
            ref = child.ReferencedSOPSequence[0]
            g.segment = (str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber))
    return g


def read_groups(sr: str | Path | Dataset) -> list[Group]:
    """Every measurement group of the report's Imaging Measurements container, in order."""
    ds = sr if isinstance(sr, Dataset) else pydicom.dcmread(sr)
    imaging = next((i for i in ds.ContentSequence if _name(i) == IMAGING_MEASUREMENTS), None)
    if imaging is None:
        return []
    return [_group(g) for g in imaging.get("ContentSequence", []) if _name(g) == MEASUREMENT_GROUP]


def groups_by_tracking_id(sr: str | Path | Dataset) -> dict[str, Group]:
    """The groups by Tracking Identifier (which a report keeps unique)."""
    groups = read_groups(sr)
    out = {g.tracking_id: g for g in groups}
    if len(out) != len(groups):
        raise ValueError("sr: two measurement groups share a Tracking Identifier")
    return out
