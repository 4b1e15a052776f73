"""A small synthetic head CT written as DICOM the way scanners write it, with and without gantry tilt.

The head is defined in patient space (LPS mm): an ellipsoidal brain (35 HU)
with a 70 HU blob, a 6 mm skull (1200 HU) with a foramen-magnum hole, a 6 mm
scalp (40 HU) and a neck below. Every pixel of every slice is the phantom
sampled at that pixel's patient position as its header states it, so a loader
that reads the geometry right finds the blob and the skull at the same patient
coordinates whatever the tilt or its encoding:

* ``encoding="iop"``: ImageOrientationPatient tilted about x, positions step along z (the table);
* ``encoding="ipp"``: ImageOrientationPatient axial, positions step along z and y.

Outside the reconstruction circle the stored value is the PixelPaddingValue
(−2000, i.e. −3024 HU after rescale), as on many scanners.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT = UID("1.2.840.10008.5.1.4.1.1.2")
CENTRE = np.array([3.0, -12.0, 40.0])  # head centre, LPS mm
BRAIN = np.array([62.0, 76.0, 56.0])  # inner table semi-axes, mm
SKULL_MM, SCALP_MM = 6.0, 6.0
BLOB = CENTRE + np.array([20.0, 15.0, 10.0])
BLOB_R = 14.0
HOLE = np.array([0.0, 10.0])  # foramen magnum axis (x, y offset from the centre), radius 14 mm
PAD = -2000


def blob_volume_ml(radius_mm: float = BLOB_R) -> float:
    """The true volume (mL) of a spherical blob."""
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


def head_hu(pts: np.ndarray, *, craniectomy: bool = False, blob_hu: float | None = 70.0,
            blob_centre: np.ndarray = BLOB, blob_radius: float = BLOB_R) -> np.ndarray:
    """HU of the phantom at LPS points ``(..., 3)``; ``craniectomy``: no bone over the patient's left side.

    ``blob_hu`` None: no blob (a head without haemorrhage); 70 HU is acute blood.
    """
    rel = pts - CENTRE

    def inside(extra: float) -> np.ndarray:
        return ((rel / (BRAIN + extra)) ** 2).sum(-1) < 1.0

    hu = np.full(pts.shape[:-1], -1000.0, dtype=np.float32)
    neck = (rel[..., 2] < -30.0) & (np.hypot(rel[..., 0], rel[..., 1]) < 45.0)
    hu[neck] = 40.0
    hu[inside(SKULL_MM + SCALP_MM)] = 40.0
    hu[inside(SKULL_MM)] = 1200.0
    cord = (rel[..., 2] < -20.0) & (np.hypot(rel[..., 0] - HOLE[0], rel[..., 1] - HOLE[1]) < 14.0)
    hu[cord & (hu > 100)] = 35.0  # the foramen magnum: the skull base is open here
    hu[cord & neck] = 35.0
    if craniectomy:
        hu[(hu > 100) & (rel[..., 0] > 35.0) & (np.abs(rel[..., 2] - 10.0) < 25.0)] = 40.0
    hu[inside(0.0)] = 35.0
    if blob_hu is not None:
        hu[np.linalg.norm(pts - np.asarray(blob_centre, float), axis=-1) < blob_radius] = blob_hu
    return hu


def intracranial_truth(pts: np.ndarray) -> np.ndarray:
    return (((pts - CENTRE) / BRAIN) ** 2).sum(-1) < 1.0


def voxel_points(img: sitk.Image) -> np.ndarray:
    """Patient coordinates of every voxel centre, ``(z, y, x, 3)``."""
    size = img.GetSize()
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in size[::-1]], indexing="ij")
    idx = np.stack([xx, yy, zz], -1).astype(float) * np.asarray(img.GetSpacing())
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    return np.asarray(img.GetOrigin()) + idx @ d.T


@dataclass
class WrittenSlice:
    file: Path
    sop_instance_uid: str
    instance_number: int
    position: np.ndarray  # IPP
    row: np.ndarray
    col: np.ndarray


@dataclass
class Series:
    files: list[Path]
    slices: list[WrittenSlice]  # in position order (bottom → top)
    rows: int
    cols: int
    spacing: float

    def pixel_points(self, k: int) -> np.ndarray:
        """Patient coordinates of slice ``k``'s pixels, ``(rows, cols, 3)``."""
        s = self.slices[k]
        rr, cc = np.mgrid[0:self.rows, 0:self.cols]
        return s.position + (cc[..., None] * s.row + rr[..., None] * s.col) * self.spacing


