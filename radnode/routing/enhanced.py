"""Read an enhanced / legacy-converted multi-frame header the way a classic one reads.

Why: in Enhanced MR/CT (PS3.3 A.36, A.38) and Legacy Converted Enhanced
objects (A.70–A.72) the acquisition attributes that tell a T2 from a FLAIR do
not sit at the top level but in the Shared (5200,9229) and Per-frame
(5200,9230) Functional Groups. The classifier's features, the selection rules
and anyone reading a header for physics should not have to know that, so
:func:`flatten_header` returns a copy with those attributes lifted to the top
level under their classic keywords. Top-level values always win; the shared
groups come before the first frame's per-frame groups (for a volume the
first frame stands for the series, as the first instance does for a classic
series).

Where the attributes live (and the classic keyword they become):

==========================================  ======================================================
functional group (macro)                    attributes lifted
==========================================  ======================================================
MR Timing and Related Parameters (C.8.13.5.2)  RepetitionTime, FlipAngle, EchoTrainLength, RFEchoTrainLength, GradientEchoTrainLength
MR Echo (C.8.13.5.4)                        EffectiveEchoTime → EchoTime
MR Modifier (C.8.13.5.6)                    InversionRecovery; InversionTimes[0] → InversionTime; FlowCompensation, SpatialPresaturation …
MR Image Frame Type (C.8.13.5.1)            FrameType → ImageType (only when the top level has none), ComplexImageComponent, AcquisitionContrast
MR Diffusion (C.8.13.5.9)                   DiffusionBValue (read by the b-value feature)
MR Averages, MR FOV/Geometry                NumberOfAverages, PercentSampling …
Pixel Measures (C.7.6.16.2.1)               SliceThickness, SpacingBetweenSlices, PixelSpacing
Frame VOI LUT (C.7.6.16.2.10)               WindowCenter, WindowWidth
CT Image Frame Type, CT Acquisition Type/Details, CT Reconstruction, CT Exposure (C.8.15.3)
                                            FrameType → ImageType, KVP, ConvolutionKernel, ReconstructionAlgorithm …
Contrast/Bolus Usage (C.7.6.16.2.12)        ContrastBolusAgentAdministered YES → ContrastBolusAgent "ADMINISTERED"
Unassigned Shared / Per-frame Converted Attributes (legacy converted, C.7.6.16.2.25)
                                            everything the converter could not place (TR, TE, TI, flip angle …)
==========================================  ======================================================

Vendor private places read elsewhere (``radnode.routing.features``): diffusion
b-value in Siemens (0019,100C), GE (0043,1039; ``1e9 + b`` on many versions)
and Philips (2001,1003). Siemens XA enhanced objects repeat TR/TE in the
standard macros above, so no Siemens private tag is needed for them.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

#: Renames from enhanced keywords to the classic keyword the features read.
_RENAMES = {
    "EffectiveEchoTime": "EchoTime",
    "FrameType": "ImageType",
}
#: Never copied: identity/geometry of one frame, or bulky.
_SKIP = frozenset({
    "ImagePositionPatient", "InstanceNumber", "SliceLocation", "ReferencedSOPInstanceUID", "ReferencedSOPClassUID",
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "DimensionIndexValues",
    "InStackPositionNumber", "StackID", "FrameAcquisitionNumber", "TemporalPositionIndex",
})


def is_enhanced(ds: Dataset) -> bool:
    """True when *ds* carries functional groups (enhanced, legacy converted, or a SEG/parametric map)."""
    try:
        return "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    except Exception:
        return False


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    try:
        seq = ds.get(keyword)
    except Exception:
        return None
    if seq is None or not len(seq):
        return None
    item = seq[0]
    return item if isinstance(item, Dataset) else None


def _lift(target: Dataset, macro: Dataset, depth: int = 0) -> None:
    """Copy the leaf elements of one macro item (and its nested items) to *target* where absent."""
    for elem in macro:
        keyword = elem.keyword
        if not keyword or keyword in _SKIP:
            continue
        if keyword == "AnatomicRegionSequence" and "BodyPartExamined" not in target:
            # Frame Anatomy (C.7.6.16.2.8) codes the body part; classic headers name it.
            try:
                meaning = str(elem.value[0].CodeMeaning).strip().upper()
            except Exception:
                meaning = ""
            if meaning:
                target.BodyPartExamined = meaning[:16]
            continue
        if elem.VR == "SQ":
            if depth < 2 and isinstance(elem.value, DicomSequence) and len(elem.value) and isinstance(elem.value[0], Dataset):
                _lift(target, elem.value[0], depth + 1)
            continue
        name = _RENAMES.get(keyword, keyword)
        if name in target:
            continue
        value: Any = elem.value
        if keyword == "InversionTimes":
            values = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str) else [value]
            if values:
                target.InversionTime = values[0]
            continue
        if keyword == "ContrastBolusAgentAdministered":
            if str(value).upper() == "YES" and "ContrastBolusAgent" not in target:
                target.ContrastBolusAgent = "ADMINISTERED"
            continue
        try:
            setattr(target, name, value)
        except Exception:  # a value that does not fit the classic VR: leave it out
            continue


def flatten_header(ds: Dataset) -> Dataset:
    """A shallow copy of *ds* with functional-group attributes lifted to the top level.

    Classic headers come back unchanged (the same object). Never raises for
    odd content: a macro that cannot be read is skipped.
    """
    enhanced = is_enhanced(ds)
    if not enhanced and "EchoPulseSequence" not in ds:
        return ds
    flat = Dataset()
    for elem in ds:
        if elem.keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelData"):
            continue
        flat.add(elem)
    for container_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence") if enhanced else ():
        container = _first_item(ds, container_kw)
        if container is None:
            continue
        for elem in container:
            if elem.VR != "SQ" or not isinstance(elem.value, DicomSequence) or not len(elem.value):
                continue
            item = elem.value[0]
            if isinstance(item, Dataset):
                _lift(flat, item)
    # Enhanced MR describes the sequence with Echo Pulse Sequence, Inversion
    # Recovery and Echo Planar Pulse Sequence (C.8.13.1) instead of Scanning
    # Sequence; give the classic spelling so both read alike.
    if "ScanningSequence" not in flat and "EchoPulseSequence" in flat:
        pulse = str(flat.EchoPulseSequence).upper()
        tokens = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(pulse, [])
        if str(flat.get("InversionRecovery", "")).upper() == "YES":
            tokens.append("IR")
        if str(flat.get("EchoPlanarPulseSequence", "")).upper() == "YES":
            tokens.append("EP")
        if tokens:
            flat.ScanningSequence = tokens
    # A classic series counts its images in ImagesInAcquisition; one
    # multi-frame object counts them as frames.
    if "ImagesInAcquisition" not in flat and "NumberOfFrames" in flat:
        flat.ImagesInAcquisition = flat.NumberOfFrames
    return flat
