"""Deterministic synthetic brain MR studies written as DICOM files.

Why this exists: every layer of radnode (listener, routing, series
classifier, analyzers, SR writer) needs realistic multi-series MR input in
tests and benchmarks, and real patient data cannot be shipped. The studies
made here carry the headers a series classifier looks at (descriptions,
timing parameters, sequence names, contrast agent, geometry) in a Siemens-like
or GE-like dialect chosen by the seed, and a crude but geometrically
consistent synthetic head as pixel data.

Everything is a pure function of the arguments: the same seed (and the same
patient/accession/size arguments) gives byte-identical files and the same
UIDs, so tests can assert on UIDs and a re-sent study replaces itself in a
PACS instead of duplicating.

``compress()`` re-encodes one file into a compressed transfer syntax with a
real encoder (pydicom/pylibjpeg or DCMTK), so receivers are exercised on the
syntaxes a PACS really sends.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import structlog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    UID,
)

from radnode.uids import derive_uid

log = structlog.get_logger(__name__)

__all__ = [
    "SERIES_LABELS",
    "CompressSyntax",
    "COMPRESS_TRANSFER_SYNTAX",
    "GeneratedSeries",
    "GeneratedStudy",
    "generate_mr_study",
    "compress",
]

#: Series labels understood by :func:`generate_mr_study`, in acquisition order.
SERIES_LABELS: tuple[str, ...] = ("localizer", "t1", "t2", "flair", "t1c")

#: Fixed series numbers per label, so a subset keeps realistic gaps and the
#: on-disk folder of a series does not depend on which others were asked for.
_SERIES_NUMBER = {"localizer": 1, "t1": 2, "t2": 3, "flair": 4, "t1c": 5}

CompressSyntax = Literal["jpeg2000", "jpegls", "jpeg-lossless", "jpeg-baseline", "rle", "deflated"]

#: Transfer syntax each :func:`compress` option produces.
COMPRESS_TRANSFER_SYNTAX: dict[str, UID] = {
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeg-baseline": JPEGBaseline8Bit,
    "rle": RLELossless,
    "deflated": DeflatedExplicitVRLittleEndian,
}

#: Options of :func:`compress` that are lossless (pixels decode back exactly).
LOSSLESS_SYNTAXES: frozenset[str] = frozenset({"jpeg2000", "jpegls", "jpeg-lossless", "rle", "deflated"})

_DCMCJPLS = "/usr/bin/dcmcjpls"
_DCMCJPEG = "/usr/bin/dcmcjpeg"

# Head phantom semi-axes in mm (x: right-left, y: anterior-posterior, z: feet-head).
_HEAD_AXES = (72.0, 92.0, 68.0)
_FOV_MM = 240.0


@dataclass(frozen=True)
class GeneratedSeries:
    """One written series: what a test needs to find it again on the wire."""

    series_instance_uid: str
    series_number: int
    label: str
    description: str
    instance_count: int
    files: list[Path] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GeneratedStudy:
    """A written study; ``out_dir`` holds ``<series_number>/<instance>.dcm``."""

    out_dir: Path
    study_instance_uid: str
    accession: str
    patient_id: str
    patient_name: str
    vendor: str
    frame_of_reference_uid: str
    series: list[GeneratedSeries]

    @property
    def instance_count(self) -> int:
        return sum(s.instance_count for s in self.series)

    @property
    def files(self) -> list[Path]:
        return [f for s in self.series for f in s.files]

    def by_label(self, label: str) -> GeneratedSeries:
        """Return the series generated for *label* (KeyError if absent)."""
        for s in self.series:
            if s.label == label:
                return s
        raise KeyError(label)


# --------------------------------------------------------------------------
# Vendor dialects
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Protocol:
    description: str
    protocol_name: str
    tr: float
    te: float
    ti: float | None
    flip: float
    scanning_sequence: str
    sequence_variant: str
    scan_options: str
    acquisition_type: str  # "2D" / "3D"
    sequence_name: str
    echo_train_length: int
    image_type: tuple[str, ...]


_SIEMENS: dict[str, _Protocol] = {
    "localizer": _Protocol("localizer", "localizer", 8.6, 4.0, None, 20, "GR", "SP\\OSP", "",
                           "2D", "*fl2d1", 1, ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
    "t1": _Protocol("t1_se_tra", "t1_se_tra", 550, 8.9, None, 90, "SE", "SP\\OSP", "SAT1",
                    "2D", "*se2d1", 1, ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
    "t2": _Protocol("t2_tse_tra", "t2_tse_tra", 5000, 95, None, 150, "SE", "SK\\SP\\OSP", "SAT1",
                    "2D", "*tse2d1_15", 15, ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
    "flair": _Protocol("t2_tirm_tra_dark-fluid", "t2_tirm_tra_dark-fluid", 9000, 81, 2500, 150,
                       "SE\\IR", "SK\\SP\\MP\\OSP", "IR", "2D", "*tir2d1_16", 16,
                       ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
    "t1c": _Protocol("t1_mprage_tra_p2_iso_KM", "t1_mprage_tra_p2_iso_KM", 2300, 2.98, 900, 9,
                     "GR\\IR", "SK\\SP\\MP", "IR", "3D", "*tfl3d1", 1,
                     ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS3D", "DIS2D")),
}

_GE: dict[str, _Protocol] = {
    "localizer": _Protocol("3 Plane Loc", "3-PLANE LOC", 5.2, 1.6, None, 30, "GR", "SS\\SP", "FAST_GEMS",
                           "2D", "fgre", 1, ("ORIGINAL", "PRIMARY", "LOCALIZER")),
    "t1": _Protocol("Ax T1 SE", "BRAIN ROUTINE", 500, 10.0, None, 90, "SE", "SP", "FAST_GEMS",
                    "2D", "se", 1, ("ORIGINAL", "PRIMARY", "AXIAL")),
    "t2": _Protocol("Ax T2 FSE", "BRAIN ROUTINE", 4800, 102, None, 111, "SE", "SK", "FAST_GEMS\\SAT_GEMS",
                    "2D", "fse-xl", 16, ("ORIGINAL", "PRIMARY", "AXIAL")),
    "flair": _Protocol("Ax T2 FLAIR", "BRAIN ROUTINE", 9500, 120, 2400, 90, "SE\\IR", "SK\\MP",
                       "FAST_GEMS\\IR_GEMS", "2D", "fse-ir", 24, ("ORIGINAL", "PRIMARY", "AXIAL")),
    "t1c": _Protocol("Ax 3D T1 BRAVO +C", "BRAIN ROUTINE", 8.2, 3.2, 450, 12, "GR\\IR", "SS\\SK",
                     "FAST_GEMS\\EDR_GEMS\\SLICE", "3D", "efgre3d", 1, ("ORIGINAL", "PRIMARY", "OTHER")),
}

_VENDORS = {
    "siemens": {
        "Manufacturer": "SIEMENS",
        "models": {1.5: "Aera", 3.0: "Skyra"},
        "StationName": "AWP{n:05d}",
        "SoftwareVersions": "syngo MR E11",
        "protocols": _SIEMENS,
        "contrast": ("Gadovist", "7.5"),
    },
    "ge": {
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "models": {1.5: "SIGNA Artist", 3.0: "DISCOVERY MR750"},
        "StationName": "GEMR{n:04d}",
        "SoftwareVersions": "DV26.0_R03",
        "protocols": _GE,
        "contrast": ("Dotarem", "15"),
    },
}

# Relative tissue intensities per contrast: (scalp/fat, white matter, grey matter, CSF, vessel).
_TISSUE = {
    "localizer": (700, 500, 450, 300, 400),
    "t1": (1100, 820, 560, 180, 300),
    "t2": (700, 480, 700, 1700, 150),
    "flair": (600, 560, 760, 90, 150),
    "t1c": (1100, 840, 570, 170, 1600),
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def _ds(value: float) -> str:
    """Format a float as a DS value (≤ 16 chars) without float noise."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text[:16]


