"""Turn generated classic MR series into multi-frame objects, as new scanners and archives send them.

Why: scanners from about 2020 on (Siemens XA, recent Philips) send one
Enhanced MR object per series, and archives convert classic series into
Legacy Converted Enhanced MR. radnode must classify, load and reference both
exactly as it does the classic originals; these converters make test studies
of each kind from the same generated pixels and headers, so a test can
compare like with like.

* :func:`to_legacy_converted` uses highdicom's
  ``LegacyConvertedEnhancedMRImage`` (PS3.3 A.71): acquisition attributes the
  standard has no macro for land in the Unassigned Shared/Per-frame Converted
  Attributes sequences.
* :func:`to_enhanced` goes one step further and rewrites that object as an
  Enhanced MR Image (PS3.3 A.36): TR and flip angle in MR Timing and Related
  Parameters, TE as Effective Echo Time in MR Echo, TI in MR Modifier, the
  contrast in Contrast/Bolus Usage — the places a true enhanced scanner uses —
  with nothing left at the top level.

The Series Description is kept as the scanner wrote it (highdicom appends
"(enhanced conversion)", which a PACS conversion does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

ENHANCED_MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")

#: Classic attributes and where an Enhanced MR object keeps them: (macro, keyword in macro).
_TIMING = ("RepetitionTime", "FlipAngle", "EchoTrainLength", "RFEchoTrainLength", "GradientEchoTrainLength")


def _derived_uid(uid: str, kind: str) -> UID:
    """A deterministic UID for the converted series (same input, same output)."""
    return pydicom.uid.generate_uid(prefix="2.25.", entropy_srcs=[str(uid), kind])


def to_legacy_converted(files: Sequence[Path], out_path: Path, *, keep_series_uid: bool = False) -> Path:
    """Write one Legacy Converted Enhanced MR object holding every slice of *files*.

    With *keep_series_uid* the converted object keeps the classic series'
    Series Instance UID (as an archive converting in place does); otherwise
    it gets a derived one, so both can sit in one study.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    if not datasets:
        raise ValueError("files: must not be empty")
    first = datasets[0]
    series_uid = str(first.SeriesInstanceUID) if keep_series_uid else _derived_uid(first.SeriesInstanceUID, "series-lce")
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets,
        series_instance_uid=series_uid,
        series_number=int(first.get("SeriesNumber") or 1),
        sop_instance_uid=_derived_uid(first.SeriesInstanceUID, "sop-lce"),
        instance_number=1,
    )
    if "SeriesDescription" in first:
        mf.SeriesDescription = first.SeriesDescription
    else:
        del mf.SeriesDescription
    # dciodvfy and viewers want the body part named as the classic series did.
    if "BodyPartExamined" in first:
        mf.BodyPartExamined = first.BodyPartExamined
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(out_path, enforce_file_format=True)
    return out_path


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


_ECHO_PULSE = {"SE": "SPIN", "GR": "GRADIENT"}


