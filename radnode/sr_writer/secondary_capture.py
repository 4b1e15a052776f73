"""Secondary Capture Image Storage (PS3.3 A.8.1 SC Image IOD) of the result.

Many PACS viewers show neither an Encapsulated PDF nor a SEG, but every one
shows an SC image. So the report pages (rasterised with poppler's
``pdftoppm``) and the overlay key images go out as RGB SC instances in a
series of their own, with Burned In Annotation YES (the report pages carry
patient identifiers as pixels).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import structlog
from matplotlib import image as mpimg
from pydicom.dataset import Dataset

from radnode.sr_writer.pdf import KeyImage
from radnode.sr_writer.provenance import OutputProvenance

log = structlog.get_logger(__name__)

_PDFTOPPM = ("/usr/bin/pdftoppm",)


def pdftoppm_available() -> bool:
    return any(Path(p).is_file() for p in _PDFTOPPM) or shutil.which("pdftoppm") is not None


def render_pdf_pages(pdf_bytes: bytes, dpi: int = 110) -> list[np.ndarray]:
    """Rasterise each PDF page to an RGB uint8 array with ``pdftoppm``.

    Raises RuntimeError when poppler-utils is not installed (the caller
    decides whether page SCs are optional).
    """
    if not isinstance(pdf_bytes, (bytes, bytearray)) or bytes(pdf_bytes[:5]) != b"%PDF-":
        raise ValueError("pdf_bytes: not a PDF")
    if not isinstance(dpi, int) or not 30 <= dpi <= 300:
        raise ValueError("dpi: must be an int in [30, 300]")
    tool = next((p for p in _PDFTOPPM if Path(p).is_file()), None) or shutil.which("pdftoppm")
    if tool is None:
        raise RuntimeError("pdftoppm (poppler-utils) is not installed")
    with tempfile.TemporaryDirectory(prefix="radnode-pdf-") as tmp:
        src = Path(tmp) / "report.pdf"
        src.write_bytes(bytes(pdf_bytes))
        subprocess.run([tool, "-r", str(dpi), "-png", str(src), str(Path(tmp) / "page")], check=True, capture_output=True, timeout=120)
        pages = sorted(Path(tmp).glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        out = []
        for p in pages:
            arr = mpimg.imread(io.BytesIO(p.read_bytes()), format="png")
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
            out.append(np.ascontiguousarray(arr[..., :3]))
    return out


def build_secondary_captures(
    images: Sequence[tuple[str, np.ndarray]],
    source_image: Dataset,
    provenance: OutputProvenance,
) -> list[hd.sc.SCImage]:
    """One SC instance per ``(title, RGB uint8 (H, W, 3))`` in *images*.

    Instance numbers follow the order given; SOP Instance UIDs are derived
    from the job id and the position, so a retry replaces rather than adds.
    """
    if not isinstance(source_image, Dataset):
        raise TypeError(f"source_image: expected a pydicom Dataset, got {type(source_image).__name__}")
    if not isinstance(provenance, OutputProvenance):
        raise TypeError(f"provenance: expected OutputProvenance, got {type(provenance).__name__}")
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) or not images:
        raise ValueError("images: must be a non-empty sequence of (title, RGB array)")
    for i, item in enumerate(images):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], np.ndarray)):
            raise TypeError(f"images: item {i} must be (title, numpy array)")
        arr = item[1]
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images: item {i} must be RGB uint8 with shape (H, W, 3)")
    spec = provenance.series("sc")
    out = []
    for index, (title, rgb) in enumerate(images):
        sc = hd.sc.SCImage(
            pixel_array=np.ascontiguousarray(rgb),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            study_instance_uid=str(source_image.StudyInstanceUID),
            series_instance_uid=provenance.series_uid("sc"),
            series_number=spec.number,
            sop_instance_uid=provenance.instance_uid("sc", index),
            instance_number=index + 1,
            manufacturer=provenance.manufacturer,
            patient_id=source_image.get("PatientID"),
            patient_name=source_image.get("PatientName"),
            patient_birth_date=source_image.get("PatientBirthDate"),
            patient_sex=source_image.get("PatientSex") or None,
            accession_number=source_image.get("AccessionNumber"),
            study_id=source_image.get("StudyID"),
            study_date=source_image.get("StudyDate"),
            study_time=source_image.get("StudyTime"),
            referring_physician_name=source_image.get("ReferringPhysicianName"),
            # Required by highdicom for PATIENT; blanked below (type 2C,
            # these pictures have no single patient orientation).
            patient_orientation=("L", "P"),
            contributing_equipment=[provenance.contributing_equipment()],
            series_description=spec.description,
        )
        sc.PatientOrientation = None
        # Laterality (type 2C) is for a paired body part; a rendering of a
        # brain or of a report page has none, so it is absent, not empty
        # (dciodvfy warns about an empty one).
        if "Laterality" in sc:
            del sc.Laterality
        if source_image.get("BodyPartExamined"):  # lets a validator see the part is unpaired
            sc.BodyPartExamined = source_image.BodyPartExamined
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = title[:10240]
        sc.DerivationDescription = f"AI result rendering: {title}"[:1024]
        sc.ManufacturerModelName = provenance.manufacturer_model_name
        sc.SoftwareVersions = provenance.software_versions
        sc.DeviceSerialNumber = provenance.device_serial_number
        if "StudyDescription" in source_image:
            sc.StudyDescription = source_image.StudyDescription
        out.append(sc)
    log.info("secondary captures built", job_id=provenance.job_id, count=len(out))
    return out


def key_image_inputs(key_images: Sequence[KeyImage]) -> list[tuple[str, np.ndarray]]:
    """``(title, rgb)`` pairs for :func:`build_secondary_captures`."""
    return [(f"Key image: {k.title}", k.rgb) for k in key_images]
