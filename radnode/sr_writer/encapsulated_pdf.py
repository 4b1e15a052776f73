"""Encapsulated PDF Storage (PS3.3 A.45.1 Encapsulated PDF IOD), hand-built.

highdicom has no class for this IOD, so the modules are filled here:
Patient and General Study (copied from a source instance so the PDF files
into the same study), Encapsulated Document Series (new series, Modality
DOC), General Equipment, SC Equipment (Conversion Type WSD: a workstation
made it), Encapsulated Document and SOP Common. ``EncapsulatedDocument`` is
OB and must have even length: a NUL is appended and the true size goes into
``EncapsulatedDocumentLength``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import structlog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from radnode.sr_writer.provenance import OutputProvenance

log = structlog.get_logger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"

#: Document title concept: LOINC 18748-4 "Diagnostic imaging study" — the
#: LOINC document type for an imaging report, what a PACS/XDS shows as kind.
DOCUMENT_TITLE_CODE = ("18748-4", "LN", "Diagnostic imaging study")

#: Patient and General Study module attributes copied from the source.
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
)


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_encapsulated_pdf(
    pdf_bytes: bytes,
    source_image: Dataset,
    provenance: OutputProvenance,
    *,
    document_title: str = "AI analysis report",
    source_instances: Sequence[Dataset] = (),
    now: dt.datetime | None = None,
) -> Dataset:
    """Wrap *pdf_bytes* in an Encapsulated PDF instance of *source_image*'s study.

    *source_instances* (e.g. the reference series) are listed in the Source
    Instance Sequence: the document incorporates information from them.
    """
    if not isinstance(pdf_bytes, (bytes, bytearray)):
        raise TypeError(f"pdf_bytes: expected bytes, got {type(pdf_bytes).__name__}")
    if not bytes(pdf_bytes[:5]) == b"%PDF-":
        raise ValueError("pdf_bytes: not a PDF (missing %PDF- header)")
    if not isinstance(source_image, Dataset):
        raise TypeError(f"source_image: expected a pydicom Dataset, got {type(source_image).__name__}")
    for kw in ("StudyInstanceUID", "PatientID"):
        if kw not in source_image:
            raise ValueError(f"source_image: lacks {kw}")
    if not isinstance(provenance, OutputProvenance):
        raise TypeError(f"provenance: expected OutputProvenance, got {type(provenance).__name__}")
    if not isinstance(document_title, str) or not document_title.strip():
        raise ValueError("document_title: must be a non-empty string")
    for i, ds in enumerate(source_instances):
        if not isinstance(ds, Dataset) or "SOPInstanceUID" not in ds:
            raise TypeError(f"source_instances: item {i} is not a DICOM instance Dataset")

    now = now or dt.datetime.now()
    sop_uid = provenance.instance_uid("pdf")
    spec = provenance.series("pdf")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = source_image.get("SpecificCharacterSet", "ISO_IR 100")
    # SOP Common
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient + General Study (type 2 attributes present even when empty)
    for kw in _PATIENT_STUDY:
        if kw in source_image:
            ds[kw] = source_image[kw]
    for kw in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if kw not in ds:
            setattr(ds, kw, "")
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = provenance.series_uid("pdf")
    ds.SeriesNumber = spec.number
    ds.SeriesDescription = spec.description
    # General Equipment + SC Equipment
    ds.Manufacturer = provenance.manufacturer
    ds.ManufacturerModelName = provenance.manufacturer_model_name
    ds.SoftwareVersions = provenance.software_versions
    ds.DeviceSerialNumber = provenance.device_serial_number
    if provenance.institution_name:
        ds.InstitutionName = provenance.institution_name
    ds.ConversionType = "WSD"
    ds.ContributingEquipmentSequence = [provenance.contributing_equipment()]
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = document_title[:64]
    ds.ConceptNameCodeSequence = [_code_item(*DOCUMENT_TITLE_CODE)]
    if source_instances:
        refs = []
        for src in source_instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = src.SOPClassUID
            ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
            refs.append(ref)
        ds.SourceInstanceSequence = refs
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = bytes(pdf_bytes)
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")
    log.info("encapsulated pdf built", job_id=provenance.job_id, bytes=len(data))
    return ds