def _uid(key: str, *parts: object) -> str:
    """Deterministic UID under radnode's ``2.25.`` root (UUID5 of *parts*).

    Not ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)``: with
    ``prefix=None`` pydicom ignores ``entropy_srcs`` and returns a random
    UUID4 UID, which would break determinism.
    """
    return derive_uid("radnode.synth.mr", key, *map(str, parts))


@dataclass(frozen=True)
class _Plane:
    """Geometry of one image: DICOM IPP/IOP and pixel spacing in mm."""

    position: np.ndarray  # (3,) centre of first transmitted pixel
    row_dir: np.ndarray  # (3,) direction of increasing column index
    col_dir: np.ndarray  # (3,) direction of increasing row index
    spacing: float

    def grid(self, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates (x, y, z) of every pixel centre, each (rows, columns)."""
        r = np.arange(rows, dtype=np.float64)[:, None, None]
        c = np.arange(columns, dtype=np.float64)[None, :, None]
        pts = self.position + c * self.spacing * self.row_dir + r * self.spacing * self.col_dir
        return pts[..., 0], pts[..., 1], pts[..., 2]


def _phantom(label: str, x: np.ndarray, y: np.ndarray, z: np.ndarray, rng: np.random.Generator,
             centre: np.ndarray) -> np.ndarray:
    """Synthetic head intensity at patient coordinates (no anatomy, just contrast).

    Nested ellipsoids: scalp/skull rim, cortex (grey), core (white), two
    lateral ventricles (CSF) and, for enhancing contrasts, a bright sinus
    along the posterior midline so T1 pre/post differ where a classifier can
    see it.
    """
    scalp, wm, gm, csf, vessel = _TISSUE[label]
    a, b, c = _HEAD_AXES
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    r = np.sqrt((dx / a) ** 2 + (dy / b) ** 2 + (dz / c) ** 2)
    img = np.zeros(x.shape, dtype=np.float64)
    img[r < 1.0] = scalp
    img[r < 0.9] = 40.0  # skull: dark on MR
    img[r < 0.86] = gm
    img[r < 0.72] = wm
    for side in (-1.0, 1.0):  # lateral ventricles
        rv = np.sqrt(((dx - side * 12) / 7) ** 2 + ((dy + 5) / 24) ** 2 + ((dz - 8) / 14) ** 2)
        img[rv < 1.0] = csf
    # superior sagittal sinus: a thin tube at the posterior-superior midline
    rs = np.sqrt((dx / 3.5) ** 2 + ((dy - 0.8 * b * 0.72) / 4.0) ** 2)
    img[(rs < 1.0) & (r < 0.88)] = vessel
    # gentle receive-coil bias field, then Rician-like noise
    img *= 1.0 + 0.12 * (dy / b)
    noise_re = rng.normal(0.0, 18.0, x.shape)
    noise_im = rng.normal(0.0, 18.0, x.shape)
    img = np.sqrt((img + noise_re) ** 2 + noise_im**2)
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


def _axial_planes(n: int, spacing: float, pixel: float, rows: int, columns: int,
                  centre: np.ndarray) -> list[_Plane]:
    """Contiguous axial stack centred on *centre*, ordered feet → head."""
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, 1.0, 0.0])
    x0 = centre[0] - (columns - 1) / 2 * pixel
    y0 = centre[1] - (rows - 1) / 2 * pixel
    z0 = centre[2] - (n - 1) / 2 * spacing
    return [_Plane(np.array([x0, y0, z0 + i * spacing]), row_dir, col_dir, pixel) for i in range(n)]


def _localizer_planes(pixel: float, rows: int, columns: int, centre: np.ndarray) -> list[_Plane]:
    """Three orthogonal planes (sagittal, coronal, axial) through *centre*."""
    planes = []
    for row_dir, col_dir in (
        (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # sagittal
        (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),  # coronal
        (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),  # axial
    ):
        pos = centre - (columns - 1) / 2 * pixel * row_dir - (rows - 1) / 2 * pixel * col_dir
        planes.append(_Plane(pos, row_dir, col_dir, pixel))
    return planes


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------

def generate_mr_study(
    out_dir: Path,
    *,
    seed: int = 0,
    series: Sequence[str] = SERIES_LABELS,
    rows: int = 64,
    columns: int = 64,
    slices: int = 12,
    patient_name: str | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
) -> GeneratedStudy:
    """Write a synthetic brain MR study under *out_dir* and describe it.

    The vendor dialect (Siemens-like for even draws, GE-like otherwise), field
    strength, table offset and noise all come from ``seed``; UIDs are derived
    from the seed and the identifying arguments, so the same call always
    yields the same study and different patients/accessions never collide.
    The localizer is always three orthogonal images; other series are axial
    stacks of ``slices`` images (2D: 5 mm slices with 1 mm gap; the 3D
    post-contrast T1 uses contiguous 2 mm partitions).
    """
    labels = list(series)
    unknown = [s for s in labels if s not in _SERIES_NUMBER]
    if unknown:
        raise ValueError(f"unknown series label(s) {unknown}; known: {list(SERIES_LABELS)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate series labels in {labels}")
    if rows < 8 or columns < 8 or slices < 1:
        raise ValueError("rows/columns must be >= 8 and slices >= 1")

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    vendor = "siemens" if rng.integers(0, 2) == 0 else "ge"
    field_strength = float(rng.choice([1.5, 3.0]))
    station_no = int(rng.integers(1, 99999 if vendor == "siemens" else 9999))
    centre = np.array([rng.uniform(-4, 4), rng.uniform(-12, 4), rng.uniform(-15, 15)])
    study_dt = _dt.datetime(2024, 1, 1, 8, 0, 0) + _dt.timedelta(
        days=int(rng.integers(0, 365)), minutes=int(rng.integers(0, 600)))
    sex = "F" if rng.integers(0, 2) else "M"
    age_years = int(rng.integers(25, 80))
    birth = _dt.date(study_dt.year - age_years, int(rng.integers(1, 13)), int(rng.integers(1, 29)))

    patient_name = patient_name or f"SYNTH^BRAIN{seed}"
    patient_id = patient_id or f"RNSYN{seed:06d}"[:64]
    accession = accession or f"SYN{seed:08d}"[:16]
    key = f"radnode-synth-mr|{seed}|{patient_id}|{accession}|{rows}x{columns}x{slices}"

    vend = _VENDORS[vendor]
    protocols: dict[str, _Protocol] = vend["protocols"]  # type: ignore[assignment]
    study_uid = _uid(key, "study")
    for_uid = _uid(key, "frame-of-reference")
    pixel = round(_FOV_MM / max(rows, columns), 6)

    written: list[GeneratedSeries] = []
    for label in labels:
        proto = protocols[label]
        number = _SERIES_NUMBER[label]
        series_uid = _uid(key, "series", label)
        series_dt = study_dt + _dt.timedelta(minutes=3 * number)
        if label == "localizer":
            planes = _localizer_planes(pixel, rows, columns, centre)
            thickness, spacing = 8.0, None
        elif proto.acquisition_type == "3D":
            thickness = spacing = 2.0
            planes = _axial_planes(slices, spacing, pixel, rows, columns, centre)
        else:
            thickness, spacing = 5.0, 6.0
            planes = _axial_planes(slices, spacing, pixel, rows, columns, centre)

        series_dir = out_dir / str(number)
        series_dir.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        sops: list[str] = []
        for idx, plane in enumerate(planes, start=1):
            x, y, z = plane.grid(rows, columns)
            pixels = _phantom(label, x, y, z, rng, centre)
            sop_uid = _uid(key, "instance", label, idx)
            ds = _mr_dataset(
                vend=vend, vendor=vendor, proto=proto, label=label, field_strength=field_strength,
                station_no=station_no, patient_name=patient_name, patient_id=patient_id,
                birth=birth, sex=sex, age_years=age_years, accession=accession, study_uid=study_uid,
                series_uid=series_uid, for_uid=for_uid, sop_uid=sop_uid, study_dt=study_dt,
                series_dt=series_dt, number=number, instance=idx, plane=plane,
                thickness=thickness, spacing=spacing, rows=rows, columns=columns,
                pixels=pixels, images_in_acquisition=len(planes),
            )
            path = series_dir / f"{idx}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            sops.append(sop_uid)
        written.append(GeneratedSeries(series_uid, number, label, proto.description,
                                       len(files), files, sops))

    study = GeneratedStudy(out_dir, study_uid, accession, patient_id, patient_name, vendor,
                           for_uid, written)
    log.debug("synth.mr_study.written", out_dir=str(out_dir), seed=seed, vendor=vendor,
              series=len(written), instances=study.instance_count)
    return study


def _mr_dataset(*, vend: dict, vendor: str, proto: _Protocol, label: str, field_strength: float,
                station_no: int, patient_name: str, patient_id: str, birth: _dt.date, sex: str,
                age_years: int, accession: str, study_uid: str, series_uid: str, for_uid: str,
                sop_uid: str, study_dt: _dt.datetime, series_dt: _dt.datetime, number: int,
                instance: int, plane: _Plane, thickness: float, spacing: float | None,
                rows: int, columns: int, pixels: np.ndarray, images_in_acquisition: int) -> Dataset:
    """Assemble one MR Image Storage dataset (all modules the IOD requires)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADNODE_SYNTH"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    image_type = list(proto.image_type)
    ds.ImageType = image_type
    ds.InstanceCreationDate = series_dt.strftime("%Y%m%d")
    ds.InstanceCreationTime = series_dt.strftime("%H%M%S")
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_dt.strftime("%Y%m%d")
    ds.SeriesDate = series_dt.strftime("%Y%m%d")
    ds.AcquisitionDate = series_dt.strftime("%Y%m%d")
    ds.ContentDate = series_dt.strftime("%Y%m%d")
    ds.StudyTime = study_dt.strftime("%H%M%S")
    ds.SeriesTime = series_dt.strftime("%H%M%S")
    ds.AcquisitionTime = (series_dt + _dt.timedelta(seconds=instance)).strftime("%H%M%S")
    ds.ContentTime = ds.AcquisitionTime
    ds.AccessionNumber = accession
    ds.Modality = "MR"
    ds.Manufacturer = vend["Manufacturer"]
    ds.InstitutionName = "RADNODE SYNTHETIC HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^SYNTH"
    ds.StationName = vend["StationName"].format(n=station_no)
    ds.StudyDescription = "MR BRAIN W/WO CONTRAST" if vendor == "ge" else "Kopf^Routine"
    ds.SeriesDescription = proto.description
    ds.ManufacturerModelName = vend["models"][field_strength]
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = sex
    ds.PatientAge = f"{age_years:03d}Y"
    ds.PatientWeight = "70"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = proto.scanning_sequence
    ds.SequenceVariant = proto.sequence_variant
    ds.ScanOptions = proto.scan_options
    ds.MRAcquisitionType = proto.acquisition_type
    ds.SequenceName = proto.sequence_name
    ds.AngioFlag = "N"
    ds.SliceThickness = _ds(thickness)
    ds.RepetitionTime = _ds(proto.tr)
    ds.EchoTime = _ds(proto.te)
    if proto.ti is not None:
        ds.InversionTime = _ds(proto.ti)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds(42.577478 * field_strength)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = _ds(field_strength)
    if spacing is not None:
        ds.SpacingBetweenSlices = _ds(spacing)
    ds.EchoTrainLength = str(proto.echo_train_length)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "200"
    ds.DeviceSerialNumber = str(station_no)
    ds.SoftwareVersions = vend["SoftwareVersions"]
    ds.ProtocolName = proto.protocol_name
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Head_32" if vendor == "siemens" else "8HRBRAIN"
    ds.AcquisitionMatrix = [0, columns, rows, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = _ds(proto.flip)
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = "0.5"
    ds.dBdt = "0"
    ds.PatientPosition = "HFS"
    if label == "t1c":
        agent, volume = vend["contrast"]
        ds.ContrastBolusAgent = agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = volume
        ds.ContrastBolusIngredient = "GADOLINIUM"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds(v) for v in plane.position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*plane.row_dir, *plane.col_dir)]
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    normal = np.cross(plane.row_dir, plane.col_dir)
    ds.SliceLocation = _ds(float(np.dot(plane.position, normal)))
    ds.ImagesInAcquisition = images_in_acquisition
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [_ds(plane.spacing), _ds(plane.spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SmallestImagePixelValue = int(pixels.min())
    ds.LargestImagePixelValue = int(pixels.max())
    ds["SmallestImagePixelValue"].VR = "US"
    ds["LargestImagePixelValue"].VR = "US"
    ds.WindowCenter = "600"
    ds.WindowWidth = "1400"
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


# --------------------------------------------------------------------------
# Re-encoding
# --------------------------------------------------------------------------

def compress(path_in: Path | str, path_out: Path | str, syntax: CompressSyntax) -> Path:
    """Re-encode one DICOM file into the transfer syntax named by *syntax*.

    Real encoders only, because receivers must be tested against the
    bitstreams a PACS produces: JPEG 2000 lossless and RLE via pydicom 3
    (pylibjpeg-openjpeg / numpy), JPEG-LS lossless via DCMTK ``dcmcjpls``,
    JPEG lossless (process 14 SV1) and JPEG baseline via DCMTK ``dcmcjpeg``,
    Deflated Explicit VR Little Endian via pydicom. JPEG baseline is 8-bit
    only, so the 12-bit image is first linearly rescaled to an 8-bit copy
    (note: MR Image IOD formally requires 16 bits allocated, so that output
    is for transfer-syntax tests, not IOD conformance). Lossless outputs keep
    the SOP Instance UID (same image, other encoding); the lossy baseline one
    gets a new UID and Lossy Image Compression "01", as PS3.3 requires.
    Returns *path_out*.
    """
    path_in, path_out = Path(path_in), Path(path_out)
    if syntax not in COMPRESS_TRANSFER_SYNTAX:
        raise ValueError(f"unknown syntax {syntax!r}; known: {sorted(COMPRESS_TRANSFER_SYNTAX)}")
    path_out.parent.mkdir(parents=True, exist_ok=True)

    if syntax in ("jpeg2000", "rle"):
        ds = pydicom.dcmread(path_in)
        if syntax == "jpeg2000":
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        else:
            ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        ds.save_as(path_out, enforce_file_format=True)
    elif syntax == "deflated":
        ds = pydicom.dcmread(path_in)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path_out, enforce_file_format=True)
    elif syntax == "jpegls":
        _run_dcmtk([_DCMCJPLS, "+el", str(path_in), str(path_out)])
    elif syntax == "jpeg-lossless":
        _run_dcmtk([_DCMCJPEG, "+e1", str(path_in), str(path_out)])
    else:  # jpeg-baseline
        with tempfile.TemporaryDirectory(prefix="radnode-8bit-") as tmp:
            eight = Path(tmp) / "8bit.dcm"
            _to_8bit(path_in, eight)
            _run_dcmtk([_DCMCJPEG, "+eb", "+q", "95", str(eight), str(path_out)])
    log.debug("synth.compress", src=str(path_in), dst=str(path_out), syntax=syntax)
    return path_out


def _to_8bit(path_in: Path, path_out: Path) -> None:
    """Write an 8-bit, linearly rescaled copy (JPEG baseline cannot carry 12 bits)."""
    ds = pydicom.dcmread(path_in)
    arr = ds.pixel_array.astype(np.float64)
    hi = float(arr.max()) or 1.0
    out = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            del ds[kw]
    ds.WindowCenter = _ds(float(ds.WindowCenter) * 255.0 / hi)
    ds.WindowWidth = _ds(max(1.0, float(ds.WindowWidth) * 255.0 / hi))
    ds.PixelData = out.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path_out, enforce_file_format=True)


def _run_dcmtk(cmd: list[str]) -> None:
    """Run a DCMTK converter; raise with its stderr so failures are diagnosable."""
    if not Path(cmd[0]).exists():
        raise FileNotFoundError(f"{cmd[0]} not found (install the Debian 'dcmtk' package)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TCP_NODELAY": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
