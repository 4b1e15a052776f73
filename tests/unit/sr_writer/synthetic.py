"""A small synthetic MR series with a realistic header, and a 3-label map.

Built here rather than read from fixtures so the geometry (axial or tilted,
shuffled file order) is under the test's control.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from radnode.analyzers.base import Segment
from radnode.uids import derive_uid

SHAPE = (24, 32, 32)  # (Z, Y, X)
SPACING = (2.0, 1.0, 1.25)  # slice, row, column (mm)

SEGMENTS = (
    Segment(1, "Necrotic core", ("372064008", "Malignant neoplasm of central nervous system")),
    Segment(2, "Peritumoral edema", ("79654002", "Edema")),
    Segment(4, "Enhancing tumour", ("108369006", "Neoplasm")),
)


def _rotation(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines, tilted about the patient x axis."""
    t = np.deg2rad(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(t), np.sin(t)])
    return row, col


def make_series(tag: str = "a", *, tilt_deg: float = 0.0, shuffle: bool = True) -> list[Dataset]:
    """Return the series' instances (in shuffled order unless told not to)."""
    z, y, x = SHAPE
    study_uid = derive_uid("test-study", tag)
    series_uid = derive_uid("test-series", tag)
    for_uid = derive_uid("test-for", tag)
    row, col = _rotation(tilt_deg)
    normal = np.cross(row, col)
    origin = np.array([-20.0, -16.0, -24.0])
    rng = np.random.default_rng(0)
    volume = (rng.random(SHAPE) * 200).astype(np.uint16)
    zz, yy, xx = np.mgrid[0:z, 0:y, 0:x]
    volume += (600 * np.exp(-(((zz - 12) / 6) ** 2 + ((yy - 16) / 8) ** 2 + ((xx - 15) / 8) ** 2))).astype(np.uint16)
    out = []
    for k in range(z):
        ds = Dataset()
        sop_uid = derive_uid("test-sop", tag, str(k))
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.PatientName = "Test^Patient"
        ds.PatientID = "PID-0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240315"
        ds.StudyTime = "101500"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC12345"
        ds.ReferringPhysicianName = "Ref^Doc"
        ds.StudyDescription = "MRI BRAIN W/WO CONTRAST"
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 5
        ds.SeriesDescription = "T1 MPRAGE POST"
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "BRAIN"
        ds.Manufacturer = "ACME"
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ContentDate = "20240315"
        ds.ContentTime = "101500"
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin + k * SPACING[0] * normal]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row, *col)]
        ds.SliceThickness = SPACING[0]
        ds.SpacingBetweenSlices = SPACING[0]
        ds.PixelSpacing = [SPACING[1], SPACING[2]]
        ds.SliceLocation = round(float(np.dot(origin + k * SPACING[0] * normal, normal)), 6)
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = 2300.0
        ds.EchoTime = 2.98
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 3.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = y
        ds.Columns = x
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = volume[k].tobytes()
        out.append(ds)
    if shuffle:
        order = np.random.default_rng(1).permutation(z)
        out = [out[i] for i in order]
    return out


def make_label_map() -> np.ndarray:
    """Three nested labels (values 1, 2, 4) plus an empty top/bottom."""
    z, y, x = SHAPE
    zz, yy, xx = np.mgrid[0:z, 0:y, 0:x]
    r = np.sqrt(((zz - 12) * SPACING[0] / 1.0) ** 2 + ((yy - 16) * SPACING[1]) ** 2 + ((xx - 14) * SPACING[2]) ** 2)
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[r < 11] = 2
    lab[r < 7] = 4
    lab[r < 3.5] = 1
    lab[:, 2:4, 3:5] = 2  # an asymmetric blob: catches flipped axes
    lab[0] = 0
    return lab


def write_series(series: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(series):
        p = folder / f"img_{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