def enhance(lce: Dataset) -> Dataset:
    """Rewrite a Legacy Converted Enhanced MR dataset (in place) as an Enhanced MR Image.

    The unassigned converted attributes move into the standard MR functional
    group macros; the top level keeps none of TR/TE/TI/flip angle; Scanning
    Sequence / Sequence Variant / Scan Options give way to the enhanced
    descriptors (Echo Pulse Sequence, Inversion Recovery, Echo Planar Pulse
    Sequence), as PS3.3 C.8.13.1 has them. Works on a header without pixels
    too (the classifier corpus uses it that way).
    """
    ds = lce
    shared = ds.SharedFunctionalGroupsSequence[0]
    unassigned = shared.get("UnassignedSharedConvertedAttributesSequence")
    ua = unassigned[0] if unassigned else Dataset()

    def take(keyword: str) -> object | None:
        value = None
        for source in (ua, ds):
            if keyword in source:
                if value is None:
                    value = source[keyword].value
                del source[keyword]
        return value

    timing = Dataset()
    for kw in _TIMING:
        value = take(kw)
        if value is not None:
            setattr(timing, kw, value)
    shared.MRTimingAndRelatedParametersSequence = [timing]
    te = take("EchoTime")
    if te is not None:
        shared.MREchoSequence = [_item(EffectiveEchoTime=te)]
    ti = take("InversionTime")
    scanning = [str(v).upper() for v in (_as_list(take("ScanningSequence")))]
    take("SequenceVariant")
    take("ScanOptions")
    take("AngioFlag")
    bandwidth = take("PixelBandwidth")
    acquisition_type = take("MRAcquisitionType")
    inversion = ti is not None or "IR" in scanning
    shared.MRModifierSequence = [
        _item(InversionRecovery="YES" if inversion else "NO", FlowCompensation="NONE", T2Preparation="NO",
              SpatialPresaturation="NONE", PartialFourier="NO", ParallelAcquisition="NO")
    ]
    if ti is not None:
        shared.MRModifierSequence[0].InversionTimes = [ti]
    if bandwidth is not None:
        shared.MRImagingModifierSequence = [_item(PixelBandwidth=bandwidth, MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE", TransmitterFrequency=ds.get("ImagingFrequency", 63.0))]
    pulses = {_ECHO_PULSE[s] for s in scanning if s in _ECHO_PULSE}
    ds.EchoPulseSequence = "BOTH" if len(pulses) == 2 else (pulses.pop() if pulses else "SPIN")
    ds.EchoPlanarPulseSequence = "YES" if "EP" in scanning else "NO"
    if acquisition_type is not None:
        ds.MRAcquisitionType = acquisition_type
    # Top-level attributes of the Enhanced MR IOD (General Series, MR Image and
    # Spectroscopy Instance Macro) that the converter left unassigned.
    for kw in ("ProtocolName", "MagneticFieldStrength", "PatientPosition", "BodyPartExamined", "ImagingFrequency", "ReceiveCoilName"):
        value = take(kw)
        if value is not None:
            setattr(ds, kw, value)
    agent = ds.get("ContrastBolusAgent")
    shared.ContrastBolusUsageSequence = [
        _item(ContrastBolusAgentNumber=1, ContrastBolusAgentAdministered="YES" if agent else "NO")
    ]
    if unassigned is not None:
        del shared.UnassignedSharedConvertedAttributesSequence
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for kw in ("UnassignedPerFrameConvertedAttributesSequence", "ConversionSourceAttributesSequence"):
            if kw in frame:
                del frame[kw]
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    new_uid = _derived_uid(ds.SOPInstanceUID, "sop-enhanced")
    ds.SOPInstanceUID = new_uid
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    ds.SeriesInstanceUID = _derived_uid(ds.SeriesInstanceUID, "series-enhanced")
    return ds


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        return [value]


def multiframe_header(classic: Dataset, frames: int, *, kind: str, contrast: tuple[str, str] | None = None) -> Dataset:
    """A header-only multi-frame view of one classic header (for the classifier corpus).

    *kind* ``"legacy"`` puts the acquisition attributes into the Unassigned
    Shared Converted Attributes sequence, as highdicom's converter does;
    ``"enhanced"`` then applies :func:`enhance`, and with *contrast*
    ``(Acquisition Contrast, Image Flavor)`` writes them as an enhanced
    scanner does (ImageType value 3 is the flavor, value 4 the derived pixel
    contrast). Pixel data and per-frame
    positions are not produced: this is for header features only.
    """
    if kind not in ("legacy", "enhanced"):
        raise ValueError("kind: must be 'legacy' or 'enhanced'")
    ds = Dataset()
    moved = Dataset()
    for elem in classic:
        if elem.tag.group in (0x0018,) or elem.keyword in ("ImagesInAcquisition",):
            moved.add(elem)
        elif elem.keyword not in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "WindowCenter", "WindowWidth", "InstanceNumber", "SliceLocation"):
            ds.add(elem)
    # Contrast/Bolus stays a top-level module in both kinds.
    for kw in ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume"):
        if kw in moved:
            ds.add(moved[kw])
            del moved[kw]
    shared = Dataset()
    shared.UnassignedSharedConvertedAttributesSequence = [moved]
    pixel = Dataset()
    for kw in ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"):
        if kw in classic:
            setattr(pixel, kw, classic[kw].value)
    shared.PixelMeasuresSequence = [pixel]
    voi = Dataset()
    for kw in ("WindowCenter", "WindowWidth"):
        if kw in classic:
            setattr(voi, kw, classic[kw].value)
    if len(voi):
        shared.FrameVOILUTSequence = [voi]
    image_type = [str(v) for v in _as_list(classic.get("ImageType"))][:4]
    frame_type = Dataset()
    frame_type.FrameType = (image_type + ["NONE"] * 4)[:4] if image_type else ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
    shared.MRImageFrameTypeSequence = [frame_type]
    ds.ImageType = frame_type.FrameType
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [Dataset()]
    ds.NumberOfFrames = int(frames)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.4"  # Legacy Converted Enhanced MR Image Storage
    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix="2.25.", entropy_srcs=[str(classic.get("SeriesInstanceUID", "")), "mf"])
    if "SeriesInstanceUID" not in ds:
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(prefix="2.25.", entropy_srcs=[str(classic.get("StudyInstanceUID", "")), "mf-series"])
    if kind == "legacy":
        return ds
    ds = enhance(ds)
    if contrast is not None:
        acquisition, flavor = contrast
        ds.AcquisitionContrast = acquisition
        classic_type = [str(v).upper() for v in _as_list(classic.get("ImageType"))]
        derived = {"MIN_IP": "MINIMUM", "MAX_IP": "MAXIMUM"}.get(flavor, "NONE")
        for token, value in (("ADC", "ADC"), ("EADC", "ADC"), ("FA", "FA"), ("TRACEW", "TRACE"), ("SUBTRACT", "SUBTRACTION"),
                             ("MNIP", "MINIMUM"), ("MIP", "MAXIMUM")):
            if token in classic_type:
                derived = value
                break
        ds.ComplexImageComponent = "PHASE" if {"P", "PHASE", "P_FFE"} & set(classic_type) else "MAGNITUDE"
        first = [str(v) for v in _as_list(classic.get("ImageType"))][:2] or ["ORIGINAL", "PRIMARY"]
        ds.ImageType = [*(first + ["PRIMARY"])[:2], flavor, derived]
        ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0].FrameType = ds.ImageType
    return ds