def _header(series_uid: str, rows: int, cols: int, tilt_deg: float) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.SOPClassUID = CT
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.16.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.16.2"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "Head 5mm"
    ds.GantryDetectorTilt = f"{tilt_deg:g}"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.PixelPaddingValue = PAD
    # What a scanner writes and the series classifier and the result writers read.
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Head", "CTPHANTOM1", "19600101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC16"
    ds.ReferringPhysicianName, ds.StudyDescription = "", "CT HEAD NATIVE"
    ds.Manufacturer, ds.KVP, ds.ConvolutionKernel, ds.BodyPartExamined = "SIEMENS", "120", "H31s", "HEAD"
    ds.WindowCenter, ds.WindowWidth = "40", "80"
    ds.PatientPosition = "HFS"
    return ds


def write_ct_series(out: Path, *, tilt_deg: float = 0.0, encoding: str = "iop", n: int = 30, rows: int = 100,
                    cols: int = 100, spacing: float = 2.0, step: float = 5.0, seed: int = 0,
                    positions: list[float] | None = None, craniectomy: bool = False, blob_hu: float | None = 70.0,
                    blob_centre: np.ndarray = BLOB, blob_radius: float = BLOB_R) -> Series:
    """Write the phantom as a classic CT series (files shuffled, InstanceNumber counting top → bottom).

    ``step`` is the table increment between slices; ``positions`` (table
    positions relative to the head centre) override the regular ones.
    ``blob_hu`` None writes a head without the blob.
    """
    out.mkdir(parents=True, exist_ok=True)
    t = math.radians(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    if encoding == "iop":
        col, table = np.array([0.0, math.cos(t), math.sin(t)]), np.array([0.0, 0.0, 1.0])
    elif encoding == "ipp":
        col, table = np.array([0.0, 1.0, 0.0]), np.array([0.0, math.tan(t), 1.0])
    else:
        raise ValueError(encoding)
    if positions is None:
        positions = [(k - (n - 1) / 2.0) * step for k in range(n)]
    series_uid = generate_uid()
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:rows, 0:cols]
    outside = np.hypot(rr - (rows - 1) / 2, cc - (cols - 1) / 2) > min(rows, cols) / 2
    written = []
    for k, s in enumerate(positions):
        centre = CENTRE + s * table
        ipp = centre - ((cols - 1) * row + (rows - 1) * col) * spacing / 2.0
        pts = ipp + (cc[..., None] * row + rr[..., None] * col) * spacing
        hu = head_hu(pts, craniectomy=craniectomy, blob_hu=blob_hu, blob_centre=blob_centre,
                     blob_radius=blob_radius) + rng.normal(0.0, 3.0, (rows, cols)).astype(np.float32)
        stored = np.round(hu + 1024.0).astype(np.int16)
        stored[outside] = PAD
        ds = _header(series_uid, rows, cols, tilt_deg)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = len(positions) - k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = step
        ds.PixelData = stored.tobytes()
        f = out / f"IM{k:04d}.dcm"
        written.append((ds, f, WrittenSlice(f, ds.SOPInstanceUID, ds.InstanceNumber, np.round(ipp, 4), row, col)))
    order = list(range(len(written)))
    random.Random(seed).shuffle(order)
    for i in order:
        ds, f, _ = written[i]
        ds.save_as(f, enforce_file_format=True)
    return Series([written[i][1] for i in order], [w[2] for w in written], rows, cols, spacing)