def to_enhanced(files: Sequence[Path], out_path: Path) -> Path:
    """Write one Enhanced MR Image object (TR/TE/TI only in functional groups) for *files*."""
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".lce")
    to_legacy_converted(files, tmp)
    ds = enhance(pydicom.dcmread(tmp))
    tmp.unlink()
    ds.save_as(out_path, enforce_file_format=True)
    return out_path


def convert_study(study_dir: Path, out_dir: Path, kind: str) -> list[Path]:
    """Convert every classic series under *study_dir* (one folder per series) into *out_dir*.

    *kind* is ``"legacy"`` or ``"enhanced"``. Returns the written files, one per series.
    """
    if kind not in ("legacy", "enhanced"):
        raise ValueError("kind: must be 'legacy' or 'enhanced'")
    groups: dict[str, list[Path]] = {}
    for path in sorted(Path(study_dir).rglob("*")):
        if not path.is_file():
            continue
        try:
            head = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "InstanceNumber"])
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if "SeriesInstanceUID" in head:
            groups.setdefault(str(head.SeriesInstanceUID), []).append(path)
    written = []
    for n, (uid, files) in enumerate(sorted(groups.items()), start=1):
        target = Path(out_dir) / f"series_{n:02d}" / "image.dcm"
        if kind == "legacy":
            written.append(to_legacy_converted(files, target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(to_enhanced(files, target))
    return written
